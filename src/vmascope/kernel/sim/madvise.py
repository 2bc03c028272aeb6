"""mm/madvise.c: madvise (flag changes, populate, guard regions) and anon VMA names.

Advice that changes VmFlags goes through ``madvise_update_vma`` and so through
vma_modify: a split that fails at the map count limit is EAGAIN from 5.17 (the epoch's
``madvise_split_errno``).
"""

from __future__ import annotations

from typing import Any

from ...kconst import PAGE_MASK, PAGE_SHIFT, page_align
from ...ops.language import Op
from .. import vmflags as F
from .mm import MM, PMD_SIZE, OpFailed, ShmemFile, SVma
from .memory import populate_range
from .mseal import check_madvise
from .rmap import anon_vma_prepare
from .vma import KEEP, vma_modify

ANON_NAME_LEN_MAX = 80
_NAME_FORBIDDEN = set("\\`$[]")

# madvise advice that changes VMA flags: (flags to set, flags to clear).
_FLAG_CHANGE = {
    "dontfork": (F.VM_DONTCOPY, 0), "dofork": (0, F.VM_DONTCOPY),
    "wipeonfork": (F.VM_WIPEONFORK, 0), "keeponfork": (0, F.VM_WIPEONFORK),
    "dontdump": (F.VM_DONTDUMP, 0), "dodump": (0, F.VM_DONTDUMP),
    "hugepage": (F.VM_HUGEPAGE, F.VM_NOHUGEPAGE),
    "nohugepage": (F.VM_NOHUGEPAGE, F.VM_HUGEPAGE),
    "mergeable": (F.VM_MERGEABLE, 0), "unmergeable": (0, F.VM_MERGEABLE),
    "normal": (0, F.VM_SEQ_READ | F.VM_RAND_READ),
    "sequential": (F.VM_SEQ_READ, F.VM_RAND_READ),
    "random": (F.VM_RAND_READ, F.VM_SEQ_READ),
}


def madvise_walk_vmas(mm: MM, start: int, end: int, visit: Any) -> None:
    """mm/madvise.c madvise_walk_vmas: visit each VMA piece; a hole is ENOMEM, given only
    after the rest of the range was visited."""
    v = mm.find_vma(start)
    unmapped = False
    while True:
        if v is None:
            raise OpFailed("ENOMEM")
        if start < v.start:
            unmapped = True
            start = v.start
            if start >= end:
                break
        tmp = min(v.end, end)
        v = visit(v, start, tmp)
        start = tmp
        if start < v.end:
            start = v.end
        if start >= end:
            break
        v = v.next
    if unmapped:
        raise OpFailed("ENOMEM")


def madvise_update_vma(mm: MM, v: SVma, start: int, end: int, newflags: int, name: Any = KEEP) -> SVma:
    """madvise_update_vma: nothing to do if unchanged; split failure -> EAGAIN (5.17+)."""
    if newflags == v.flags and (name is KEEP or name == v.anon_name):
        return v
    try:
        return vma_modify(mm, v, start, end, flags=newflags, anon_name=name)
    except OpFailed as exc:
        if exc.errno == "ENOMEM":
            raise OpFailed(mm.epoch.madvise_split_errno) from None
        raise


def do_madvise(mm: MM, op: Op) -> None:
    """mm/madvise.c do_madvise. Advice that changes no VMA (dontneed, free, willneed,
    cold, pageout) only walks the range for holes and refusals."""
    ep = mm.epoch
    start = op.addr
    adv = op.advice or ""
    if start & ~PAGE_MASK:
        raise OpFailed("EINVAL")
    if adv in ("populate_read", "populate_write") and not ep.populate_advice:
        raise OpFailed("EINVAL")  # madvise_behavior_valid: unknown advice before 5.14
    if adv in ("guard_install", "guard_remove") and not ep.guard_regions:
        raise OpFailed("EINVAL")
    if adv == "collapse" and not ep.madv_collapse:
        raise OpFailed("EINVAL")
    length = page_align(op.length)
    end = start + length
    if length == 0:
        return
    if adv in _FLAG_CHANGE:
        add, clear = _FLAG_CHANGE[adv]

        def visit(v: SVma, s: int, e: int) -> SVma:
            check_madvise(v, adv)
            if adv == "dofork" and v.flags & F.VM_IO:
                raise OpFailed("EINVAL")
            if adv == "wipeonfork" and (v.file is not None or v.flags & F.VM_SHARED):
                raise OpFailed("EINVAL")
            if adv == "keeponfork" and v.flags & F.VM_DROPPABLE:
                raise OpFailed("EINVAL")
            if adv == "dodump" and v.flags & F.VM_SPECIAL:
                raise OpFailed("EINVAL")
            if adv == "mergeable" and v.flags & (F.VM_SHARED | F.VM_MAYSHARE | F.VM_SPECIAL
                                                 | F.VM_HUGETLB | F.VM_DROPPABLE):
                return v  # ksm_madvise leaves these alone
            return madvise_update_vma(mm, v, s, e, (v.flags | add) & ~clear)

        madvise_walk_vmas(mm, start, end, visit)
        return
    if adv == "populate_write" or adv == "populate_read":
        write = adv == "populate_write"

        def populate(v: SVma, s: int, e: int) -> SVma:
            if v.flags & (F.VM_IO | F.VM_PFNMAP):
                raise OpFailed("EINVAL")
            if write and not v.flags & F.VM_WRITE or not v.flags & (
                    F.VM_READ | F.VM_WRITE | F.VM_EXEC):
                raise OpFailed("EINVAL")
            if write and not v.flags & F.VM_SHARED:  # copy on write, files too
                anon_vma_prepare(mm, v)  # before the fault, even one that is SIGBUS
            if not populate_range(mm, v, s, e):
                raise OpFailed("EFAULT")  # past a memfd's end, a missing-page userfault
            return v

        if ep.populate_in_walk:
            # Inside madvise_walk_vmas: holes give ENOMEM only at the end, a bad VMA
            # gives EINVAL at once.
            madvise_walk_vmas(mm, start, end, populate)
            return
        # Its own loop (6.9): stops with ENOMEM at the first hole.
        addr = start
        while addr < end:
            v = mm.vma_lookup(addr)
            if v is None:
                raise OpFailed("ENOMEM")
            addr = populate(v, addr, min(v.end, end)).end
        return

    def check(v: SVma, s: int, e: int) -> SVma:
        check_madvise(v, adv)
        if adv == "dontneed" and v.flags & (F.VM_LOCKED | F.VM_PFNMAP | F.VM_HUGETLB):
            raise OpFailed("EINVAL")
        if adv == "dontneed":
            mm.drop_resident(s, e)  # zapped (MADV_FREE keeps them until reclaim)
        if adv == "free" and (v.file is not None or v.flags & F.VM_SHARED):
            raise OpFailed("EINVAL")
        if adv in ("free", "cold", "pageout") and v.flags & (
                F.VM_LOCKED | F.VM_PFNMAP | F.VM_HUGETLB):
            raise OpFailed("EINVAL")  # can_madv_lru_vma
        if adv == "guard_install":
            if v.flags & (F.VM_SPECIAL | F.VM_HUGETLB | F.VM_LOCKED):
                raise OpFailed("EINVAL")
            if v.file is None and not v.flags & F.VM_SHARED:
                # mm/madvise.c madvise_guard_install (6.13): anon_vma_prepare first.
                anon_vma_prepare(mm, v)
            if mm.sticky:
                v.flags |= mm.sticky
            mm.guards.update(range(s >> PAGE_SHIFT, e >> PAGE_SHIFT))
            mm.drop_resident(s, e)  # the markers replace the page table entries
        elif adv == "guard_remove":
            mm.guards.difference_update(range(s >> PAGE_SHIFT, e >> PAGE_SHIFT))
        elif adv == "collapse" and not thp_vma_suitable(v):
            raise OpFailed("EINVAL")
        return v

    madvise_walk_vmas(mm, start, end, check)


def thp_vma_suitable(v: SVma) -> bool:
    """MADV_COLLAPSE's thp_vma_allowable_order, as far as the model goes: the VMA holds a
    2 MiB aligned range and is not VM_NOHUGEPAGE (the sysfs setting does not matter)."""
    lo = (v.start + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    return not v.flags & (F.VM_NOHUGEPAGE | F.VM_SPECIAL | F.VM_HUGETLB) and (
        lo + PMD_SIZE <= v.end)


def madvise_set_anon_name(mm: MM, op: Op) -> None:
    """prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, start, len, name)."""
    if not mm.epoch.anon_vma_name:
        raise OpFailed("EINVAL")
    start = op.addr
    if start & ~PAGE_MASK:
        raise OpFailed("EINVAL")
    name = op.name
    if name is not None:
        if len(name) >= ANON_NAME_LEN_MAX or any(
                c in _NAME_FORBIDDEN or not c.isprintable() for c in name):
            raise OpFailed("EINVAL")
    length = page_align(op.length)
    if length == 0:
        return

    def visit(v: SVma, s: int, e: int) -> SVma:
        if v.file is not None and not isinstance(v.file, ShmemFile):
            raise OpFailed("EBADF")
        return madvise_update_vma(mm, v, s, e, v.flags, name)

    madvise_walk_vmas(mm, start, start + length, visit)
