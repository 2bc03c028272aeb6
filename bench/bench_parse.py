"""Benchmark: reading/parsing /proc/PID/maps and capturing smaps at 2,000,000 VMAs.

Run: .venv/bin/python bench/bench_parse.py [--vmas N] [--repeat K]

Starts bench/fragment.c (compiled here) to build a process with N VMAs (alternating RW
and PROT_NONE pages), raising vm.max_map_count for the run only (restored in a finally),
and measures side by side in the same run:

* parse /proc/PID/maps into a Snapshot            vs  cat /proc/PID/maps > /dev/null (<= 2x)
                                                  vs  pmap PID (>= 3x faster)
* capture with smaps to a snapshot file           vs  cat maps smaps > /dev/null (<= 2x)
                                                  vs  pmap -X PID (>= 10x faster)
* peak memory of the maps parse (child ru_maxrss growth) vs the maps text size (<= 2x)
* peak memory of the capture at N/10 and N VMAs (flat: does not grow with the text)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
SYSCTL = "/proc/sys/vm/max_map_count"


def build_fragment() -> Path:
    OUT.mkdir(exist_ok=True)
    exe = OUT / "fragment"
    src = HERE / "fragment.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


@contextlib.contextmanager
def map_count_at_least(n: int) -> Iterator[int]:
    old = int(Path(SYSCTL).read_text())
    raised = False
    try:
        if old < n:
            if os.geteuid() != 0:
                raise SystemExit(f"vm.max_map_count is {old}; need {n} (run as root)")
            Path(SYSCTL).write_text(str(n))
            raised = True
        yield old
    finally:
        if raised:
            Path(SYSCTL).write_text(str(old))


@contextlib.contextmanager
def fragmented(exe: Path, vmas: int) -> Iterator[int]:
    proc = subprocess.Popen([str(exe), str(vmas)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, start_new_session=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith(b"ready"):
            raise SystemExit("fragment failed to start")
        yield proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


def _cpu() -> float:
    """CPU seconds of this process (all threads) plus its waited-for children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(fn: Callable[[], object]) -> tuple[float, float]:
    c, t = _cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t, _cpu() - c


def paired(ref: Callable[[], object], ours: Callable[[], object], repeat: int
           ) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median (wall, cpu) of reference and ours, run alternately so that the load of a
    shared machine falls on both alike."""
    r, o = [], []
    for _ in range(repeat):
        r.append(measure(ref))
        o.append(measure(ours))
    med = lambda xs: (statistics.median(x[0] for x in xs), statistics.median(x[1] for x in xs))  # noqa: E731
    return med(r), med(o)


def run_cmd(argv: list[str], timeout: float = 1200) -> Callable[[], None]:
    def go() -> None:
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True, timeout=timeout)
    return go


# Peak RSS is read from VmHWM in /proc/self/status (per address space, so it starts
# afresh at exec; ru_maxrss would carry the parent's peak across fork and exec).
MEM_CHILD = r"""
import sys
from vmascope.procfs.live import read_process
from vmascope.procfs.capture import capture

def hwm():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

pid, what, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
base = hwm()
if what == "maps":
    snap = read_process(pid, smaps=False, numa=False)
    n = len(snap)
else:
    n = capture(pid, path, smaps=True, numa=False).map_count
print(n, hwm() - base)
"""


def peak_growth(pid: int, what: str, path: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", MEM_CHILD, str(pid), what, path],
                         capture_output=True, text=True, check=True, timeout=1200)
    n, grow = out.stdout.split()
    return int(n), int(grow)


def text_size(path: str) -> int:
    total = 0
    with open(path, "rb") as fh:
        while b := fh.read(1 << 20):
            total += len(b)
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vmas", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-pmap-x", action="store_true", help="skip the slow pmap -X run")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent / "src"))
    from vmascope.procfs.capture import capture
    from vmascope.procfs.live import read_process

    exe = build_fragment()
    rows: list[tuple[str, str, str, str]] = []
    tmp = tempfile.mkdtemp(prefix="vmascope-bench-")
    snapfile = os.path.join(tmp, "bench.vmasnap")
    try:
        with map_count_at_least(args.vmas + 100_000) as old:
            print(f"vm.max_map_count {old} -> {Path(SYSCTL).read_text().strip()} for the run")
            with fragmented(exe, args.vmas) as pid:
                maps = f"/proc/{pid}/maps"
                smaps = f"/proc/{pid}/smaps"
                n = len(read_process(pid, smaps=False, numa=False))
                maps_bytes = text_size(maps)
                smaps_bytes = text_size(smaps)
                print(f"fragment pid {pid}: {n} VMAs, maps {maps_bytes / 1e6:.0f} MB, "
                      f"smaps {smaps_bytes / 1e6:.0f} MB")

                (t_cat, c_cat), (t_parse, c_parse) = paired(
                    run_cmd(["cat", maps]),
                    lambda: read_process(pid, smaps=False, numa=False), args.repeat)
                (t_pmap, c_pmap), (t_parse2, _) = paired(
                    run_cmd(["pmap", str(pid)]),
                    lambda: read_process(pid, smaps=False, numa=False), 1)
                rows.append(("maps -> Snapshot", f"{t_parse:.2f} s",
                             f"cat maps {t_cat:.2f} s: {t_parse / t_cat:.2f}x",
                             "PASS" if t_parse <= 2 * t_cat else "FAIL (target <= 2x)"))
                rows.append(("  (cpu seconds)", f"{c_parse:.2f} s",
                             f"cat maps {c_cat:.2f} s: {c_parse / c_cat:.2f}x", "-"))
                rows.append(("", f"{t_parse2:.2f} s",
                             f"pmap {t_pmap:.2f} s: {t_pmap / t_parse2:.1f}x faster",
                             "PASS" if t_pmap >= 3 * t_parse2 else "FAIL (target >= 3x)"))
                rows.append(("  (cpu seconds)", "", f"pmap {c_pmap:.2f} s: "
                             f"{c_pmap / c_parse:.1f}x ours", "-"))

                (t_cat2, c_cat2), (t_cap, c_cap) = paired(
                    run_cmd(["cat", maps, smaps]),
                    lambda: capture(pid, snapfile, smaps=True, numa=False), args.repeat)
                file_mb = os.path.getsize(snapfile) / 1e6
                rows.append(("capture smaps -> file", f"{t_cap:.2f} s",
                             f"cat maps smaps {t_cat2:.2f} s: {t_cap / t_cat2:.2f}x",
                             "PASS" if t_cap <= 2 * t_cat2 else "FAIL (target <= 2x)"))
                rows.append(("  (cpu seconds)", f"{c_cap:.2f} s",
                             f"cat maps smaps {c_cat2:.2f} s: {c_cap / c_cat2:.2f}x", "-"))
                if args.skip_pmap_x:
                    rows.append(("", "", "pmap -X skipped", "-"))
                else:
                    (t_pmapx, c_pmapx), (t_cap2, _) = paired(
                        run_cmd(["pmap", "-X", str(pid)]),
                        lambda: capture(pid, snapfile, smaps=True, numa=False), 1)
                    rows.append(("", f"{t_cap2:.2f} s", f"pmap -X {t_pmapx:.2f} s: "
                                 f"{t_pmapx / t_cap2:.1f}x faster",
                                 "PASS" if t_pmapx >= 10 * t_cap2 else "FAIL (target >= 10x)"))
                    rows.append(("  (cpu seconds)", "", f"pmap -X {c_pmapx:.2f} s: "
                                 f"{c_pmapx / c_cap:.1f}x ours", "-"))
                (t_cat3, _), (t_capn, _) = paired(
                    run_cmd(["cat", maps, smaps, f"/proc/{pid}/numa_maps"]),
                    lambda: capture(pid, snapfile, smaps=True, numa=True), 1)
                rows.append(("capture +numa_maps (info)", f"{t_capn:.2f} s",
                             f"cat maps smaps numa_maps {t_cat3:.2f} s: {t_capn / t_cat3:.2f}x",
                             "-"))
                t_load, _ = measure(lambda: read_snapshot(snapfile))
                rows.append(("load snapshot file (info)", f"{t_load:.2f} s",
                             f"file {file_mb:.0f} MB for {(maps_bytes + smaps_bytes) / 1e6:.0f} "
                             "MB of text", "-"))

                n_m, grow_maps = peak_growth(pid, "maps", snapfile)
                rows.append(("peak memory, maps parse", f"{grow_maps / 1e6:.0f} MB",
                             f"maps text {maps_bytes / 1e6:.0f} MB: "
                             f"{grow_maps / maps_bytes:.2f}x",
                             "PASS" if grow_maps <= 2 * maps_bytes else "FAIL (target <= 2x)"))
                _, grow_cap = peak_growth(pid, "capture", snapfile)
            with fragmented(exe, args.vmas // 10) as small:
                small_smaps = text_size(f"/proc/{small}/smaps")
                _, grow_small = peak_growth(small, "capture", snapfile)
            flat = grow_cap <= max(2 * grow_small, grow_small + 32e6)
            rows.append(("peak memory, capture", f"{grow_cap / 1e6:.0f} MB",
                         f"smaps {smaps_bytes / 1e6:.0f} MB; at {args.vmas // 10} VMAs "
                         f"({small_smaps / 1e6:.0f} MB): {grow_small / 1e6:.0f} MB",
                         "PASS" if flat and grow_cap < 0.05 * smaps_bytes else "FAIL (flat)"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    w = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    print(f"{'measure':<{w[0]}}  {'vmascope':>{w[1]}}  {'reference (same run)':<{w[2]}}  target")
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:<{w[2]}}  {r[3]}")
    return 0 if all(not r[3].startswith("FAIL") for r in rows) else 1


def read_snapshot(path: str) -> None:
    from vmascope.procfs.load import load_target

    load_target(path)


if __name__ == "__main__":
    sys.exit(main())
