"""``vmascope check TARGET --max-used PCT``: a gate for CI and boot-time checks.

Exit status: 0 when the process uses at most PCT % of vm.max_map_count, 9 when it uses
more (EXIT_OVER); the usual error codes otherwise (2 bad usage, 3 no such process, ...).
It also prints the recommended vm.max_map_count, from the count and, with
``--interval`` or ``--previous``, its trend.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from typing import Any

from ..errors import UsageError
from .common import add_format, add_output, add_target, add_verb

EXIT_OVER = 9


def register(subparsers: Any) -> None:
    p = add_verb(
        subparsers, "check",
        "exit non-zero when a process uses more than PCT %% of vm.max_map_count",
        "Check a process's map count against vm.max_map_count for CI and boot-time gates: "
        f"exit 0 when at most --max-used percent is used, {EXIT_OVER} when more. Also prints "
        "the recommended vm.max_map_count from the count and its trend.", run=run)
    add_target(p)
    p.add_argument("--max-used", type=float, required=True, metavar="PCT",
                   help="the highest share of vm.max_map_count allowed, in percent")
    p.add_argument("--max-map-count", "--limit", dest="limit", type=int, metavar="N",
                   help="vm.max_map_count to check against (default: the snapshot's, or "
                   "this host's for a live process)")
    p.add_argument("--previous", metavar="SNAPSHOT",
                   help="an earlier snapshot of the same process, for the trend")
    p.add_argument("--interval", type=float, metavar="SECONDS",
                   help="for a pid: read it twice, SECONDS apart, for the trend")
    p.add_argument("--horizon", type=float, default=168.0, metavar="HOURS",
                   help="how far ahead to project the trend (default 168: a week)")
    add_format(p, json_help="print one JSON object (the same as --format json)")
    add_output(p)


def run(args: argparse.Namespace) -> int:
    import vmascope

    from ..analysis.headroom import headroom
    from ..analysis.limit import recommend

    if not 0 < args.max_used <= 100:
        raise UsageError("--max-used must be a percentage above 0 and at most 100")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--max-map-count must be at least 1")
    if args.interval is not None and not 0 < args.interval <= 3600:
        raise UsageError("--interval must be above 0 and at most 3600 seconds")
    if args.horizon < 0:
        raise UsageError("--horizon must not be negative")
    previous = None
    if args.previous:
        prev = vmascope.load(args.previous)
        previous = (prev.meta.time, prev.map_count)
    snap = vmascope.load(args.target)
    if args.interval is not None:
        if snap.meta.source != "live":
            raise UsageError("--interval needs a pid (a live process), not a file")
        previous = (snap.meta.time, snap.map_count)
        time.sleep(args.interval)
        snap = vmascope.load(args.target)
    h = headroom(snap)
    limit = args.limit or h.max_map_count
    if not limit:
        raise UsageError("vm.max_map_count is unknown for this snapshot: pass --max-map-count N")
    used = 100.0 * snap.map_count / limit
    rec = recommend(snap.map_count, limit, previous=previous, now=snap.meta.time,
                    horizon_hours=args.horizon)
    over = used > args.max_used
    who = f"pid {snap.meta.pid}" if snap.meta.pid is not None else args.target
    if snap.meta.comm:
        who += f" ({snap.meta.comm})"
    if args.json:
        json.dump({"target": args.target, "map_count": snap.map_count,
                   "max_map_count": limit, "percent_used": round(used, 3),
                   "max_used": args.max_used, "over": over,
                   "exit_code": EXIT_OVER if over else 0, "limit": rec.to_json()},
                  sys.stdout)
        sys.stdout.write("\n")
    else:
        verdict = "OVER" if over else "ok"
        lines = [f"{who}: {snap.map_count:,} of {limit:,} mappings ({used:.1f}%), "
                 f"at most {args.max_used:g}% allowed: {verdict}",
                 f"recommended vm.max_map_count: {rec.recommended:,}"]
        lines += [f"  {line}" for line in rec.reasoning]
        for line in lines:
            print(textwrap.fill(line, width=80, subsequent_indent="    ",
                                break_long_words=False, break_on_hyphens=False))
    return EXIT_OVER if over else 0
