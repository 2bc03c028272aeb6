"""Helpers shared by verb modules."""

from __future__ import annotations

import json
import sys
from typing import Any


def add_target(parser: Any, help_text: str | None = None) -> None:
    parser.add_argument(
        "target",
        metavar="TARGET",
        help=help_text
        or "a pid, a snapshot file, a raw maps or smaps text file, or - for stdin",
    )


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=None, separators=(",", ":"))
    sys.stdout.write("\n")
