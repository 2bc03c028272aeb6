"""The cheap per-process figures a host-wide reading needs: map count, RSS, comm.

A host reading looks at every process, so it reads nothing it does not need: the map
count is the number of lines of /proc/PID/maps (no smaps, no parsing: the C extension's
``fill`` reads with the GIL released and ``bytes.count`` counts the newlines), RSS comes
from statm and the start time from stat (a pid and its start time name one process, even
when the pid is reused).

Processes exit all the time: a vanished process is ``None``, never an error. A process
that may not be read (another user's, without root) raises :class:`AccessDenied`.
"""

from __future__ import annotations

import dataclasses
import errno
import os

from ..errors import AccessDenied
from ._fastparse import fill

_BUF_SIZE = 1 << 18
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclasses.dataclass(frozen=True)
class ProcCount:
    pid: int
    comm: str
    map_count: int
    rss_bytes: int
    start_ticks: int  # field 22 of stat: with the pid, one process
    uid: int
    cmdline: str | None = None


def list_pids(proc_root: str = "/proc") -> list[int]:
    """Every process id under ``proc_root`` (threads are not listed there)."""
    return sorted(int(n) for n in os.listdir(proc_root) if n.isdigit())


def _read_small(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


def count_lines(path: str, buf: bytearray | None = None) -> int:
    """The number of lines of a (/proc) file, read in large pieces."""
    buf = buf if buf is not None else bytearray(_BUF_SIZE)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    total = 0
    try:
        while True:
            n, eof = fill(fd, buf, len(buf) - 4096)
            if n:
                total += buf.count(b"\n", 0, n)
            if eof or n == 0:
                break
    finally:
        os.close(fd)
    return total


def read_count(pid: int, *, cmdline: bool = False, proc_root: str = "/proc",
               buf: bytearray | None = None) -> ProcCount | None:
    """One process's figures; None if it has gone or is a kernel thread (no maps)."""
    base = f"{proc_root}/{pid}"
    try:
        stat = _read_small(f"{base}/stat")
        uid = os.stat(base).st_uid
        maps = count_lines(f"{base}/maps", buf)
        statm = _read_small(f"{base}/statm")
        args = _read_small(f"{base}/cmdline") if cmdline else None
        # stat again: a process that exits while maps is read gives a short text
        alive = _read_small(f"{base}/stat")
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            from .. import host

            raise AccessDenied(pid, f"{base}/maps", host.read_access_advice(pid)) from None
        return None  # ENOENT, ESRCH: it exited; anything else: it is going
    close = stat.rfind(b")")
    state = alive[alive.rfind(b")") + 2:alive.rfind(b")") + 3]
    if maps == 0 or state in (b"Z", b"X"):
        return None  # a kernel thread, a zombie, or one that exited while being read
    fields = stat[close + 2:].split()
    try:
        start = int(fields[19])
        rss = int(statm.split()[1]) * _PAGE
    except (IndexError, ValueError):
        return None
    comm = os.fsdecode(stat[stat.find(b"(") + 1:close])
    cmd = None
    if args is not None:
        cmd = " ".join(os.fsdecode(a) for a in args.split(b"\0") if a)
    return ProcCount(pid=pid, comm=comm, map_count=maps, rss_bytes=rss, start_ticks=start,
                     uid=uid, cmdline=cmd)


__all__ = ["ProcCount", "count_lines", "list_pids", "read_count"]
