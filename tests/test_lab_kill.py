"""Killing `vmascope lab run` (SIGINT, SIGTERM, even SIGKILL) leaves no qemu and no executor behind."""

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


def _starttime(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[19])


def _orphans(since: int, want: str) -> list[int]:
    """Processes matching ``want`` started at or after ``since`` whose parent is gone
    (reparented to pid 1): what a lab run that died would leave behind."""
    out = []
    for pid, ppid in _ppids().items():
        try:
            if ppid == 1 and want in _exe(pid) and _starttime(pid) >= since and _alive(pid):
                out.append(pid)
        except OSError:
            pass
    return out


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


def _kill_lab_while_running(kernel: str, sig: int, want: str, *argv: str) -> None:
    args = argv or ("lab", "run", "exhaust", "--kernel", kernel)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmascope", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        since = _starttime(proc.pid)
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
        # nor anything started after the signal (a worker booting one more VM)
        assert not _orphans(since, want)
        # SIGKILL runs no handler: the kernel's parent-death signal does the cleaning
        assert proc.returncode == (-sig if sig == signal.SIGKILL else 128 + sig)
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_kill_host_run(sig: int) -> None:
    exe = str(executor.executor_path())
    _kill_lab_while_running("host", sig, exe)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_kill_microvm_run(sig: int) -> None:
    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("needs qemu-system-x86_64")
    kernels.fetch("6.1")
    _kill_lab_while_running("6.1", sig, "qemu-system-x86_64")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_kill_verify_on_several_kernels(sig: int) -> None:
    # lab verify runs kernels in worker threads; none of them may start a new VM
    # after the signal, and none of the running ones may survive it
    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("needs qemu-system-x86_64")
    kernels.fetch("6.1")
    kernels.fetch("newest")
    _kill_lab_while_running("", sig, "qemu-system-x86_64", "lab", "verify", "--kernel",
                            "host,6.1,newest", "--cases", "5000")
