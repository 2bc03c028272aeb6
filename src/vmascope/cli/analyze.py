"""``vmascope analyze TARGET``: headroom, attribution, fragmentation, why not merged."""

from __future__ import annotations

import argparse
import shutil
import sys
from typing import Any

from .common import add_target, add_verb


def register(subparsers: Any) -> None:
    p = add_verb(
        subparsers, "analyze",
        "explain a process's mappings: headroom, reservations, fragmentation, why not merged",
        "Analyse a process's VMAs: how close it is to vm.max_map_count, which backing and "
        "reservations hold its mappings, which adjacent mappings look identical yet are "
        "separate, and why the kernel did not merge them.", run=run)
    add_target(p)
    p.add_argument("--kernel", metavar="RELEASE",
                   help="explain for this kernel release (default: the snapshot's own)")
    p.add_argument("--format", choices=("text", "json", "html"), default="text")
    p.add_argument("--previous", metavar="SNAPSHOT",
                   help="an earlier snapshot of the same process: the recommended "
                   "vm.max_map_count then follows the trend between the two")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the report to FILE (atomically) instead of stdout")


def run(args: argparse.Namespace) -> int:
    import vmascope

    from ..analysis import analyze
    from ..report import render
    from ..util import atomic_write

    from .. import host
    from ..analysis.explain import resolve_kernel

    snap = vmascope.load(args.target)
    release, _ = resolve_kernel(snap, args.kernel)
    analysis = analyze(snap, kernel=args.kernel, epoch=host.epoch_for(release))
    if getattr(args, "previous", None):
        from ..analysis.limit import recommend

        prev = vmascope.load(args.previous)
        analysis.limit = recommend(snap.map_count, analysis.headroom.max_map_count,
                                   previous=(prev.meta.time, prev.map_count),
                                   now=snap.meta.time)
    if args.output:
        text = render(analysis, args.format, width=80)
        with atomic_write(args.output, "w") as fh:
            fh.write(text)
        return 0
    if args.format == "text" and sys.stdout.isatty():
        from rich.console import Console

        from ..report.text import TextReporter

        width = min(shutil.get_terminal_size((80, 24)).columns, 120)
        TextReporter(width=width).print(analysis, Console(width=width, highlight=False))
        return 0
    sys.stdout.write(render(analysis, args.format, width=80))
    return 0
