"""Benchmark: the mitigation workbench (``vmascope lab compare``).

Run (kernels are fetched first if they are not cached; that is not timed):

    .venv/bin/python bench/bench_workbench.py [--kernels host,6.1,6.12,newest]

It times the default comparison as a user runs it (the CLI: every workload x every
strategy x the kernels, measured and predicted, with the overcommit 1 and 2 runs in the
microVMs and the what-if rules), target at most 5 minutes on this machine, and reports
the agreement found. Beside it, as the reference run side by side: the same scripts
replayed only through the model (what the prediction alone costs) and one bare executor
pass per kernel (what the real kernels alone cost), so the figure says where the time
goes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from vmascope.lab import backends, kernels  # noqa: E402
from vmascope.lab.workbench import scripts_for  # noqa: E402
from vmascope.workloads import names  # noqa: E402

TARGET_S = 300.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernels", default="host,6.1,6.12,newest")
    args = ap.parse_args()
    ks = kernels.resolve_list(args.kernels)  # fetched here, not timed
    with tempfile.TemporaryDirectory(prefix="vmascope-bench-") as tmp:
        out = Path(tmp) / "m.json"
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "vmascope", "lab", "compare",
                               "--kernel", args.kernels, "--json", "-o", str(out)],
                              capture_output=True, text=True, timeout=1800)
        wall = time.monotonic() - t0
        if proc.returncode not in (0, 1):
            raise SystemExit(f"lab compare failed: {proc.stderr.strip()}")
        data = json.loads(out.read_text())
    ws, ss = names()
    scripts = list(scripts_for(ws, ss).values())
    t1 = time.monotonic()
    for k in ks:
        backends.SimulatorBackend(backends.sim_release(k)).run(scripts)
    model = time.monotonic() - t1
    t2 = time.monotonic()
    for k in ks:
        backends.real_backend(k).run(scripts)
    real = time.monotonic() - t2
    ok, cells = data["agreement"]["agree"], data["agreement"]["cells"]
    print(f"lab compare (default: {len(ws)} workloads x {len(ss)} strategies x "
          f"{len(ks)} kernels, {cells} runs)")
    print(f"  wall                     {wall:7.1f} s   target <= {TARGET_S:.0f} s  "
          f"{'ok' if wall <= TARGET_S else 'MISSED'}")
    print(f"  prediction = measurement {ok} of {cells} runs")
    print(f"  reference, side by side: one pass of the {len(scripts)} scripts per kernel")
    print(f"    model only             {model:7.1f} s")
    print(f"    real kernels only      {real:7.1f} s (kernels one after another)")
    print(f"  lab compare / one real pass: {wall / real:.2f}x (it makes 2 to 3 passes)")
    return 0 if wall <= TARGET_S and ok == cells else 1


if __name__ == "__main__":
    sys.exit(main())
