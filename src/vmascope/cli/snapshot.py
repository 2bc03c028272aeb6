"""``vmascope snapshot TARGET``: summarise a process's mappings, or capture it to a file."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..report.snapshot import capture_json, capture_text, print_summary, summary_json
from .common import (
    add_format,
    add_kernel_view,
    add_max_map_count,
    add_target,
    add_verb,
    kernel_view_notice,
    print_json,
    read_live,
    wrote,
)


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
                   help="capture the live process to this snapshot file (written atomically; "
                   "one line on stderr says what was written)")
    p.add_argument("--smaps", action="store_true",
                   help="also read /proc/PID/smaps for the summary (RSS, VmFlags); the "
                   "summary itself needs only /proc/PID/maps, which is much faster")
    p.add_argument("--no-smaps", action="store_true",
                   help="with -o or --vmas: read /proc/PID/maps only (no RSS or VmFlags)")
    p.add_argument("--no-numa", action="store_true",
                   help="with -o: do not capture /proc/PID/numa_maps")
    p.add_argument("--numa", action="store_true",
                   help="with --vmas: also read /proc/PID/numa_maps (each VMA's policy)")
    add_kernel_view(p, "with -o, --smaps or --vmas:")
    add_format(p)
    add_max_map_count(p)
    p.add_argument("--vmas", action="store_true",
                   help="with --json: include every VMA (read from smaps unless --no-smaps); "
                   "from a live process the VMAs are written as they are read, the \"vmas\" "
                   "array first and the summary after it")
    p.set_defaults(writes_output=True)
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
    if _is_pid(args.target):
        # The summary needs only maps; smaps (and numa_maps) only when asked for.
        smaps = (args.smaps or args.vmas) and not args.no_smaps
        if (args.json and args.vmas and not (args.numa and not args.no_numa)
                and not _kernel_view_wanted(args)):
            from ..report.snapshot import stream_json_with_vmas

            stream_json_with_vmas(args.target, sys.stdout, top=args.top, smaps=smaps,
                                  max_map_count=args.max_map_count)
            return 0
        if not smaps and not args.numa and not _kernel_view_wanted(args):
            return _summary(args)
        snap = read_live(args.target, args.kernel_view, smaps=smaps,
                         numa=args.numa and not args.no_numa)
    else:
        from ..procfs.load import load_target

        snap = load_target(args.target)
    if args.max_map_count:
        snap.meta.max_map_count = args.max_map_count
    top = snap.backing_counts()[: args.top]
    if args.json and args.vmas:
        from ..report.snapshot import write_json_with_vmas

        write_json_with_vmas(snap, top, sys.stdout)  # streamed: memory stays flat
        return 0
    if args.json:
        print_json(summary_json(snap, top, vmas=False))
        return 0
    print_summary(snap, top)
    return 0


def _kernel_view_wanted(args: argparse.Namespace) -> bool:
    from ..util import kernel_view_wanted

    return kernel_view_wanted(args.kernel_view)


def _summary(args: argparse.Namespace) -> int:
    """The summary of a live process from its maps, counted as they are parsed (no VMA
    is kept): the count, the size and the top backings."""
    from ..procfs.live import summarize_process
    from ..report.snapshot import counted_json, print_counts

    done = summarize_process(args.target)
    if args.max_map_count:
        done.meta.max_map_count = args.max_map_count
    top = done.backings[: args.top]
    if args.json:
        print_json(counted_json(done, top))
        return 0
    print_counts(done.meta, done.count, done.total_size, top)
    return 0


def _capture(args: argparse.Namespace) -> int:
    from ..procfs.capture import capture

    from ..report.progress import display

    with display(args.json) as bar:
        bar.add_task(f"pid {args.target}: capturing /proc into {args.output}", total=None,
                     state="")
        res = _capture_with_view(args, capture)
    if args.json:
        print_json(capture_json(res, args.top))
        wrote(str(res.path), res.file_bytes)
    else:
        sys.stderr.write(capture_text(res))
    return 0


def _capture_with_view(args: argparse.Namespace, capture: Any) -> Any:
    from ..errors import KernelViewUnavailable
    from ..procfs import kview

    if kview.wanted(args.kernel_view):
        try:
            return capture(args.target, args.output, smaps=not args.no_smaps,
                           numa=not args.no_numa, kernel_view=True)
        except KernelViewUnavailable as exc:
            kernel_view_notice(exc)
    return capture(args.target, args.output, smaps=not args.no_smaps, numa=not args.no_numa)
