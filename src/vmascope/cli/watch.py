"""``vmascope watch``: sample processes into SQLite, forecast, alert."""

from __future__ import annotations

import argparse
import sys

from ..errors import UsageError
from .common import add_verb

DESCRIPTION = """\
Sample each TARGET (a pid, or comm:NAME for the process with that comm and the most
VMAs) every --interval seconds: map count, RSS and (every --causes-every samples) the
VMA budget causes, into the SQLite database --db (WAL: a kill leaves it readable).
Each line shows the growth and, from the samples of the last --window seconds, when
the process reaches vm.max_map_count with a 95 % band. Past --alert PCT % of the limit
it exits with 9, or with --exec CMD runs CMD (sh -c) with VMASCOPE_PID, VMASCOPE_COMM,
VMASCOPE_MAP_COUNT, VMASCOPE_MAX_MAP_COUNT, VMASCOPE_PERCENT, VMASCOPE_ETA_SECONDS in
its environment and goes on. --follow comm|cmdline picks up a target again after a
restart. Exit codes: 0 --count samples done, 2 usage, 3 every target exited, 9 over
--alert."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(subparsers, "watch", "sample processes into SQLite, forecast, alert",
                 DESCRIPTION, run)
    p.add_argument("targets", nargs="*", metavar="TARGET", help="a pid or comm:NAME")
    p.add_argument("--pid", metavar="PID", action="append", default=[], dest="pids",
                   help="a process to sample, beside the TARGETs (may be repeated)")
    p.add_argument("--interval", type=float, default=5.0, metavar="S",
                   help="seconds between samples (5)")
    p.add_argument("--db", metavar="FILE",
                   help="the database (default $XDG_STATE_HOME/vmascope/watch.db)")
    p.add_argument("--alert", type=float, metavar="PCT",
                   help="act when a target passes PCT %% of vm.max_map_count")
    p.add_argument("--exec", dest="exec_cmd", metavar="CMD",
                   help="with --alert: run CMD instead of exiting")
    p.add_argument("--follow", choices=("comm", "cmdline"),
                   help="follow a target across restarts by its comm or command line")
    p.add_argument("--count", type=int, metavar="N", help="stop after N samples")
    p.add_argument("--window", type=float, default=1800.0, metavar="S",
                   help="seconds of samples the forecast fits (1800)")
    p.add_argument("--causes-every", type=int, default=10, metavar="N",
                   help="VMA budget causes every N samples, 0 never (10)")


def run(args: argparse.Namespace) -> int:
    from ..monitor.store import Store, default_db
    from ..monitor.watch import Target, Watch, header

    if not 0.01 <= args.interval <= 86400:
        raise UsageError("--interval takes seconds between 0.01 and 86400")
    if args.alert is not None and not 0 < args.alert <= 100:
        raise UsageError("--alert takes a percentage above 0 and at most 100")
    if args.exec_cmd is not None and args.alert is None:
        raise UsageError("--exec needs --alert PCT (when to run it)")
    if args.count is not None and args.count < 1:
        raise UsageError("--count takes a number >= 1")
    if args.causes_every < 0 or args.window <= 0:
        raise UsageError("--causes-every takes a number >= 0, --window seconds > 0")
    for pid in args.pids:
        if not pid.strip().isdigit() or int(pid) < 1:
            raise UsageError(f"--pid: not a pid: {pid!r}")
    if not args.targets and not args.pids:
        raise UsageError("expected a TARGET (a pid or comm:NAME) or --pid PID")
    targets = [Target.parse(t) for t in [*args.targets, *(p.strip() for p in args.pids)]]
    db = args.db or default_db()
    store = Store(db)
    try:
        if sys.stdout.isatty():  # a pipe gets the sample lines alone
            for text in header(len(targets), args.interval, str(db)):
                print(text, flush=True)
        w = Watch(store=store, targets=targets, interval=args.interval,
                  alert_pct=args.alert, exec_cmd=args.exec_cmd, follow=args.follow,
                  causes_every=args.causes_every, window=args.window,
                  out=lambda s: print(s, flush=True))
        return w.run(args.count)
    finally:
        store.close()
