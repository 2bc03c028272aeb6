"""Helpers shared by verb modules."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
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


def add_verb(subparsers: Any, name: str, help_text: str, description: str,
             run: Callable[[argparse.Namespace], int] | None = None) -> Any:
    """Add a verb's parser (and its ``run``): every verb module starts with this."""
    p = subparsers.add_parser(name, help=help_text, description=description)
    if run is not None:
        p.set_defaults(run=run)
    return p


def add_group(subparsers: Any, name: str, help_text: str, description: str) -> Any:
    """A verb with commands of its own (``lab run``): returns the commands' subparsers.
    The verb alone prints its help and exits 2."""
    p = add_verb(subparsers, name, help_text, description)
    p.set_defaults(run=lambda args: (p.print_help(sys.stderr), 2)[1])
    return p.add_subparsers(dest=f"{name}_cmd", metavar="COMMAND", parser_class=type(p))
