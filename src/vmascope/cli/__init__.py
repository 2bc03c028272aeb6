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
    ("analyze", "analyze"),  # also "analyse"
    ("check", "check"),
    ("simulate", "simulate"),
    ("record", "record"),
    ("import-strace", "import_strace"),
    ("replay", "replay"),
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
        # "vmascope: error:" is printed once, by main(); a verb's parser names the verb
        verb = self.prog.partition(" ")[2]
        message = _did_you_mean(message)
        raise UsageError(f"{verb}: {message}" if verb else message)


def _did_you_mean(message: str) -> str:
    """argparse's "invalid choice: 'snapsot' (choose from ...)" with the likely verb."""
    import difflib
    import re

    m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
    if not m:
        return message
    choices = re.findall(r"'([^']*)'", m.group(2))
    close = difflib.get_close_matches(m.group(1), choices, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "expected one of " + ", ".join(choices)
    return f"invalid choice: {m.group(1)!r} ({hint})"


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
        from .common import finish_args

        finish_args(args)
        if getattr(args, "output", None) and not getattr(args, "writes_output", False):
            return _run_to_file(args)
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


def _run_to_file(args: argparse.Namespace) -> int:
    """``-o FILE`` for a verb that prints its output: the output goes to FILE."""
    import contextlib
    import io

    from ..output import check_target
    from .common import write_output

    check_target(args.output)  # refused before the work, not after
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = int(args.run(args) or 0)
    write_output(args.output, buf.getvalue())
    return code


def entry() -> None:
    from ..output import run_cli

    sys.exit(run_cli(main))
