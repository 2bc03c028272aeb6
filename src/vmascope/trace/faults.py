"""Page faults a recorder could not see (strace), inferred from the final address space."""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from ..kconst import PAGE_MASK, page_align
from ..model import PERM_SHARED, PERM_WRITE, Snapshot
from . import uapi
from .events import FAULT_WRITE, Event

PROT_RWX = uapi.PROT["PROT_READ"] | uapi.PROT["PROT_WRITE"] | uapi.PROT["PROT_EXEC"]


def _anon_private(snap: Snapshot, i: int) -> bool:
    if int(snap.perms[i]) & PERM_SHARED or int(snap.inode[i]) != 0:
        return False
    name = snap.name(i)
    return name is None or name in ("[heap]", "[stack]") or name.startswith("[anon:")


# The smaps fields the inference reads (the recorder keeps only these of its snapshots).
FAULT_FIELDS = ("Anonymous", "Rss")


def _holds_pages(snap: Snapshot, i: int) -> bool:
    for field in FAULT_FIELDS:
        col = snap.smaps.get(field)
        if col is not None and int(col[i]) >= 0:
            return int(col[i]) > 0
    # a maps-only snapshot: a writable anonymous VMA is taken as written
    return bool(int(snap.perms[i]) & PERM_WRITE)


def _accessible_range(ev: Event, brk: dict[int, int]) -> tuple[int, int] | None:
    """The range a successful call made accessible private anonymous memory of, if any."""
    a = ev.args
    if ev.call == "mmap" and len(a) >= 4:
        if a[3] & uapi.MAP_TYPE != uapi.MAP["MAP_PRIVATE"] or not a[3] & uapi.MAP["MAP_ANONYMOUS"]:
            return None
        if a[2] & PROT_RWX == 0:
            return None
        return ev.ret, ev.ret + page_align(a[1])  # type: ignore[operator]
    if ev.call in ("mprotect", "pkey_mprotect") and len(a) >= 3:
        if a[2] & PROT_RWX == 0:
            return None
        return a[0] & PAGE_MASK, page_align(a[0] + a[1])
    if ev.call == "mremap" and len(a) >= 3:
        return ev.ret, ev.ret + page_align(a[2])  # type: ignore[operator]
    if ev.call == "brk" and ev.ret is not None:
        old = brk.get(ev.pid)
        brk[ev.pid] = ev.ret
        if old is not None and ev.ret > old:
            return page_align(old), page_align(ev.ret)
    return None


def infer_faults(events: Iterable[Event], final_snapshot: Snapshot) -> list[Event]:
    """The Events with the write faults strace cannot see inserted, inferred from the
    process's final address space.

    The rule: after a successful call that makes private anonymous memory accessible
    (mmap of MAP_PRIVATE|MAP_ANONYMOUS with a protection other than PROT_NONE,
    mprotect/pkey_mprotect to one other than PROT_NONE, mremap's new range, brk growing
    the heap), an inferred write fault ``Event(call="fault", args=(addr, FAULT_WRITE),
    inferred=True)`` is inserted at the first page of each part of that range that one
    private anonymous VMA of the final snapshot covers, when that VMA holds anonymous
    pages (smaps ``Anonymous`` > 0, else ``Rss`` > 0; with a maps-only snapshot, when it
    is writable). A page is faulted once, after the last call whose part starts there
    (pages written before may have been dropped by munmap or MADV_DONTNEED since).

    Why the first page of each part: a range the program split later (an mprotect of a
    piece) is several VMAs in the final snapshot, and each that holds pages needs a
    write of its own; within one VMA, the first write anywhere gives it its anon_vma,
    which is what decides merges, so where in the VMA the pages really are does not
    matter to the structure (the snapshot does not say, and the number of pages, Rss, is
    not reproduced). Known limits: memory touched and then unmapped (or whose VMA was
    replaced) is invisible in the final snapshot and gets no fault; a VMA holding pages
    only in a part that no call of the trace made accessible (mapped before the trace)
    gets none; the fault is placed right after the call although the program may have
    written much later (after an mprotect or a neighbouring mmap that would have merged
    without the anon_vma). Faults are inferred for the snapshot's process only
    (``meta.pid``, else the process of the last event); a fork child's are not.
    """
    evs = list(events)
    if not evs:
        return []
    pid = evs[-1].pid if final_snapshot.meta.pid is None else final_snapshot.meta.pid
    starts = [int(x) for x in final_snapshot.start]
    candidates: dict[int, tuple[int, Event]] = {}  # fault address -> (index, event)
    brk: dict[int, int] = {}
    for idx, ev in enumerate(evs):
        if ev.inferred or ev.ret is None or ev.ret < 0 or ev.pid != pid:
            continue
        rng = _accessible_range(ev, brk)
        if rng is None or rng[1] <= rng[0]:
            continue
        lo, hi = rng
        i = max(0, bisect.bisect_right(starts, lo) - 1)
        while i < len(starts) and starts[i] < hi:
            s, e = starts[i], int(final_snapshot.end[i])
            if e > lo and _anon_private(final_snapshot, i) and _holds_pages(final_snapshot, i):
                candidates[max(s, lo) & PAGE_MASK] = (idx, ev)
            i += 1
    after: dict[int, list[int]] = {}
    for addr, (idx, _) in candidates.items():
        after.setdefault(idx, []).append(addr)
    out: list[Event] = []
    for idx, ev in enumerate(evs):
        out.append(ev)
        for addr in sorted(after.get(idx, ())):
            out.append(Event(t=ev.t, pid=ev.pid, tid=ev.tid, call="fault",
                             args=(addr, FAULT_WRITE), inferred=True))
    return out
