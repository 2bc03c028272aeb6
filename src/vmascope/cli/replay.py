"""vmascope replay: a recorded trace through the model, compared with the real end state."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import add_format, add_output, add_verb, print_json, write_output


def register(subparsers: Any) -> None:
    p = add_verb(subparsers, "replay", "replay a recorded trace through the kernel model",
                 "Start the model from the trace's first snapshot, replay the recorded "
                 "calls and faults, compare with the final snapshot (agreement and the "
                 "regions that differ), and put every VMA of the end state down to the "
                 "call site that made it.", run=run)
    p.add_argument("trace", metavar="TRACE", help="a trace from vmascope record or "
                   "import-strace (.gz, .zst, .xz read as they are)")
    p.add_argument("--kernel", metavar="RELEASE",
                   help="replay on the model of this release (what would this exact run "
                   "leave on kernel X); default: the kernel it was recorded on")
    p.add_argument("--max-map-count", type=int, metavar="N",
                   help="vm.max_map_count of the model (default: the recorded one)")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="call sites and regions to list (default %(default)s)")
    p.add_argument("--plot", metavar="FILE.svg",
                   help="write map_count over time, the top call sites stacked, as SVG")
    add_format(p)
    add_output(p)
    p.set_defaults(writes_output=True)


def load_and_replay(path: str, kernel: str | None, max_map_count: int | None,
                    json_output: bool) -> tuple[Any, Any]:
    """Read a trace, replay it (with progress on a terminal), attribute its VMAs."""
    from .. import host
    from ..errors import UsageError
    from ..report.progress import display
    from ..trace.parse import read_trace
    from ..trace.replay import replay
    from ..trace.sites import SiteNamer, attribute

    if max_map_count is not None and max_map_count < 1:
        raise UsageError("--max-map-count must be at least 1")
    with display(json_output, bar=True) as bar:
        task = bar.add_task(f"reading {path}", total=None, state="")
        trace = read_trace(path)
        epoch = host.epoch_for(kernel) if kernel else None
        bar.update(task, description=f"replaying {len(trace.ops):,} ops", total=len(trace.ops))
        rep = replay(trace, epoch, max_map_count=max_map_count,
                     progress=lambda i, n: bar.update(task, completed=i))
        bar.update(task, description="attributing VMAs to call sites", completed=len(trace.ops))
        att = attribute(rep, SiteNamer(trace, _symbolizer(trace)))
    return rep, att


def _symbolizer(trace: Any) -> Any:
    """ELF symbols for instruction pointers the trace does not name (on the machine it
    was recorded on); None when there is nothing to look up."""
    if not any(trace.annotation(i).stack for i in range(min(len(trace.ops), 50))):
        return None
    from ..trace.symbols import Symbolizer

    snaps = [s for s in (trace.first, trace.last) if s is not None]
    return Symbolizer(snaps) if snaps else None


def run(args: argparse.Namespace) -> int:
    from ..report.replay import replay_json, replay_text, timeline_svg

    rep, att = load_and_replay(args.trace, args.kernel, args.max_map_count, args.json)
    if args.plot:
        write_output(args.plot, timeline_svg(att, f"map_count of {args.trace} (model of "
                                             f"{rep.epoch.release})"))
        sys.stderr.flush()
    if args.json:
        data = replay_json(rep, att)
        if args.output:
            import json

            write_output(args.output, json.dumps(data) + "\n")
        else:
            print_json(data)
        return 0
    text = replay_text(rep, att, top=args.top)
    if args.output:
        write_output(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
