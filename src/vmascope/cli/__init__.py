"""Command-line interface: ``vmascope <verb>``; one small module per verb.

``COMMANDS`` is the registry: every verb there is, in the order ``vmascope --help`` lists
them, each with the module that holds it. A verb module defines ``register(subparsers)``,
which adds its parser and sets ``run=<function(args) -> int>`` as a default; it parses
options and calls the library, and renders through ``vmascope.report``. Errors that are
the user's to fix are :class:`vmascope.errors.VmascopeError` and become one line on
stderr and their exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence

from ..errors import UsageError, VmascopeError

# The registry: (verb, module under vmascope.cli), in the order --help lists them.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("snapshot", "snapshot"),
    ("analyze", "analyze"),
    ("check", "check"),
    ("simulate", "simulate"),
    ("lab", "lab"),
    ("top", "top"),
    ("watch", "watch"),
    ("history", "history"),
    ("exporter", "exporter"),
    ("kernels", "kernels"),
    ("demo", "demo"),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="vmascope",
        description="Find, explain, predict and prevent Linux VMA (memory mapping) exhaustion.",
    )
    parser.add_argument("--version", action="version", version=f"vmascope {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for _verb, module in COMMANDS:
        importlib.import_module(f".{module}", __name__).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "run", None):
            raise UsageError("expected a command: vmascope VERB ... (vmascope --help lists them)")
        return int(args.run(args) or 0)
    except VmascopeError as exc:
        print(f"vmascope: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vmascope: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader went away (| head): exit quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def entry() -> None:
    from ..output import run_cli

    sys.exit(run_cli(main))
