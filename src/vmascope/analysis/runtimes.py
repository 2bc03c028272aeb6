"""Runtime fingerprints: which runtime or allocator made a process's mappings.

Only what a snapshot holds is used: the mapped files (libraries, the executable), the
mapping names and shapes, the command line and comm. Every fingerprint carries a
confidence (``certain``: the runtime's own library or executable is mapped; ``high``:
shapes only that runtime makes, several of them; ``medium``: one such shape) and the
evidence, one line per fact.

Shapes used (documented behaviour of each runtime):

* .NET: ``libcoreclr.so``; ``memfd:doublemapper`` mappings (the W^X double mapping of
  executable memory, behind "Failed to create RW mapping for RX memory"); the GC regions
  reservation (256 GiB of PROT_NONE address space by default, GCRegionRange).
* JVM: ``libjvm.so``; ZGC's heap is a memfd ``java_heap`` mapped into several views;
  the collector named on the command line.
* Go: the heap arenas start at the first arena hint, 0xc000000000.
* V8/Node.js: ``libnode.so`` or the ``node`` executable; V8's reservations (code range,
  pointer-compression cage).
* mono: ``libmonosgen`` or the ``mono`` executable.
* CPython: ``libpython3`` or a ``python3`` executable.
* glibc malloc: per-thread arenas (see :mod:`.patterns`).
* jemalloc, mimalloc, tcmalloc, bdwgc: their shared libraries.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from ..model import PERM_READ, PERM_WRITE, PERM_EXEC, Snapshot
from .budget import Budget, budget
from .patterns import Pattern

GiB = 1 << 30
GO_ARENA_HINT = 0xC000000000
GO_SPAN = 1 << 32
BIG = 128 << 20
DOTNET_REGIONS = 256 * GiB

RUNTIMES: tuple[str, ...] = (
    ".NET", "JVM", "Go", "V8/Node.js", "mono", "CPython", "glibc malloc", "jemalloc",
    "mimalloc", "tcmalloc", "bdwgc",
)
CONFIDENCE_ORDER = ("certain", "high", "medium")


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    runtime: str
    confidence: str  # certain | high | medium
    evidence: list[str]
    detail: str = ""  # e.g. the collector: "ZGC"
    regions: list[tuple[int, int]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"runtime": self.runtime, "confidence": self.confidence,
                "evidence": self.evidence, "detail": self.detail,
                "regions": [[hex(a), hex(b)] for a, b in self.regions[:50]]}


def _basenames(snap: Snapshot) -> dict[str, int]:
    """Basename of every mapped path -> how many VMAs map it."""
    out: dict[str, int] = {}
    if len(snap) == 0:
        return out
    counts = np.bincount(snap.name_id.astype(np.int64) + 1, minlength=len(snap.names) + 1)
    for i, name in enumerate(snap.names):
        c = int(counts[i + 1])
        if c and name.startswith("/"):
            base = os.path.basename(name.removesuffix(" (deleted)"))
            out[base] = out.get(base, 0) + c
    return out


def _names_like(snap: Snapshot, pattern: str) -> tuple[int, list[int]]:
    """(VMAs whose name matches, their indices (at most 1000))."""
    rx = re.compile(pattern)
    ids = [i for i, nm in enumerate(snap.names) if rx.search(nm)]
    if not ids:
        return 0, []
    hit = np.flatnonzero(np.isin(snap.name_id, ids))
    return len(hit), [int(i) for i in hit[:1000]]


def _lib(bases: dict[str, int], pattern: str) -> str | None:
    rx = re.compile(pattern)
    for b in bases:
        if rx.search(b):
            return b
    return None


def _exe(snap: Snapshot) -> str:
    cmd = snap.meta.cmdline or []
    return os.path.basename(cmd[0]) if cmd else (snap.meta.comm or "")


def _anon_reservations(snap: Snapshot, b: Budget) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, end, PROT_NONE bytes) of the anonymous reservations worth a look: those
    spanning at least 128 MiB, and those near Go's arena hint."""
    if len(snap) == 0 or len(b.firsts) == 0:
        z = np.zeros(0, dtype=np.uint64)
        return z, z, z
    firsts = b.firsts
    lasts = firsts + b.counts - 1
    starts = snap.start[firsts]
    ends = snap.end[lasts]
    anon = (snap.inode[firsts] == 0) & (snap.name_id[firsts] < 0)
    named = snap.name_id[firsts] >= 0
    if named.any():
        ids = [i for i, nm in enumerate(snap.names) if nm.startswith("[anon:")]
        anon |= named & np.isin(snap.name_id[firsts], ids)
    anon &= (snap.perms[firsts] & 8) == 0
    big = (ends - starts) >= np.uint64(BIG)
    near_go = (starts >= np.uint64(GO_ARENA_HINT)) & (starts < np.uint64(GO_ARENA_HINT + GO_SPAN))
    pick = np.flatnonzero(anon & (big | near_go))
    none_bytes = np.zeros(len(pick), dtype=np.uint64)
    for j, r in enumerate(pick):
        lo, hi = int(firsts[r]), int(lasts[r]) + 1
        no = (snap.perms[lo:hi] & (PERM_READ | PERM_WRITE | PERM_EXEC)) == 0
        none_bytes[j] = (snap.end[lo:hi][no] - snap.start[lo:hi][no]).sum()
    return starts[pick], ends[pick], none_bytes


def fingerprint(snap: Snapshot, patterns: list[Pattern] | None = None,
                b: Budget | None = None) -> list[Fingerprint]:
    """Every runtime or allocator the snapshot shows, most confident first."""
    if b is None:
        b = budget(snap, limit=0)
    bases = _basenames(snap)
    exe = _exe(snap)
    cmdline = " ".join(snap.meta.cmdline or [])
    starts, ends, none_bytes = _anon_reservations(snap, b)
    out: list[Fingerprint] = []

    # .NET
    ev = []
    lib = _lib(bases, r"^libcoreclr\.so")
    if lib:
        ev.append(f"{lib} is mapped")
    dm, dm_idx = _names_like(snap, r"^/?memfd:doublemapper")
    if dm:
        ev.append(f"{dm:,} memfd:doublemapper mappings (W^X double mapping of code)")
    spans = ends - starts
    big = np.flatnonzero((spans >= np.uint64(DOTNET_REGIONS)) & (none_bytes >= spans // 2))
    regions = [(int(starts[i]), int(ends[i])) for i in big]
    if len(big):
        ev.append(f"{len(big)} anonymous reservation(s) of at least 256 GiB mostly "
                  "PROT_NONE (GC regions range)")
    if lib or dm:
        conf = "certain" if lib else ("high" if dm and len(big) else "medium")
        out.append(Fingerprint(".NET", conf, ev, "", regions))

    # JVM
    lib = _lib(bases, r"^libjvm\.so")
    if lib or exe == "java":
        ev = [f"{lib} is mapped"] if lib else [f"the executable is {exe}"]
        zheap, _ = _names_like(snap, r"memfd:java_heap")
        gc = ""
        if zheap:
            gc = "ZGC"
            ev.append(f"{zheap:,} mappings of memfd:java_heap (ZGC's multi-mapped heap)")
        elif "-XX:+UseZGC" in cmdline:
            gc = "ZGC"
            ev.append("-XX:+UseZGC on the command line")
        for flag, name in (("-XX:+UseG1GC", "G1"), ("-XX:+UseParallelGC", "Parallel"),
                           ("-XX:+UseSerialGC", "Serial"), ("-XX:+UseShenandoahGC",
                                                            "Shenandoah")):
            if not gc and flag in cmdline:
                gc = name
                ev.append(f"{flag} on the command line")
        code = np.flatnonzero((snap.perms & (PERM_READ | PERM_WRITE | PERM_EXEC)) == 7)
        if len(code):
            ev.append(f"{len(code)} rwx anonymous VMA(s) (CodeCache)")
        out.append(Fingerprint("JVM", "certain" if lib else "high", ev, gc))

    # Go
    go = np.flatnonzero((starts >= np.uint64(GO_ARENA_HINT))
                        & (starts < np.uint64(GO_ARENA_HINT + GO_SPAN)))
    if len(go):
        ev = [f"anonymous reservation at {int(starts[go[0]]):#x}: Go's first heap arena "
              "hint (0xc000000000)"]
        libc = _lib(bases, r"^libc\.so")
        if libc is None:
            ev.append("no libc mapped (a statically linked Go binary)")
        out.append(Fingerprint("Go", "high" if libc is None else "medium", ev, "",
                               [(int(starts[i]), int(ends[i])) for i in go]))

    # V8 / Node.js
    lib = _lib(bases, r"^libnode\.so")
    if lib or exe in ("node", "nodejs"):
        ev = [f"{lib} is mapped"] if lib else []
        if exe in ("node", "nodejs"):
            ev.append(f"the executable is {exe}")
        v8 = np.flatnonzero((spans >= np.uint64(BIG)) & (none_bytes >= spans // 2))
        if len(v8):
            ev.append(f"{len(v8)} anonymous reservation(s) of 128 MiB or more, mostly "
                      "PROT_NONE (V8 code range / heap cage)")
        out.append(Fingerprint("V8/Node.js", "certain" if lib else "high", ev, "",
                               [(int(starts[i]), int(ends[i])) for i in v8]))

    # mono
    lib = _lib(bases, r"^libmonosgen|^libmono-2")
    mono_exe = _lib(bases, r"^mono(-sgen)?$")
    if lib or mono_exe:
        ev = [f"{x} is mapped" for x in (lib, mono_exe) if x]
        out.append(Fingerprint("mono", "certain", ev))

    # CPython
    lib = _lib(bases, r"^libpython3")
    py_exe = _lib(bases, r"^python3(\.\d+)?$")
    if lib or py_exe:
        ev = [f"{x} is mapped" for x in (lib, py_exe) if x]
        out.append(Fingerprint("CPython", "certain", ev))

    # Allocators by library.
    for name, rx in (("jemalloc", r"^libjemalloc\.so"), ("mimalloc", r"^libmimalloc\.so"),
                     ("tcmalloc", r"^libtcmalloc"), ("bdwgc", r"^libgc\.so")):
        lib = _lib(bases, rx)
        if lib:
            out.append(Fingerprint(name, "certain", [f"{lib} is mapped"]))

    # glibc malloc by its arenas.
    arenas = [p for p in patterns or [] if p.code == "malloc_arenas"]
    if arenas:
        p = arenas[0]
        ev = [p.detail]
        libc = _lib(bases, r"^libc\.so")
        if libc:
            ev.append(f"{libc} is mapped")
        out.append(Fingerprint("glibc malloc", "high" if libc else "medium", ev, "",
                               p.regions))

    out.sort(key=lambda f: (CONFIDENCE_ORDER.index(f.confidence), RUNTIMES.index(f.runtime)))
    return out


def owner_of(fingerprints: list[Fingerprint], start: int, end: int) -> str | None:
    """The runtime whose claimed regions overlap [start, end), if any."""
    for f in fingerprints:
        for a, b in f.regions:
            if a < end and start < b:
                return f.runtime
    return None


def claim(b: Budget, fingerprints: list[Fingerprint]) -> None:
    """Name the owner of each listed reservation that a fingerprint's regions overlap."""
    import dataclasses as dc

    b.reservations = [dc.replace(r, owner=owner_of(fingerprints, r.start, r.end))
                      if r.kind == "anon" else r for r in b.reservations]


__all__ = ["RUNTIMES", "Fingerprint", "claim", "fingerprint", "owner_of"]
