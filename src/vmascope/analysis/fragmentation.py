"""Fragmentation: adjacent VMAs that look identical in /proc/PID/maps yet are separate.

Two neighbouring VMAs *look alike* when

* they are address-contiguous (``prev.end == next.start``),
* they have the same permissions (including private/shared), and
* they have the same backing: both anonymous (no inode; unnamed or ``[anon:NAME]``; the
  names may differ, which is itself a reason the kernel keeps them apart), or the same
  file (device, inode and path) or the same special name, and
* their offsets are continuous: ``next.offset == prev.offset + prev.size``. /proc prints
  offset 0 for anonymous VMAs, so two anonymous zeros count as continuous.

The kernel would merge such a pair if nothing invisible differed; the why-not-merged step
finds what did. A maximal chain of look-alike pairs is a *run*; merging every run to one
VMA gives the *ideal* map count.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..kconst import PAGE_SHIFT, PAGE_SIZE
from ..model import Snapshot, bits_to_perms
from .attribution import (BACKING_LABELS, FEW_CANDIDATES, NAMED_ANON, PLAIN_ANON,
                          backing_classes, in_pairs, run_bounds)


# Size histogram buckets: [4 KiB, 8 KiB), [8 KiB, 16 KiB), ... , the last one open-ended.
HIST_BUCKETS = 30  # 4 KiB << 29 = 2 TiB


def lookalike_pairs(snap: Snapshot, classes: np.ndarray | None = None) -> np.ndarray:
    """Bool per pair (k, k+1): True where the two VMAs look identical in maps."""
    n = len(snap)
    if n < 2:
        return np.zeros(0, dtype=bool)
    if classes is None:
        classes = backing_classes(snap)
    out = (snap.end[:-1] == snap.start[1:]) & (snap.perms[:-1] == snap.perms[1:])
    first = np.flatnonzero(out) if out.sum() < FEW_CANDIDATES * (n - 1) else None
    second = None if first is None else first + 1
    # (first, second): the candidate pairs' VMAs (all of them: None)

    def sides(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if first is None:
            return col[:-1], col[1:]
        return col[first], col[second]

    anon = ((classes == PLAIN_ANON) | (classes == NAMED_ANON)) & (snap.inode == 0)
    a0, a1 = sides(anon)
    both_anon = a0 & a1
    (s0, _), (e0, _), (o0, o1) = sides(snap.start), sides(snap.end), sides(snap.offset)
    continuous = o1 == o0 + (e0 - s0)
    zero_offsets = (o0 == 0) & (o1 == 0)
    (n0, n1), (d0, d1), (i0, i1) = sides(snap.name_id), sides(snap.dev), sides(snap.inode)
    same_backing = (n0 == n1) & (d0 == d1) & (i0 == i1)
    alike = (both_anon & (continuous | zero_offsets)) | (~both_anon & same_backing & continuous)
    if first is None:
        return out & alike
    out[first] = alike
    return out


@dataclasses.dataclass(frozen=True)
class Run:
    start: int
    end: int
    vma_count: int
    first_index: int
    perms: str
    backing: str
    smallest: int
    largest: int

    @property
    def bytes(self) -> int:
        return self.end - self.start

    def to_json(self) -> dict[str, object]:
        return {
            "start": hex(self.start),
            "end": hex(self.end),
            "vma_count": self.vma_count,
            "bytes": self.bytes,
            "perms": self.perms,
            "backing": self.backing,
            "smallest_vma": self.smallest,
            "largest_vma": self.largest,
            "average_vma_size": round(self.bytes / self.vma_count, 1),
        }


@dataclasses.dataclass(frozen=True)
class HistogramBin:
    low: int  # bytes, inclusive
    high: int | None  # bytes, exclusive; None for the last, open bucket
    all_vmas: int
    in_runs: int

    def to_json(self) -> dict[str, object]:
        return {"low": self.low, "high": self.high, "all_vmas": self.all_vmas,
                "in_runs": self.in_runs}


@dataclasses.dataclass(frozen=True)
class Fragmentation:
    map_count: int
    lookalike_pairs: int  # pairs the kernel could have merged by their looks
    vmas_in_runs: int
    run_count: int
    ideal_count: int  # map count if every run were one VMA
    runs: list[Run]  # longest first, at most `limit`
    run_length_counts: dict[int, int]  # run length (VMAs) -> how many runs
    histogram: list[HistogramBin]

    @property
    def saved(self) -> int:
        return self.map_count - self.ideal_count

    def to_json(self, run_limit: int | None = None) -> dict[str, object]:
        runs = self.runs if run_limit is None else self.runs[:run_limit]
        return {
            "ideal_count": self.ideal_count,
            "saved": self.saved,
            "lookalike_pairs": self.lookalike_pairs,
            "vmas_in_runs": self.vmas_in_runs,
            "run_count": self.run_count,
            "runs": [r.to_json() for r in runs],
            "runs_listed": len(runs),
            "run_length_counts": {str(k): v for k, v in sorted(self.run_length_counts.items())},
            "size_histogram": [b.to_json() for b in self.histogram],
        }


def size_buckets(sizes: np.ndarray) -> np.ndarray:
    """Bucket index per size: floor(log2(size / 4 KiB)), clipped to [0, HIST_BUCKETS).

    floor(log2(x)) is the exponent field of x as a float64, exact for x < 2**53; a size
    OR 4 KiB has the same floor(log2) as the size, or 12 if the size is smaller."""
    exps = (sizes | PAGE_SIZE).astype(np.float64).view(np.int64) >> 52
    exps -= 1023 + PAGE_SHIFT
    return np.minimum(exps, HIST_BUCKETS - 1, out=exps)


def histogram(sizes: np.ndarray, in_runs: np.ndarray) -> list[HistogramBin]:
    if len(sizes) == 0:
        return []
    b = size_buckets(sizes)
    all_counts = np.bincount(b, minlength=HIST_BUCKETS)
    run_counts = np.bincount(b[in_runs], minlength=HIST_BUCKETS)
    nz = np.flatnonzero(all_counts)
    out = []
    for k in range(int(nz[0]), int(nz[-1]) + 1):
        low = PAGE_SIZE << k
        high = None if k == HIST_BUCKETS - 1 else PAGE_SIZE << (k + 1)
        out.append(HistogramBin(low, high, int(all_counts[k]), int(run_counts[k])))
    return out


def fragmentation(
    snap: Snapshot,
    classes: np.ndarray | None = None,
    pairs: np.ndarray | None = None,
    limit: int | None = 200,
) -> Fragmentation:
    n = len(snap)
    if classes is None:
        classes = backing_classes(snap)
    if pairs is None:
        pairs = lookalike_pairs(snap, classes)
    sizes = snap.sizes()
    ps, pe = run_bounds(pairs)  # pair runs [ps, pe) cover VMAs ps..pe
    counts = pe - ps + 1
    in_runs = in_pairs(pairs, n)
    n_pairs = int(pairs.sum())
    lengths, length_counts = np.unique(counts, return_counts=True)
    order = np.lexsort((ps, -counts))
    if limit is not None:
        order = order[:limit]
    runs = []
    for k in order:
        f, l_ = int(ps[k]), int(pe[k])
        seg = sizes[f : l_ + 1]
        cls = int(classes[f])
        name = snap.name(f)
        backing = BACKING_LABELS[cls] if name is None or cls == NAMED_ANON else name
        runs.append(
            Run(
                start=int(snap.start[f]),
                end=int(snap.end[l_]),
                vma_count=l_ - f + 1,
                first_index=f,
                perms=bits_to_perms(int(snap.perms[f])),
                backing=backing,
                smallest=int(seg.min()),
                largest=int(seg.max()),
            )
        )
    return Fragmentation(
        map_count=n,
        lookalike_pairs=n_pairs,
        vmas_in_runs=int(in_runs.sum()),
        run_count=len(ps),
        ideal_count=n - n_pairs,
        runs=runs,
        run_length_counts={int(a): int(b) for a, b in zip(lengths, length_counts)},
        histogram=histogram(sizes, in_runs),
    )
