"""mm/rmap.c: anon_vma objects, their reuse on a fault, and anon_vma_fork.

A VMA's ``anon_vma`` is where its anonymous pages are found again; it is made lazily, on
the first fault that needs it (``anon_vma_prepare``), reusing a compatible neighbour's
when that neighbour's chain is singular. Two VMAs with different anon_vmas never merge
(see kernel/rules.py), which is what fragments GC heaps.
"""

from __future__ import annotations

from .. import rules as R
from .mm import MM, AnonVma, SVma


def new_anon_vma(mm: MM, parent: AnonVma | None = None) -> AnonVma:
    """mm/rmap.c anon_vma_alloc: a new anon_vma, numbered in this mm (and its forks)."""
    av = AnonVma(mm.next_anon_id, parent)
    mm.next_anon_id += 1
    return av


def anon_vma_prepare(mm: MM, v: SVma) -> None:
    """mm/rmap.c __anon_vma_prepare: reuse a compatible neighbour's anon_vma, or make one."""
    if v.anon_vma is not None:
        return
    av = R.find_mergeable_anon_vma(v, v.prev, v.next)
    if av is None:
        av = new_anon_vma(mm)
        av.num_children += 1  # the self-parent link of a new root
        if mm.tracing:
            mm.note(f"anon_vma_prepare {v}: new {av!r}")
    elif mm.tracing:
        src = "next" if v.next is not None and v.next.anon_vma is av else "prev"
        mm.note(f"anon_vma_prepare {v}: reuse {av!r} from {src} "
                "(anon_vma_compatible, singular chain)")
    v.anon_vma = av
    v.chain = (av,)
    av.num_active_vmas += 1


def dup_anon_vma(dst: SVma, src: SVma) -> None:
    """mm/vma.c dup_anon_vma: dst takes src's anon_vma and chain if it has none."""
    if src.anon_vma is not None and dst.anon_vma is None:
        dst.anon_vma = src.anon_vma
        dst.chain = src.chain
        src.anon_vma.num_active_vmas += 1


def anon_vma_fork(mm: MM, c: SVma, p: SVma, child: MM) -> None:
    """mm/rmap.c anon_vma_fork: link the child's copy ``c`` of ``p`` to p's anon_vmas,
    reusing one (anon_vma_clone) or making a new child anon_vma."""
    assert p.anon_vma is not None
    c.anon_vma = None
    chain: list[AnonVma] = []
    for av in reversed(p.chain):  # anon_vma_clone with reuse
        chain.append(av)
        if c.anon_vma is None and clone_reusable(mm, av, p):
            c.anon_vma = av
    if c.anon_vma is not None:
        c.anon_vma.num_active_vmas += 1
        c.chain = tuple(chain)
        return
    av = new_anon_vma(child, p.anon_vma)
    av.num_active_vmas = 1
    p.anon_vma.num_children += 1
    chain.append(av)
    c.chain = tuple(chain)
    c.anon_vma = av


def clone_reusable(mm: MM, av: AnonVma, src: SVma) -> bool:
    """anon_vma_clone's reuse test for one anon_vma of the source chain."""
    if mm.epoch.clone_reuse == "degree":
        # Before 2555283eb40d: anon_vma != src->anon_vma && degree < 2.
        return av is not src.anon_vma and av.num_active_vmas + av.num_children < 2
    return av.num_children < 2 and av.num_active_vmas == 0


def unlink_anon_vmas(family: list[MM], gone: list[SVma]) -> None:
    """mm/rmap.c unlink_anon_vmas for every VMA of ``gone`` (an exiting mm's VMAs).

    Each VMA drops its anon_vma's num_active_vmas (5.10: degree); an anon_vma no VMA of
    ``family`` (the mms still alive) links to any more drops its parent's num_children
    (5.10: degree), the parent being itself for a root anon_vma.
    """
    linked: dict[int, AnonVma] = {}
    for v in gone:
        if v.anon_vma is not None:
            v.anon_vma.num_active_vmas -= 1
        for av in v.chain:
            linked[id(av)] = av
    if not linked:
        return
    still = {id(av) for m in family for w in m for av in w.chain}
    for key, av in linked.items():
        if key not in still:
            av.parent.num_children -= 1
