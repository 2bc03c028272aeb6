"""Trials of the two things fuzzing does not reach: processes that vanish while they are
read, and signals that arrive while vmascope runs.

    python fuzz/trials.py vanishing --n 1000   # read processes that exit at ~200/s
    python fuzz/trials.py signals --n 200      # SIGINT/SIGTERM at random moments

vanishing
    Starts short-lived processes (each lives a few milliseconds) at about 200 per second
    and reads each with ``vmascope.snapshot`` while it exits. A read either gives a
    consistent snapshot (sorted, non-overlapping VMAs, at least one) or raises
    ProcessNotFound; anything else is a failure. One in ten is captured to a snapshot
    file instead: the file is then whole (it loads) or absent.

signals
    Runs ``vmascope snapshot PID -o FILE``, ``vmascope analyze DUMP -o FILE`` and
    ``vmascope analyze DUMP`` and sends SIGINT or SIGTERM after a random delay (0 to
    0.6 s). Each run must end with at most one line on stderr and no traceback, with
    0, 130 or 143 (or -SIGINT/-SIGTERM before the interpreter installed its handlers),
    and leave either the complete output file or nothing (no temporary file). A signal
    sent before vmascope's entry point ran (the interpreter's own start-up, and the import
    of the package's ``__init__`` that the entry point's module needs; seen in
    /proc/PID/status: only the entry point catches SIGTERM) is counted apart.

Exits 1 if any trial failed.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = os.environ.get("VMASCOPE_SRC", str(ROOT / "src"))
if SRC not in sys.path:
    sys.path.insert(0, SRC)

import numpy as np  # noqa: E402

import vmascope  # noqa: E402
from vmascope.errors import ProcessNotFound, VmascopeError  # noqa: E402
from vmascope.procfs.capture import capture  # noqa: E402

VMASCOPE = str(Path(sys.executable).parent / "vmascope")


def consistent(snap: object) -> str | None:
    """What is wrong with the snapshot, or None."""
    start, end = snap.start, snap.end  # type: ignore[attr-defined]
    if len(start) == 0:
        return "no mappings"
    if not (bool(np.all(end > start)) and bool(np.all(start[1:] >= end[:-1]))):
        return "overlapping or unsorted mappings"
    return None


def vanishing(n: int, seed: int) -> dict:
    rng = random.Random(seed)
    out: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vmascope-trials-") as tmp:
        for i in range(n):
            life = rng.choice(("0.001", "0.003", "0.005", "0.01"))
            proc = subprocess.Popen(["sleep", life])
            time.sleep(rng.random() * 0.004)
            try:
                if i % 10 == 0:
                    path = Path(tmp, "c.vmasnap")
                    try:
                        capture(proc.pid, path)
                        snap = vmascope.load(path)
                        out["captured"] += 1
                        why = consistent(snap)
                        if why:
                            failures.append(f"pid {proc.pid}: capture with {why}")
                        path.unlink()
                    finally:
                        left = os.listdir(tmp)
                        if left:
                            failures.append(f"capture left {left}")
                            for name in left:
                                os.unlink(Path(tmp, name))
                else:
                    snap = vmascope.snapshot(proc.pid)
                    out["read"] += 1
                    why = consistent(snap)
                    if why:
                        failures.append(f"pid {proc.pid}: snapshot with {why}")
            except ProcessNotFound:
                out["gone"] += 1
            except VmascopeError as exc:
                out[type(exc).__name__] += 1
                failures.append(f"pid {proc.pid}: {type(exc).__name__}: {exc}")
            except Exception as exc:  # noqa: BLE001 - a broken contract
                out["unexpected"] += 1
                failures.append(f"pid {proc.pid}: {type(exc).__name__}: {exc}")
            proc.wait()
            # about 200 processes per second
            spare = (i + 1) / 200 - (time.monotonic() - t0)
            if spare > 0:
                time.sleep(spare)
    return {"trials": n, "outcomes": dict(out), "failures": failures[:10],
            "failed": len(failures), "per_second": round(n / (time.monotonic() - t0))}


def entry_started(pid: int) -> bool:
    """Whether vmascope's entry point had run in ``pid``: it is what catches SIGTERM
    (Python itself leaves SIGTERM at its default), so SigCgt has that bit from then on."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return True  # it has exited: the signal did not come first


def signals(n: int, seed: int) -> dict:
    rng = random.Random(seed)
    out: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    early: list[str] = []
    sleeper = subprocess.Popen(["sleep", "3600"])
    try:
        with tempfile.TemporaryDirectory(prefix="vmascope-trials-") as tmp:
            d = Path(tmp)
            dump = d / "dump.txt"
            with open(f"/proc/{os.getpid()}/maps", "rb") as src:
                text = src.read()
            dump.write_bytes(text * 1)
            outdir = d / "out"
            outdir.mkdir()
            commands = [
                ("capture", [VMASCOPE, "snapshot", str(sleeper.pid), "-o", str(outdir / "f")]),
                ("report", [VMASCOPE, "analyze", str(dump), "--format", "html", "-o",
                            str(outdir / "f")]),
                ("stdout", [VMASCOPE, "analyze", str(dump), "--format", "json"]),
            ]
            for i in range(n):
                name, cmd = commands[i % len(commands)]
                sig = rng.choice((signal.SIGINT, signal.SIGTERM))
                delay = rng.random() * 0.6
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True)
                started = True
                try:
                    proc.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    started = entry_started(proc.pid)
                    proc.send_signal(sig)
                _, err = proc.communicate(timeout=120)
                rc = proc.returncode
                left = os.listdir(outdir)
                if not started and not left:
                    # the signal came while the interpreter itself was starting, before
                    # vmascope's entry point ran (Python prints its own traceback there)
                    out["before the entry point ran"] += 1
                    early.append(f"exit {rc}: {err.strip().splitlines()[-1][:80] if err.strip() else ''}")
                    continue
                ok = ("Traceback" not in err and err.count("\n") <= 1
                      and rc in (0, 130, 143, -signal.SIGINT, -signal.SIGTERM))
                if left not in ([], ["f"]):
                    ok = False
                if left == ["f"]:
                    if name == "capture":
                        try:
                            vmascope.load(outdir / "f")
                        except VmascopeError as exc:
                            ok = False
                            err += f" (output does not load: {exc})"
                    elif not (outdir / "f").read_text().rstrip().endswith("</html>"):
                        ok = False
                        err += " (partial report)"
                    os.unlink(outdir / "f")
                for extra in os.listdir(outdir):
                    os.unlink(outdir / extra)
                out[f"{name} exit {rc}"] += 1
                if not ok:
                    failures.append(f"{name} {signal.Signals(sig).name} after {delay:.3f}s: "
                                    f"exit {rc}, left {left}, stderr {err[-300:]!r}")
    finally:
        sleeper.kill()
        sleeper.wait()
    return {"trials": n, "outcomes": dict(sorted(out.items())), "failures": failures[:10],
            "failed": len(failures), "before_entry_samples": early[:5]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=("vanishing", "signals"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    res = (vanishing if args.kind == "vanishing" else signals)(args.n, args.seed)
    for k, v in res.items():
        print(f"{k}: {v}")
    return 1 if res["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
