"""Running strace on live processes: :class:`StraceRecorder`, and the clean-up of a strace
an earlier run could not stop."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from ..errors import VmascopeError
from ..model import Snapshot
from .events import Event
from .strace import ParseStats, parse_strace
from .strace_syntax import TRACED_CALLS

TMP_PREFIX = "vmascope-strace-"


class StraceError(VmascopeError):
    """strace could not record (not installed, not permitted, it failed)."""

    exit_code = 11


class StraceUnavailable(StraceError):
    def __init__(self) -> None:
        super().__init__("strace is not installed (apt-get install strace)")


class StraceNotPermitted(StraceError):
    def __init__(self, pid: int) -> None:
        super().__init__(
            f"pid {pid}: strace may not attach (ptrace not permitted): run as root or as "
            "the process owner, and see /proc/sys/kernel/yama/ptrace_scope")


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (/proc/PID/stat field 22), None if gone
    (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def runtime_dir() -> Path:
    """Where the pid files of running straces live: $XDG_RUNTIME_DIR/vmascope, else the
    cache directory."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base) and os.access(base, os.W_OK):
        p = Path(base, "vmascope")
        p.mkdir(exist_ok=True)
        return p
    from ..util import cache_dir

    return cache_dir("run")


def reap_stale() -> list[int]:
    """Kill straces that an earlier run started and could not stop (it was SIGKILLed):
    a pid file whose owner is gone and whose strace still runs. Removes their files and
    temporary directories. Returns the pids killed."""
    killed = []
    for f in runtime_dir().glob("strace-*.pid"):
        try:
            fields = f.read_text().rstrip("\n").split(" ", 4)
            owner, owner_start, pid, pid_start = (int(x) for x in fields[:4])
            tmp = fields[4] if len(fields) > 4 else ""
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                f.unlink()
            continue
        if _start_time(owner) == owner_start:
            continue  # its owner still runs and will stop it
        if _start_time(pid) == pid_start and _comm(pid) == "strace":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        if os.path.basename(tmp).startswith(TMP_PREFIX) and os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            f.unlink()
    return killed


def _tail(path: Path, running: Any, poll: float = 0.05) -> Iterator[str]:
    """The lines of a file another process is writing, until ``running()`` is false and
    everything is read."""
    with open(path, "rb") as fh:
        buf = b""
        while True:
            alive = running()
            chunk = fh.read(1 << 20)
            if chunk:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
                continue
            if not alive:
                break
            time.sleep(poll)
        if buf:
            yield buf.decode(errors="replace")


class StraceRecorder:
    """Record the mapping calls of running processes with ``strace -f -p``.

    ``strace -f -ttt -k -yy -q -o LOG -e trace=<TRACED_CALLS> -p PID...`` (``-f`` attaches
    every existing thread of each PID, and follows new ones; ``-q``, not ``-qq``, so that
    a process killed by a signal leaves its ``+++ killed by +++`` line: its exit). It
    runs at most
    ``duration`` seconds (then it is interrupted: strace detaches and the targets go on),
    dies with the thread that started it (PR_SET_PDEATHSIG, SIGTERM: strace detaches),
    is stopped by the context manager on exceptions, SIGINT and SIGTERM, and leaves a pid
    file so that the next start kills it if all of that failed (:func:`reap_stale`).

    Use: ``with StraceRecorder([pid], duration=10) as rec: for ev in rec.events(): ...``
    (:meth:`start` returns once strace has attached every thread). ``rec.stats`` is the
    log's :class:`ParseStats`; ``log`` keeps the log at that path (a temporary file
    otherwise). ``maps`` (a Snapshot or module path -> load base) places the ``-k``
    frames of modules mapped before the recording started: it is one address space,
    the first target's (and its fork children's).
    """

    def __init__(self, pids: Sequence[int], *, duration: float | None = 60.0,
                 strace: str | None = None, log: str | os.PathLike[str] | None = None,
                 calls: Sequence[str] = TRACED_CALLS, stack: bool = True,
                 maps: Snapshot | Mapping[str, int] | None = None,
                 attach_timeout: float = 15.0) -> None:
        if not pids:
            raise VmascopeError("no process to record")
        self.pids = [int(p) for p in pids]
        self.duration = duration
        self.strace = strace
        self.calls = tuple(calls)
        self.stack = stack
        self.maps = maps
        self.attach_timeout = attach_timeout
        self.stats = ParseStats()
        self._keep_log = log is not None
        self._dir: str | None = None
        self.log: Path | None = Path(log) if log is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.tgids: dict[int, int] = {}
        self._pidfile: Path | None = None
        self._timer: threading.Timer | None = None
        self._old: dict[int, Any] = {}

    def executable(self) -> str:
        exe = self.strace or shutil.which("strace")
        if exe is None or not os.access(exe, os.X_OK):
            raise StraceUnavailable()
        return exe

    def command(self) -> list[str]:
        assert self.log is not None
        cmd = [self.executable(), "-f", "-ttt", "-yy", "-q", "-o", str(self.log),
               "-e", "trace=" + ",".join("?" + c for c in self.calls)]
        if self.stack:
            cmd.append("-k")
        for pid in self.pids:
            cmd += ["-p", str(pid)]
        return cmd

    def _threads(self) -> dict[int, int]:
        from ..errors import ProcessNotFound

        tgids = {}
        for pid in self.pids:
            try:
                tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
            except FileNotFoundError:
                raise ProcessNotFound(pid) from None
            except PermissionError:
                raise StraceNotPermitted(pid) from None
            tgids.update({t: pid for t in tids})
        return tgids

    def start(self) -> None:
        """Start strace and return once it traces every thread of the targets."""
        self.executable()  # StraceUnavailable before anything starts
        reap_stale()
        self.tgids = self._threads()
        self._dir = tempfile.mkdtemp(prefix=TMP_PREFIX)
        if self.log is None:
            self.log = Path(self._dir, "strace.log")
        err_path = Path(self._dir, "stderr")
        from .launch import die_with_parent, libc

        libc()
        with open(err_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, start_new_session=True,
                # only prctl between fork and exec (no lock a thread could hold)
                preexec_fn=lambda: die_with_parent(signal.SIGTERM))  # noqa: PLW1509
        self._pidfile = runtime_dir() / f"strace-{self.proc.pid}.pid"
        self._pidfile.write_text(f"{os.getpid()} {_start_time(os.getpid())} "
                                 f"{self.proc.pid} {_start_time(self.proc.pid)} "
                                 f"{self._dir}\n")
        try:
            self._wait_attached(err_path)
        except BaseException:
            self.stop()
            raise
        if self.duration is not None:
            self._timer = threading.Timer(self.duration, self._interrupt)
            self._timer.daemon = True
            self._timer.start()

    def _wait_attached(self, err_path: Path) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.attach_timeout
        want = set(self.tgids)
        while True:
            if self.proc.poll() is not None:
                self._failed(err_path)
            traced = set()
            for tid, pid in self.tgids.items():
                try:
                    with open(f"/proc/{pid}/task/{tid}/status") as fh:
                        for line in fh:
                            if line.startswith("TracerPid:"):
                                if int(line.split()[1]) == self.proc.pid:
                                    traced.add(tid)
                                break
                except OSError:
                    traced.add(tid)  # gone: nothing to wait for
            if traced >= want:
                return
            if time.monotonic() > deadline:
                raise StraceError(f"strace did not attach to every thread of "
                                  f"{', '.join(map(str, self.pids))} in "
                                  f"{self.attach_timeout:g} s")
            time.sleep(0.01)

    def _failed(self, err_path: Path) -> None:
        from ..errors import ProcessNotFound

        text = err_path.read_text(errors="replace").strip()
        first = text.splitlines()[0] if text else f"exit status {self.proc.returncode if self.proc else '?'}"
        m = re.search(r"ptrace\(PTRACE_\w+, (\d+)\): (.*)", text)
        if m and "not permitted" in m.group(2):
            raise StraceNotPermitted(int(m.group(1)))
        if m and "No such process" in m.group(2):
            raise ProcessNotFound(int(m.group(1)))
        raise StraceError(f"strace failed: {first}")

    def _interrupt(self) -> None:
        """Ask strace to detach and exit (SIGINT)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def events(self) -> Iterator[Event]:
        """The Events of the log, as strace writes them, until strace exits (the
        duration passed, :meth:`stop`, or every target exited)."""
        if self.proc is None:
            self.start()
        assert self.log is not None
        while not self.log.exists() and self.running():
            time.sleep(0.01)
        if not self.log.exists():
            return
        yield from parse_strace(_tail(self.log, self.running), str(self.log),
                                tgids=self.tgids, maps=self.maps, stats=self.stats)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop strace (SIGINT: it detaches; SIGKILL after ``timeout``), remove its files."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.proc is not None:
            self._interrupt()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(timeout=timeout)
        if self._pidfile is not None:
            with contextlib.suppress(OSError):
                self._pidfile.unlink()
            self._pidfile = None
        if self._dir is not None:
            for f in Path(self._dir).iterdir():
                if not (self._keep_log and f == self.log):
                    f.unlink()
            with contextlib.suppress(OSError):
                os.rmdir(self._dir)
            self._dir = None

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._on_signal)
        try:
            if self.proc is None:
                self.start()
        except BaseException:
            self._restore()
            raise
        return self

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def _restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self._restore()


