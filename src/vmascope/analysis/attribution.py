"""Attribution: which kind of backing holds the VMAs, and the reservations.

A *reservation* is a maximal run of address-contiguous private anonymous VMAs of any
protection. A garbage-collected heap reserved ``PROT_NONE`` and committed piecewise with
mprotect (or mmap ``MAP_FIXED``) looks exactly like this in /proc/PID/maps: one address
range cut into many VMAs, some ``rw-p`` (committed) and some ``---p`` (reserved). The
biggest ones beside the total map count give the "GC/Total mappings" table of the
investigation that started this project.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..model import PERM_EXEC, PERM_READ, PERM_SHARED, PERM_WRITE, Snapshot

# Backing classes, in the order reports list them.
FILE, HEAP, STACK, NAMED_ANON, PLAIN_ANON, SPECIAL = range(6)
BACKING_LABELS = ("file", "[heap]", "[stack]", "named anon", "plain anon", "special")

# Below this share of VMAs with a rare property (contiguous same-permission neighbours;
# not in the commonest class), a rule's other tests run on those only, not on every VMA
# (a checkerboard of guard pages: almost none).
FEW_CANDIDATES = 1 / 8
SAMPLE_EVERY = 1024  # the commonest class is guessed from every SAMPLE_EVERY-th VMA


def classify_name(name: str | None) -> int:
    """The backing class of a maps name (the last column of /proc/PID/maps)."""
    if name is None:
        return PLAIN_ANON
    if name.startswith("[anon:"):
        return NAMED_ANON
    if name == "[heap]":
        return HEAP
    if name == "[stack]" or name.startswith("[stack:"):
        return STACK
    if name.startswith("[") and name.endswith("]"):
        return SPECIAL  # [vdso], [vvar], [vsyscall], [uprobes], [anon_shmem:...] ...
    return FILE


def backing_classes(snap: Snapshot) -> np.ndarray:
    """uint8 backing class per VMA (vectorised over the name table)."""
    table = np.array([classify_name(n) for n in snap.names] + [PLAIN_ANON], dtype=np.uint8)
    # name_id == -1 indexes the last entry, PLAIN_ANON.
    return table[snap.name_id]


def private_anon_mask(snap: Snapshot, classes: np.ndarray | None = None,
                      at: np.ndarray | slice = slice(None)) -> np.ndarray:
    """VMAs that are private, anonymous (no inode) and unnamed or anon-named; of the
    VMAs ``at`` (indexes or a slice) only, when given."""
    if classes is None:
        classes = backing_classes(snap)
    c = classes[at]
    return (
        ((c == PLAIN_ANON) | (c == NAMED_ANON))
        & ((snap.perms[at] & PERM_SHARED) == 0)
        & (snap.inode[at] == 0)
    )


@dataclasses.dataclass(frozen=True)
class BackingRow:
    backing: str
    vma_count: int
    bytes: int

    def to_json(self) -> dict[str, object]:
        return {"backing": self.backing, "vma_count": self.vma_count, "bytes": self.bytes}


@dataclasses.dataclass(frozen=True)
class Reservation:
    start: int
    end: int
    vma_count: int
    committed: int  # bytes in VMAs with any access (r, w or x)
    reserved: int  # bytes in PROT_NONE VMAs
    writable_vmas: int
    none_vmas: int
    first_index: int  # index of its first VMA in the snapshot

    @property
    def span(self) -> int:
        return self.end - self.start

    @property
    def average_vma_size(self) -> float:
        return self.span / self.vma_count

    def to_json(self) -> dict[str, object]:
        return {
            "start": hex(self.start),
            "end": hex(self.end),
            "span": self.span,
            "vma_count": self.vma_count,
            "committed": self.committed,
            "reserved": self.reserved,
            "writable_vmas": self.writable_vmas,
            "prot_none_vmas": self.none_vmas,
            "average_vma_size": round(self.average_vma_size, 1),
        }


@dataclasses.dataclass(frozen=True)
class Attribution:
    map_count: int
    by_backing: list[BackingRow]
    top_files: list[BackingRow]
    reservations: list[Reservation]  # biggest first (VMA count, then span), at most `limit`
    reservation_count: int  # all reservations, also those beyond `limit`
    vmas_in_reservations: int

    @property
    def largest(self) -> Reservation | None:
        return self.reservations[0] if self.reservations else None

    def to_json(self) -> dict[str, object]:
        return {
            "by_backing": [r.to_json() for r in self.by_backing],
            "top_files": [r.to_json() for r in self.top_files],
            "reservation_count": self.reservation_count,
            "vmas_in_reservations": self.vmas_in_reservations,
        }


def run_bounds(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximal runs of True in a bool array: (first index, one past last index)."""
    if len(mask) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    m = np.empty(len(mask) + 2, dtype=np.int8)
    m[0] = m[-1] = 0
    m[1:-1] = mask
    d = np.diff(m)
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def in_pairs(pairs: np.ndarray, n: int) -> np.ndarray:
    """Bool per VMA of n: part of a pair marked in ``pairs`` (pair k: VMAs k and k + 1),
    that is, inside one of the runs :func:`run_bounds` finds."""
    out = np.zeros(n, dtype=bool)
    if n >= 2:
        out[:-1] = pairs
        out[1:] |= pairs
    return out


def find_reservations(
    snap: Snapshot, classes: np.ndarray | None = None, limit: int | None = 50
) -> tuple[list[Reservation], int, int]:
    """(biggest reservations, how many there are, VMAs in all of them)."""
    n = len(snap)
    if n == 0:
        return [], 0, 0
    anon = private_anon_mask(snap, classes)
    # Pair k links VMA k and k+1: both private anon and address-contiguous.
    link = anon[:-1] & anon[1:] & (snap.start[1:] == snap.end[:-1])
    sizes = snap.sizes()
    no_access = (snap.perms & (PERM_READ | PERM_WRITE | PERM_EXEC)) == 0
    writable = (snap.perms & PERM_WRITE) != 0
    # Runs of linked pairs [s, e) cover VMAs s..e; single anonymous VMAs count as
    # reservations only when they hold PROT_NONE address space.
    ps, pe = run_bounds(link)
    first = ps
    last = pe  # inclusive VMA index
    singles = np.flatnonzero(anon & no_access & ~in_pairs(link, n))
    first = np.concatenate([first, singles])
    last = np.concatenate([last, singles])
    if len(first) == 0:
        return [], 0, 0
    counts = last - first + 1
    # a run's VMAs are address-contiguous: its span is from the first start to the last end
    spans = (snap.end[last] - snap.start[first]).astype(np.int64)
    order = np.lexsort((-spans, -counts))
    total = len(first)
    total_vmas = int(counts.sum())
    if limit is not None:
        order = order[:limit]
    none_sizes = np.where(no_access, sizes, 0)
    out = []
    for k in order:
        f, l_ = int(first[k]), int(last[k])
        reserved = int(none_sizes[f:l_ + 1].sum())
        out.append(
            Reservation(
                start=int(snap.start[f]),
                end=int(snap.end[l_]),
                vma_count=l_ - f + 1,
                committed=int(spans[k]) - reserved,
                reserved=reserved,
                writable_vmas=int(np.count_nonzero(writable[f:l_ + 1])),
                none_vmas=int(np.count_nonzero(no_access[f:l_ + 1])),
                first_index=f,
            )
        )
    return out, total, total_vmas


def by_backing(snap: Snapshot, classes: np.ndarray) -> list[BackingRow]:
    k = len(BACKING_LABELS)
    sizes = snap.sizes()
    # A process near the limit has most of its VMAs in one class: guessed from a sample,
    # only the others are counted, and that class gets the rest (exact either way)
    guess = int(np.bincount(classes[::SAMPLE_EVERY], minlength=k).argmax())
    others = np.flatnonzero(classes != guess)
    if len(others) < FEW_CANDIDATES * len(classes):
        cls, osz = classes[others], sizes[others]
        counts = np.bincount(cls, minlength=k)
        nbytes = np.bincount(cls, weights=osz, minlength=k)
        counts[guess] = len(classes) - len(others)
        nbytes[guess] = int(sizes.sum()) - int(osz.sum())
    else:
        counts = np.bincount(classes, minlength=k)
        nbytes = np.bincount(classes, weights=sizes, minlength=k)
    return [
        BackingRow(label, int(counts[c]), int(nbytes[c]))
        for c, label in enumerate(BACKING_LABELS)
        if counts[c]
    ]


def top_files(snap: Snapshot, classes: np.ndarray, limit: int = 10) -> list[BackingRow]:
    is_file = classes == FILE
    if not is_file.any():
        return []
    ids = snap.name_id[is_file].astype(np.int64)
    sizes = snap.sizes()[is_file]
    counts = np.bincount(ids, minlength=len(snap.names))
    nbytes = np.bincount(ids, weights=sizes, minlength=len(snap.names))
    order = np.lexsort((-nbytes, -counts))[:limit]
    return [BackingRow(snap.names[i], int(counts[i]), int(nbytes[i])) for i in order if counts[i]]


def attribute(snap: Snapshot, classes: np.ndarray | None = None, limit: int | None = 50) -> Attribution:
    if classes is None:
        classes = backing_classes(snap)
    reservations, total, in_res = find_reservations(snap, classes, limit)
    return Attribution(
        map_count=len(snap),
        by_backing=by_backing(snap, classes) if len(snap) else [],
        top_files=top_files(snap, classes) if len(snap) else [],
        reservations=reservations,
        reservation_count=total,
        vmas_in_reservations=in_res,
    )
