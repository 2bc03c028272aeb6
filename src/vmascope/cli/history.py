"""``vmascope history``: what ``vmascope watch`` recorded, with the forecast."""

from __future__ import annotations

import argparse
import sys

from ..errors import UsageError
from .common import add_verb, print_json, wrote

DESCRIPTION = """\
Show a series recorded by `vmascope watch` (--pid or --comm; without either, the
database's only series, or the list of series) with the growth and the forecast of
when vm.max_map_count is reached (95 % band). -o FILE.png or FILE.html writes a plot.
Exit codes: 0, 2 usage (no such series or database), 8 output file not writable."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(subparsers, "history", "the series watch recorded, with the forecast",
                 DESCRIPTION, run)
    p.add_argument("--db", metavar="FILE", help="the database (as for watch)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--pid", type=int, help="the series of this pid")
    g.add_argument("--comm", help="the series of processes with this comm")
    p.add_argument("--window", type=float, default=1800.0, metavar="S",
                   help="seconds of samples the forecast fits (1800)")
    p.add_argument("-o", "--output", metavar="FILE", help="write a plot: .png or .html")
    p.set_defaults(writes_output=True)  # it writes -o FILE itself (a plot, not stdout)
    p.add_argument("--json", action="store_true", help="the series and forecast as JSON")


def run(args: argparse.Namespace) -> int:
    from ..monitor.forecast import forecast
    from ..monitor.store import Store, default_db
    from ..output import safe_write
    from ..report import history as view

    out = args.output
    if out and not out.endswith((".png", ".html")):
        raise UsageError(f"-o {out}: expected a file name ending in .png or .html")
    store = Store(args.db or default_db(), create=False)
    try:
        if args.pid is None and args.comm is None:
            series = store.series()
            if len(series) != 1:
                if not series:
                    raise UsageError(f"{store.path}: no samples yet")
                print("series (pick one with --pid or --comm):")
                for target, pid, comm, n in series:
                    print(f"  {target:<20} pid {pid:<7} {comm:<15} {n} samples"[:80])
                return 0
            samples = store.samples(pid=series[0][1])
        else:
            samples = store.samples(pid=args.pid, comm=args.comm)
    finally:
        store.close()
    if not samples:
        which = f"pid {args.pid}" if args.pid is not None else f"comm {args.comm}"
        raise UsageError(f"no samples of {which} in the database")
    last = samples[-1]
    recent = [s for s in samples if s.time >= last.time - args.window
              and s.pid == last.pid and s.start_ticks == last.start_ticks]
    f = (forecast([s.time for s in recent], [s.map_count for s in recent],
                  last.max_map_count) if last.max_map_count else None)
    title = f"{last.comm} (pid {last.pid})"
    if out:
        data = (view.plot_png(title, samples, f) if out.endswith(".png")
                else view.page_html(title, samples, f).encode())
        with safe_write(out, "wb") as fh:
            fh.write(data)
        wrote(out, len(data))
        return 0
    if args.json:
        print_json(view.to_json(title, samples, f))
        return 0
    sys.stdout.write(view.summary(title, samples, f))
    return 0
