"""A process whose mappings the kernel refuses: the one-line error says why and what to
do. A user's two refusals (another user's process, a process that is not dumpable) are
produced for real: forked readers and targets change their credentials, and a control
that the kernel grants sits beside each refusal."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import drop_to, forked, need_root

from vmascope import host

NOBODY = 65534
CAP_SYS_PTRACE = 19


@contextlib.contextmanager
def _target(uid: int | None, *, exec_sleep: bool = False) -> Iterator[int]:
    """A forked process that sleeps, as uid or as it is (None). A root process dropping
    to another uid is no longer dumpable (fs.suid_dumpable); one that then executes a
    program (exec_sleep) is dumpable again."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - in the child
        try:
            os.close(r)
            signal.alarm(60)  # bounded even if the test dies
            if uid is not None:
                drop_to(uid)
            os.write(w, b"x")
            if exec_sleep:
                os.execv("/bin/sleep", ["sleep", "60"])
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"x"
        if exec_sleep:  # the program is running when its name is
            deadline = time.monotonic() + 10
            while (open(f"/proc/{pid}/comm").read().strip() != "sleep"
                   and time.monotonic() < deadline):
                time.sleep(0.01)
        yield pid
    finally:
        os.close(r)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _reader(setup: Callable[[], None], *pids: int) -> list[tuple[int, str]]:
    """``vmascope snapshot PID`` for each pid, in a forked child after setup(): (exit
    code, stderr) of each."""
    from vmascope.cli import main

    with contextlib.redirect_stdout(io.StringIO()):  # the command's modules, imported
        assert main(["snapshot", str(os.getpid())]) == 0

    def run() -> bytes:
        setup()
        out = []
        for pid in pids:
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = main(["snapshot", str(pid)])
            out.append(json.dumps([rc, err.getvalue()]))
        return "\n".join(out).encode()

    return [tuple(json.loads(line)) for line in forked(run).decode().splitlines()]


def _one_line_denial(result: tuple[int, str], pid: int) -> str:
    code, err = result
    assert code == 4, err
    assert err.count("\n") == 1 and err.startswith("vmascope: error: "), err
    assert f"pid {pid}: permission denied reading /proc/{pid}/" in err and "Traceback" not in err
    return err


def test_a_user_reading_a_root_process_is_told_whose_it_is() -> None:
    need_root()
    with _target(None) as root_proc, _target(NOBODY, exec_sleep=True) as own:
        results = _reader(lambda: drop_to(NOBODY), root_proc, own)
    err = _one_line_denial(results[0], root_proc)
    assert "it runs as root (uid 0): run as root or as its owner" in err, err
    assert results[1][0] == 0, results[1]  # its own (dumpable) process it reads


def test_a_process_that_is_not_dumpable_is_named_so() -> None:
    need_root()
    with _target(NOBODY) as undumpable, _target(NOBODY, exec_sleep=True) as dumpable:
        results = _reader(lambda: drop_to(NOBODY), undumpable, dumpable)
    err = _one_line_denial(results[0], undumpable)
    assert "it is not dumpable" in err and "only root may read it" in err, err
    assert results[1][0] == 0, results[1]  # the same user's dumpable process: read


@pytest.mark.parametrize("ptrace, says", [
    (False, "refused to root without CAP_SYS_PTRACE: add it (in a container: "
            "--cap-add SYS_PTRACE), or a security module"),
    (True, "refused even with CAP_SYS_PTRACE: a security module (SELinux, AppArmor), a "
           "sandbox or a user namespace above this one protects it"),
])
def test_root_refused(tmp_path, monkeypatch, ptrace: bool, says: str) -> None:
    """Root refused: with or without CAP_SYS_PTRACE. This kernel lets root read every
    process it can see, so the capability and the uid are faked here."""
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "status").write_text("Uid:\t1000\t1000\t1000\t1000\n"
                                              "Gid:\t1000\t1000\t1000\t1000\n")
    monkeypatch.setattr(host, "_has_cap", lambda bit: ptrace and bit == CAP_SYS_PTRACE)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    host.set_roots(proc=tmp_path)
    try:
        assert host.read_access_advice(4242).startswith(says)
    finally:
        host.set_roots(proc="/proc")


def test_advice_without_a_status_file(tmp_path, monkeypatch) -> None:
    """A process gone between the refusal and the advice: the plain advice."""
    monkeypatch.setattr(host, "_has_cap", lambda bit: False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    host.set_roots(proc=tmp_path)
    try:
        assert host.read_access_advice(4242) == (
            "run as root, or as the process owner (the kernel's ptrace read check)")
    finally:
        host.set_roots(proc="/proc")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
