"""Benchmark: the real-kernel lab.

Run (kernels are fetched first if they are not cached; that is not timed):

    .venv/bin/python bench/bench_lab.py [--kernels host,6.1,6.12,newest] [--cases 2000]

It measures, per run:

* ``lab run seed seed-hack`` on all the kernels (the CLI, as a user runs it: one
  command, one boot of each Debian kernel, in parallel microVMs beside the host), and
  the same as two commands (two boots per kernel). Target: at most 20 s wall.
* verify throughput per kernel: ``--cases`` random scripts run on the real kernel and in
  the simulator and compared (no minimisation), all kernels in parallel as
  ``lab verify`` does. Target: at least 1,000 scripts a minute per kernel. The
  agreement found on the way is printed too.

Figures are printed beside those of a reference run (bench/bench_lab.reference.json,
written by ``--save-reference``) with their ratio, current / reference.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "bench_lab.reference.json"
sys.path.insert(0, str(HERE.parent / "src"))

from vmascope import host  # noqa: E402
from vmascope.lab import kernels, procs, verify  # noqa: E402


def time_cli(*args: str) -> float:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "vmascope", *args], capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"vmascope {' '.join(args)} failed: {proc.stderr.strip()}")
    return time.monotonic() - t0


def verify_throughput(k: kernels.Kernel, cases: int, seed: int) -> dict[str, Any]:
    heap = not k.is_host or host.can_set_brk()
    scripts = verify.random_scripts(cases, seed, heap=heap)
    v = verify.verify_kernel(k, scripts, minimise=0)
    return {"seconds": v.seconds, "scripts_per_minute": 60 * cases / v.seconds,
            "agree_percent": v.percent, "disagreements": len(v.disagreements),
            "release": v.release}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernels", default="host,6.1,6.12,newest")
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--save-reference", action="store_true")
    args = ap.parse_args()

    ks = kernels.resolve_list(args.kernels)  # fetches what is missing (not timed)
    # warm the executor build and the first qemu start (not timed)
    time_cli("lab", "run", "seed", "--kernel", args.kernels)

    figures: dict[str, float] = {}
    figures["lab run seed seed-hack (one command), wall s"] = time_cli(
        "lab", "run", "seed", "seed-hack", "--kernel", args.kernels)
    runs = [time_cli("lab", "run", name, "--kernel", args.kernels) for name in ("seed", "seed-hack")]
    figures["lab run seed; lab run seed-hack, wall s"] = sum(runs)

    with procs.signal_guard(), concurrent.futures.ThreadPoolExecutor(len(ks)) as pool:
        t0 = time.monotonic()
        results = list(pool.map(lambda k: verify_throughput(k, args.cases, args.seed), ks))
        wall = time.monotonic() - t0
    for k, r in zip(ks, results):
        figures[f"verify {k.name}: scripts/min"] = r["scripts_per_minute"]
        figures[f"verify {k.name}: agreement %"] = r["agree_percent"]
    figures["verify all kernels in parallel, wall s"] = wall

    ref: dict[str, float] = {}
    if REFERENCE.exists():
        ref = json.loads(REFERENCE.read_text()).get("figures", {})
    width = max(len(k) for k in figures)
    print(f"{'figure':<{width}}  {'now':>10}  {'reference':>10}  {'ratio':>6}")
    for key, value in figures.items():
        r = ref.get(key)
        ratio = f"{value / r:6.2f}" if r else "     -"
        rtext = f"{r:10.1f}" if r is not None else "         -"
        print(f"{key:<{width}}  {value:10.1f}  {rtext}  {ratio}")
    print(f"(targets: lab run seed seed-hack <= 20 s; verify >= 1000 scripts/min per kernel; "
          f"{os.cpu_count()} CPUs)")
    if args.save_reference:
        REFERENCE.write_text(json.dumps({"kernels": args.kernels, "cases": args.cases,
                                         "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                         "figures": figures}, indent=1) + "\n")
        print(f"reference written to {REFERENCE.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
