"""mm/mremap.c: mremap (shrink, grow in place, move, MREMAP_FIXED, MREMAP_DONTUNMAP)."""

from __future__ import annotations

from ...kconst import PAGE_MASK, PAGE_SHIFT, TASK_SIZE, page_align
from ...ops.language import Op
from .. import rules as R
from .. import vmflags as F
from .mm import MM, OpFailed, SVma, av_text, shmem_file
from .mmap import get_unmapped_area
from .userfaultfd import unregister_moved
from .vma import check_modify, do_vmi_munmap, vma_merge_new_range


def do_mremap(mm: MM, op: Op) -> None:
    """The mremap syscall."""
    ep = mm.epoch
    addr = op.addr
    flags = op.flags
    fixed = "fixed" in flags
    maymove = "maymove" in flags
    dontunmap = "dontunmap" in flags
    if addr & ~PAGE_MASK:
        raise OpFailed("EINVAL")
    if (fixed or dontunmap) and not maymove:
        raise OpFailed("EINVAL")
    old_len = page_align(op.length)
    new_len = page_align(op.new_len)
    if new_len == 0:
        raise OpFailed("EINVAL")
    if dontunmap and old_len != new_len:
        raise OpFailed("EINVAL")
    if fixed and ep.mremap_multi_vma:
        # 6.17's mremap rewrite checks all parameters before looking anything up.
        check_new_addr(addr, old_len, new_len, op.new_addr)
    first = mm.vma_lookup(addr)
    if ep.mremap_lookup_first and first is None:
        raise OpFailed("EFAULT")
    if first is not None:
        check_modify(first)  # a sealed source: before anything is unmapped
    if fixed or dontunmap:
        mremap_to(mm, addr, old_len, new_len, op.new_addr, fixed, dontunmap)
        return
    if old_len >= new_len:
        if old_len > new_len:
            do_vmi_munmap(mm, addr + new_len, addr + old_len)
        return
    v = vma_to_resize(mm, addr, old_len, new_len)
    delta = new_len - old_len
    if old_len == v.end - addr and mm.range_free(v.end, v.end + delta) and (
            v.end + delta <= TASK_SIZE):
        if ep.mremap_expand_merges_next:
            vmg = R.Vmg(v.end, v.end + delta, v.pgoff + ((v.end - v.start) >> PAGE_SHIFT),
                        v.flags, file=v.file, anon_vma=v.anon_vma, policy=v.policy,
                        anon_name=v.anon_name, uffd=v.uffd)
            mode = "merge_new_range" if ep.copy_vma_new_range else "vma_merge"
            if vma_merge_new_range(mm, vmg, v, v.next, mode) is None:
                raise OpFailed("ENOMEM")
        else:
            v.end += delta
            if mm.tracing:
                mm.note(f"grow in place -> {v}")
        return
    if not maymove:
        raise OpFailed("ENOMEM")
    new_addr = get_unmapped_area(mm, 0, new_len)
    move_vma(mm, v, addr, old_len, new_len, new_addr, dontunmap=False)


def multi_allowed(v: SVma) -> bool:
    """mm/mremap.c vma_multi_allowed: may v be moved as one of several VMAs?"""
    return v.uffd is None and (v.file is None or shmem_file(v) is not None)


def vma_to_resize(mm: MM, addr: int, old_len: int, new_len: int) -> SVma:
    """mm/mremap.c vma_to_resize: the VMA at addr, if the resize is allowed."""
    v = mm.vma_lookup(addr)
    if v is None:
        raise OpFailed("EFAULT")
    if old_len > v.end - addr:
        raise OpFailed("EFAULT")
    if new_len > old_len and v.flags & (F.VM_DONTEXPAND | F.VM_PFNMAP):
        raise OpFailed("EFAULT")
    return v


def mremap_to(mm: MM, addr: int, old_len: int, new_len: int, new_addr: int | None,
               fixed: bool, dontunmap: bool) -> None:
    ep = mm.epoch
    if fixed:
        check_new_addr(addr, old_len, new_len, new_addr)
    if ep.mremap_limit == "legacy":
        # mm/mremap.c mremap_to: room for the worst case of splits.
        if mm.map_count + 2 >= mm.max_map_count - 3:
            if mm.tracing:
                mm.note(f"mremap_to refused: map_count {mm.map_count} + 2 >= "
                        f"max_map_count {mm.max_map_count} - 3")
            raise OpFailed("ENOMEM")
    else:
        mremap_count_check(mm, 1 if dontunmap else 0)
    first = mm.vma_lookup(addr)
    # MREMAP_DONTUNMAP too: 6.18.44 moves each VMA and leaves the sources in place.
    multi = (first is not None and old_len > first.end - addr and ep.mremap_multi_vma
             and fixed and old_len == new_len)
    if fixed and not multi and ep.mremap_multi_vma and (
            first is None or min(old_len, new_len) > first.end - addr):
        # 6.17's check_prep_vma (d23cb648e365's rewrite): a move of a range (as shrunk)
        # past the end of its VMA is EFAULT before the destination is unmapped or the
        # source shrunk (found by lab verify --family mremap on 6.18.44, 7.2.13, 7.3.4,
        # 7.3-rc7).
        raise OpFailed("EFAULT")
    if fixed and not multi:
        assert new_addr is not None
        do_vmi_munmap(mm, new_addr, new_addr + new_len)
    if old_len > new_len:
        do_vmi_munmap(mm, addr + new_len, addr + old_len)
        old_len = new_len
    v = mm.vma_lookup(addr)
    if v is None:
        raise OpFailed("EFAULT")
    if old_len > v.end - addr and not multi:
        raise OpFailed("EFAULT")
    if not multi:
        v = vma_to_resize(mm, addr, old_len, new_len)
    if not fixed:
        new_addr = get_unmapped_area(mm, new_addr or 0, new_len)
    assert new_addr is not None
    if not multi:
        move_vma(mm, v, addr, old_len, new_len, new_addr, dontunmap,
                       check=ep.mremap_limit == "legacy")
        return
    # 6.17+: move each VMA of the range, keeping the gaps between them; a sealed VMA
    # stops the move there (EPERM), the pieces before it stay moved.
    pieces = []
    w: SVma | None = v
    end = addr + old_len
    while w is not None and w.start < end:
        pieces.append((max(w.start, addr), min(w.end, end)))
        w = w.next
    for s, e in pieces:
        # Each piece replaces what is at its destination; the gaps between the
        # pieces leave the destination alone (as 6.18.44 does).
        dst = new_addr + (s - addr)
        piece = mm.vma_lookup(s)
        assert piece is not None
        if not multi_allowed(piece):
            # mm/mremap.c vma_multi_allowed (6.17, d23cb648e365): not a VMA armed with a
            # userfaultfd, nor a file with its own get_unmapped_area (shmem is fine);
            # the first such stops the move: EFAULT, the pieces before it stay moved.
            raise OpFailed("EFAULT")
        check_modify(piece)  # before its destination is unmapped
        do_vmi_munmap(mm, dst, dst + (e - s))
        piece = mm.vma_lookup(s)
        assert piece is not None
        move_vma(mm, piece, s, e - s, e - s, dst, dontunmap=dontunmap, check=False)


def check_new_addr(addr: int, old_len: int, new_len: int, new_addr: int | None) -> None:
    if new_addr is None or new_addr & ~PAGE_MASK:
        raise OpFailed("EINVAL")
    if new_addr + new_len > TASK_SIZE:
        raise OpFailed("EINVAL")
    if addr + old_len > new_addr and new_addr + new_len > addr:
        raise OpFailed("EINVAL")


def mremap_count_check(mm: MM, extra: int) -> None:
    """6.17+: map_count (+1 when the old mapping stays) >= max_map_count - 3 -> ENOMEM."""
    if mm.map_count + extra >= mm.max_map_count - 3:
        if mm.tracing:
            mm.note(f"mremap refused: map_count {mm.map_count} + {extra} >= "
                    f"max_map_count {mm.max_map_count} - 3")
        raise OpFailed("ENOMEM")


def move_vma(mm: MM, v: SVma, old_addr: int, old_len: int, new_len: int, new_addr: int,
              dontunmap: bool, check: bool = True) -> None:
    """mm/mremap.c move_vma + mm/vma.c copy_vma, then unmap the old range."""
    ep = mm.epoch
    if check:
        mremap_count_check(mm, 0)
    pgoff = v.pgoff + ((old_addr - v.start) >> PAGE_SHIFT)
    if v.file is None and v.anon_vma is None and not v.flags & F.VM_SHARED:
        # An unfaulted anonymous VMA is re-linearised at its new address.
        pgoff = new_addr >> PAGE_SHIFT
    src_whole = v.start == old_addr and v.end == old_addr + old_len
    new_end = new_addr + new_len
    vmg = R.Vmg(new_addr, new_end, pgoff, v.flags, file=v.file, anon_vma=v.anon_vma,
                policy=v.policy, anon_name=v.anon_name, uffd=v.uffd, copied_from=v)
    prev = mm.prev_of(new_addr)
    nxt = prev.next if prev is not None else mm.head
    if mm.tracing:
        mm.note(f"copy_vma {old_addr:#x}-{old_addr + old_len:#x} -> {new_addr:#x}-"
                f"{new_end:#x} pgoff {pgoff:#x} anon_vma {av_text(v)}")
    mode = "merge_new_range" if ep.copy_vma_new_range else "vma_merge"
    new = vma_merge_new_range(mm, vmg, prev, nxt, mode)
    if new is None:
        new = v.copy()
        new.start, new.end, new.pgoff = new_addr, new_end, pgoff
        new.anon_vma = v.anon_vma
        new.chain = v.chain
        if v.anon_vma is not None:
            v.anon_vma.num_active_vmas += 1
        new.flags |= mm.soft_dirty
        mm.insert(new, prev)
        if mm.tracing:
            mm.note(f"new VMA {new} (anon_vma {av_text(new)}) -> map_count "
                    f"{mm.map_count}")
    mm.move_pages(old_addr, min(old_len, new_len), new_addr)
    unregister_moved(new)  # mremap_userfaultfd_prep: no UFFD_FEATURE_EVENT_REMAP
    if dontunmap:
        old = mm.vma_lookup(old_addr)
        if old is not None and old is not new:
            old.flags &= ~(F.VM_LOCKED | F.VM_LOCKONFAULT)
            if src_whole and old.start == old_addr and old.anon_vma is not None:
                old.anon_vma.num_active_vmas -= 1
                old.anon_vma = None
                old.chain = ()
                if mm.tracing:
                    mm.note(f"MREMAP_DONTUNMAP: {old} unlinked from its anon_vmas")
        return
    do_vmi_munmap(mm, old_addr, old_addr + old_len)
