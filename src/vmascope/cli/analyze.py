"""``vmascope analyze TARGET``: headroom, attribution, fragmentation, why not merged."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Any

from .common import (
    TRACE_TARGET,
    add_format,
    add_kernel_view,
    add_max_map_count,
    add_output,
    add_target,
    add_verb,
    read_live,
    write_output,
)


def register(subparsers: Any) -> None:
    p = add_verb(
        subparsers, "analyze",
        "explain a process's mappings: headroom, reservations, fragmentation, why not merged",
        "Analyse a process's VMAs: how close it is to vm.max_map_count, which backing and "
        "reservations hold its mappings, which adjacent mappings look identical yet are "
        "separate, and why the kernel did not merge them.", run=run, aliases=("analyse",))
    add_target(p)
    p.add_argument("--kernel", metavar="RELEASE",
                   help="explain for this kernel release (default: the snapshot's own)")
    add_kernel_view(p, "for a live pid:")
    add_format(p, ("text", "json", "html"))
    add_max_map_count(p)
    p.add_argument("--previous", metavar="SNAPSHOT",
                   help="an earlier snapshot of the same process: the recommended "
                   "vm.max_map_count then follows the trend between the two")
    p.add_argument("--trace", metavar="TRACE",
                   help="a trace from vmascope record: replay it and add where the VMAs "
                   "came from (call sites, causes, the timeline); without TARGET the "
                   "trace's last snapshot is analysed")
    add_output(p)
    p.set_defaults(writes_output=True, target_from_trace=True)


def run(args: argparse.Namespace) -> int:
    import vmascope

    from ..util import gc_paused, reuse_freed_arrays

    reuse_freed_arrays()  # a million VMAs make many large temporary arrays

    from ..analysis import analyze
    from ..report import render

    from .. import host
    from ..analysis.explain import resolve_kernel
    from ..kconst import ANALYSIS_SMAPS_FIELDS

    replayed = None
    if args.trace:
        from .replay import load_and_replay

        replayed = load_and_replay(args.trace, args.kernel, None, args.format != "text")
    from ..report.progress import display

    target = str(args.target).strip()
    # a million VMAs take seconds: on a terminal, what it is doing meanwhile
    with display(args.format == "json") as bar:
        if replayed is not None and args.target == TRACE_TARGET:
            task = bar.add_task(f"{args.trace}: the last snapshot", total=None, state="")
            snap = replayed[0].trace.last or replayed[0].snapshot
        elif target.isdigit() and not os.path.exists(target):
            task = bar.add_task(f"pid {target}: reading /proc/{target}/smaps", total=None,
                                state="")
            # only the smaps fields the explanations read (the rest: 370 MB at 2M VMAs),
            # and no smaps_rollup: no part of the analysis shows it
            snap = read_live(target, args.kernel_view, fields=ANALYSIS_SMAPS_FIELDS,
                             rollup=False)
        else:
            task = bar.add_task(f"{args.target}: loading", total=None, state="")
            snap = vmascope.load(args.target)
        if args.max_map_count:
            snap.meta.max_map_count = args.max_map_count
        release, _ = resolve_kernel(snap, args.kernel)
        bar.update(task, state=f"analysing {len(snap):,} VMAs")
        with gc_paused():  # tens of arrays and few objects: a collection only walks
            analysis = analyze(snap, kernel=args.kernel, epoch=host.epoch_for(release))
    analysis.trace = replayed
    if getattr(args, "previous", None):
        from ..analysis.limit import recommend

        prev = vmascope.load(args.previous)
        analysis.limit = recommend(snap.map_count, analysis.headroom.max_map_count,
                                   previous=(prev.meta.time, prev.map_count),
                                   now=snap.meta.time)
    if args.output:
        write_output(args.output, render(analysis, args.format, width=80))
        return 0
    if args.format == "text" and sys.stdout.isatty():
        from rich.console import Console

        from ..report.text import TextReporter

        width = min(shutil.get_terminal_size((80, 24)).columns, 120)
        TextReporter(width=width).print(analysis, Console(width=width, highlight=False))
        return 0
    sys.stdout.write(render(analysis, args.format, width=80))
    return 0
