"""mm/mprotect.c: the mprotect syscall (do_mprotect_pkey and mprotect_fixup)."""

from __future__ import annotations

from ...kconst import PAGE_MASK, PAGE_SHIFT, page_align
from ...ops.language import Op
from .. import rules as R
from .. import vmflags as F
from .mm import MM, OpFailed, prot_bits
from .rmap import anon_vma_prepare
from .util import vm_enough_memory
from .vma import vma_modify


def do_mprotect_pkey(mm: MM, op: Op) -> None:
    """mm/mprotect.c do_mprotect_pkey + mprotect_fixup."""
    ep = mm.epoch
    start = op.addr
    if start & ~PAGE_MASK:
        raise OpFailed("EINVAL")
    length = page_align(op.length)
    end = start + length
    if end <= start:
        if length == 0:
            return
        raise OpFailed("ENOMEM")
    v = mm.find_vma(start)
    if v is None or v.start > start:
        raise OpFailed("ENOMEM")
    prot = prot_bits(op.prot)
    nstart = start
    while True:
        if (prot & F.VM_READ and not v.flags & F.VM_MAYREAD) or (
                prot & F.VM_WRITE and not v.flags & F.VM_MAYWRITE) or (
                prot & F.VM_EXEC and not v.flags & F.VM_MAYEXEC):
            raise OpFailed("EACCES")
        tmp = min(v.end, end)
        newflags = R.mprotect_newflags(ep, v.flags, prot, v.file is None,
                                       v.anon_vma is not None)
        if newflags & F.VM_ACCOUNT and not v.flags & F.VM_ACCOUNT:
            vm_enough_memory(mm, (tmp - nstart) >> PAGE_SHIFT)  # mprotect_fixup's charge
        oldflags = v.flags
        if newflags != v.flags:
            v = vma_modify(mm, v, nstart, tmp, flags=newflags)
        if (oldflags & (F.VM_WRITE | F.VM_SHARED | F.VM_LOCKED) == F.VM_LOCKED
                and newflags & F.VM_WRITE and not newflags & F.VM_LOCKONFAULT):
            # mprotect_fixup: a private VM_LOCKED VMA that becomes writable is populated
            # with write faults at once (populate_vma_page_range breaks COW; not with
            # VM_LOCKONFAULT), so it gets its anon_vma here, as the
            # kernel view shows on 6.1, 6.12, 6.18 and 7.2 (lab verify --kernel-view).
            anon_vma_prepare(mm, v)
        # Continue after the (possibly merged) VMA: vma_iter_end().
        nstart = v.end if v.end > tmp else tmp
        if nstart >= end:
            return
        nxt = v.next
        if nxt is None or nxt.start != nstart:
            raise OpFailed("ENOMEM")
        v = nxt
