"""Starting a command stopped right after its exec, so that its fresh address space can be
read (a snapshot) and a recorder attached before it runs a single instruction of its own.

The child asks to be traced (PTRACE_TRACEME) and execs; the kernel stops it with SIGTRAP
once the new program is loaded (the executable, ld.so, the stack, the vdso: nothing of
ld.so's own work yet). :meth:`Tracee.detach_stopped` lets it go with a SIGSTOP, so that it
stays stopped, untraced, while strace -p or a BPF program attaches; :meth:`Tracee.resume`
sends SIGCONT.

ptrace requests must come from the thread that started the child (the kernel's tracer is
that thread): call :meth:`Tracee.start` and :meth:`Tracee.detach_stopped` from the same
thread. The child runs in a session (and process group) of its own, dies with its parent
(PR_SET_PDEATHSIG), and the context manager kills its whole group on the way out, on an
exception, SIGINT or SIGTERM.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from types import FrameType, TracebackType
from typing import Any, Self

from ..errors import VmascopeError

# include/uapi/linux/ptrace.h, include/uapi/linux/prctl.h
PTRACE_TRACEME = 0
PTRACE_DETACH = 17
PR_SET_PDEATHSIG = 1


class LaunchError(VmascopeError):
    """The command could not be started stopped (not found, ptrace refused)."""

    exit_code = 11


_libc: Any = None


def libc() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.ptrace.restype = ctypes.c_long
        _libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
        _libc.prctl.restype = ctypes.c_int
        _libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                                ctypes.c_ulong)
    return _libc


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """In a child (preexec_fn): be sent ``sig`` when the thread that forked us exits."""
    libc().prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def _traceme() -> None:
    lib = libc()
    lib.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if lib.ptrace(PTRACE_TRACEME, 0, None, None) != 0:
        os._exit(126)  # Popen then sees the exec fail as an exit, never a trace stop


def status_code(status: int) -> int:
    """A wait status as subprocess prints it: the exit code, or -signal."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


class Tracee:
    """A command stopped right after its exec (see the module's docstring)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.returncode: int | None = None
        self._thread = threading.get_ident()
        self._traced = True
        self._old: dict[int, Any] = {}

    @classmethod
    def start(cls, argv: Sequence[str], env: Mapping[str, str] | None = None,
              **popen_kw: Any) -> Tracee:
        """Start ``argv`` and return once it is stopped right after its exec.
        ``env`` replaces the environment; other keywords go to subprocess.Popen
        (stdout, stderr, cwd, ...)."""
        libc()  # loaded before the fork: the child only calls it
        try:
            popen = subprocess.Popen(list(argv), env=None if env is None else dict(env),
                                     # prctl and ptrace only: no lock a thread could hold
                                     preexec_fn=_traceme,  # noqa: PLW1509
                                     start_new_session=True,
                                     stdin=popen_kw.pop("stdin", subprocess.DEVNULL),
                                     **popen_kw)
        except OSError as e:
            raise LaunchError(f"{argv[0]}: cannot start it: {e.strerror or e}") from None
        self = cls(popen)
        try:
            _, status = os.waitpid(self.pid, 0)
            if not os.WIFSTOPPED(status):
                self.returncode = popen.returncode = status_code(status)
                if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 126:
                    raise LaunchError(f"{argv[0]}: ptrace(PTRACE_TRACEME) was refused "
                                      "(seccomp, or a ptrace policy such as Yama's)")
                raise LaunchError(f"{argv[0]}: exited before its exec stop "
                                  f"(status {self.returncode})")
            if os.WSTOPSIG(status) != signal.SIGTRAP:
                raise LaunchError(f"{argv[0]}: stopped by signal {os.WSTOPSIG(status)} "
                                  "instead of its exec")
        except BaseException:
            self.kill()
            raise
        return self

    # -- the stopped child --------------------------------------------------------------

    def detach_stopped(self) -> None:
        """Stop tracing it and leave it stopped (SIGSTOP), for a recorder to attach."""
        if threading.get_ident() != self._thread:
            raise RuntimeError("ptrace requests must come from the thread that started it")
        if not self._traced:
            return
        lib = libc()
        if lib.ptrace(PTRACE_DETACH, self.pid, None, ctypes.c_void_p(signal.SIGSTOP)) != 0:
            err = ctypes.get_errno()
            raise LaunchError(f"pid {self.pid}: PTRACE_DETACH failed: {os.strerror(err)}")
        self._traced = False
        # the SIGSTOP stops it as a group-stop: collect that notice
        _, status = os.waitpid(self.pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            self.returncode = self.popen.returncode = status_code(status)
            raise LaunchError(f"pid {self.pid} exited instead of stopping")

    def resume(self) -> None:
        """Let it run (SIGCONT)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)

    def wait(self, timeout: float | None = None) -> int | None:
        """Its exit code (-signal when killed), or None if it still runs at ``timeout``."""
        if self.returncode is not None:
            return self.returncode
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self.returncode
            if pid and (os.WIFEXITED(status) or os.WIFSIGNALED(status)):
                self.returncode = self.popen.returncode = status_code(status)
                return self.returncode
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def kill(self) -> None:
        """Kill it and its process group (its session), and reap it."""
        for target in (lambda: os.killpg(self.pid, signal.SIGKILL),
                       lambda: os.kill(self.pid, signal.SIGKILL)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                target()
        if self.returncode is None:
            self.wait(timeout=10)

    @property
    def alive(self) -> bool:
        return self.returncode is None and self.wait(timeout=0) is None

    # -- context manager ----------------------------------------------------------------

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.kill()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.kill()
        finally:
            for sig, old in self._old.items():
                signal.signal(sig, old)
            self._old.clear()
