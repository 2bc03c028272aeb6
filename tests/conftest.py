"""Shared test set-up.

Under CI (CI=true) as root nothing may skip: a test that needs root, a compiler, qemu or
a real kernel must run there, so a skip is turned into a failure.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

PROGRAMS = Path(__file__).parent / "programs"

STRICT = os.environ.get("CI") == "true" and os.geteuid() == 0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI as root, which is a failure: {reason}"


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):  # type: ignore[no-untyped-def]
    """Leave no folder in the temporary directory: the test folders go at the end of the
    session (tmp_path_retention_policy = none); so does their parent when it is empty."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    base = getattr(factory, "_basetemp", None)
    if base is None:
        return
    for folder in (Path(base), Path(base).parent):
        with contextlib.suppress(OSError):
            folder.rmdir()


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


# -- process handling ---------------------------------------------------------------------


class Proc:
    def __init__(self, popen: subprocess.Popen[bytes], first_line: str, output: str) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.first_line = first_line
        self.output = output  # stdout up to and including the ready line


def kill_group(popen: subprocess.Popen[bytes], timeout: float) -> None:
    """Kill a child's whole session, reap it and close its pipes."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)
    popen.wait(timeout=timeout)
    for stream in (popen.stdout, popen.stderr):
        if stream is not None:
            stream.close()


@contextlib.contextmanager
def running(cmd: Sequence[str], ready: str, timeout: float = 60.0,
            cwd: Path | None = None, env: dict[str, str] | None = None) -> Iterator[Proc]:
    """Start ``cmd`` in its own session (``env``: added to this one's) and wait for a
    stdout line starting with ``ready``; the whole group is killed afterwards."""
    popen = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd,
                             env=None if env is None else {**os.environ, **env})
    try:
        line, output = wait_line(popen, ready, timeout)
        yield Proc(popen, line, output)
    finally:
        kill_group(popen, timeout=30)


def wait_line(popen: subprocess.Popen[bytes], ready: str, timeout: float) -> tuple[str, str]:
    assert popen.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(popen.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    fd = popen.stdout.fileno()
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            text = buf.decode(errors="replace")
            for line in text.splitlines():
                if line.startswith(ready):
                    return line, text
    finally:
        sel.close()
    err = popen.stderr.read().decode(errors="replace") if popen.poll() is not None else ""
    raise AssertionError(f"{popen.args}: no {ready!r} line in {timeout} s; "
                         f"stdout {buf[-500:]!r}; stderr {err[-1000:]!r}")


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        _wait_stopped(pid)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _wait_stopped(pid: int) -> None:
    for _ in range(200):
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} did not stop")


def read_stopped(pid: int) -> tuple[Any, int]:
    """(snapshot, line count of /proc/PID/maps) with the process stopped in between."""
    import vmascope

    with stopped(pid):
        snap = vmascope.load(pid)
        with open(f"/proc/{pid}/maps", "rb") as fh:
            lines = fh.read().count(b"\n")
    return snap, lines


def drop_to(uid: int) -> None:
    """This process takes uid (and the same gid), with no supplementary groups."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def forked(fn: Callable[[], bytes]) -> bytes:
    """Run ``fn`` in a forked child (which may change its credentials); what it returns
    comes back. The child must end cleanly: an exception in it fails the test."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - in the child
        code = 99
        try:
            os.close(r)
            os.write(w, fn())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    return data


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


@contextlib.contextmanager
def python_child(code: str, *args: str) -> Iterator[tuple[int, str]]:
    """Run ``python -c code args`` in its own session; it prints one line and stops itself
    (SIGSTOP). Yields (pid, that line) while it is stopped; kills the group afterwards."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=60)
        sel.close()
        line = proc.stdout.readline().decode() if ready else ""
        if not line:
            pytest.fail("child failed: " + proc.stderr.read().decode(errors="replace"))
        _, status = os.waitpid(proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        yield proc.pid, line
    finally:
        kill_group(proc, timeout=10)
