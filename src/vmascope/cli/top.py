"""``vmascope top``: the host's processes by map count, live."""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import sys
import termios
import time
import tty
from collections.abc import Iterator

from ..errors import UsageError
from .common import add_verb, print_json

DESCRIPTION = """\
A live table of the host's processes by map count: % of vm.max_map_count, growth
(VMAs per minute, over the last minute), RSS, and for the first rows the biggest
reservation and why it is split (the VMA budget). Keys: q quit, s change the delay,
P sort by % of the limit, R by growth, M by RSS, N by pid, space refresh. Without root
it shows the user's own processes and says how many it cannot see. --once prints one
table (--json: JSON) from two readings --interval apart and exits.
Exit codes: 0, 2 usage."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(subparsers, "top", "a live table of processes by map count", DESCRIPTION,
                 run)
    p.add_argument("-d", "--interval", type=float, default=2.0, metavar="S",
                   help="seconds between refreshes (2)")
    p.add_argument("-n", "--rows", type=int, metavar="N",
                   help="rows to show (default: what fits the terminal)")
    p.add_argument("--causes", type=int, default=5, metavar="N",
                   help="budget cause for the N processes with most VMAs (5)")
    p.add_argument("--sort", choices=("P", "R", "M", "N"), default="P",
                   help="initial sort: P %% of limit, R growth, M RSS, N pid")
    p.add_argument("--once", action="store_true", help="print once and exit")
    p.add_argument("--json", action="store_true", help="with --once: JSON")


@contextlib.contextmanager
def _cbreak(fd: int) -> Iterator[None]:
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


_pending: list[str] = []


def _key(fd: int, timeout: float) -> str | None:
    """The next key typed (keys that came in one read are returned one by one)."""
    if _pending:
        return _pending.pop(0)
    r, _, _ = select.select([fd], [], [], max(0.0, timeout))
    if not r:
        return None
    data = os.read(fd, 64)
    if not data:
        return "q"  # the terminal went away
    _pending.extend(data.decode(errors="replace"))
    return _pending.pop(0)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..monitor.top import TopState
    from ..report import top as view

    if not 0.1 <= args.interval <= 3600:
        raise UsageError("--interval takes seconds between 0.1 and 3600")
    if args.rows is not None and args.rows < 1:
        raise UsageError("--rows takes a number >= 1")
    if args.json and not args.once:
        raise UsageError("--json needs --once (a live table is not JSON)")
    state = TopState(causes=args.causes)
    state.sort = args.sort
    if args.once:
        state.refresh()
        time.sleep(min(args.interval, 2.0))
        reading = state.refresh()
        rows = state.rows(args.rows if args.rows is not None else 20)
        if args.json:
            print_json(view.to_json(reading, rows))
        else:
            width = min(shutil.get_terminal_size().columns, 120)
            Console(width=width).print(view.table(reading, rows, state.sort, args.interval,
                                                  width))
        return 0
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        raise UsageError("top needs a terminal (use --once, or --once --json, in scripts)")
    console = Console()
    fd = sys.stdin.fileno()
    delay = args.interval
    with _cbreak(fd), console.screen(hide_cursor=True) as screen:

        def draw(prompt: str | None = None) -> None:
            size = shutil.get_terminal_size()
            reading = state.reading
            assert reading is not None
            note = view.note_lines(reading, size.columns)
            n = args.rows or max(1, size.lines - 4 - len(note))
            screen.update(view.table(reading, state.rows(n), state.sort, delay,
                                     size.columns, prompt=prompt))

        while True:
            state.refresh()
            draw()
            deadline = time.monotonic() + delay
            while True:
                key = _key(fd, deadline - time.monotonic())
                if key is None:
                    break
                if key == "q":
                    return 0
                if key in "PRMN":
                    state.sort = key
                    break
                if key == " ":
                    break
                if key == "s":
                    delay = _ask_delay(fd, draw, delay)
                    break


def _ask_delay(fd: int, draw, delay: float) -> float:  # type: ignore[no-untyped-def]
    """top's `s`: read a new delay on the bottom line (Enter confirms, Esc cancels)."""
    buf = ""
    while True:
        draw(f"change delay from {delay:g} to: {buf}")
        k = _key(fd, 30)
        if k is None or k == "\x1b":
            return delay
        if k in "\r\n":
            break
        if k in "\x7f\b":
            buf = buf[:-1]
        elif k.isdigit() or k == ".":
            buf += k
    try:
        value = float(buf)
    except ValueError:
        return delay
    return value if 0.1 <= value <= 3600 else delay
