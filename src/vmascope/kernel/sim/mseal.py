"""mm/mseal.c: the mseal syscall, and what a seal refuses.

mseal sets VM_SEALED on a range through vma_modify (it splits and merges like mprotect;
a sealed VMA merges only with sealed neighbours). The checks that refuse a change are
made VMA by VMA where the callers meet each VMA (mprotect_fixup, the munmap gather,
madvise's walk, mremap's lookup): ``vma.check_modify`` (the kernel's can_modify_vma,
in mm/vma.h) and ``check_madvise`` here.
"""

from __future__ import annotations

from ...kconst import PAGE_MASK, page_align
from ...ops.language import Op
from .. import vmflags as F
from .mm import MM, OpFailed, SVma
from .vma import check_modify, vma_modify  # noqa: F401 (check_modify: for callers)

# Advice that discards the contents of private anonymous memory (mm/madvise.c
# is_discard / is_madv_discard): refused on sealed memory the process cannot write.
DISCARD_ADVICE = frozenset({"free", "dontneed", "dontfork", "wipeonfork", "guard_install"})


def is_ro_anon(v: SVma) -> bool:
    """Private anonymous memory without write permission."""
    return v.file is None and not v.flags & F.VM_SHARED and not v.flags & F.VM_WRITE


def check_madvise(v: SVma, advice: str) -> None:
    """can_modify_vma_madv: EPERM for discarding advice on sealed read-only anon memory."""
    if advice in DISCARD_ADVICE and v.flags & F.VM_SEALED and is_ro_anon(v):
        raise OpFailed("EPERM")


def do_mseal(mm: MM, op: Op) -> None:
    """The mseal syscall (mm/mseal.c do_mseal): no hole in the range, then seal each VMA."""
    if not mm.epoch.mseal:
        raise OpFailed("ENOSYS")
    start = op.addr
    if start & ~PAGE_MASK:
        raise OpFailed("EINVAL")
    length = page_align(op.length)
    end = start + length
    if (op.length and not length) or end >= 1 << 64:
        raise OpFailed("EINVAL")
    if end == start:
        return
    v = mm.find_vma(start)
    at = start
    while v is not None and v.start < end:  # range_contains_unmapped
        if v.start > at:
            break
        at = v.end
        v = v.next
    if at < end:
        raise OpFailed("ENOMEM")
    v = mm.vma_lookup(start)
    while v is not None and v.start < end:
        if not v.flags & F.VM_SEALED:
            v = vma_modify(mm, v, max(v.start, start), min(v.end, end),
                           flags=v.flags | F.VM_SEALED)
        v = v.next
