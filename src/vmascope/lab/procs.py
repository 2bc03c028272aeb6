"""Child processes of the lab (qemu, executors): each in its own process group, and gone
when the lab is done, times out, fails, or is interrupted (SIGINT/SIGTERM)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

_lock = threading.Lock()
_live: dict[int, subprocess.Popen[bytes]] = {}


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.kill()


_stopping = threading.Event()

# util-linux setpriv sets PR_SET_PDEATHSIG and then execs the program, so the kernel
# kills qemu or the executor even when vmascope itself dies by SIGKILL (no handler runs
# then). The signal follows the thread that started the process; lab threads outlive
# the processes they start, which managed() kills on the way out.
_SETPRIV = shutil.which("setpriv")


def _with_death_signal(argv: Sequence[str]) -> list[str]:
    if _SETPRIV is None:
        return list(argv)
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]


@contextlib.contextmanager
def managed(argv: Sequence[str], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Popen in a new session (its own process group), killed with its group on exit.

    Once the lab is being stopped (a signal arrived), no new process is started: worker
    threads get a LabError instead of booting another VM."""
    from ..errors import LabError

    with _lock:
        if _stopping.is_set():
            raise LabError("interrupted")
        proc: subprocess.Popen[bytes] = subprocess.Popen(
            _with_death_signal(argv), start_new_session=True, **kwargs)
        _live[proc.pid] = proc
    try:
        yield proc
    finally:
        _kill_group(proc)
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
        with _lock:
            _live.pop(proc.pid, None)


def kill_all() -> None:
    """Kill every live lab process group (signal handlers, and a run that fails, call
    this)."""
    with _lock:
        victims = list(_live.values())
    for proc in victims:
        _kill_group(proc)


def stop() -> None:
    """Stop the lab: no new processes from now on, and kill the live ones."""
    _stopping.set()
    kill_all()


@contextlib.contextmanager
def signal_guard() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM first kill all lab processes, then interrupt
    the main thread (KeyboardInterrupt, SystemExit(143)). Only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _stopping.set()
        kill_all()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except BaseException:
        _stopping.set()  # an error or an interrupt: let no worker start anything new
        raise
    finally:
        kill_all()
        for s, h in old.items():
            signal.signal(s, h)
        _stopping.clear()
