"""Reading /proc/PID files: large reads, errors translated once.

``OSError`` becomes :class:`ProcessNotFound` (ENOENT, ESRCH: no such pid, or it exited
while being read) or :class:`AccessDenied` (EACCES, EPERM; ``host.read_access_advice`` says why).
Big files (maps, smaps, numa_maps) are read by a thread into a few reused buffers while
the caller's sinks (parser, compressor) consume the previous buffer: the kernel's seq_file
text generation runs on one core, parsing and compression on the other.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ..errors import AccessDenied, KernelThread, ProcessNotFound, UsageError, VmascopeError
from . import early
from ._fastparse import fill

CHUNK = 1 << 20
Sink = Callable[[memoryview], object]


def as_pid(value: object) -> int:
    """A pid from an int or a string of digits; anything else is a usage error."""
    if isinstance(value, bool):
        raise UsageError(f"not a pid: {value!r}")
    if isinstance(value, int):
        pid = value
    elif isinstance(value, str) and value.strip().isdigit():
        pid = int(value.strip())
    else:
        raise UsageError(f"not a pid: {value!r} (expected a positive process id)")
    if pid <= 0:
        raise UsageError(f"not a pid: {value!r} (expected a positive process id)")
    return pid


def proc_path(pid: int, name: str) -> str:
    return f"/proc/{pid}/{name}"


def translate(exc: OSError, pid: int, path: str) -> VmascopeError:
    if exc.errno in (errno.ENOENT, errno.ESRCH):
        return ProcessNotFound(pid, "exited while being read" if exc.errno == errno.ESRCH else "")
    if exc.errno in (errno.EACCES, errno.EPERM):
        from .. import host

        return AccessDenied(pid, path, host.read_access_advice(pid))
    return VmascopeError(f"pid {pid}: cannot read {path}: {exc.strerror}")


def _raise(exc: OSError, pid: int, path: str) -> NoReturn:
    raise translate(exc, pid, path) from None


def open_proc(pid: int, name: str) -> int:
    path = proc_path(pid, name)
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        _raise(exc, pid, path)


def read_small(pid: int, name: str) -> bytes:
    """A small /proc file read whole."""
    path = proc_path(pid, name)
    fd = open_proc(pid, name)
    parts = []
    try:
        while True:
            b = os.read(fd, 1 << 16)
            if not b:
                break
            parts.append(b)
    except OSError as exc:
        _raise(exc, pid, path)
    finally:
        os.close(fd)
    return b"".join(parts)


def stream_fd(fd: int, sinks: Sequence[Sink], chunk: int = CHUNK) -> int:
    """Read ``fd`` to its end in a thread, handing each chunk to every sink in turn.

    Returns the byte count. OSError from the read is re-raised in the caller's thread.
    """
    free: queue.Queue[bytearray | None] = queue.Queue()
    full: queue.Queue[tuple[bytearray | None, int | BaseException]] = queue.Queue()
    for _ in range(3):
        free.put(bytearray(chunk))

    # seq_file hands out at most its internal buffer (a page or a few) per read(), so
    # the thread fills a whole chunk with many reads before handing it over: one
    # hand-off per megabyte, not one per page.
    low = max(chunk - (1 << 16), chunk // 2)

    def reader() -> None:
        try:
            while True:
                buf = free.get()
                if buf is None:
                    return
                filled, eof = fill(fd, buf, low)
                if filled:
                    full.put((buf, filled))
                if eof:
                    full.put((None, 0))
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            full.put((None, exc))

    thread = threading.Thread(target=reader, name="vmascope-read", daemon=True)
    thread.start()
    total = 0
    try:
        while True:
            buf, n = full.get()
            if buf is None:
                if isinstance(n, BaseException):
                    raise n
                break  # end of file
            assert isinstance(n, int)
            with memoryview(buf)[:n] as view:
                for sink in sinks:
                    sink(view)
            total += n
            free.put(buf)
    finally:
        free.put(None)
        thread.join()
    return total


def stream_proc(pid: int, name: str, sinks: Sequence[Sink], chunk: int = CHUNK) -> int:
    """Stream /proc/PID/NAME into ``sinks``; returns the byte count."""
    path = proc_path(pid, name)
    fd = open_proc(pid, name)
    try:
        return stream_fd(fd, sinks, chunk)
    except OSError as exc:
        _raise(exc, pid, path)
    finally:
        os.close(fd)


def parse_proc(pid: int, name: str, parser: Any, cpus: frozenset[int] | None = None) -> Any:
    """/proc/PID/NAME parsed by ``parser`` (a ``parse.TextParser``): the parser of the read
    ``procfs.early`` began at start-up if there is one, else this one (``feed_fd``: read
    and parsed in C, the reading thread on ``cpus``). Returns the parser that holds the
    text."""
    ahead = early.take(pid, name, parser.keep, parser.fields)
    path = proc_path(pid, name)
    if ahead is None:
        fd = open_proc(pid, name)
        try:
            parser.feed_fd(fd, cpus)
        except OSError as exc:
            _raise(exc, pid, path)
        finally:
            os.close(fd)
        return parser
    try:
        parser.adopt(ahead.wait())
    except OSError as exc:
        _raise(exc, pid, path)
    return parser


def check_alive(pid: int) -> None:
    """Raise ProcessNotFound if the process has gone (or is a zombie) after a read.

    A process that exits during a read of maps makes the kernel end the text early
    (m_start finds no mm) instead of failing, so a read is only trusted if the process
    still exists afterwards.
    """
    try:
        with open(proc_path(pid, "stat"), "rb") as fh:
            stat = fh.read()
    except OSError:
        raise ProcessNotFound(pid, "exited while being read") from None
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    if state in (b"Z", b"X"):
        raise ProcessNotFound(pid, "exited (zombie) while being read")


PF_KTHREAD = 0x00200000  # include/linux/sched.h


def check_not_kthread(pid: int) -> None:
    """Raise KernelThread if ``pid`` is a kernel thread (it has no mm: its maps are
    empty, which must not read as a process with 0 mappings)."""
    stat = read_small(pid, "stat")
    # pid (comm) state ppid pgrp session tty_nr tpgid flags ...: flags is field 9
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        flags = int(fields[6])
    except (IndexError, ValueError):
        return
    if flags & PF_KTHREAD:
        raise KernelThread(pid)


class Background:
    """Read a small /proc file in a thread (e.g. smaps_rollup, whose page-table walk
    costs as much kernel time as smaps without the text) while the caller streams."""

    def __init__(self, pid: int, name: str) -> None:
        self._result: bytes | VmascopeError = b""
        self._thread = threading.Thread(target=self._run, args=(pid, name), daemon=True,
                                        name=f"vmascope-{name}")
        self._thread.start()

    def _run(self, pid: int, name: str) -> None:
        try:
            self._result = read_small(pid, name)
        except VmascopeError as exc:
            self._result = exc

    def result(self) -> bytes:
        """The bytes read, or b"" if the read failed (the main read reports why)."""
        self._thread.join()
        return self._result if isinstance(self._result, bytes) else b""

