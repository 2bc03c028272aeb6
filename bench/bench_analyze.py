"""Benchmark: `vmascope analyze` on 200k, 1M and 2M VMA snapshots of a real process.

Run (as root, to raise vm.max_map_count for the run; it is restored afterwards):

    .venv/bin/python bench/bench_analyze.py [--sizes 200000,1000000,2000000] [--repeat 2]

A small C program (below, compiled here with cc) maps N pages and splits them into N VMAs
in one of two ways:

* ``dd``:  N adjacent rw-p pages, every other one MADV_DONTDUMP. All N-1 neighbours look
  identical in maps, so every pair goes through fragmentation and why-not-merged: the
  worst case for the analysis.
* ``alt``: a PROT_NONE reservation with every other page mprotected read-write (as the
  parse benchmark does): one huge reservation, no look-alike pairs.

For each size it measures, side by side in the same run: reading the process into a
Snapshot (maps only, and the default with smaps and numa_maps), and the analysis of each
Snapshot. Target: the analysis adds at most 1x the parse time, and grows linearly
(the last column, analysis time per VMA, stays flat).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SYSCTL = Path("/proc/sys/vm/max_map_count")

PROGRAM = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

int main(int argc, char **argv)
{
    long n = atol(argv[1]);
    const char *mode = argv[2];
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    alarm(1800);
    int dd = strcmp(mode, "dd") == 0;
    char *p = mmap(NULL, (n + 2) * page, dd ? PROT_READ | PROT_WRITE : PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    /* fence pages at both ends keep the run apart from its neighbours */
    mprotect(p, page, PROT_NONE);
    mprotect(p + (n + 1) * page, page, PROT_NONE);
    for (long i = 1; i <= n; i += 2) {
        int rc = dd ? madvise(p + i * page, page, MADV_DONTDUMP)
                    : mprotect(p + i * page, page, PROT_READ | PROT_WRITE);
        if (rc != 0) { perror("split"); return 1; }
    }
    printf("ready\n");
    fflush(stdout);
    getchar();
    return 0;
}
"""


def build(tmp: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("needs a C compiler (cc)")
    src = tmp / "split.c"
    src.write_text(PROGRAM)
    exe = tmp / "split"
    subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


@contextlib.contextmanager
def map_count_at_least(n: int) -> Iterator[None]:
    old = int(SYSCTL.read_text())
    raised = False
    try:
        if old < n:
            if os.geteuid() != 0:
                raise SystemExit(f"vm.max_map_count is {old}; {n} needed (run as root)")
            SYSCTL.write_text(f"{n}\n")
            raised = True
        yield
    finally:
        # Restore only if nobody else changed it meanwhile (another benchmark on the
        # machine may have raised it for its own run; lowering it under them would
        # make their mmap/mprotect calls fail).
        if raised and int(SYSCTL.read_text()) == n:
            SYSCTL.write_text(f"{old}\n")


@contextlib.contextmanager
def split_process(exe: Path, n: int, mode: str) -> Iterator[int]:
    proc = subprocess.Popen([str(exe), str(n), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None
        if not proc.stdout.readline().startswith(b"ready"):
            raise SystemExit(f"the split program failed for {n} VMAs ({mode})")
        yield proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=120)


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(repeat):
        result = None
        gc.collect()
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="200000,1000000,2000000")
    ap.add_argument("--modes", default="dd,alt")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = args.modes.split(",")

    import vmascope
    from vmascope.analysis import analyze

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(Path(tmp))
        with map_count_at_least(max(sizes) + 10_000):
            for mode in modes:
                for n in sizes:
                    with split_process(exe, n, mode) as pid:
                        t_maps, snap_maps = best(
                            lambda: vmascope.snapshot(pid, smaps=False, numa=False),
                            args.repeat)
                        count = snap_maps.map_count
                        t_an_maps, _ = best(lambda: analyze(snap_maps), args.repeat)
                        del snap_maps
                        t_smaps, snap = best(lambda: vmascope.snapshot(pid), args.repeat)
                        t_an, a = best(lambda: analyze(snap), args.repeat)
                        pairs, kinds = a.why.pairs, a.why.kinds
                        del snap, a
                    rows.append((mode, count, pairs, kinds, t_maps, t_an_maps, t_smaps, t_an))
                    print(f"  done: {mode} {count:,} VMAs", file=sys.stderr, flush=True)

    head = (f"{'mode':<4} {'VMAs':>10} {'pairs':>10} {'kinds':>5} | {'maps':>7} "
            f"{'analyze':>7} {'ratio':>5} | {'smaps':>7} {'analyze':>7} {'ratio':>5} | "
            f"{'us/VMA':>6}")
    print("parse = vmascope.snapshot(pid) maps only / with smaps+numa_maps; seconds, best "
          f"of {args.repeat}; ratio = analysis / parse (target <= 1.0)")
    print(head)
    print("-" * len(head))
    for mode, count, pairs, kinds, t_maps, t_an_maps, t_smaps, t_an in rows:
        print(f"{mode:<4} {count:>10,} {pairs:>10,} {kinds:>5} | {t_maps:>7.3f} "
              f"{t_an_maps:>7.3f} {t_an_maps / t_maps:>5.2f} | {t_smaps:>7.3f} {t_an:>7.3f} "
              f"{t_an / t_smaps:>5.2f} | {1e6 * t_an / count:>6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
