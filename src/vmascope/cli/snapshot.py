"""``vmascope snapshot TARGET``: summarise a process's mappings, or capture it to a file."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..report.snapshot import capture_json, capture_text, print_summary, summary_json
from .common import add_target, add_verb, print_json


def register(subparsers: Any) -> None:
    p = add_verb(
        subparsers, "snapshot",
        "summarise a process's mappings, or capture them to a snapshot file (-o)",
        "Read a live process (or a snapshot file or pasted maps/smaps dump) and print its map "
        "count against vm.max_map_count and the backings with the most VMAs. With -o FILE, "
        "capture the live process's raw maps, smaps and numa_maps text and metadata into one "
        "compressed snapshot file that every command can load.", run=run)
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
        print_json(summary_json(snap, top, vmas=args.vmas))
        return 0
    from rich.console import Console

    print_summary(snap, top, Console(highlight=False, soft_wrap=False))
    return 0


def _capture(args: argparse.Namespace) -> int:
    from ..procfs.capture import capture

    res = capture(args.target, args.output, smaps=not args.no_smaps, numa=not args.no_numa)
    if args.json:
        print_json(capture_json(res, args.top))
    else:
        sys.stdout.write(capture_text(res))
    return 0
