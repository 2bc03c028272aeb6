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


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
