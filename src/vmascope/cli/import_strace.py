"""vmascope import-strace: an strace log a user already has, as a trace."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import add_verb


def register(subparsers: Any) -> None:
    q = add_verb(subparsers, "import-strace", "turn an strace log into a trace",
                 "Read a log strace wrote (plain, -f, -tt/-ttt, -k, -y forms) and write a "
                 "trace that vmascope replay reads. Faults cannot be seen by strace: with "
                 "--final SNAPSHOT they are inferred (and marked so).", run=run)
    q.add_argument("log", metavar="LOG", help="the strace log")
    q.add_argument("-o", "--output", metavar="TRACE", required=True, help="the trace file")
    q.add_argument("--pid", metavar="PID", type=int,
                   help="the process to replay (default: the first one in the log)")
    q.add_argument("--first", metavar="SNAPSHOT",
                   help="a snapshot of the process when the log starts (replay needs one)")
    q.add_argument("--final", metavar="SNAPSHOT",
                   help="a snapshot of the process when the log ends (for the comparison "
                   "and the inferred faults)")
    q.set_defaults(writes_output=True)



def run(args: argparse.Namespace) -> int:
    from ..output import check_target
    from ..trace.importer import import_strace

    check_target(args.output)
    res = import_strace(args.log, args.output, pid=args.pid, first=args.first,
                        final=args.final)
    print(f"vmascope: wrote {args.output}: {res.events:,} events, {res.ops:,} ops to "
          "replay" + ("" if args.first else " (no first snapshot: replay needs --first)"),
          file=sys.stderr)
    return 0
