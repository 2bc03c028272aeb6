"""The console script's head start: the /proc read a ``snapshot PID`` or ``analyze PID``
begins before the CLI's own modules load (see ``procfs/early.py``). This module imports
nothing but ``os`` until it knows there is a read to start."""

from __future__ import annotations

import os
from collections.abc import Sequence

# Options of snapshot and analyze that take a value (prefetch skips the value).
_VALUE_OPTIONS = frozenset({"--format", "--top", "--max-map-count", "--kernel", "--pid",
                            "-o", "--output", "--trace", "--previous"})


def prefetch(argv: Sequence[str]) -> None:
    """Start reading the /proc file a ``snapshot PID`` or ``analyze PID`` reads first, on
    the other core, while this process imports numpy and builds its parser: the kernel's
    text generation is most of these commands' time at a million VMAs. Only a head start
    (``procfs.early``): the command validates its arguments and reports every error as
    usual, and takes the read over only if it reads that very file."""
    if not argv or argv[0] not in ("snapshot", "analyze", "analyse"):
        return
    pid, words, i = None, set(), 1
    while i < len(argv):
        a = argv[i]
        if a in _VALUE_OPTIONS:
            if a == "--pid" and i + 1 < len(argv):
                pid = argv[i + 1]
            i += 2
            continue
        if a.startswith("-"):
            words.add(a.partition("=")[0])
        elif pid is None:
            pid = a
        i += 1
    capture = argv[0] == "snapshot" and ("-o" in argv or "--output" in argv)
    if pid is None or not pid.isdigit() or os.path.exists(pid) or capture or "--trace" in argv:
        return
    from .util import kernel_view_wanted

    keep, fields = True, None
    if argv[0] == "snapshot":
        if "--vmas" in words:
            return  # the VMAs are written as they are parsed: nothing to read ahead
        names: tuple[str, ...] = ("smaps",) if "--smaps" in words else ("maps",)
        # the summary of maps only counts; the kernel view and policies need the VMAs
        view = (True if "--kernel-view" in words
                else False if "--no-kernel-view" in words else None)
        keep = "--smaps" in words or "--numa" in words or kernel_view_wanted(view)
    else:
        from .kconst import ANALYSIS_SMAPS_FIELDS

        names, fields = ("smaps", "numa_maps"), ANALYSIS_SMAPS_FIELDS
    from .procfs import early

    early.start(int(pid), names, keep, fields)
