#!/usr/bin/env python3
"""Simulator speed and memory against the real kernel, on a GC-like op script.

    .venv/bin/python bench/bench_simulate.py [--ops 1000000] [--seed 1] [--skip-real]

A generated script reserves a heap with PROT_NONE and then, in random order, commits
ranges (mprotect rw-), touches them, decommits them (mprotect ---) and gives pages back
(madvise dontneed), ending with a few hundred thousand live VMAs. The same ops run

  * in the simulator (kernel = the running one), timed without and with parsing,
  * on the real kernel through the lab's native executor (vmascope.lab.executor), timed
    end to end (process start, reading the script, running it, reporting smaps), and
  * on the real kernel through bench/opsrun.c, a small C loop that times only the
    system calls and page touches (the stricter reference).

Memory: peak RSS of a fresh simulator process at two script sizes, per live VMA.
vm.max_map_count is raised for the real runs if it is too low, and restored after.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from vmascope.ops.language import Op, load_script, script_text  # noqa: E402

PAGE = 4096
REGIONS = 4
REGION_PAGES = 1 << 18  # 1 GiB each
BASE = 0x100000000  # arena-relative; the lab executor adds its arena base


def generate(n_ops: int, seed: int) -> list[Op]:
    """A GC-like script of exactly n_ops ops."""
    rng = random.Random(seed)
    ops: list[Op] = []
    for r in range(REGIONS):
        ops.append(Op("mmap", addr=BASE + r * REGION_PAGES * PAGE, length=REGION_PAGES * PAGE,
                      prot=0, flags=frozenset({"private", "anonymous", "fixed", "noreserve"})))
    committed: list[tuple[int, int]] = []  # (first page, pages) not yet decommitted
    state = bytearray(REGIONS * REGION_PAGES)  # 1: page is rw- (touching it is legal)
    rw = 1 | 2
    while len(ops) < n_ops:
        x = rng.random()
        if x < 0.34 or not committed:
            page = rng.randrange(REGIONS) * REGION_PAGES + (rng.randrange(REGION_PAGES - 8) & ~1)
            pages = rng.choice((1, 1, 2, 2, 3, 4))
            ops.append(Op("mprotect", addr=BASE + page * PAGE, length=pages * PAGE, prot=rw))
            state[page:page + pages] = b"\x01" * pages
            committed.append((page, pages))
        elif x < 0.70:
            page, pages = committed[rng.randrange(len(committed))]
            target = page + rng.randrange(pages)
            if state[target]:  # an overlapping decommit may have taken it back
                ops.append(Op("touch", addr=BASE + target * PAGE))
        elif x < 0.85:
            i = rng.randrange(len(committed))
            page, pages = committed[i]
            committed[i] = committed[-1]
            committed.pop()
            ops.append(Op("mprotect", addr=BASE + page * PAGE, length=pages * PAGE, prot=0))
            state[page:page + pages] = bytes(pages)
        else:
            page, pages = committed[rng.randrange(len(committed))]
            ops.append(Op("madvise", addr=BASE + page * PAGE, length=pages * PAGE,
                          advice="dontneed"))
    return ops


def _child_sim(path: str, kernel: str) -> None:
    """Run in a fresh process: parse + simulate, print timings, live VMAs and peak RSS."""
    from vmascope import host
    from vmascope.kernel.sim import simulate_ops

    text = Path(path).read_text()
    c0, t0 = time.process_time(), time.perf_counter()
    ops = load_script(text, path)
    c1, t1 = time.process_time(), time.perf_counter()
    del text
    before = _status_kib("VmRSS")
    result = simulate_ops(ops, host.epoch_for(kernel), max_map_count=10_000_000,
                          thp=host.machine_thp(kernel))
    c2, t2 = time.process_time(), time.perf_counter()
    peak = _status_kib("VmHWM")
    # Simulator state = peak during the run minus what the parsed ops already held.
    print(f"{t1 - t0:.3f} {t2 - t1:.3f} {result.map_count} {(peak - before) * 1024} "
          f"{len(result.errors)} {len(result.faults)} {peak * 1024} {c1 - c0:.3f} {c2 - c1:.3f}")


def _status_kib(field: str) -> int:
    """VmRSS / VmHWM of this process (a fresh mm after exec, unlike ru_maxrss)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def run_sim(path: Path, kernel: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child-sim", str(path), kernel],
                         capture_output=True, text=True, check=True, timeout=1800).stdout
    keys = ("parse", "sim", "vmas", "state", "errors", "faults", "peak", "parse_cpu",
            "sim_cpu")
    return dict(zip(keys, (float(x) for x in out.split())))


def run_lab_executor(ops: list[Op]) -> tuple[float, float, int, int]:
    from vmascope.lab import executor

    executor.executor_path()  # build outside the timing
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    (res,) = executor.run_on_host([ops], timeout=600)
    t1 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return t1 - t0, cpu, res.map_count, len(res.errors)


def run_opsrun(ops: list[Op], workdir: Path) -> tuple[float, float, int, int] | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    exe = workdir / "opsrun"
    subprocess.run([cc, "-O2", "-o", str(exe), str(HERE / "opsrun.c")], check=True,
                   timeout=120)
    lines = []
    for op in ops:
        if op.kind == "mmap":
            lines.append(f"M {op.addr} {op.length} {op.prot}")
        elif op.kind == "mprotect":
            lines.append(f"P {op.addr} {op.length} {op.prot}")
        elif op.kind == "touch":
            lines.append(f"T {op.addr} {int(op.write)}")
        elif op.kind == "madvise":
            lines.append(f"D {op.addr} {op.length}")
        else:
            raise ValueError(op.kind)
    data = workdir / "ops.txt"
    data.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([str(exe), str(data)], capture_output=True, text=True, timeout=600,
                          start_new_session=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip())
    secs, cpu, vmas, errs = proc.stdout.split()
    return float(secs), float(cpu), int(vmas), int(errs)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-sim":
        _child_sim(sys.argv[2], sys.argv[3])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-real", action="store_true", help="simulator only")
    args = ap.parse_args()
    kernel = os.uname().release

    ops = generate(args.ops, args.seed)
    small = generate(args.ops // 2, args.seed)
    work = Path(tempfile.mkdtemp(prefix="vmascope-bench-"))
    try:
        big_path, small_path = work / "gc.ops", work / "gc-half.ops"
        big_path.write_text(script_text(ops))
        small_path.write_text(script_text(small))
        print(f"script: {len(ops)} ops (seed {args.seed}), kernel {kernel}")

        big = run_sim(big_path, kernel)
        half = run_sim(small_path, kernel)
        real_lab = real_c = None
        if not args.skip_real:
            need = int(big["vmas"]) + 1000
            path = Path("/proc/sys/vm/max_map_count")
            old = int(path.read_text())
            try:
                if old < need:
                    path.write_text(str(need))
                real_lab = run_lab_executor(ops)
                real_c = run_opsrun(ops, work)
            finally:
                if int(path.read_text()) != old:
                    path.write_text(str(old))

        print()
        print("wall = elapsed seconds; cpu = CPU seconds of the process(es) (user + system),")
        print("the steadier measure on a shared machine. Ratios: against the C op loop (C)")
        print("and against the lab executor run end to end (lab), wall and cpu.")
        print(f"{'run':<40}{'wall':>8}{'cpu':>8}{'live VMAs':>11}{'errors':>8}"
              f"{'C wall':>8}{'C cpu':>8}{'lab wall':>9}{'lab cpu':>9}")

        def ratio(x: float, ref: tuple[float, float, int, int] | None, i: int) -> str:
            return f"{x / ref[i]:.2f}" if ref else "-"

        def row(name: str, wall: float, cpu: float, nv: float, ne: float) -> None:
            print(f"{name:<40}{wall:>8.2f}{cpu:>8.2f}{int(nv):>11}{int(ne):>8}"
                  f"{ratio(wall, real_c, 0):>8}{ratio(cpu, real_c, 1):>8}"
                  f"{ratio(wall, real_lab, 0):>9}{ratio(cpu, real_lab, 1):>9}")

        if real_c:
            row("real kernel: bench/opsrun.c op loop", *real_c)
        if real_lab:
            row("real kernel: lab executor, end to end", *real_lab)
        row("simulator, ops already parsed", big["sim"], big["sim_cpu"], big["vmas"],
            big["errors"])
        row("simulator, parse + simulate", big["parse"] + big["sim"],
            big["parse_cpu"] + big["sim_cpu"], big["vmas"], big["errors"])
        print()
        print("memory of the simulator state (VmHWM during the run minus VmRSS with the "
              "parsed ops loaded), fresh process per size:")
        for label, n, r in (("half script", len(small), half), ("full script", len(ops), big)):
            print(f"  {label:<12} {n:>8} ops {int(r['vmas']):>8} live VMAs  state "
                  f"{r['state'] / 2**20:7.1f} MiB = {r['state'] / max(r['vmas'], 1):.0f} B per "
                  f"live VMA   (process peak {r['peak'] / 2**20:.0f} MiB)")
        if big["faults"]:
            print(f"note: {int(big['faults'])} simulated faults")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
