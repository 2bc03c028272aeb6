"""The VMA budget: where every VMA of a process comes from.

The process's VMAs are cut into *reservations* (budget units): maximal runs of VMAs in
address order in which each neighbour pair is *linked*:

* both private anonymous (unnamed or ``[anon:NAME]``, no inode) and address-contiguous
  (the reservations of :mod:`.attribution`, single VMAs included), or
* both mappings of the same file (device, inode and name), with or without a hole
  between them (a library's segments, a memfd mapped piece by piece), or
* both carry the same special name (``[heap]``, ...) and are address-contiguous.

Each reservation would ideally be one VMA, so the **ideal** count is the number of
reservations, and every boundary between two linked neighbours is one VMA more than the
ideal. Each such boundary gets exactly one **cause**, the first that applies in this
fixed order:

``protection`` (which: e.g. ``rw-p/---p``), ``vmflags`` (which mnemonics, soft-dirty
and the permission bits left out), ``anon_vma`` (distinct anon_vmas, the verdict of the
rule module's ``explain_pair`` on look-alike pairs as :mod:`.explain` gives it: inferred
from smaps, certain with simulator ids), ``file_offset`` (offsets not continuous), ``anon_name``, ``hole`` (an unmapped
gap), ``mempolicy``, ``special`` (VM_IO/VM_PFNMAP/... never merge) and ``unexplained``
(nothing visible keeps the two apart).

So, per reservation and for the whole process, the per-cause totals add up exactly to
``map_count - ideal``. Everything is computed with numpy over the Snapshot's columns;
the only per-item Python loops are over the listed reservations and flag bits.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from ..model import Snapshot, bits_to_perms
from .attribution import FILE, NAMED_ANON, PLAIN_ANON, backing_classes, private_anon_mask

if TYPE_CHECKING:
    from .explain import WhyNotMerged

CAUSES: tuple[str, ...] = (
    "protection", "vmflags", "anon_vma", "file_offset", "anon_name", "hole", "mempolicy",
    "special", "unexplained",
)
CAUSE_LABELS: dict[str, str] = {
    "protection": "protection differs",
    "vmflags": "VmFlags differ",
    "anon_vma": "anon_vma differs",
    "file_offset": "file or offset differs",
    "anon_name": "anon name differs",
    "hole": "hole between them",
    "mempolicy": "NUMA policy differs",
    "special": "special mapping",
    "unexplained": "no visible reason",
}
# The same, at most 11 characters: a narrow table's column (``top`` at 80 columns).
CAUSE_SHORT: dict[str, str] = {
    "protection": "protection", "vmflags": "VmFlags", "anon_vma": "anon_vma",
    "file_offset": "file/offset", "anon_name": "anon name", "hole": "hole",
    "mempolicy": "NUMA policy", "special": "special", "unexplained": "no reason",
}
# Colours for the pictures (stacked bar, strip), one per cause.
CAUSE_COLOURS: dict[str, str] = {
    "protection": "#4c72b0", "vmflags": "#dd8452", "anon_vma": "#c44e52",
    "file_offset": "#8172b3", "anon_name": "#937860", "hole": "#8c8c8c",
    "mempolicy": "#da8bc3", "special": "#55a868", "unexplained": "#ccb974",
}
(PROTECTION, VMFLAGS, ANON_VMA, FILE_OFFSET, ANON_NAME, HOLE, MEMPOLICY, SPECIAL,
 UNEXPLAINED) = range(len(CAUSES))
NONE = -1  # not a boundary inside a reservation

# VmFlags that never count as a difference here: soft-dirty (ignored by the kernel's
# merge) and the bits the permissions already show.
_IGNORED_FLAGS = ("sd", "rd", "wr", "ex", "sh")
_SPECIAL_FLAGS = ("io", "pf", "mm", "de")
_ANON_CODES = ("anon_vma", "anon_vma_unfaulted", "fork_child")


@dataclasses.dataclass(frozen=True)
class CauseTotals:
    """Boundaries per cause, with what differs ("which")."""

    counts: dict[str, int]  # cause -> boundaries (every cause, zeros included)
    protections: dict[str, int]  # "rw-p/---p" -> boundaries
    flags: dict[str, int]  # VmFlags mnemonic -> boundaries where it differs
    anon_confidence: dict[str, int]  # "inferred"/"certain" -> anon_vma boundaries
    hole_bytes: int

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def dominant(self) -> str | None:
        best = max(self.counts.items(), key=lambda kv: kv[1], default=None)
        return best[0] if best and best[1] else None

    def to_json(self) -> dict[str, object]:
        return {"counts": self.counts, "protections": self.protections, "flags": self.flags,
                "anon_vma_confidence": self.anon_confidence, "hole_bytes": self.hole_bytes}


@dataclasses.dataclass(frozen=True)
class BudgetReservation:
    start: int
    end: int
    vma_count: int
    first_index: int
    kind: str  # "anon", "file", "special"
    label: str  # the file or special name; "anonymous" otherwise
    causes: CauseTotals
    owner: str | None = None  # the runtime or allocator that claims it (fingerprints)

    @property
    def ideal(self) -> int:
        return 1

    @property
    def excess(self) -> int:
        return self.vma_count - 1

    def to_json(self) -> dict[str, object]:
        return {"start": hex(self.start), "end": hex(self.end), "vma_count": self.vma_count,
                "ideal": 1, "excess": self.excess, "kind": self.kind, "label": self.label,
                "owner": self.owner, "causes": self.causes.to_json()}


@dataclasses.dataclass
class Budget:
    map_count: int
    ideal: int  # number of reservations
    totals: CauseTotals
    reservations: list[BudgetReservation]  # most VMAs first, at most `limit`
    reservation_count: int
    # Per boundary k (between VMA k and k + 1): cause index, NONE between reservations.
    cause: np.ndarray = dataclasses.field(repr=False)
    # Per VMA: index of its reservation (0 .. ideal - 1), in address order.
    reservation_id: np.ndarray = dataclasses.field(repr=False)
    # Boundaries per cause inside anonymous reservations only (where a runtime's or an
    # allocator's calls made them; files and special mappings left out).
    anon_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    # Per reservation: its first VMA and its VMA count.
    firsts: np.ndarray = dataclasses.field(repr=False, default_factory=lambda: np.zeros(0))
    counts: np.ndarray = dataclasses.field(repr=False, default_factory=lambda: np.zeros(0))

    @property
    def excess(self) -> int:
        return self.map_count - self.ideal

    @property
    def largest(self) -> BudgetReservation | None:
        return self.reservations[0] if self.reservations else None

    def to_json(self) -> dict[str, object]:
        return {"map_count": self.map_count, "ideal": self.ideal, "excess": self.excess,
                "causes_order": list(CAUSES), "totals": self.totals.to_json(),
                "reservation_count": self.reservation_count,
                "reservations": [r.to_json() for r in self.reservations]}


def links(snap: Snapshot, classes: np.ndarray | None = None,
          panon: np.ndarray | None = None) -> np.ndarray:
    """Bool per boundary k: VMAs k and k + 1 belong to the same reservation (``panon``:
    :func:`.attribution.private_anon_mask`, when the caller has it)."""
    n = len(snap)
    if n < 2:
        return np.zeros(0, dtype=bool)
    if classes is None:
        classes = backing_classes(snap)
    contiguous = snap.end[:-1] == snap.start[1:]
    if panon is None:
        panon = private_anon_mask(snap, classes)
    same_name = snap.name_id[:-1] == snap.name_id[1:]
    has_inode = snap.inode != 0
    same_file = (has_inode[:-1] & same_name & (snap.inode[:-1] == snap.inode[1:])
                 & (snap.dev[:-1] == snap.dev[1:]))
    other = ~panon & ~has_inode & (snap.name_id >= 0)
    same_special = other[:-1] & other[1:] & same_name & contiguous
    return (panon[:-1] & panon[1:] & contiguous) | same_file | same_special


def _flag_bits(snap: Snapshot, names: tuple[str, ...]) -> np.uint64:
    bits = 0
    for m in names:
        bits |= snap.flag_mask(m)
    return np.uint64(bits)


def _kind_codes(why: WhyNotMerged) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per kind of look-alike pair: (has an anon_vma reason, that reason is certain,
    has a special reason)."""
    k = len(why.kind_reasons)
    anon = np.zeros(k, dtype=bool)
    certain = np.zeros(k, dtype=bool)
    special = np.zeros(k, dtype=bool)
    for i, reasons in enumerate(why.kind_reasons):
        for r in reasons:
            if r.code in _ANON_CODES:
                anon[i] = True
                certain[i] = r.confidence == "certain"
            elif r.code == "special":
                special[i] = True
    return anon, certain, special


def classify(snap: Snapshot, link: np.ndarray, why: WhyNotMerged | None,
             classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(cause per boundary (NONE where not linked), anon_vma certainty per boundary)."""
    n = len(snap)
    if n < 2:
        return np.zeros(0, dtype=np.int8), np.zeros(0, dtype=bool)
    cause = np.full(n - 1, UNEXPLAINED, dtype=np.int8)
    certain = np.zeros(n - 1, dtype=bool)
    # Assigned from the last cause in the order to the first, so the first that applies
    # wins.
    anon_name = snap.name_id[:-1] != snap.name_id[1:]  # only reachable inside anon links
    spec = np.zeros(n - 1, dtype=bool)
    anon = np.zeros(n - 1, dtype=bool)
    if why is not None and len(why.pair_index):
        # the look-alike pairs' verdicts, by their kinds
        k_anon, k_certain, k_special = _kind_codes(why)
        at, kind = why.pair_index, why.pair_kind
        spec[at] = k_special[kind]
        anon[at] = k_anon[kind]
        certain[at] = k_anon[kind] & k_certain[kind]
    if snap.vmflags is not None:
        sbits = _flag_bits(snap, _SPECIAL_FLAGS)
        fl = snap.vmflags
        spec = spec | (((fl[:-1] | fl[1:]) & sbits) != 0)
    cause[spec] = SPECIAL
    if snap.policy_id is not None:
        pol = snap.policy_id
        cause[(pol[:-1] != pol[1:]) & (pol[:-1] >= 0) & (pol[1:] >= 0)] = MEMPOLICY
    cause[snap.end[:-1] != snap.start[1:]] = HOLE
    cause[anon_name] = ANON_NAME
    off = snap.offset
    size = snap.end[:-1] - snap.start[:-1]
    discontinuous = off[1:] != off[:-1] + size
    both_zero_anon = (off[:-1] == 0) & (off[1:] == 0) & (snap.inode[:-1] == 0)
    cause[discontinuous & ~both_zero_anon] = FILE_OFFSET
    cause[anon] = ANON_VMA
    if snap.vmflags is not None:
        fl = snap.vmflags
        ignore = _flag_bits(snap, _IGNORED_FLAGS)
        cause[((fl[:-1] ^ fl[1:]) & ~ignore) != 0] = VMFLAGS
    cause[snap.perms[:-1] != snap.perms[1:]] = PROTECTION
    cause[~link] = NONE
    certain &= cause == ANON_VMA
    return cause, certain


def boundary_keys(snap: Snapshot, cause: np.ndarray) -> np.ndarray:
    """Per boundary, one small integer holding its cause and, for protection boundaries,
    the unordered pair of permissions: ``(cause + 1) * 256 + max * 16 + min``."""
    if len(cause) == 0:
        return np.zeros(0, dtype=np.int16)
    a, b = snap.perms[:-1], snap.perms[1:]
    pair = (np.maximum(a, b) << 4) | np.minimum(a, b)
    key = (cause.astype(np.int16) + 1) << 8
    key |= np.where(cause == PROTECTION, pair, 0)
    return key


def cause_totals(snap: Snapshot, cause: np.ndarray, certain: np.ndarray,
                 lo: int = 0, hi: int | None = None,
                 keys: np.ndarray | None = None) -> CauseTotals:
    """Totals over boundaries lo .. hi - 1 (all by default)."""
    hi = len(cause) if hi is None else hi
    if keys is None:
        keys = boundary_keys(snap, cause)
    hist = np.bincount(keys[lo:hi], minlength=(len(CAUSES) + 1) * 256)
    hist = hist.reshape(len(CAUSES) + 1, 256)
    counts = hist.sum(axis=1)[1:]
    out = {name: int(counts[i]) for i, name in enumerate(CAUSES)}
    # Protection: which pairs of permissions (unordered).
    protections: dict[str, int] = {}
    pc = hist[PROTECTION + 1]
    for v in np.flatnonzero(pc):
        protections[f"{bits_to_perms(int(v) >> 4)}/{bits_to_perms(int(v) & 15)}"] = int(pc[v])
    protections = dict(sorted(protections.items(), key=lambda kv: -kv[1]))
    flags: dict[str, int] = {}
    if out["vmflags"] and snap.vmflags is not None:
        sel = np.flatnonzero(cause[lo:hi] == VMFLAGS) + lo
        diff = (snap.vmflags[sel] ^ snap.vmflags[sel + 1]) & ~_flag_bits(snap, _IGNORED_FLAGS)
        present = int(np.bitwise_or.reduce(diff))
        for bit, m in enumerate(snap.flag_names):
            if present >> bit & 1:
                flags[m] = int(np.count_nonzero(diff & np.uint64(1 << bit)))
        flags = dict(sorted(flags.items(), key=lambda kv: -kv[1]))
    anon_conf: dict[str, int] = {}
    if out["anon_vma"]:
        nc = int(np.count_nonzero(certain[lo:hi]))
        anon_conf = {k: v for k, v in (("inferred", out["anon_vma"] - nc), ("certain", nc))
                     if v}
    hole_bytes = 0
    if out["hole"]:
        sel = np.flatnonzero(cause[lo:hi] == HOLE) + lo
        hole_bytes = int((snap.start[sel + 1] - snap.end[sel]).sum())
    return CauseTotals(out, protections, flags, anon_conf, hole_bytes)


def budget(snap: Snapshot, why: WhyNotMerged | None = None,
           classes: np.ndarray | None = None, limit: int | None = 50) -> Budget:
    """The budget of a snapshot. ``why`` (from :func:`.explain.why_not_merged`) supplies
    the anon_vma verdicts of look-alike pairs; without it no boundary is put down to
    anon_vma."""
    n = len(snap)
    if classes is None:
        classes = backing_classes(snap)
    panon = private_anon_mask(snap, classes)
    link = links(snap, classes, panon)
    cause, certain = classify(snap, link, why, classes)
    breaks = ~link  # a new reservation begins after boundary k
    rid = np.zeros(n, dtype=np.int64)
    if n > 1:
        np.cumsum(breaks, out=rid[1:])
    firsts = (np.concatenate(([0], np.flatnonzero(breaks) + 1)) if n
              else np.zeros(0, dtype=np.int64))
    ideal = len(firsts)
    keys = boundary_keys(snap, cause)
    totals = cause_totals(snap, cause, certain, keys=keys)
    anon_counts = dict.fromkeys(CAUSES, 0)
    if n > 1:
        per = np.bincount((keys[panon[:-1]] >> 8).astype(np.int64), minlength=len(CAUSES) + 1)
        anon_counts = {name: int(per[i + 1]) for i, name in enumerate(CAUSES)}
    counts = np.diff(firsts, append=n)
    spans = np.zeros(0, dtype=np.uint64)
    if n:
        lasts = firsts + counts - 1
        spans = snap.end[lasts] - snap.start[firsts]
    order = np.lexsort((-spans.astype(np.float64), -counts)) if n else rid
    if limit is not None:
        order = order[:limit]
    reservations = []
    for r in order:
        f = int(firsts[r])
        c = int(counts[r])
        cls = int(classes[f])
        if cls in (PLAIN_ANON, NAMED_ANON) and snap.inode[f] == 0:
            kind, label = "anon", "anonymous"
        elif cls == FILE or snap.inode[f] != 0:
            kind, label = "file", snap.name(f) or f"inode {int(snap.inode[f])}"
        else:
            kind, label = "special", snap.name(f) or "?"
        reservations.append(BudgetReservation(
            start=int(snap.start[f]), end=int(snap.end[f + c - 1]), vma_count=c,
            first_index=f, kind=kind, label=label,
            causes=cause_totals(snap, cause, certain, f, f + c - 1, keys)))
    return Budget(map_count=n, ideal=ideal, totals=totals, reservations=reservations,
                  reservation_count=ideal, cause=cause, reservation_id=rid,
                  anon_counts=anon_counts, firsts=firsts, counts=counts)


__all__ = ["CAUSES", "CAUSE_COLOURS", "CAUSE_LABELS", "CAUSE_SHORT", "Budget",
           "BudgetReservation", "CauseTotals", "budget", "classify", "links"]
