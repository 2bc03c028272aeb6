"""One reading of the host: every process's map count, % of the limit, RSS and comm.

Processes that exit during the reading are left out (that is normal); processes that may
not be read (other users' without root) are counted, and the reading says so.
"""

from __future__ import annotations

import dataclasses
import os
import time

from .. import host
from ..errors import AccessDenied
from ..procfs.count import ProcCount, list_pids, read_count


@dataclasses.dataclass
class Reading:
    time: float  # when it started (epoch seconds)
    duration: float  # seconds
    limit: int | None  # vm.max_map_count
    processes: list[ProcCount]
    unreadable: int = 0  # processes whose maps could not be read (permission)

    def by_count(self) -> list[ProcCount]:
        return sorted(self.processes, key=lambda p: (-p.map_count, p.pid))

    def ratio(self, p: ProcCount) -> float | None:
        return p.map_count / self.limit if self.limit else None

    def note(self) -> str | None:
        """What this reading could not see, and why (None when it saw everything)."""
        n = self.unreadable
        if not n:
            return None
        what = "1 process" if n == 1 else f"{n} processes"
        if os.geteuid() == 0:
            return (f"{what} not shown: their maps cannot be read even as root "
                    "(a security module, or another PID namespace's ptrace rules)")
        return (f"{what} of other users not shown: reading their maps needs root "
                "(or CAP_SYS_PTRACE)")

    def to_json(self) -> dict[str, object]:
        return {"time": self.time, "duration_s": round(self.duration, 4),
                "max_map_count": self.limit, "unreadable": self.unreadable,
                "note": self.note()}


def read_host(*, cmdline: bool = False, pids: list[int] | None = None) -> Reading:
    """Read every process of the host (or only ``pids``)."""
    started = time.time()
    t0 = time.perf_counter()
    root = os.fspath(host.proc_path())
    buf = bytearray(1 << 18)
    out: list[ProcCount] = []
    unreadable = 0
    for pid in (list_pids(root) if pids is None else pids):
        try:
            p = read_count(pid, cmdline=cmdline, proc_root=root, buf=buf)
        except AccessDenied:
            unreadable += 1
            continue
        if p is not None:  # None: it exited, or a kernel thread
            out.append(p)
    return Reading(time=started, duration=time.perf_counter() - t0,
                   limit=host.max_map_count(), processes=out, unreadable=unreadable,
                   )


__all__ = ["Reading", "read_host"]
