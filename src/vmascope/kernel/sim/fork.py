"""kernel/fork.c: dup_mmap, the address space of a fork child."""

from __future__ import annotations

from ...ops.language import Op
from .. import vmflags as F
from .mm import MM, OpFailed, SVma
from .rmap import anon_vma_fork, unlink_anon_vmas


def dup_mmap(mm: MM, op: Op) -> None:
    """kernel/fork.c dup_mmap + mm/rmap.c anon_vma_fork: a child that keeps the anon_vmas
    shared. ``op.index`` -1: the script's mm forks; K: its fork child K does (a fork of a
    fork: the grandchild's anon_vmas are children of K's, and K's own exit then leaves
    them linked). Every child, of any depth, is numbered in ``mm.children``."""
    src = mm
    if op.index >= 0:
        if op.index >= len(mm.children) or mm.children[op.index].exited:
            raise OpFailed("ESRCH")
        src = mm.children[op.index]
    child = MM(mm.epoch, max_map_count=mm.max_map_count, thp=mm.thp,
               numa_nodes=mm.numa_nodes)
    child.next_anon_id = mm.next_anon_id
    prev: SVma | None = None
    for p in src:
        if p.flags & F.VM_DONTCOPY:
            continue
        c = p.copy()
        c.flags &= ~(F.VM_LOCKED | F.VM_LOCKONFAULT)
        if c.uffd is not None:  # dup_userfaultfd without UFFD_FEATURE_EVENT_FORK
            c.uffd = None
            c.flags &= ~F.VM_UFFD_FLAGS
        if p.flags & F.VM_WIPEONFORK or p.anon_vma is None:
            pass
        else:
            anon_vma_fork(src, c, p, child)
        child.insert(c, prev)
        prev = c
    mm.next_anon_id = child.next_anon_id
    child.start_brk, child.brk = src.start_brk, src.brk
    mm.children.append(child)
    if mm.tracing:
        made = sum(1 for c in child if c.anon_vma is not None)
        who = "" if src is mm else f"child {op.index}'s "
        mm.note(f"{who}fork: child {len(mm.children) - 1} has {child.map_count} VMAs, {made} "
                "linked to new child anon_vmas (fork children: their chains are not "
                "singular)")


def mmput(mm: MM, op: Op) -> None:
    """The ``exit CHILD`` op: fork child CHILD exits (kernel/exit.c do_exit -> exit_mm
    -> kernel/fork.c mmput -> mm/mmap.c exit_mmap). Its VMAs go; the anon_vma counters drop (unlink_anon_vmas), which
    changes which anon_vma a later fork may reuse."""
    child = mm.children[op.index] if op.index < len(mm.children) else None
    if child is None or child.exited:
        raise OpFailed("ESRCH")
    child.exited = True
    alive = [mm] + [c for c in mm.children if not c.exited]
    unlink_anon_vmas(alive, list(child))
    if mm.tracing:
        mm.note(f"exit: child {op.index} unmapped {child.map_count} VMAs")
