"""``vmascope snapshot TARGET``: summarise a process's mappings, or capture it to a file."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .common import add_target, human_bytes, print_json


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "snapshot",
        help="summarise a process's mappings, or capture them to a snapshot file (-o)",
        description=(
            "Read a live process (or a snapshot file or pasted maps/smaps dump) and print "
            "its map count against vm.max_map_count and the backings with the most VMAs. "
            "With -o FILE, capture the live process's raw maps, smaps and numa_maps text "
            "and metadata into one compressed snapshot file that every command can load."
        ),
    )
    add_target(p)
    p.add_argument("-o", "--output", metavar="FILE",
                   help="capture the live process to this snapshot file (written atomically)")
    p.add_argument("--no-smaps", action="store_true",
                   help="read /proc/PID/maps only (faster; no sizes, RSS or VmFlags)")
    p.add_argument("--no-numa", action="store_true", help="do not read /proc/PID/numa_maps")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--vmas", action="store_true", help="with --json: include every VMA")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="how many backings to list (default 10)")
    p.set_defaults(run=run)


def _is_pid(target: str) -> bool:
    return target.strip().isdigit() and not os.path.exists(target)


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError

    if args.top < 0:
        raise UsageError("--top must be 0 or more")
    if args.vmas and not args.json:
        raise UsageError("--vmas goes with --json")
    if args.output:
        if not _is_pid(args.target):
            raise UsageError("-o captures a live process: TARGET must be a pid")
        return _capture(args)
    from ..procfs.live import read_process
    from ..procfs.load import load_target

    if _is_pid(args.target):
        snap = read_process(args.target, smaps=not args.no_smaps, numa=not args.no_numa)
    else:
        snap = load_target(args.target)
    top = snap.backing_counts()[: args.top]
    if args.json:
        out = snap.to_json(vmas=args.vmas)
        count, mmc, _ = snap.headroom()
        out["mappings_left"] = None if mmc is None else mmc - count
        out["top_backings"] = [{"backing": b, "vmas": c} for b, c in top]
        out["total_size"] = int(snap.sizes().sum())
        print_json(out)
        return 0
    _print_summary(snap, top)
    return 0


def _print_summary(snap: Any, top: list[tuple[str, int]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=False)
    m = snap.meta
    count, mmc, pct = snap.headroom()
    who = f"pid {m.pid}" if m.pid is not None else "dump"
    if m.comm:
        who += f" ({m.comm})"
    bits = [who]
    if m.kernel_release:
        bits.append(f"kernel {m.kernel_release}")
    bits.append(f"source {m.source}")
    console.print(Text("  ".join(bits)))
    if mmc:
        left = mmc - count
        style = "bold red" if pct is not None and pct >= 90 else (
            "yellow" if pct is not None and pct >= 50 else "green")
        console.print(
            f"mappings [bold]{count}[/] of max_map_count {mmc}: "
            f"[{style}]{pct:.1f}% used[/], {left} left"
        )
    else:
        console.print(f"mappings [bold]{count}[/] (max_map_count unknown for this source)")
    console.print(f"mapped {human_bytes(int(snap.sizes().sum()))}")
    if top:
        table = Table(title="Top backings by VMA count", title_justify="left", box=None)
        table.add_column("VMAs", justify="right")
        table.add_column("%", justify="right")
        table.add_column("backing", overflow="fold")
        for backing, c in top:
            # Text, not markup: names such as [heap] or [anon:x] must print as they are
            table.add_row(str(c), f"{100.0 * c / max(count, 1):.1f}", Text(backing))
        console.print(table)


def _capture(args: argparse.Namespace) -> int:
    from ..model import SCHEMA_VERSION
    from ..procfs.capture import capture

    res = capture(args.target, args.output, smaps=not args.no_smaps, numa=not args.no_numa)
    if args.json:
        print_json({
            "schema_version": SCHEMA_VERSION,
            "path": res.path,
            "pid": res.pid,
            "comm": res.comm,
            "map_count": res.map_count,
            "max_map_count": res.max_map_count,
            "top_backings": [{"backing": b, "vmas": c} for b, c in res.backing_counts[: args.top]],
            "raw_bytes": res.raw_bytes,
            "file_bytes": res.file_bytes,
            "sections": res.sections,
            "seconds": round(res.seconds, 3),
        })
        return 0
    pct = ""
    if res.max_map_count:
        pct = f" ({100.0 * res.map_count / res.max_map_count:.1f}% of {res.max_map_count})"
    sys.stdout.write(
        f"wrote {res.path}: pid {res.pid} ({res.comm}), {res.map_count} mappings{pct}, "
        f"{human_bytes(res.raw_bytes)} of /proc text in {human_bytes(res.file_bytes)}\n"
    )
    return 0
