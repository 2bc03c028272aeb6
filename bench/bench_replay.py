"""Benchmark: replaying a recorded trace through the model.

Run (as root, to record with BPF; without root the trace is recorded with strace):

    .venv/bin/python bench/bench_replay.py [--scale A,B,C] [--repeat K]

Records tests/programs/frag3.c with A, B and C (default 20000,20000,5000: about 60,000
VMAs at the end, every event a mapping change; vm.max_map_count is raised for the
recording when it is below 70,000, and restored), then measures, median of K runs:

* read:       the trace file into ops (the op language's parser)
* replay:     the ops through the model from the first snapshot, with attribution
              (target: read + replay >= 200,000 events a second)
* attribute:  the end state's VMAs to call sites and causes (per VMA, not per event)

and beside them the reference: frag3's own run on the real kernel (its wall time), so
the ratio says how much slower the model replays than the kernel ran.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 200_000
NEED_MAP_COUNT = 70_000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="20000,20000,5000")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from vmascope import host
    from vmascope.trace.parse import read_trace
    from vmascope.trace.replay import replay
    from vmascope.trace.sites import SiteNamer, attribute

    work = Path(tempfile.mkdtemp(prefix="vmascope-bench-replay."))
    old = host.max_map_count()
    try:
        exe = work / "frag3"
        subprocess.run(["cc", "-O0", "-fno-inline", "-fno-omit-frame-pointer", "-o", str(exe),
                        str(ROOT / "tests" / "programs" / "frag3.c")], check=True, timeout=120)
        scale = args.scale.split(",")
        if old is not None and old < NEED_MAP_COUNT and os.geteuid() == 0:
            host.set_max_map_count(NEED_MAP_COUNT)
        t0 = time.perf_counter()
        subprocess.run([str(exe), *scale], check=True, timeout=300, stdout=subprocess.DEVNULL)
        kernel_s = time.perf_counter() - t0
        trace = work / "frag3.trace"
        rec = [sys.executable, "-m", "vmascope", "record", "-o", str(trace)]
        if os.geteuid() != 0:
            rec.append("--strace")
        subprocess.run([*rec, "--", str(exe), *scale], check=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                       stdout=subprocess.DEVNULL)
        reads, replays, attrs = [], [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            tr = read_trace(trace)
            t1 = time.perf_counter()
            rep = replay(tr)
            t2 = time.perf_counter()
            att = attribute(rep, SiteNamer(tr))
            t3 = time.perf_counter()
            reads.append(t1 - t0)
            replays.append(t2 - t1)
            attrs.append(t3 - t2)
        events = int(tr.header["events"])
        r, p, a = (statistics.median(x) for x in (reads, replays, attrs))
        assert rep.comparison is not None
        rate = events / (r + p)
        print(f"frag3 {','.join(scale)}: {events:,} events, {len(tr.ops):,} ops, "
              f"{len(rep.snapshot):,} VMAs at the end, agreement "
              f"{rep.comparison.agreement:.2f}%, top site {att.sites[0].key}")
        print(f"  read       {r:7.3f} s  {events / r:>11,.0f} events/s")
        print(f"  replay     {p:7.3f} s  {events / p:>11,.0f} events/s")
        print(f"  attribute  {a:7.3f} s  ({len(rep.snapshot) / a:,.0f} VMAs/s)")
        print(f"  read + replay: {rate:,.0f} events/s (target {TARGET:,}): "
              f"{'met' if rate >= TARGET else 'NOT met'}")
        print(f"  the real kernel ran the program in {kernel_s:.3f} s: the model replays it "
              f"{(r + p) / kernel_s:.1f}x slower")
        return 0
    finally:
        if old is not None and host.max_map_count() != old and os.geteuid() == 0:
            host.set_max_map_count(old)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
