"""mm/mlock.c: mlock, mlock2(MLOCK_ONFAULT), munlock, mlockall, munlockall.

Locking changes VM_LOCKED / VM_LOCKONFAULT on the range through vma_modify (so it splits
and merges like mprotect), and then, for VM_LOCKED without VM_LOCKONFAULT, faults the
range in (__mm_populate): a writable private anonymous VMA gets an anon_vma there and
then. A PROT_NONE VMA is locked but cannot be populated, which mlock reports as ENOMEM
(__mlock_posix_error_return turns the populate's EFAULT into ENOMEM).
"""

from __future__ import annotations

from ...kconst import PAGE_MASK, TASK_SIZE, page_align
from ...ops.language import Op
from .. import vmflags as F
from .memory import populate_range, thp_read_fault
from .mm import MM, OpFailed, SVma
from .rmap import anon_vma_prepare
from .vma import vma_modify

VM_LOCKED_MASK = F.VM_LOCKED | F.VM_LOCKONFAULT


def mlock_fixup(mm: MM, v: SVma, start: int, end: int, newflags: int) -> SVma:
    """mm/mlock.c mlock_fixup: special, hugetlb and droppable VMAs are left alone."""
    if newflags == v.flags or v.flags & (F.VM_SPECIAL | F.VM_HUGETLB | F.VM_DROPPABLE):
        return v
    return vma_modify(mm, v, start, end, flags=newflags)


def mm_populate(mm: MM, start: int, end: int, ignore_errors: bool) -> None:
    """mm/gup.c __mm_populate: fault in what is locked (not VM_LOCKONFAULT)."""
    v = mm.find_vma(start)
    while v is not None and v.start < end:
        f = v.flags
        onfault = bool(f & F.VM_LOCKONFAULT)
        if f & (F.VM_IO | F.VM_PFNMAP) or (onfault and mm.epoch.onfault_skips_populate):
            pass
        elif not f & (F.VM_READ | F.VM_WRITE | F.VM_EXEC):
            if not ignore_errors:
                raise OpFailed("EFAULT")
        elif onfault:
            pass  # walked (before 5.18) but not faulted in
        else:
            s, e = max(v.start, start), min(v.end, end)
            # a memfd's pages past its end cannot be faulted in (SIGBUS: EFAULT); the
            # pages before them are; nor can a missing page of a range registered with a
            # userfaultfd (kernel/sim/userfaultfd.py)
            past = not populate_range(mm, v, s, e)  # stops there: EFAULT
            if f & F.VM_SHARED:
                pass
            elif f & F.VM_WRITE:
                # a write fault (FOLL_WRITE) on private memory: the anon_vma is prepared
                # before the fault, even one that ends in SIGBUS (past a memfd's end: the
                # kernel view shows it on 6.1, 6.12, 7.2; a missing-page userfault)
                anon_vma_prepare(mm, v)
            elif v.file is None and any(thp_read_fault(mm, v, a) for a in range(s, e, 1 << 21)):
                anon_vma_prepare(mm, v)
            if past and not ignore_errors:
                raise OpFailed("EFAULT")
        v = v.next


def apply_vma_lock_flags(mm: MM, start: int, length: int, flags: int) -> tuple[int, int]:
    """mm/mlock.c apply_vma_lock_flags; returns the page-aligned range."""
    length = page_align(length + (start & ~PAGE_MASK))
    start &= PAGE_MASK
    end = start + length
    if end < start or end > TASK_SIZE + (1 << 12):
        raise OpFailed("EINVAL")
    if end == start:
        return start, end
    v = mm.vma_lookup(start)
    if v is None:
        raise OpFailed("ENOMEM")
    tmp = v.start
    nstart = start
    while v is not None and v.start < end:
        if v.start != tmp:
            raise OpFailed("ENOMEM")  # a hole: what was locked before it stays locked
        newflags = (v.flags & ~VM_LOCKED_MASK) | flags
        tmp = min(v.end, end)
        v = mlock_fixup(mm, v, nstart, tmp, newflags)
        tmp = v.end
        nstart = tmp
        v = v.next
    if tmp < end:
        raise OpFailed("ENOMEM")
    return start, end


def do_mlock(mm: MM, op: Op) -> None:
    """The mlock and mlock2 syscalls (mm/mlock.c do_mlock)."""
    flags = F.VM_LOCKED | (F.VM_LOCKONFAULT if "onfault" in op.flags else 0)
    start, end = apply_vma_lock_flags(mm, op.addr, op.length, flags)
    if end > start:
        try:
            mm_populate(mm, start, end, ignore_errors=False)
        except OpFailed as exc:  # __mlock_posix_error_return
            raise OpFailed({"EFAULT": "ENOMEM", "ENOMEM": "EAGAIN"}.get(exc.errno, exc.errno))


def sys_munlock(mm: MM, op: Op) -> None:
    """The munlock syscall."""
    apply_vma_lock_flags(mm, op.addr, op.length, 0)


def apply_mlockall_flags(mm: MM, current: bool, future: bool, onfault: bool) -> None:
    """mm/mlock.c apply_mlockall_flags: every VMA, errors ignored; future mappings too."""
    mm.def_flags &= ~VM_LOCKED_MASK
    if future:
        mm.def_flags |= F.VM_LOCKED | (F.VM_LOCKONFAULT if onfault else 0)
        if not current:
            return
    to_add = (F.VM_LOCKED | (F.VM_LOCKONFAULT if onfault else 0)) if current else 0
    v = mm.head
    while v is not None:
        try:
            v = mlock_fixup(mm, v, v.start, v.end, (v.flags & ~VM_LOCKED_MASK) | to_add)
        except OpFailed:
            pass
        v = v.next


def sys_mlockall(mm: MM, op: Op) -> None:
    """The mlockall syscall: MCL_ONFAULT alone is EINVAL."""
    current, future = "current" in op.flags, "future" in op.flags
    if not (current or future):
        raise OpFailed("EINVAL")
    apply_mlockall_flags(mm, current, future, "onfault" in op.flags)
    if current:
        mm_populate(mm, 0, TASK_SIZE, ignore_errors=True)


def sys_munlockall(mm: MM, op: Op) -> None:
    """The munlockall syscall."""
    apply_mlockall_flags(mm, False, False, False)
