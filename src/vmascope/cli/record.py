"""vmascope record: a program's mapping calls and faults into a trace."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import add_kernel_view, add_verb


def register(subparsers: Any) -> None:
    p = add_verb(subparsers, "record", "record a program's mapping calls and page faults",
                 "Record the mapping calls (mmap, mprotect, madvise, mremap, brk, mlock, "
                 "mseal, prctl names, fork, exit) and the page faults that change VMAs of "
                 "a running process (--pid) or of a command started here (-- CMD ...), "
                 "between a first and a last snapshot, into a trace that vmascope replay "
                 "reads. As root with BPF; otherwise, or with --strace, through strace.",
                 run=run)
    p.add_argument("--pid", metavar="PID", type=int, help="record this running process")
    p.add_argument("-o", "--output", metavar="TRACE", required=True,
                   help="the trace file (.gz, .zst or .xz compress it)")
    p.add_argument("--duration", type=float, metavar="S",
                   help="stop after S seconds (default: when the process ends, or Ctrl-C)")
    p.add_argument("--strace", action="store_true",
                   help="record with strace (no root needed; faults are inferred)")
    add_kernel_view(p, "The snapshots")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                   help="the command to start and record")
    p.set_defaults(writes_output=True)


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..report.progress import display
    from ..trace.record import record

    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if bool(cmd) == (args.pid is not None):
        raise UsageError("record: give --pid PID or -- CMD ARGS..., one of them")
    from ..output import check_target

    check_target(args.output)
    with display(False) as bar:
        task = bar.add_task("recording", total=None, state="")
        res = record(args.output, argv=cmd or None, pid=args.pid, duration=args.duration,
                     recorder="strace" if args.strace else "auto",
                     kernel_view=args.kernel_view,
                     progress=lambda what, n: bar.update(task, state=f"{n:,} events"))
    line = (f"vmascope: wrote {res.path}: {res.events:,} events ({res.recorder}), "
            f"{res.ops:,} ops to replay, last snapshot: {res.final}")
    print(line, file=sys.stderr)
    if res.lost:
        print(f"vmascope: WARNING: {res.lost:,} events were lost; the replay will say so",
              file=sys.stderr)
    return 0
