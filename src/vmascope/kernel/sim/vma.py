"""mm/vma.c: split_vma, the two merge paths, vma_modify and munmap.

``vma_merge_existing_range`` merges a range of an existing VMA whose attributes change
(mprotect, madvise, mbind, anon names); ``vma_merge_new_range`` merges a new range (mmap,
brk, mremap's copy) with its neighbours. Before 6.12 both were mm/mmap.c ``vma_merge``;
the epoch's switches choose the behaviour of each era. Every merge decision is taken by
the predicates of kernel/rules.py, the same ones the explainer uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...kconst import PAGE_SHIFT
from .. import rules as R
from .. import vmflags as F
from .mm import MM, OpFailed, SVma, av_text
from .rmap import dup_anon_vma

# "leave this attribute as it is" for vma_modify.
KEEP: Any = object()


def set_attrs(v: Any, flags: int | None, anon_name: Any, policy: Any,
              uffd: Any = KEEP) -> Any:
    """Give a VMA (or a merge proposal) the attributes a vma_modify_* caller changes."""
    if flags is not None:
        v.flags = flags
    if anon_name is not KEEP:
        v.anon_name = anon_name
    if policy is not KEEP:
        v.policy = policy
    if uffd is not KEEP:
        v.uffd = uffd
    return v


def check_modify(v: SVma) -> None:
    """mm/vma.h can_modify_vma: a sealed VMA (mseal) may not be changed: EPERM."""
    if v.flags & F.VM_SEALED:
        raise OpFailed("EPERM")


def split_vma(mm: MM, v: SVma, addr: int, check: bool = True) -> SVma:
    """mm/vma.c split_vma (check=True: map_count >= max -> ENOMEM) / __split_vma.

    ``v`` keeps [start, addr); the returned VMA is [addr, end). (Which of the two is
    the kernel's new object is not visible anywhere, so the lower part keeps its
    place in the index.) Both halves share the anon_vma and copy the chain.
    """
    if check and mm.map_count >= mm.max_map_count:
        if mm.tracing:
            mm.note(f"split {v} at {addr:#x} refused: map_count {mm.map_count} >= "
                    f"max_map_count {mm.max_map_count} (split_vma)")
        raise OpFailed("ENOMEM")
    new = v.split_off(addr)
    av = v.anon_vma
    if av is not None:
        av.num_active_vmas += 1
    v.end = addr
    mm.insert(new, v)
    if mm.tracing:
        mm.note(f"split at {addr:#x}: {v} {new} (anon_vma {av_text(v)} shared) -> "
                f"map_count {mm.map_count}")
    return new


def trace_merge(mm: MM, how: str, vmg: Any, prev: SVma | None, nxt: SVma | None,
                 merge_left: bool, merge_right: bool, rl: Sequence[R.Reason],
                 rr: Sequence[R.Reason], cross: bool, note: str = "") -> None:
    """The decision log of one merge attempt, like the seed's printk."""
    mm.note(f"{how} {vmg.start:#x}-{vmg.end:#x} (anon_vma {vmg.anon_vma or 0}): "
            f"merge_prev={int(merge_left)} merge_next={int(merge_right)} "
            f"prev->anon_vma={av_text(prev)} next->anon_vma={av_text(nxt)}{note}")
    if rl:
        mm.note(f"  prev {prev} refused: {refusal(rl)}")
    if rr:
        mm.note(f"  next {nxt} refused: {refusal(rr)}")
    if cross:
        mm.note(f"  next {nxt} dropped: prev and next have different anon_vmas "
                "(anon_vmas_compatible); prev wins")


def record_refusals(mm: MM, vmg: Any, rl: Sequence[R.Reason], rr: Sequence[R.Reason],
                    cross: bool) -> None:
    """Keep the refused merges of the op being run (replay attributes them)."""
    assert mm.refusals is not None
    if rl:
        mm.refusals.append((mm.cur_op, vmg.start, tuple(str(r.code) for r in rl)))
    if rr:
        mm.refusals.append((mm.cur_op, vmg.end, tuple(str(r.code) for r in rr)))
    if cross:
        mm.refusals.append((mm.cur_op, vmg.end, ("anon_vmas_compatible",)))


def refusal(reasons: Sequence[R.Reason]) -> str:
    return "; ".join(f"{r.code} ({r.rule}): {r.detail}" for r in reasons)


def vma_merge_existing_range(mm: MM, vmg: R.Vmg) -> SVma | None:
    """vma_merge_existing_range (6.12+) / vma_merge cases 1-8 (up to 6.11)."""
    ep = mm.epoch
    mid = vmg.middle
    left_side = vmg.start == mid.start
    right_side = vmg.end == mid.end
    if vmg.flags & F.VM_SPECIAL:
        if mm.tracing:
            mm.note(f"merge {vmg.start:#x}-{vmg.end:#x}: VM_SPECIAL, no merge")
        return None
    if not left_side and not right_side:
        if mm.tracing:
            mm.note(f"merge {vmg.start:#x}-{vmg.end:#x}: range inside {mid}, no merge")
        return None
    prev = mid.prev if left_side else None
    if prev is not None and prev.end != vmg.start:
        prev = None
    nxt = mid.next if right_side else None
    if nxt is not None and nxt.start != vmg.end:
        nxt = None
    if prev is None and nxt is None:
        if mm.tracing:
            mm.note(f"merge {vmg.start:#x}-{vmg.end:#x}: no adjacent neighbour")
        return None
    rl = R.can_vma_merge_after(ep, vmg, prev) if prev is not None else ()
    rr = R.can_vma_merge_before(ep, vmg, nxt) if nxt is not None else ()
    merge_left = prev is not None and not rl
    merge_right = nxt is not None and not rr
    cross = merge_left and merge_right and not R.anon_vmas_compatible(ep, prev, nxt)
    if cross:
        merge_right = False  # prev (left) wins
    if mm.tracing:
        trace_merge(mm, "merge", vmg, prev, nxt, merge_left, merge_right, rl, rr, cross)
    if mm.refusals is not None and (rl or rr or cross):
        record_refusals(mm, vmg, rl, rr, cross)
    if not merge_left and not merge_right:
        return None
    # Sticky flags (6.19 VM_MAYBE_GUARD) of every VMA that takes part are kept.
    sticky = (vmg.flags | mid.flags | (prev.flags if merge_left else 0)
              | (nxt.flags if merge_right else 0)) & mm.sticky
    if merge_left and merge_right:
        assert prev is not None and nxt is not None
        dup_anon_vma(prev, nxt if nxt.anon_vma is not None else mid)
        end = nxt.end
        mm.unlink(mid)
        mm.unlink(nxt)
        prev.end = end
        target = prev
    elif merge_left:
        assert prev is not None
        dup_anon_vma(prev, mid)
        if right_side:
            mm.unlink(mid)
        else:
            mid.pgoff += (vmg.end - mid.start) >> PAGE_SHIFT
            mm.set_start(mid, vmg.end)
        prev.end = vmg.end
        target = prev
    else:
        assert nxt is not None
        dup_anon_vma(nxt, mid)
        if left_side:
            mm.unlink(mid)
        else:
            mid.end = vmg.start
        mm.set_start(nxt, vmg.start)
        nxt.pgoff = vmg.pgoff
        target = nxt
    target.flags |= sticky | mm.soft_dirty
    if mm.tracing:
        mm.note(f"merged -> {target} anon_vma {av_text(target)}; map_count "
                f"{mm.map_count}")
    return target


def vma_merge_new_range(mm: MM, vmg: R.Vmg, prev: SVma | None, nxt: SVma | None, mode: str,
              just_expand: bool = False) -> SVma | None:
    """Merge a new range [vmg.start, vmg.end) (free) with its neighbours.

    mode: "vma_merge" (prev first, cross check; mm/mmap.c vma_merge up to 6.11),
    "next_first" (mm/mmap.c mmap_region 6.1-6.11), "merge_new_range" (mm/vma.c 6.12+).
    """
    ep = mm.epoch
    if prev is not None and prev.end != vmg.start:
        prev = None
    if nxt is not None and nxt.start != vmg.end:
        nxt = None
    if vmg.flags & F.VM_SPECIAL:
        if mm.tracing:
            mm.note("new range: VM_SPECIAL, no merge")
        return None
    if prev is None and nxt is None:
        return None
    pglen = (vmg.end - vmg.start) >> PAGE_SHIFT
    rl: tuple[R.Reason, ...] = ()
    rr: tuple[R.Reason, ...] = ()
    cross = False
    if mode == "next_first":
        # next first with no anon_vma; then prev against next's anon_vma.
        merge_right = False
        if nxt is not None:
            rr = R.can_vma_merge_before(ep, vmg, nxt)
            merge_right = not rr
        merge_left = False
        if prev is not None:
            saved = vmg.anon_vma
            if merge_right:
                vmg.anon_vma = nxt.anon_vma  # type: ignore[union-attr]
            rl = R.can_vma_merge_after(ep, vmg, prev)
            vmg.anon_vma = saved
            merge_left = not rl
    else:
        merge_left = prev is not None and not (rl := R.can_vma_merge_after(ep, vmg, prev))
        merge_right = False
        if nxt is not None and not just_expand:
            rr = R.can_vma_merge_before(ep, vmg, nxt)
            merge_right = not rr
            if merge_right and merge_left and not R.anon_vmas_compatible(ep, prev, nxt):
                merge_right = False
                cross = True
    if mm.refusals is not None and (rl or rr or cross):
        record_refusals(mm, vmg, rl, rr, cross)
    if mm.tracing:
        how = {"vma_merge": "vma_merge", "next_first": "mmap_region (next first)",
               "merge_new_range": "vma_merge_new_range"}[mode]
        trace_merge(mm, how, vmg, prev, nxt, merge_left, merge_right, rl, rr, cross,
                          " (just_expand: next not considered)" if just_expand and nxt else "")
    if not merge_left and not merge_right:
        return None
    copied = vmg.copied_from
    sticky = (vmg.flags | (prev.flags if merge_left else 0)
              | (nxt.flags if merge_right else 0)) & mm.sticky
    if merge_left:
        assert prev is not None
        if merge_right:
            assert nxt is not None
            dup_anon_vma(prev, nxt)
            end = nxt.end
            mm.unlink(nxt)
            prev.end = end
        else:
            prev.end = vmg.end
        target = prev
    else:
        assert nxt is not None
        mm.set_start(nxt, vmg.start)
        nxt.pgoff -= pglen
        target = nxt
    if copied is not None:
        if ep.anon_rule == "legacy" or ep.copied_from_dup:
            # vma_merge's importer logic (and 6.18.8+/6.19 copied_from) gives the
            # target the moved VMA's anon_vma.
            dup_anon_vma(target, copied)
        elif mm.tracing and copied.anon_vma is not None and target.anon_vma is None:
            mm.note(f"  note: {target} keeps no anon_vma although pages of "
                    f"{copied.anon_vma!r} moved in (the 6.16-6.18.7 mremap merge bug)")
    target.flags |= sticky | mm.soft_dirty
    if mm.tracing:
        mm.note(f"merged -> {target} anon_vma {av_text(target)}; map_count "
                f"{mm.map_count}")
    return target


def vma_modify(mm: MM, v: SVma, start: int, end: int, *, flags: int | None = None,
               anon_name: Any = KEEP, policy: Any = KEEP, uffd: Any = KEEP,
               pgoff: int | None = None) -> SVma:
    """mm/vma.c vma_modify: try a merge; otherwise split off [start, end) and change it.
    (``uffd``: the userfaultfd context, vma_modify_flags_uffd; ``pgoff``: the page offset
    the caller proposes for the merge, when it is not the range's own.)"""
    if start > v.start and end < v.end and not mm.tracing:
        # Touches neither edge: vma_merge_existing_range never merges; split twice.
        v = split_vma(mm, v, start)
        split_vma(mm, v, end)
        return set_attrs(v, flags, anon_name, policy, uffd)
    vmg = set_attrs(R.Vmg.from_vma(v, start, end), flags, anon_name, policy, uffd)
    if pgoff is not None:
        vmg.pgoff = pgoff
    merged = vma_merge_existing_range(mm, vmg)
    if merged is not None:
        if uffd is not KEEP:  # the merged-into neighbour had it already (same context)
            merged.uffd = uffd
        return merged
    if v.start < start:
        v = split_vma(mm, v, start)
    if v.end > end:
        split_vma(mm, v, end)
    return set_attrs(v, flags, anon_name, policy, uffd)


def do_vmi_munmap(mm: MM, start: int, end: int) -> None:
    """do_vmi_munmap / vms_gather_munmap_vmas: split at the edges, remove the middle."""
    v = mm.find_vma(start)
    if v is None or v.start >= end:
        return
    if start > v.start:
        if end < v.end and mm.map_count >= mm.max_map_count:
            if mm.tracing:
                mm.note(f"munmap {start:#x}-{end:#x} inside {v} refused: map_count "
                        f"{mm.map_count} >= max_map_count {mm.max_map_count}")
            raise OpFailed("ENOMEM")
        check_modify(v)  # no split of a VMA that cannot be unmapped anyway
        v = split_vma(mm, v, start, check=False)
    doomed = []
    while v is not None and v.start < end:
        check_modify(v)  # a split made before stays
        if v.end > end:
            split_vma(mm, v, end, check=False)
            doomed.append(v)
            break
        doomed.append(v)
        v = v.next
    for d in doomed:
        assert d is not None
        mm.unlink(d)
    mm.drop_resident(start, end)
    if mm.guards:
        mm.guards.difference_update(range(start >> PAGE_SHIFT, end >> PAGE_SHIFT))
    if mm.tracing:
        mm.note(f"unmapped {len(doomed)} VMA(s) in {start:#x}-{end:#x}; map_count "
                f"{mm.map_count}")
