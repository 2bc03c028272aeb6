"""Named patterns: the shapes in a process's VMAs that make its budget.

Each pattern says how many VMAs it accounts for beyond the ideal (``excess``: boundaries
inside reservations, see :mod:`.budget`), where it is, and in words what it is:

``checkerboard``      a reservation cut by protection changes alternating between two
                      protections (what a GC's commit/decommit with mprotect leaves), with
                      its granularity: pages per committed piece and per decommitted one;
``lookalike_runs``    adjacent VMAs that look identical in maps yet are separate;
``thread_stacks``     a PROT_NONE guard page right below an anonymous read-write stack;
``library_segments``  a shared library's file segments (normal: about 4-5 per library);
``malloc_arenas``     glibc malloc's per-thread heaps: 64 MiB, 64 MiB-aligned, read-write
                      at the start and a PROT_NONE tail;
``dontdump_stripes``  boundaries where only MADV_DONTDUMP differs;
``hugepage_toggles``  boundaries where only MADV_HUGEPAGE/NOHUGEPAGE differ.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import TYPE_CHECKING

import numpy as np

from ..model import PERM_READ, PERM_WRITE, Snapshot, bits_to_perms, perms_to_bits
from .attribution import backing_classes, private_anon_mask
from .budget import HOLE, PROTECTION, VMFLAGS, Budget

if TYPE_CHECKING:
    from .fragmentation import Fragmentation

MiB = 1 << 20
ARENA = 64 * MiB  # glibc HEAP_MAX_SIZE on 64-bit (2 * DEFAULT_MMAP_THRESHOLD_MAX)
GUARD_MAX = 64 * 1024  # largest guard area taken for a thread stack's
STACK_MIN = 64 * 1024
STACK_TYPICAL = 256 * 1024  # committed pieces this large between guards are stacks
CHECKERBOARD_MIN = 16  # protection boundaries in one reservation
LIB_RE = re.compile(r"\.so(\.[0-9.]+)?$")


@dataclasses.dataclass(frozen=True)
class Pattern:
    code: str
    name: str  # a short phrase: "commit/decommit checkerboard of 1-page pieces"
    count: int  # how many instances (reservations, stacks, libraries, arenas, pairs)
    excess: int  # VMAs beyond the ideal that this pattern accounts for
    detail: str
    start: int | None = None  # the (largest) region it was seen in
    end: int | None = None
    granularity: dict[str, int] = dataclasses.field(default_factory=dict)
    regions: list[tuple[int, int]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"code": self.code, "name": self.name, "count": self.count,
                "excess": self.excess, "detail": self.detail,
                "start": None if self.start is None else hex(self.start),
                "end": None if self.end is None else hex(self.end),
                "granularity": self.granularity,
                "regions": [[hex(a), hex(b)] for a, b in self.regions[:50]]}


def _pages(n: int, page: int) -> str:
    return f"{n // page}-page" if n % page == 0 else f"{n}-byte"


def _mode(values: np.ndarray) -> int:
    """The commonest value (the smallest of equally common ones); 0 when empty."""
    if len(values) == 0:
        return 0
    if int(values.max()) < 1 << 16:
        return int(np.bincount(values).argmax())
    u, c = np.unique(values, return_counts=True)
    return int(u[c.argmax()])


def _distinct(rids: np.ndarray) -> int:
    """How many reservations ids in address order (so sorted) name: np.unique would sort
    them again, and its first call imports numpy.ma (15 ms)."""
    return int(len(rids) and 1 + np.count_nonzero(rids[1:] != rids[:-1]))


def _in_pages(sizes: np.ndarray, page: int) -> np.ndarray:
    """sizes // page (a shift for a power of two: numpy divides ten times slower)."""
    shift = page.bit_length() - 1
    return sizes >> shift if 1 << shift == page else sizes // page


def _n_pages(n: int, page: int) -> str:
    return "1 page" if n == page else f"{n // page} pages"


def checkerboards(snap: Snapshot, b: Budget, arena_heads: set[int] | None = None
                  ) -> list[Pattern]:
    """``arena_heads``: start addresses of glibc malloc heaps; a reservation made of
    such heaps side by side is the arenas pattern, not a checkerboard."""
    out = []
    arena_heads = arena_heads or set()
    page = snap.meta.page_size or 4096
    for r in b.reservations:
        prot = r.causes.counts["protection"]
        # Most of the reservation's excess, all between the same two protections.
        if (prot < CHECKERBOARD_MIN or prot < 0.5 * r.excess or r.kind != "anon"
                or len(r.causes.protections) != 1):
            continue
        lo, hi = r.first_index, r.first_index + r.vma_count
        perms = snap.perms[lo:hi]
        a, b_ = next(iter(r.causes.protections)).split("/")
        values = np.array([perms_to_bits(a), perms_to_bits(b_)], dtype=np.uint8)
        sizes = (snap.end[lo:hi] - snap.start[lo:hi]).astype(np.int64)
        access = (values & (PERM_READ | PERM_WRITE)) != 0
        committed = values[access][0] if access.any() else values[1]
        other = values[values != committed][0]
        c_sizes = sizes[perms == committed]
        o_sizes = sizes[perms == other]
        c_mode = _mode(_in_pages(c_sizes, page)) * page
        o_mode = _mode(_in_pages(o_sizes, page)) * page
        if c_mode >= STACK_TYPICAL and o_mode <= GUARD_MAX:
            continue  # thread stacks side by side, each with its guard: thread_stacks
        if arena_heads:
            heads = snap.start[lo:hi][perms == committed]
            if sum(int(x) in arena_heads for x in heads[:1000]) * 2 >= min(len(heads), 1000):
                continue  # glibc malloc heaps side by side: malloc_arenas
        name = f"commit/decommit checkerboard of {_pages(c_mode, page)} pieces"
        detail = (f"{prot:,} protection changes between {bits_to_perms(int(committed))} "
                  f"(committed, mostly {_n_pages(c_mode, page)} each) and "
                  f"{bits_to_perms(int(other))} (mostly {_n_pages(o_mode, page)} each) in "
                  f"one reservation of {r.vma_count:,} VMAs")
        out.append(Pattern("checkerboard", name, 1, prot, detail, r.start, r.end,
                           {"committed_pages": c_mode // page,
                            "decommitted_pages": o_mode // page},
                           [(r.start, r.end)]))
    return out


def lookalike_runs(b: Budget, frag: Fragmentation | None) -> list[Pattern]:
    if frag is None or frag.lookalike_pairs == 0:
        return []
    longest = frag.runs[0] if frag.runs else None
    return [Pattern(
        "lookalike_runs", "unmerged look-alike runs", frag.run_count, frag.lookalike_pairs,
        f"{frag.lookalike_pairs:,} adjacent pairs look identical in maps in "
        f"{frag.run_count:,} runs"
        + (f"; the longest has {longest.vma_count:,} {longest.perms} VMAs" if longest else ""),
        longest.start if longest else None, longest.end if longest else None)]


def thread_stacks(snap: Snapshot, classes: np.ndarray, b: Budget) -> list[Pattern]:
    n = len(snap)
    if n < 2:
        return []
    size = snap.sizes()
    # a stack: rw-p, at least STACK_MIN, right above its guard: ---p, at most GUARD_MAX
    # (the few VMAs that large first, then the rest of the test on them only)
    stack = np.flatnonzero(size[1:] >= STACK_MIN) + 1
    guard = stack - 1
    perms = snap.perms
    hit = guard[private_anon_mask(snap, classes, guard) & (perms[guard] == 0)
                & (size[guard] <= GUARD_MAX) & private_anon_mask(snap, classes, stack)
                & (perms[stack] == (PERM_READ | PERM_WRITE))
                & (snap.end[guard] == snap.start[stack])]
    if len(hit) == 0:
        return []
    page = snap.meta.page_size or 4096
    g = int(np.median(size[hit]))
    s = int(np.median(size[hit + 1]))
    linked = int(np.count_nonzero(b.cause[hit] == PROTECTION))
    return [Pattern(
        "thread_stacks", "thread stacks with guard pages", len(hit), linked,
        f"{len(hit):,} stacks (typically {s // 1024:,} KiB) each with a {g // page}-page "
        "PROT_NONE guard below it: 2 VMAs per thread",
        regions=[(int(snap.start[i]), int(snap.end[i + 1])) for i in hit])]


def library_segments(snap: Snapshot, b: Budget) -> list[Pattern]:
    if len(snap) == 0:
        return []
    lib_names = np.array([bool(LIB_RE.search(os.path.basename(nm))) for nm in snap.names]
                         + [False])
    is_lib = lib_names[snap.name_id] & (snap.inode != 0)
    if not is_lib.any():
        return []
    rid = b.reservation_id
    libs = _distinct(rid[is_lib])
    vmas = int(np.count_nonzero(is_lib))
    # Boundaries inside library reservations are the excess.
    inside = np.zeros(len(b.cause), dtype=bool)
    if len(b.cause):
        inside = is_lib[:-1] & (b.cause >= 0)
    excess = int(np.count_nonzero(inside))
    per = vmas / libs
    counts = np.bincount(rid[is_lib])
    counts = counts[counts > 0]
    heavy = int(np.count_nonzero(counts > 6))
    detail = (f"{libs:,} shared libraries in {vmas:,} VMAs ({per:.1f} per library; "
              "4-5 is normal: read-only, code, read-only data, RELRO, data)")
    if heavy:
        detail += f"; {heavy} with more than 6"
    return [Pattern("library_segments", "per-library file segments", libs, excess,
                    detail, granularity={"vmas_per_library_x10": round(per * 10)})]


REPLACING_ALLOCATORS = re.compile(r"^lib(jemalloc|mimalloc|tcmalloc)[._]")


def malloc_replaced(snap: Snapshot) -> str | None:
    """The mapped library that replaces glibc's malloc, if any."""
    for nm in snap.names:
        base = os.path.basename(nm)
        if REPLACING_ALLOCATORS.search(base):
            return base
    return None


def malloc_arenas(snap: Snapshot, classes: np.ndarray, b: Budget) -> list[Pattern]:
    n = len(snap)
    # With jemalloc, mimalloc or tcmalloc in place glibc's malloc makes no arenas (and
    # mimalloc's 32 MiB segments can look like one).
    if n == 0 or malloc_replaced(snap):
        return []
    start, end, perms = snap.start, snap.end, snap.perms
    # a heap starts on an ARENA boundary (few VMAs do: the rest is tested on those only)
    aligned = np.flatnonzero((start & np.uint64(ARENA - 1)) == 0)
    head = aligned[private_anon_mask(snap, classes, aligned)
                   & (perms[aligned] == (PERM_READ | PERM_WRITE))]
    full = head[end[head] - start[head] == np.uint64(ARENA)]
    head = head[head < n - 1]
    tail = head + 1  # its PROT_NONE rest up to ARENA
    with_tail = head[private_anon_mask(snap, classes, tail) & (perms[tail] == 0)
                     & (start[tail] == end[head])
                     & (end[tail] == start[head] + np.uint64(ARENA))]
    total = len(with_tail) + len(full)
    if total == 0:
        return []
    regions = [(int(start[i]), int(start[i]) + ARENA) for i in np.concatenate([with_tail, full])]
    return [Pattern(
        "malloc_arenas", "glibc malloc arenas", total, len(with_tail),
        f"{total:,} per-thread malloc heaps of 64 MiB ({len(with_tail):,} with a PROT_NONE "
        "tail: 2 VMAs each)", regions=sorted(regions))]


def flag_stripes(snap: Snapshot, b: Budget) -> list[Pattern]:
    if snap.vmflags is None or len(b.cause) == 0:
        return []
    out = []
    sel = np.flatnonzero(b.cause == VMFLAGS)
    if len(sel) == 0:
        return []
    diff = snap.vmflags[sel] ^ snap.vmflags[sel + 1]
    for code, name, mnems, what in (
        ("dontdump_stripes", "DONTDUMP stripes", ("dd",), "MADV_DONTDUMP"),
        ("hugepage_toggles", "hugepage/nohugepage toggles", ("hg", "nh"),
         "MADV_HUGEPAGE/MADV_NOHUGEPAGE"),
    ):
        bits = 0
        for m in mnems:
            bits |= snap.flag_mask(m)
        if not bits:
            continue
        hit = sel[(diff & np.uint64(bits)) != 0]
        if len(hit) == 0:
            continue
        rid = b.reservation_id[hit]
        out.append(Pattern(code, name, _distinct(rid), len(hit),
                           f"{len(hit):,} boundaries where {what} was applied to part of a "
                           f"range, in {_distinct(rid):,} reservation(s)",
                           int(snap.end[hit[0]]), None))
    return out


def holes(b: Budget) -> list[Pattern]:
    n = b.totals.counts["hole"]
    if not n:
        return []
    return [Pattern("file_holes", "file mapped in pieces with holes", n, n,
                    f"{n:,} holes between mappings of the same file")]


def find_patterns(snap: Snapshot, b: Budget, frag: Fragmentation | None = None,
                  classes: np.ndarray | None = None) -> list[Pattern]:
    """Every named pattern in the snapshot, most excess VMAs first."""
    if classes is None:
        classes = backing_classes(snap)
    arenas = malloc_arenas(snap, classes, b)
    heads = {a for p in arenas for a, _ in p.regions}
    found = (checkerboards(snap, b, heads) + lookalike_runs(b, frag)
             + thread_stacks(snap, classes, b) + library_segments(snap, b)
             + arenas + flag_stripes(snap, b) + holes(b))
    found.sort(key=lambda p: -p.excess)
    return found


__all__ = ["ARENA", "HOLE", "Pattern", "find_patterns"]
