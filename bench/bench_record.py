"""Benchmark: what recording costs the recorded program.

Run (as root: the recorder loads BPF programs):

    .venv/bin/python bench/bench_record.py [--cycles N] [--repeat K]

Runs bench/churn.c (N cycles of mmap, a write to a fresh page, mprotect, munmap: three
calls and one kept fault per cycle) and measures the time its cycles take (the program
times its own loop), median of K runs, side by side:

* plain                       (the baseline)
* under the BPF recorder, the events decoded into Events as they come  (<= 2x)
* under the BPF recorder, the raw records only read      (for information)
* under strace -f -ttt -k -o /dev/null                   (for information; strace
  unwinds every call's stack and is too slow for N cycles: it runs --strace-cycles, N/20
  by default, against a plain run of as many)

and, for the recorder, the time until the last event was decoded and the lost count.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

TARGET = 2.0
HERE = Path(__file__).resolve().parent


def build(out: Path) -> Path:
    exe = out / "churn"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(HERE / "churn.c")], check=True,
                   timeout=120)
    return exe


@contextlib.contextmanager
def churn(exe: Path, cycles: int, prefix: list[str] | None = None) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([*(prefix or []), str(exe), str(cycles)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "READY":
            raise RuntimeError("churn did not start")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("g")
    proc.stdin.flush()


def loop_time(proc: subprocess.Popen[str]) -> float:
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "DONE":
        raise RuntimeError(f"churn failed: {line}")
    return float(line[1])


def plain(exe: Path, cycles: int, prefix: list[str] | None = None) -> float:
    with churn(exe, cycles, prefix) as proc:
        go(proc)
        return loop_time(proc)


def recorded(exe: Path, cycles: int, decode: bool) -> tuple[float, float, int, int]:
    """(loop time, time until the last event was read, events, lost)."""
    from vmascope.trace.bpf import BpfRecorder

    with churn(exe, cycles) as proc, BpfRecorder([proc.pid], follow=False) as rec:
        t0 = time.perf_counter()
        go(proc)
        n = 0
        if decode:
            for _ in rec.events():
                n += 1
        else:
            for recs in rec.records():
                n += len(recs)
        drained = time.perf_counter() - t0
        stats = rec.stop()
        return loop_time(proc), drained, stats["events"], stats["lost"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--strace-cycles", type=int, default=0)
    args = ap.parse_args()
    from vmascope.trace import bpf

    problem = bpf.problem()
    if problem:
        print(f"bench_record: {problem}", file=sys.stderr)
        return 1
    bpf.loader_path()  # built before anything is timed
    work = Path(tempfile.mkdtemp(prefix="bench_record."))
    try:
        exe = build(work)
        base = statistics.median(plain(exe, args.cycles) for _ in range(args.repeat))
        rows = []
        for decode in (True, False):
            runs = [recorded(exe, args.cycles, decode) for _ in range(args.repeat)]
            loop = statistics.median(r[0] for r in runs)
            drained = statistics.median(r[1] for r in runs)
            rows.append((decode, loop, drained, runs[-1][2], max(r[3] for r in runs)))
        strace = None
        sn = args.strace_cycles or max(1, args.cycles // 20)
        if shutil.which("strace"):
            sbase = statistics.median(plain(exe, sn) for _ in range(args.repeat))
            strace = statistics.median(
                plain(exe, sn, ["strace", "-f", "-ttt", "-k", "-o", "/dev/null"])
                for _ in range(args.repeat))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n = args.cycles
    print(f"churn: {n} cycles (mmap, write a fresh page, mprotect, munmap), "
          f"median of {args.repeat}")
    print(f"  {'plain':<34} {base:8.3f} s  {1e6 * base / n:6.2f} us/cycle")
    ok = True
    for decode, loop, drained, events, lost in rows:
        what = "BPF recorder, decoded to Events" if decode else "BPF recorder, raw records"
        factor = loop / base
        mark = ""
        if decode:
            ok = factor <= TARGET and lost == 0
            mark = f"  (target <= {TARGET:.0f}x: {'ok' if ok else 'MISSED'})"
        print(f"  {what:<34} {loop:8.3f} s  {factor:5.2f}x{mark}")
        print(f"  {'  all events read after':<34} {drained:8.3f} s  "
              f"{events} events, {lost} lost")
    if strace is not None:
        print(f"  {f'plain, {sn} cycles':<34} {sbase:8.3f} s")
        print(f"  {f'strace -f -ttt -k, {sn} cycles':<34} {strace:8.3f} s  "
              f"{strace / sbase:5.2f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
