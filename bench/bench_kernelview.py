"""Benchmark: the kernel view (the BPF task_vma reader) at 200,000 VMAs.

Run (as root: the reader loads a BPF program; vm.max_map_count is raised for the run
only when it is below the count, and restored afterwards):

    .venv/bin/python bench/bench_kernelview.py [--vmas N] [--repeat K]

Starts bench/fragment.c with N VMAs and measures side by side in the same run:

* the reader (the compiled loader, its binary records to /dev/null)
                                                 vs  cat /proc/PID/maps > /dev/null (<= 2x)
* the reader through vmascope (records into numpy) and the reader's --text output, for
  information
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_parse import build_fragment, map_count_at_least

TARGET = 2.0


def timed(cmd: list[str], repeat: int) -> float:
    """Median wall time of ``cmd`` with its output to /dev/null."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True, timeout=300)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vmas", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    from vmascope import host
    from vmascope.procfs import kview

    problem = host.kernel_view_problem()
    if problem:
        print(f"bench_kernelview: {problem}", file=sys.stderr)
        return 1
    exe = str(kview.reader_path())
    fragment = build_fragment()
    with map_count_at_least(args.vmas + 1000) as old:
        proc = subprocess.Popen([str(fragment), str(args.vmas)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("ready"):
                print(f"bench_kernelview: fragment did not start: {line!r}", file=sys.stderr)
                return 1
            pid = proc.pid
            text_maps = Path(f"/proc/{pid}/maps").read_text()
            maps = text_maps.count("\n")
            gate = text_maps.count("[vsyscall]")
            now = Path("/proc/sys/vm/max_map_count").read_text().strip()
            if str(old) != now:
                print(f"vm.max_map_count {old} -> {now} for the run")
            cat = timed(["cat", f"/proc/{pid}/maps"], args.repeat)
            reader = timed([exe, str(pid)], args.repeat)
            text = timed([exe, str(pid), "--text"], args.repeat)
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                recs = kview.read_records(pid)
                times.append(time.perf_counter() - t0)
            python = statistics.median(times)
        finally:
            proc.kill()
            proc.wait(timeout=60)
    ok = len(recs) == maps - gate and reader <= TARGET * cat
    print(f"{maps:,} VMAs in /proc/{pid}/maps, {len(recs):,} read by the kernel view")
    print(f"{'what':<44} {'median s':>9} {'x cat':>6}")
    for what, t in (("cat /proc/PID/maps > /dev/null", cat),
                    (f"kview PID (binary) > /dev/null  [<= {TARGET:g}x]", reader),
                    ("kview PID --text > /dev/null", text),
                    ("procfs.kview.read_records (numpy)", python)):
        print(f"{what:<44} {t:>9.4f} {t / cat:>6.2f}")
    print("target met" if ok else "TARGET MISSED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
