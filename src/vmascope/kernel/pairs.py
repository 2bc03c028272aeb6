"""explain_pair: the merge rules applied to two VMAs as /proc (or a Snapshot) shows them.

This is how ``vmascope analyze`` asks the one rule module why two neighbours are apart:
each side is seen through the attributes the predicates read, with what /proc cannot
show (anon_vma, pgoff of anonymous memory) taken from the Snapshot when it knows it, and
inferred from smaps otherwise. With the kernel view (``Vma.kview``, read by BPF) the
anon_vma, its chain, the real page offset, the open file and the userfaultfd context
are known, and the blind spots of /proc get their own reasons (:func:`_refine`).
"""

from __future__ import annotations

import dataclasses

from ..kconst import PAGE_SHIFT
from ..model import Vma
from ..reasons import Code
from .epochs import Epoch
from .rules import Reason, _era, _rel, can_vma_merge_after, can_vma_merge_before, special_reason
from .vmflags import (
    PERM_FLAGS,
    VM_EXEC,
    VM_MAYSHARE,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    flags_from_names,
)


class _View:
    """A model.Vma seen through the attributes the predicates read."""

    __slots__ = ("start", "end", "pgoff", "flags", "file", "file_label", "anon_vma", "chain",
                 "anon_name", "policy", "uffd", "middle", "copied_from", "flags_known",
                 "anon_known", "anon_certain", "kview", "emptied")

    def __init__(self, v: Vma, extra: dict[str, int], ids_known: bool) -> None:
        self.start, self.end = v.start, v.end
        self.flags_known = v.flags is not None
        if v.flags is not None:
            self.flags = flags_from_names(v.flags, extra)
        else:
            self.flags = 0
        # Permissions are always known from the maps line.
        p = v.perms
        self.flags &= ~PERM_FLAGS
        self.flags |= ((VM_READ if p[0] == "r" else 0) | (VM_WRITE if p[1] == "w" else 0)
                       | (VM_EXEC if p[2] == "x" else 0)
                       | ((VM_MAYSHARE | (VM_SHARED if v.flags is None or "sh" in v.flags
                                          else 0)) if p[3] == "s" else 0))
        name = v.name
        anon = v.inode == 0 and (name is None or name.startswith("["))
        self.file = None if anon else (v.dev, v.inode, name)
        self.file_label = None if anon else (name or f"inode {v.inode}")
        self.pgoff = v.offset >> PAGE_SHIFT
        self.anon_name = None
        if name and name.startswith("[anon:") and name.endswith("]"):
            self.anon_name = name[6:-1]
        self.policy = v.policy
        self.uffd = None
        self.middle = None
        self.copied_from = None
        self.anon_known = True
        self.anon_certain = True
        if ids_known:
            self.anon_vma = v.anon_vma
        elif v.smaps is not None and "Anonymous" in v.smaps:
            self.anon_vma = object() if v.smaps["Anonymous"] > 0 else None
            self.anon_certain = False
        else:
            self.anon_vma = None
            self.anon_known = False
        self.chain = (self.anon_vma,) if self.anon_vma is not None else ()
        self.kview = v.kview
        self.emptied = False
        if v.kview is not None:
            self._from_kernel(v, v.kview)

    def _from_kernel(self, v: Vma, kv: dict[str, int]) -> None:
        """What the kernel view knows for certain replaces what /proc suggests."""
        self.pgoff = kv["pgoff"]
        if self.file is not None and kv["file"]:
            self.file = ("file", kv["file"])
        self.anon_vma = kv["anon_vma"] or None
        self.anon_known = self.anon_certain = True
        # The chain's entries are not identities here: only its length matters.
        self.chain = tuple(range(kv["chain"])) if self.anon_vma is not None else ()
        self.uffd = kv["uffd"] or None
        pages = (v.smaps or {}).get("Anonymous", -1) + (v.smaps or {}).get("Swap", 0)
        self.emptied = self.anon_vma is not None and pages == 0


def _same_file(a: _View, b: _View) -> None:
    """Make equal identities of two views one object (the predicates use 'is')."""
    if a.file is not None and a.file == b.file:
        b.file = a.file
    if a.anon_vma is not None and a.anon_vma == b.anon_vma:
        b.anon_vma = a.anon_vma
    if a.uffd is not None and a.uffd == b.uffd:
        b.uffd = a.uffd


def _refine(r: Reason, prev: Vma, nxt: Vma, left: _View, right: _View) -> Reason:
    """A reason in the blind spots of /proc, seen through the kernel view, under its own
    code: moved anonymous memory (pgoff), an emptied side that keeps its anon_vma, one
    file opened twice."""
    if r.code == Code.PGOFF and left.file is None and right.file is None:
        pages = (left.end - left.start) >> PAGE_SHIFT
        return dataclasses.replace(r, code=Code.ANON_PGOFF, detail=(
            f"anonymous memory with page offsets {left.pgoff:#x} (+{pages:#x} pages) and "
            f"{right.pgoff:#x}: one side was moved by mremap (/proc prints 0 for both)"))
    if r.code == Code.ANON_VMA and (left.emptied or right.emptied):
        side = "left" if left.emptied else "right"
        return dataclasses.replace(r, code=Code.ANON_VMA_EMPTIED, detail=(
            f"the {side} VMA holds no pages (emptied, e.g. by MADV_DONTNEED) but keeps "
            f"its own anon_vma, which differs from its neighbour's"))
    if (r.code == Code.FILE and prev.inode and prev.inode == nxt.inode
            and prev.dev == nxt.dev):
        return dataclasses.replace(r, code=Code.FILE_TWICE, detail=(
            f"the same file (inode {prev.inode}) through two open files "
            f"(f{(left.kview or {}).get('file', 0)} and f{(right.kview or {}).get('file', 0)})"))
    return r


def explain_pair(prev: Vma, next: Vma, epoch: Epoch) -> list[Reason]:  # noqa: A002
    """Every reason the kernel of ``epoch`` would refuse to merge two VMAs.

    An empty list means: an operation that tried would merge them. Reasons that depend on
    whether a side holds an anon_vma are "certain" when the anon_vma ids are known
    (simulated snapshots) and "inferred" from smaps' Anonymous otherwise.
    """
    extra: dict[str, int] = {}
    ids_known = (prev.anon_vma is not None or next.anon_vma is not None
                 or (prev.kview is not None and next.kview is not None))
    left = _View(prev, extra, ids_known)
    right = _View(next, extra, ids_known)
    _same_file(left, right)
    reasons: list[Reason] = []
    if prev.end != next.start:
        reasons.append(Reason(Code.NOT_ADJACENT, f"there is a gap of {next.start - prev.end:#x} "
                              f"bytes between them" if next.start > prev.end else
                              "the ranges are not in address order", "certain",
                              "can_vma_merge_after", f"{_era(epoch)} vma_merge ({_rel(epoch)})"))
    for side in (left, right):
        sr = special_reason(epoch, side.flags)
        if sr is not None and sr not in reasons:
            reasons.append(sr)
    if not (left.flags_known and right.flags_known):
        # Only the permissions are comparable; hide the unknown flag words from the diff.
        left.flags &= PERM_FLAGS
        right.flags &= PERM_FLAGS
    if left.policy is None or right.policy is None:
        left.policy = right.policy = None
    certain = left.kview is not None and right.kview is not None
    if (left.file is None and right.file is None and left.pgoff == 0 and right.pgoff == 0
            and not certain):
        # /proc prints 0 as the offset of anonymous memory: the real pgoff is unknown.
        right.pgoff = left.pgoff + ((left.end - left.start) >> PAGE_SHIFT)
    anon_conf = "certain" if (left.anon_certain and right.anon_certain) else "inferred"
    # Both directions: an operation on the right VMA tries to merge it into the left one
    # (can_vma_merge_after), an operation on the left one into the right (..._before).
    right.middle = right
    left.middle = left
    codes: set[str] = {r.code for r in reasons}
    found = list(can_vma_merge_after(epoch, right, left, "certain"))
    found += can_vma_merge_before(epoch, left, right, "certain")
    for r in found:
        if r.code in codes:
            continue
        if r.code in ("anon_vma", "anon_vma_unfaulted", "fork_child"):
            if not (left.anon_known and right.anon_known):
                continue
            r = dataclasses.replace(r, confidence=anon_conf)
            if anon_conf == "inferred":
                r = dataclasses.replace(r, detail=r.detail + " (judged from smaps Anonymous: "
                                        "most likely)")
        if certain:
            r = _refine(r, prev, next, left, right)
            if r.code in codes:
                continue
        codes.add(r.code)
        reasons.append(r)
    if extra:
        # Mnemonics this module does not know were given bits above the known ones.
        names = {f"bit{(bit.bit_length() - 1)}": m for m, bit in extra.items()}
        fixed = []
        for r in reasons:
            detail = r.detail
            for token, m in names.items():
                detail = detail.replace(f"{token} = unknown flag", f"{m} = unknown flag")
            fixed.append(dataclasses.replace(r, detail=detail))
        reasons = fixed
    return reasons


__all__ = ["explain_pair"]
