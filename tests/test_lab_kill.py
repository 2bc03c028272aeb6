"""Killing `vmascope lab run` (SIGINT, SIGTERM) leaves no qemu and no executor behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from vmascope.lab import executor, kernels

pytestmark = [pytest.mark.slow]


def _ppids() -> dict[int, int]:
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        out[int(name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _descendants(root: int) -> set[int]:
    ppids = _ppids()
    found: set[int] = set()
    frontier = {root}
    while frontier:
        kids = {p for p, pp in ppids.items() if pp in frontier and p not in found}
        found |= kids
        frontier = kids
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _kill_lab_while_running(kernel: str, sig: int, want: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmascope", "lab", "run", "exhaust", "--kernel", kernel],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        seen: set[int] = set()
        while time.monotonic() < deadline:
            seen = _descendants(proc.pid)
            if any(want in _exe(p) for p in seen):
                break
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.05)
        else:
            pytest.fail(f"no {want} process appeared")
        time.sleep(0.3)
        seen |= _descendants(proc.pid)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        time.sleep(0.5)
        survivors = [(p, _exe(p)) for p in seen if _alive(p)]
        assert not survivors, survivors
        assert proc.returncode == 128 + sig
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_kill_host_run(sig: int) -> None:
    exe = str(executor.executor_path())
    _kill_lab_while_running("host", sig, exe)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_kill_microvm_run(sig: int) -> None:
    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("needs qemu-system-x86_64")
    kernels.fetch("6.1")
    _kill_lab_while_running("6.1", sig, "qemu-system-x86_64")
