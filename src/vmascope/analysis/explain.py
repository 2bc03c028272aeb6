"""Why not merged: the kernel's reasons for every look-alike adjacent pair.

The verdicts come from :func:`vmascope.kernel.pairs.explain_pair`, the one rule module
that the simulator also uses; nothing here decides mergeability on its own.

Two million pairs are not explained one by one. Every pair gets a *signature* made of
everything ``explain_pair`` can look at besides addresses: both sides' permissions,
VmFlags, names, NUMA policies, device/inode, offset continuity, whether each side holds
anonymous (or swapped) pages according to smaps, and the anon_vma identities when the
snapshot knows them (simulated or lab snapshots). Pairs with equal signatures get equal
verdicts, so ``explain_pair`` runs once per distinct signature (a *kind* of pair) and
the counts are summed with numpy.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UsageError
from ..kconst import ANALYSIS_SMAPS_FIELDS, PAGE_SHIFT
from ..kernel.epochs import Epoch, epoch_for
from ..kernel.pairs import explain_pair
from ..kernel.rules import Reason
from ..model import Snapshot
from ..reasons import Code, label

_MIX = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)


@dataclasses.dataclass(frozen=True)
class ReasonCount:
    reason: str
    confidence: str
    count: int
    rule: str
    citation: str
    detail: str  # the detail of the commonest kind of pair with this reason
    details: dict[str, int]  # detail sentence -> pairs (the commonest few)
    example: int  # address of the boundary of one such pair (prev.end == next.start)
    # For "vmflags": VmFlags mnemonic -> pairs in which that flag differs.
    flags: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return label(self.reason)

    def to_json(self) -> dict[str, object]:
        return {
            "reason": self.reason,
            "label": self.label,
            "confidence": self.confidence,
            "count": self.count,
            "rule": self.rule,
            "citation": self.citation,
            "detail": self.detail,
            "details": self.details,
            "example_boundary": hex(self.example),
            "flags": self.flags,
        }


@dataclasses.dataclass
class WhyNotMerged:
    kernel: str
    kernel_source: str  # option | snapshot | host
    epoch: str
    note: str | None  # what the snapshot lacks for a full explanation
    pairs: int
    kinds: int
    reasons: list[ReasonCount]  # most pairs first
    unexplained: int  # pairs explain_pair found no reason for (they would merge)
    # Per pair: index of its first VMA, and its kind; per kind: the reasons.
    pair_index: np.ndarray = dataclasses.field(repr=False)
    pair_kind: np.ndarray = dataclasses.field(repr=False)
    kind_reasons: list[tuple[Reason, ...]] = dataclasses.field(repr=False)

    @property
    def dominant(self) -> ReasonCount | None:
        return self.reasons[0] if self.reasons else None

    def reasons_after(self, index: int) -> tuple[Reason, ...]:
        """The reasons for the pair (index, index + 1), () if it is not a look-alike pair."""
        k = int(np.searchsorted(self.pair_index, index))
        if k < len(self.pair_index) and self.pair_index[k] == index:
            return self.kind_reasons[int(self.pair_kind[k])]
        return ()

    def run_reasons(self, first: int, vma_count: int) -> list[str]:
        """Reason codes of the commonest kind of pair inside a run of look-alike VMAs
        (VMAs first .. first + vma_count - 1); [] if none is visible."""
        k0 = int(np.searchsorted(self.pair_index, first))
        k1 = int(np.searchsorted(self.pair_index, first + vma_count - 1))
        if k1 <= k0 or not self.kind_reasons:
            return []
        top = int(np.bincount(self.pair_kind[k0:k1]).argmax())
        return list(dict.fromkeys(r.code for r in self.kind_reasons[top]))

    def summary_lines(self) -> list[str]:
        out = []
        for r in self.reasons:
            out.append(f"{r.count:,} of {self.pairs:,}: {r.label}, {r.confidence}")
        if self.unexplained:
            out.append(f"{self.unexplained:,} of {self.pairs:,}: {Code.UNEXPLAINED.label}")
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "kernel": self.kernel,
            "kernel_source": self.kernel_source,
            "epoch": self.epoch,
            "note": self.note,
            "pairs": self.pairs,
            "kinds": self.kinds,
            "unexplained": self.unexplained,
            "summary": self.summary_lines(),
        }


def resolve_kernel(snap: Snapshot, kernel: str | None) -> tuple[str, str]:
    """(release, where it came from): the option, else the snapshot's own, else this host."""
    if kernel:
        return kernel, "option"
    if snap.meta.kernel_release:
        return snap.meta.kernel_release, "snapshot"
    return os.uname().release, "host"


def _page_state(col: np.ndarray) -> np.ndarray:
    """Per VMA, from an smaps column: 0 field absent (-1), 1 zero, 2 positive."""
    out = (col >= 0).astype(np.int8)
    out += col > 0
    return out


def vma_columns(snap: Snapshot) -> list[np.ndarray]:
    """Per VMA, everything explain_pair may read besides addresses and offsets."""
    cols: list[np.ndarray] = [snap.perms, snap.name_id, snap.dev, snap.inode]
    if snap.vmflags is not None:
        cols.append(snap.vmflags)
    if snap.policy_id is not None:
        cols.append(snap.policy_id)
    for field in ANALYSIS_SMAPS_FIELDS:
        col = snap.smaps.get(field)
        if col is not None:
            cols.append(_page_state(col))
    if snap.anon_vma is not None:
        cols.append(snap.anon_vma >= 0)
    if snap.kview is not None:
        # The kernel view: a fork child's chain (length other than 1), a userfaultfd
        # context, an open file, a VMA the iterator did not see.
        kv = snap.kview
        cols += [np.minimum(kv["chain"], 2), kv["uffd"] > 0, kv["file"] > 0,
                 kv["bits"] >> np.uint64(16)]
    return cols


def pair_kinds(snap: Snapshot, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group the look-alike pairs (bool mask over pairs k, k+1) by what explain_pair sees.

    Returns (prev, rep, kind): the left index of every pair, the position in ``prev`` of
    one representative pair per kind, and the kind of every pair. VMAs are grouped first
    (exactly, see group_kinds); a pair's kind is then the exact combination of its two
    VMAs' groups, its offset continuity and, in simulated snapshots, whether both sides
    hold the same anon_vma.
    """
    prev = np.flatnonzero(pairs).astype(np.int64)
    if len(prev) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return prev, empty, empty
    # Only the VMAs of the pairs need a group, when they are few; the groups keep the
    # order they have among all VMAs, so the kinds are numbered as from all of them.
    n = len(snap)
    rows = None
    if FEW_PAIRS * len(prev) < n:  # (np.union1d would import numpy.ma: 15 ms)
        member = np.zeros(n, dtype=bool)
        member[prev] = member[prev + 1] = True
        rows = np.flatnonzero(member)
    _, vkind = group_kinds(vma_columns(snap), rows)
    groups = int(vkind.max()) + 1
    if rows is not None:  # as if for every VMA
        full = np.zeros(n, dtype=np.int64)
        full[rows] = vkind
        vkind = full
    nxt = prev + 1
    off = snap.offset
    if snap.kview is not None:  # the real page offsets, anonymous memory's too
        off = snap.kview["pgoff"] << np.uint64(PAGE_SHIFT)
    o0, o1 = off[prev], off[nxt]
    offcode = (o1 == o0 + (snap.end[prev] - snap.start[prev])).astype(np.int64)
    offcode |= ((o0 == 0) & (o1 == 0)).astype(np.int64) << 1
    key = (vkind[prev] * groups + vkind[nxt]) * 4 + offcode
    if snap.anon_vma is not None:
        key = key * 2 + (snap.anon_vma[prev] == snap.anon_vma[nxt])
    if snap.kview is not None:
        for col in (snap.kview["file"], snap.kview["uffd"]):
            key = key * 2 + (col[prev] == col[nxt])
    _, rep, kind = np.unique(key, return_index=True, return_inverse=True)
    return prev, rep, kind.reshape(-1)


FEW_PAIRS = 4  # pairs are few when there are FEW_PAIRS times as many VMAs


def group_kinds(cols: Sequence[np.ndarray], rows: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(representative row per kind, kind per row) for rows given as columns; with
    ``rows`` (sorted indexes), for those rows only, the kinds in the order they have
    among all rows.

    A 64-bit hash of each row is sorted once; the result is then checked column by
    column, and on a (practically impossible) collision the exact row sort is used.
    """
    n = len(cols[0]) if cols else 0
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # Columns with one value everywhere cannot separate rows: leave them out.
    cols = [c for c in cols if c.min() != c.max()]
    if rows is not None:
        cols = [c[rows] for c in cols]
        n = len(rows)
    if not cols:
        return np.zeros(1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for c in cols:
            h ^= c.astype(np.int64).view(np.uint64) if c.dtype.kind in "ib" else c
            h *= _MIX
            h ^= h >> np.uint64(29)
            h *= _MIX2
            h ^= h >> np.uint64(32)
    _, rep, inverse = np.unique(h, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    rows_rep = rep[inverse]
    if all(np.array_equal(c, c[rows_rep]) for c in cols):
        return rep, inverse
    matrix = np.stack(cols, axis=1)
    _, rep, inverse = np.unique(matrix, axis=0, return_index=True, return_inverse=True)
    return rep, inverse.reshape(-1)


def _differing_flags(snap: Snapshot, i: int) -> list[str]:
    """VmFlags mnemonics set on exactly one of VMAs i and i + 1 (soft-dirty left out)."""
    assert snap.vmflags is not None
    diff = int(snap.vmflags[i]) ^ int(snap.vmflags[i + 1])
    return [m for b, m in enumerate(snap.flag_names) if diff >> b & 1 and m != "sd"]


def _blind_spots(snap: Snapshot) -> str | None:
    """What the snapshot lacks for a full explanation (None if nothing)."""
    missing = []
    if snap.vmflags is None:
        missing.append("VmFlags (flag differences cannot be seen)")
    if snap.anon_vma is None and "Anonymous" not in snap.smaps:
        missing.append("smaps Anonymous (anon_vma reasons cannot be inferred)")
    if not missing:
        return None
    return ("the snapshot has no " + " and no ".join(missing)
            + "; capture smaps for a full explanation")


def why_not_merged(
    snap: Snapshot,
    pairs: np.ndarray,
    kernel: str | None = None,
    max_details: int = 5,
    epoch: Epoch | None = None,
) -> WhyNotMerged:
    """Explain every look-alike pair (``pairs`` is the bool mask from fragmentation).

    ``epoch``: the rules to use, already worked out (the CLI passes the running kernel's
    with its facts from vmascope.host); default: ``epoch_for`` of the resolved release.
    """
    release, source = resolve_kernel(snap, kernel)
    prev = np.flatnonzero(pairs).astype(np.int64)
    if epoch is None:
        try:
            epoch = epoch_for(release)
        except (ValueError, KeyError) as exc:
            raise UsageError(f"kernel release {release!r}: {exc}") from exc
    epoch_label = str(getattr(epoch, "name", epoch))
    if len(prev) == 0:
        return WhyNotMerged(release, source, epoch_label, None, 0, 0, [], 0, prev,
                            np.zeros(0, dtype=np.int64), [])
    prev, rep, kind = pair_kinds(snap, pairs)
    kind_counts = np.bincount(kind, minlength=len(rep))
    kind_reasons: list[tuple[Reason, ...]] = []
    for r in rep:
        i = int(prev[r])
        kind_reasons.append(tuple(explain_pair(snap.vma(i), snap.vma(i + 1), epoch)))
    # Sum per (reason, confidence) over kinds.
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    unexplained = 0
    for k, reasons in enumerate(kind_reasons):
        c = int(kind_counts[k])
        if not reasons:
            unexplained += c
            continue
        seen: set[tuple[str, str]] = set()
        for reason in reasons:
            key = (reason.code, reason.confidence)
            entry = acc.setdefault(
                key, {"count": 0, "rule": reason.rule, "citation": reason.citation,
                      "details": {}, "example": int(snap.end[prev[rep[k]]]), "best": -1}
            )
            if key not in seen:
                entry["count"] += c
                seen.add(key)
            entry["details"][reason.detail] = entry["details"].get(reason.detail, 0) + c
            if reason.code == "vmflags" and snap.vmflags is not None:
                i = int(prev[rep[k]])
                flags = entry.setdefault("flags", {})
                for m in _differing_flags(snap, i):
                    flags[m] = flags.get(m, 0) + c
            if c > entry["best"]:
                entry["best"] = c
                entry["example"] = int(snap.end[prev[rep[k]]])
                entry["rule"], entry["citation"] = reason.rule, reason.citation
    rows = []
    for (code, conf), e in acc.items():
        details = dict(sorted(e["details"].items(), key=lambda kv: -kv[1])[:max_details])
        rows.append(
            ReasonCount(
                reason=code, confidence=conf, count=e["count"], rule=e["rule"],
                citation=e["citation"], detail=next(iter(details)), details=details,
                example=e["example"],
                flags=dict(sorted(e.get("flags", {}).items(), key=lambda kv: -kv[1])),
            )
        )
    rows.sort(key=lambda r: (-r.count, r.reason, r.confidence))
    return WhyNotMerged(release, source, epoch_label, _blind_spots(snap), len(prev), len(rep), rows,
                        unexplained, prev, kind, kind_reasons)
