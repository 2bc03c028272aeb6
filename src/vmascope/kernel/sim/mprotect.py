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
from .mm import MM, OpFailed, prot_bits
from .rmap import anon_vma_prepare
from .util import vm_enough_memory
from .vma import check_modify, vma_modify


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
    nstart = start
    while True:
        if (prot & F.VM_READ and not v.flags & F.VM_MAYREAD) or (
                prot & F.VM_WRITE and not v.flags & F.VM_MAYWRITE) or (
                prot & F.VM_EXEC and not v.flags & F.VM_MAYEXEC):
            raise OpFailed("EACCES")
        tmp = min(v.end, end)
        check_modify(v)  # mprotect_fixup: even when nothing would change
        newflags = R.mprotect_newflags(ep, v.flags, prot, v.file is None,
                                       v.anon_vma is not None)
        if pkey != -1:  # else the VMA keeps its key
            newflags = (newflags & ~F.VM_PKEY_MASK) | (pkey << F.PKEY_SHIFT)
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
