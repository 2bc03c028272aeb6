"""THE VMA merge rules, per kernel epoch: one module for the simulator and the explainer.

The predicates carry the kernel's names (mm/vma.c, mm/mmap.c, mm/rmap.c) and take
"VMA-like" objects with these attributes:

    start, end        byte addresses, [start, end)
    pgoff             in pages
    flags             int bit set: bit i is model.KNOWN_VMFLAGS[i] (the VmFlags mnemonic)
    file              identity of the struct file, or None for anonymous memory
    anon_vma          identity of the anon_vma, or None (unfaulted)
    chain             sequence: the anon_vma_chain (its length is what matters)
    anon_name         str or None
    policy            hashable mempolicy, None = default
    uffd              identity of the userfaultfd context, or None

plus, on a proposal (:class:`Vmg`, the kernel's ``struct vma_merge_struct``): ``middle``
(the VMA being modified, None for a new range) and ``copied_from`` (mremap's source).

Every predicate returns a tuple of :class:`Reason` (empty: allowed), so the simulator's
decision and ``explain_pair``'s explanation come from the same code. The simulator only
looks at whether the tuple is empty; building a Reason happens only on refusal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..kconst import PAGE_SHIFT
from ..model import VMFLAG_MEANING
from ..reasons import Code
from .changes import first_change
from .epochs import Epoch
from .vmflags import (
    VM_ACCESS_FLAGS,
    VM_ACCOUNT,
    VM_EXEC,
    VM_HUGETLB,
    VM_MAYBE_GUARD,
    VM_MAYSHARE,
    VM_NORESERVE,
    VM_READ,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_SPECIAL,
    VM_UFFD_FLAGS,
    VM_WRITE,
    PERM_FLAGS,
    flag_names,
)


def ignored_merge_flags(epoch: Epoch) -> int:
    """Flags that never prevent a merge: VM_SOFTDIRTY always (mm/vma.c is_mergeable_vma);
    from 6.19 also the sticky VM_MAYBE_GUARD (VMA_IGNORE_MERGE_FLAGS, 6.19)."""
    return VM_SOFTDIRTY | (VM_MAYBE_GUARD if epoch.sticky_guard_flag else 0)


# -- reasons ----------------------------------------------------------------------------------

# The change that made the anon_vma rule look at the target and the source.
CITE_616 = first_change("anon_rule").citation


@dataclasses.dataclass(frozen=True)
class Reason:
    """Why the kernel of an epoch refuses a merge."""

    code: Code
    detail: str  # a sentence naming the difference
    confidence: str  # "certain" (visible in /proc) or "inferred"
    rule: str  # the kernel predicate
    citation: str  # commit (release) or file/function (release)

    def __str__(self) -> str:
        return f"{self.code}: {self.detail} [{self.rule}, {self.citation}; {self.confidence}]"


def _era(epoch: Epoch) -> str:
    return "mm/vma.c" if epoch.version >= (6, 12, 0) else "mm/mmap.c"


def _rel(epoch: Epoch) -> str:
    return "%d.%d" % epoch.version[:2]


def _describe(mnemonics: Sequence[str]) -> str:
    return ", ".join(f"{m} = {VMFLAG_MEANING.get(m, 'unknown flag')}" for m in mnemonics)


# -- proposals --------------------------------------------------------------------------------


class Vmg:
    """A merge proposal (the kernel's struct vma_merge_struct): the range and the attributes
    it would have, plus the VMA being modified (``middle``) for an existing range."""

    __slots__ = ("start", "end", "pgoff", "flags", "file", "anon_vma", "policy", "anon_name",
                 "uffd", "middle", "copied_from", "chain")

    def __init__(self, start: int, end: int, pgoff: int, flags: int, *, file: Any = None,
                 anon_vma: Any = None, policy: Any = None, anon_name: str | None = None,
                 uffd: Any = None, middle: Any = None, copied_from: Any = None) -> None:
        self.start = start
        self.end = end
        self.pgoff = pgoff
        self.flags = flags
        self.file = file
        self.anon_vma = anon_vma
        self.policy = policy
        self.anon_name = anon_name
        self.uffd = uffd
        self.middle = middle
        self.copied_from = copied_from
        self.chain: Sequence[Any] = () if middle is None else middle.chain

    @classmethod
    def from_vma(cls, vma: Any, start: int | None = None, end: int | None = None) -> Vmg:
        """VMG_VMA_STATE: a proposal initialised from the VMA being modified."""
        s = vma.start if start is None else start
        e = vma.end if end is None else end
        return cls(s, e, vma.pgoff + ((s - vma.start) >> PAGE_SHIFT), vma.flags, file=vma.file,
                   anon_vma=vma.anon_vma, policy=vma.policy, anon_name=vma.anon_name,
                   uffd=vma.uffd, middle=vma)


# -- the predicates ---------------------------------------------------------------------------


def fork_child(vma: Any) -> bool:
    """The VMA is linked to more than one anon_vma: a fork child's VMA (or a split of one).

    mm/vma.c vma_is_fork_child (6.19; vma_had_uncowed_parents in 6.16-6.18). An unfaulted
    VMA (empty chain) is not a fork child.
    """
    return vma is not None and vma.anon_vma is not None and len(vma.chain) != 1


def mpol_equal(a: Any, b: Any) -> bool:
    """mm/mempolicy.c mpol_equal: None (the default policy) equals only None."""
    return a == b


def anon_vma_name_eq(a: str | None, b: str | None) -> bool:
    """mm/madvise.c anon_vma_name_eq: same pointer, or both set and equal strings."""
    return a == b


def is_mergeable_vma(epoch: Epoch, vmg: Any, tgt: Any, tgt_is_left: bool,
                     confidence: str = "certain") -> tuple[Reason, ...]:
    """Attribute equality between a proposal and the VMA it would merge with.

    policy, flags except VM_SOFTDIRTY (and 6.19's sticky flags), struct file, userfaultfd
    context, anon name. mm/vma.c is_mergeable_vma (6.12; mm/mmap.c before).
    """
    diff = (vmg.flags ^ tgt.flags) & ~ignored_merge_flags(epoch)
    if (not diff and vmg.file is tgt.file and vmg.policy == tgt.policy
            and vmg.anon_name == tgt.anon_name and vmg.uffd is tgt.uffd):
        return ()
    left, right = (tgt, vmg) if tgt_is_left else (vmg, tgt)
    rule = "is_mergeable_vma"
    cite = f"{_era(epoch)} is_mergeable_vma ({_rel(epoch)})"
    out: list[Reason] = []
    if not mpol_equal(vmg.policy, tgt.policy):
        out.append(Reason(Code.MEMPOLICY, f"NUMA policies differ: {left.policy or 'default'} "
                          f"on the left, {right.policy or 'default'} on the right",
                          confidence, rule, cite))
    if diff & PERM_FLAGS:
        out.append(Reason(Code.PERMS, "permissions differ: " + _perm_text(left.flags)
                          + " on the left, " + _perm_text(right.flags) + " on the right",
                          confidence, rule, cite))
    if diff & VM_UFFD_FLAGS:
        out.append(Reason(Code.UFFD, _flag_diff_text("userfaultfd registration differs",
                                                  left.flags, right.flags, VM_UFFD_FLAGS),
                          confidence, rule, cite))
    rest = diff & ~(PERM_FLAGS | VM_UFFD_FLAGS)
    if rest:
        out.append(Reason(Code.VMFLAGS, _flag_diff_text("VmFlags differ", left.flags,
                                                     right.flags, rest),
                          confidence, rule, cite))
    if vmg.file is not tgt.file:
        out.append(Reason(Code.FILE, _file_text(left, right), confidence, rule, cite))
    if vmg.uffd is not tgt.uffd and not diff & VM_UFFD_FLAGS:
        out.append(Reason(Code.UFFD, "registered with different userfaultfd contexts",
                          confidence, rule, cite))
    if not anon_vma_name_eq(vmg.anon_name, tgt.anon_name):
        out.append(Reason(Code.ANON_NAME, f"anon names differ: {_name_text(left.anon_name)} on "
                          f"the left, {_name_text(right.anon_name)} on the right",
                          confidence, rule, cite))
    return tuple(out)


def _perm_text(flags: int) -> str:
    return (("r" if flags & VM_READ else "-") + ("w" if flags & VM_WRITE else "-")
            + ("x" if flags & VM_EXEC else "-") + ("s" if flags & VM_MAYSHARE else "p"))


def _flag_diff_text(head: str, left: int, right: int, mask: int) -> str:
    only_l = flag_names(left & ~right & mask)
    only_r = flag_names(right & ~left & mask)
    parts = []
    if only_l:
        parts.append(_describe(only_l) + " only on the left")
    if only_r:
        parts.append(_describe(only_r) + " only on the right")
    return head + ": " + "; ".join(parts)


def _file_text(left: Any, right: Any) -> str:
    def show(v: Any) -> str:
        return "anonymous memory" if v.file is None else f"file {getattr(v, 'file_label', v.file)}"
    a, b = show(left), show(right)
    if a == b:
        return f"different open files ({a} on both sides, opened separately)"
    return f"backing differs: {a} on the left, {b} on the right"


def _name_text(name: str | None) -> str:
    return "no name" if name is None else f"[anon:{name}]"


def is_mergeable_anon_vma(epoch: Epoch, vmg: Any, tgt: Any, tgt_is_left: bool,
                          confidence: str = "certain") -> tuple[Reason, ...]:
    """May the proposal's anon_vma and the target's be merged into one VMA?"""
    a_src, a_tgt = vmg.anon_vma, tgt.anon_vma
    side_t, side_s = ("left", "right") if tgt_is_left else ("right", "left")
    if epoch.anon_rule == "legacy":
        # mm/mmap.c (mm/vma.c from 6.12) is_mergeable_anon_vma(anon_vma1, anon_vma2, vma),
        # before 879bca0a2c4f (6.16): a NULL anon_vma only merges if the target's
        # anon_vma_chain is singular; an unfaulted target's chain is empty.
        if (a_src is None or a_tgt is None) and len(tgt.chain) == 1:
            return ()
        if a_src is a_tgt:
            return ()
        cite = f"{_era(epoch)} is_mergeable_anon_vma ({_rel(epoch)}); fixed by {CITE_616}"
        if a_tgt is None:
            return (Reason(Code.ANON_VMA_UNFAULTED,
                           f"the {side_s} VMA has an anon_vma (faulted) and the {side_t} one "
                           f"has none (unfaulted); before 6.16 the kernel refuses to merge a "
                           f"faulted VMA into an unfaulted neighbour, because the unfaulted "
                           f"one's anon_vma_chain is empty, not singular",
                           confidence, "is_mergeable_anon_vma", cite),)
        if a_src is None:
            return (Reason(Code.FORK_CHILD,
                           f"the {side_t} VMA belongs to a forked child (its anon_vma_chain "
                           f"links the parent's anon_vma too), so an unfaulted VMA cannot "
                           f"merge with it", confidence, "is_mergeable_anon_vma", cite),)
        if _whatif_merge(epoch, vmg, tgt):
            return ()
        return (Reason(Code.ANON_VMA, "the two VMAs have different anon_vmas (each was "
                       "faulted separately)", confidence, "is_mergeable_anon_vma", cite),)
    # 879bca0a2c4f (6.16): mm/vma.c is_mergeable_anon_vma(vmg, merge_next).
    cite = f"mm/vma.c is_mergeable_anon_vma, {CITE_616}"
    if a_tgt is None and a_src is not None:
        # The target will take the source's anon_vma (dup_anon_vma).
        if fork_child(vmg.middle) or (epoch.copied_from_dup and fork_child(vmg.copied_from)):
            return (Reason(Code.FORK_CHILD,
                           f"the {side_s} VMA belongs to a forked child (linked to more than "
                           f"one anon_vma), so its anon_vma cannot be duplicated into the "
                           f"unfaulted {side_t} one", confidence, "is_mergeable_anon_vma",
                           cite),)
        return ()
    if a_tgt is not None and a_src is None:
        if fork_child(tgt):
            return (Reason(Code.FORK_CHILD,
                           f"the {side_t} VMA belongs to a forked child (linked to more than "
                           f"one anon_vma)", confidence, "is_mergeable_anon_vma", cite),)
        return ()
    if a_src is a_tgt or _whatif_merge(epoch, vmg, tgt):
        return ()
    return (Reason(Code.ANON_VMA, "the two VMAs have different anon_vmas (each was faulted "
                   "separately)", confidence, "is_mergeable_anon_vma", cite),)


def _whatif_merge(epoch: Epoch, vmg: Any, tgt: Any) -> bool:
    """HYPOTHETICAL (kernel/whatif.py "anon-merge"): different anon_vmas merge when
    neither is shared with another process."""
    if "anon-merge" not in epoch.hypotheses:
        return False
    from .whatif import unshared

    return (unshared(vmg.anon_vma) and unshared(tgt.anon_vma) and len(tgt.chain) == 1
            and not fork_child(getattr(vmg, "middle", None)))


def anon_vmas_compatible(epoch: Epoch, prev: Any, nxt: Any) -> bool:
    """The prev<->next cross check when a merge would join both: at most one anon_vma.

    ``is_mergeable_anon_vma(prev->anon_vma, next->anon_vma, NULL)`` up to 6.15,
    written out in can_vma_merge_right from 879bca0a2c4f (6.16); same truth table.
    """
    a, b = prev.anon_vma, nxt.anon_vma
    if "anon-merge" in epoch.hypotheses:  # HYPOTHETICAL (kernel/whatif.py)
        from .whatif import unshared

        if unshared(a) and unshared(b) and len(prev.chain) == 1 and len(nxt.chain) == 1:
            return True
    return a is None or b is None or a is b


def pgoff_continuous(left_pgoff: int, left_pages: int, right_pgoff: int) -> bool:
    return left_pgoff + left_pages == right_pgoff


def can_vma_merge_after(epoch: Epoch, vmg: Any, prev: Any,
                        confidence: str = "certain") -> tuple[Reason, ...]:
    """Can the proposal be appended to ``prev``? (mm/vma.c can_vma_merge_after)"""
    r = is_mergeable_vma(epoch, vmg, prev, True, confidence)
    r += is_mergeable_anon_vma(epoch, vmg, prev, True, confidence)
    if not pgoff_continuous(prev.pgoff, (prev.end - prev.start) >> PAGE_SHIFT, vmg.pgoff):
        r += (_pgoff_reason(epoch, prev.pgoff, (prev.end - prev.start) >> PAGE_SHIFT, vmg.pgoff,
                            prev.file is not None, confidence),)
    return r


def can_vma_merge_before(epoch: Epoch, vmg: Any, nxt: Any,
                         confidence: str = "certain") -> tuple[Reason, ...]:
    """Can the proposal be prepended to ``nxt``? (mm/vma.c can_vma_merge_before)"""
    r = is_mergeable_vma(epoch, vmg, nxt, False, confidence)
    r += is_mergeable_anon_vma(epoch, vmg, nxt, False, confidence)
    pages = (vmg.end - vmg.start) >> PAGE_SHIFT
    if not pgoff_continuous(vmg.pgoff, pages, nxt.pgoff):
        r += (_pgoff_reason(epoch, vmg.pgoff, pages, nxt.pgoff, nxt.file is not None,
                            confidence),)
    return r


def _pgoff_reason(epoch: Epoch, lp: int, pages: int, rp: int, is_file: bool,
                  confidence: str) -> Reason:
    what = "file offsets" if is_file else "page offsets (vm_pgoff)"
    why = "" if is_file else (" (anonymous memory keeps the pgoff it had where it was "
                              "first faulted, so a faulted VMA moved by mremap is not linear "
                              "with its new neighbours)")
    return Reason(Code.PGOFF, f"{what} are not continuous: the left VMA ends at page "
                  f"{lp + pages:#x}, the right one starts at page {rp:#x}{why}", confidence,
                  "can_vma_merge_after", f"{_era(epoch)} can_vma_merge_after ({_rel(epoch)})")


def special_reason(epoch: Epoch, flags: int, confidence: str = "certain") -> Reason | None:
    """VM_SPECIAL (VM_IO|VM_DONTEXPAND|VM_PFNMAP|VM_MIXEDMAP) VMAs never merge."""
    if not flags & VM_SPECIAL:
        return None
    return Reason(Code.SPECIAL, "special mapping (" + _describe(flag_names(flags & VM_SPECIAL))
                  + ") never merges", confidence, "vma_merge_existing_range",
                  f"{_era(epoch)} VM_SPECIAL check ({_rel(epoch)})")


# -- page fault: anon_vma reuse ---------------------------------------------------------------


def anon_vma_compatible(a: Any, b: Any) -> bool:
    """mm/rmap.c anon_vma_compatible: may b reuse a's anon_vma (or a b's) on a fault?

    Adjacent, same policy and file, flags equal except R/W/X and soft-dirty, pgoff linear.
    Anon names and userfaultfd contexts are not compared. Same in every supported release.
    """
    return (a.end == b.start and mpol_equal(a.policy, b.policy) and a.file is b.file
            and not ((a.flags ^ b.flags) & ~(VM_ACCESS_FLAGS | VM_SOFTDIRTY))
            and b.pgoff == a.pgoff + ((b.start - a.start) >> PAGE_SHIFT))


def reusable_anon_vma(old: Any, a: Any, b: Any) -> Any:
    """mm/rmap.c reusable_anon_vma: old's anon_vma if compatible and its chain is singular."""
    if old.anon_vma is not None and len(old.chain) == 1 and anon_vma_compatible(a, b):
        return old.anon_vma
    return None


def find_mergeable_anon_vma(vma: Any, prev: Any, nxt: Any) -> Any:
    """mm/rmap.c find_mergeable_anon_vma: try the next VMA first, then the previous one."""
    if nxt is not None:
        av = reusable_anon_vma(nxt, vma, nxt)
        if av is not None:
            return av
    if prev is not None:
        return reusable_anon_vma(prev, prev, vma)
    return None


# -- accounting -------------------------------------------------------------------------------


def accountable_mapping(flags: int) -> bool:
    """mm/mmap.c accountable_mapping: private writable and not NORESERVE -> VM_ACCOUNT."""
    return (flags & (VM_NORESERVE | VM_SHARED | VM_WRITE)) == VM_WRITE


def mprotect_newflags(epoch: Epoch, oldflags: int, newprot_bits: int, anonymous: bool,
                      faulted: bool) -> int:
    """mm/mprotect.c: the flags a VMA gets from mprotect, including the VM_ACCOUNT rules."""
    newflags = newprot_bits | (oldflags & ~VM_ACCESS_FLAGS)
    if newflags & VM_WRITE:
        if not oldflags & (VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE):
            newflags |= VM_ACCOUNT
    elif epoch.mprotect_unaccount and oldflags & VM_ACCOUNT and anonymous and not faulted:
        # mm/mprotect.c mprotect_fixup (6.7): an unfaulted anonymous VMA made
        # non-writable gives its commit charge back.
        newflags &= ~VM_ACCOUNT
    return newflags


__all__ = [
    "CITE_616", "Reason", "Vmg", "accountable_mapping", "anon_vma_compatible",
    "anon_vmas_compatible", "can_vma_merge_after", "can_vma_merge_before",
    "find_mergeable_anon_vma", "fork_child", "is_mergeable_anon_vma", "is_mergeable_vma",
    "mprotect_newflags", "mpol_equal", "reusable_anon_vma", "special_reason",
]
