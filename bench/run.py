"""Run every bench/bench_*.py in turn (each prints its own table); exit 1 if any fails.

usage: .venv/bin/python bench/run.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for script in sorted(here.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        rc = subprocess.run([sys.executable, str(script)]).returncode
        if rc != 0:
            failed.append(script.name)
    if failed:
        print("failed or missed a target: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
