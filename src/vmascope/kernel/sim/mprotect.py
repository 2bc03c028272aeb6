"""mm/mprotect.c: mprotect and pkey_mprotect (do_mprotect_pkey, mprotect_fixup), pkey_alloc.

Protection keys as x86 has them: with OSPKE the mm starts with key 0 allocated and
pkey_alloc hands out 1, 2, ... (16 keys); without, pkey_alloc fails (EINVAL, then
ENOSPC) and every key but -1 is EINVAL in pkey_mprotect. A key is
part of the VMA's flags (VM_PKEY_BIT*): VMAs with different keys do not merge.
"""

from __future__ import annotations

from ...kconst import PAGE_MASK, PAGE_SHIFT, page_align
from ...ops.language import Op
from .. import rules as R
from .. import vmflags as F
from ..vmflags import (PKEY_SHIFT, VM_ACCOUNT, VM_LOCKED, VM_LOCKONFAULT, VM_PKEY_MASK,
                       VM_SHARED, VM_WRITE)
from .mm import MM, OpFailed, prot_bits
from .rmap import anon_vma_prepare
from .util import vm_enough_memory
from .vma import check_modify, vma_modify


# The VM_MAY* bits a protection needs (VM_READ|VM_WRITE|VM_EXEC -> VM_MAYREAD|...).
_NEED_MAY = {bits: ((F.VM_MAYREAD if bits & F.VM_READ else 0)
                    | (F.VM_MAYWRITE if bits & F.VM_WRITE else 0)
                    | (F.VM_MAYEXEC if bits & F.VM_EXEC else 0))
             for bits in {prot_bits(p) for p in range(8)}}


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
    pkey = op.index if op.kind == "pkey_mprotect" else -1
    if pkey != -1 and not mm_pkey_is_allocated(mm, pkey):
        raise OpFailed("EINVAL")
    v = mm.find_vma(start)
    if v is None or v.start > start:
        raise OpFailed("ENOMEM")
    prot = prot_bits(op.prot)
    need_may = _NEED_MAY[prot]
    nstart = start
    while True:
        oldflags = v.flags
        if need_may & ~oldflags:
            raise OpFailed("EACCES")
        tmp = v.end if v.end < end else end
        check_modify(v)  # mprotect_fixup: even when nothing would change
        newflags = R.mprotect_newflags(ep, oldflags, prot, v.file is None,
                                       v.anon_vma is not None)
        if pkey != -1:  # else the VMA keeps its key
            newflags = (newflags & ~VM_PKEY_MASK) | (pkey << PKEY_SHIFT)
        if newflags & VM_ACCOUNT and not oldflags & VM_ACCOUNT:
            vm_enough_memory(mm, (tmp - nstart) >> PAGE_SHIFT)  # mprotect_fixup's charge
        if newflags != oldflags:
            v = vma_modify(mm, v, nstart, tmp, flags=newflags)
        if (oldflags & (VM_WRITE | VM_SHARED | VM_LOCKED) == VM_LOCKED
                and newflags & VM_WRITE and not newflags & VM_LOCKONFAULT):
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


def mm_pkey_is_allocated(mm: MM, pkey: int) -> bool:
    """arch/x86/include/asm/pkeys.h mm_pkey_is_allocated. Without OSPKE arch_max_pkey()
    is 1 and key 0 is the mm's execute_only_pkey, which no interface may use: no key."""
    return mm.pku and 0 <= pkey < 16 and bool(mm.pkeys & (1 << pkey))


def sys_pkey_alloc(mm: MM, op: Op) -> None:
    """The pkey_alloc syscall (flags 0, access rights 0)."""
    free = next((k for k in range(16 if mm.pku else 1) if not mm.pkeys & (1 << k)), None)
    if free is None:
        raise OpFailed("ENOSPC")
    mm.pkeys |= 1 << free
    if not mm.pku:
        # arch_set_user_pkey_access fails without OSPKE, and key 0 is never freed: the
        # first pkey_alloc is EINVAL, every later one ENOSPC (seen on 6.18.44).
        raise OpFailed("EINVAL")
