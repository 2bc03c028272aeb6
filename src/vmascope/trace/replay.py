"""Replaying a trace through the model: agreement with the real end state, and a cause and
a call site for every VMA.

The model starts from the trace's first snapshot (``MM.from_snapshot``), runs its ops with
attribution on (each VMA remembers the op that made the boundary at its start,
``SVma.born``; every refused merge is kept with its reason codes), and is compared with the
last snapshot:

* **agreement**: the share of the real final VMAs the model has exactly (start, end,
  permissions, shared or private); ``[vsyscall]`` (no VMA of the mm) is left out and the
  ``[stack]`` is matched by its end (its growth is not a mapping call).
* **differing regions**: address ranges where the two disagree, with both counts.
* **sites**: each VMA of the model's end state is put down to the op (the event) that
  made it, and that event to its call site (``trace.sites``); each boundary gets its
  cause from the budget analysis of the model's end state, which knows the anon_vmas.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from ..kernel.epochs import Epoch, epoch_for
from ..kernel.sim.memory import handle_mm_fault
from ..kernel.sim.mm import MM, OpFailed
from ..kernel.sim.result import SYSCALLS, snapshot_of
from ..model import Snapshot, SnapshotMeta
from ..util import gc_paused
from .format import Trace

SAMPLES = 120  # points of the map_count timeline
VSYSCALL = 0xFFFFFFFFFF600000  # x86-64's vsyscall page: in maps, but no VMA of the mm
PRESENT = -1  # born before the trace started


@dataclasses.dataclass
class Region:
    start: int
    end: int
    real: int  # VMAs of the real end state in the region
    model: int
    name: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Comparison:
    real: int
    model: int
    matched: int
    regions: list[Region]

    @property
    def agreement(self) -> float:
        """VMAs both have, per cent of the VMAs either has (an extra VMA of the model
        counts against it as much as a missing one)."""
        either = self.real + self.model - self.matched
        return 100.0 * self.matched / either if either else 100.0

    def to_json(self) -> dict[str, Any]:
        return {"real": self.real, "model": self.model, "matched": self.matched,
                "agreement": round(self.agreement, 3),
                "regions": [r.to_json() for r in self.regions]}


@dataclasses.dataclass
class Replay:
    trace: Trace
    epoch: Epoch
    snapshot: Snapshot  # the model's end state
    born: np.ndarray  # per VMA of snapshot: the op that made it (PRESENT: before)
    errors: list[tuple[int, str]]  # ops the model refused (index, errno)
    faults: list[tuple[int, str]]  # touches the model refused (index, signal)
    refusals: list[tuple[int, int, tuple[str, ...]]]  # (op, address, reason codes)
    samples: list[tuple[int, int]]  # (op index, map_count)
    comparison: Comparison | None
    # The op that made each VMA's start, as VMAs came (born_in: PRESENT for those there
    # at the start) and went (born_out); per sample, how far each log had got.
    born_in: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    born_out: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    marks: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def sampled_ops(self) -> np.ndarray:
        """The ops (sorted) that made a VMA alive at one of the samples or before."""
        return np.unique(self.born_in[:self.marks[-1][0]] if self.marks else self.born_in[:0])

    def alive_by(self, column: Callable[[np.ndarray], np.ndarray], ncols: int) -> np.ndarray:
        """Per sample (a row each), the VMAs alive by column of the op that made them;
        ``column`` maps ops (of :meth:`sampled_ops`) to 0 .. ncols - 1."""
        s = len(self.marks)
        out = np.zeros((s, ncols), np.int64)
        for k, (log, sign) in enumerate(((self.born_in, 1), (self.born_out, -1))):
            upto = np.array([m[k] for m in self.marks], np.int64)
            first = np.searchsorted(upto, np.arange(len(log)), side="right")
            keep = first < s  # an entry counts from the first sample taken after it
            if not keep.any():
                continue
            flat = first[keep] * ncols + column(log[keep])
            out += sign * np.bincount(flat, minlength=s * ncols).reshape(s, ncols).cumsum(0)
        return out


def _file_names(snap: Snapshot, files: dict[str, str]) -> Snapshot:
    """The model names a traced file mapping /memfd:fN (deleted); give it its path."""
    if not files:
        return snap
    names = list(snap.names)
    for i, n in enumerate(names):
        if n.startswith("/memfd:") and n.endswith(" (deleted)"):
            key = n[len("/memfd:"):-len(" (deleted)")]
            if key in files:
                names[i] = files[key]
    snap.names = names
    return snap


def replay(trace: Trace, kernel: str | Epoch | None = None, *,
           max_map_count: int | None = None, samples: int = SAMPLES,
           progress: Callable[[int, int], None] | None = None) -> Replay:
    """Run the trace on the model of ``kernel`` (default: the kernel it was recorded on)."""
    with gc_paused():  # tens of thousands of VMAs and ops, no garbage cycles
        return _replay(trace, kernel, max_map_count, samples, progress)


def _replay(trace: Trace, kernel: str | Epoch | None, max_map_count: int | None,
            samples: int, progress: Callable[[int, int], None] | None) -> Replay:
    import time

    from ..errors import ParseError

    if trace.first is None:
        raise ParseError(trace.source, None, "a first snapshot (#snapshot first): replay "
                         "starts from the state the program was in")
    t0 = time.perf_counter()
    release = kernel or trace.header.get("kernel") or trace.first.meta.kernel_release or "6.18"
    epoch = release if isinstance(release, Epoch) else epoch_for(release)
    mm = MM.from_snapshot(trace.first, epoch, max_map_count=max_map_count)
    mm.refusals = []
    mm.keep_born = True
    mm.born_in = [PRESENT] * mm.map_count
    ops = trace.ops
    n = len(ops)
    every = max(1, n // samples) if samples else 0
    handlers = SYSCALLS
    errors: list[tuple[int, str]] = []
    faults: list[tuple[int, str]] = []
    taken: list[tuple[int, int]] = []
    marks: list[tuple[int, int]] = []
    # The ops in runs between two samples (or a hundredth of them, without samples).
    run = every or max(1, n // 100)
    for lo in range(0, n, run):
        if progress is not None:
            progress(lo, n)
        hi = min(n, lo + run)
        for i in range(lo, hi):
            op = ops[i]
            mm.cur_op = i
            if op.kind == "touch":
                sig = handle_mm_fault(mm, op)
                if sig is not None:
                    faults.append((i, sig))
            else:
                try:
                    handlers[op.kind](mm, op)
                except OpFailed as exc:
                    errors.append((i, exc.errno))
        if every:
            taken.append((hi - 1, mm.map_count))
            marks.append((len(mm.born_in), len(mm.born_out)))
    mm.cur_op = -1
    meta = SnapshotMeta(kernel_release=epoch.release, max_map_count=mm.max_map_count,
                        source="simulated", comm=trace.header.get("comm"))
    meta.extra["epoch"] = epoch.name
    snap = _file_names(snapshot_of(mm, meta), trace.files)
    born = np.fromiter((v.born for v in mm), np.int64, count=mm.map_count)
    comparison = compare(trace.last, snap) if trace.last is not None else None
    mm.dispose()  # its VMAs are freed here, not left to the garbage collector
    return Replay(trace=trace, epoch=epoch, snapshot=snap, born=born, errors=errors,
                  faults=faults, refusals=mm.refusals, samples=taken, comparison=comparison,
                  born_in=np.array(mm.born_in, np.int64),
                  born_out=np.array(mm.born_out, np.int64), marks=marks,
                  seconds=time.perf_counter() - t0)


def _kept(snap: Snapshot) -> tuple[np.ndarray, int | None]:
    """The indexes of the VMAs compared (all but the vsyscall page), and the [stack]'s."""
    keep = np.flatnonzero(snap.start != VSYSCALL)
    stack = None
    if "[stack]" in snap.names:
        hits = np.flatnonzero(snap.name_id == snap.names.index("[stack]"))
        stack = int(hits[0]) if len(hits) else None
    return keep, stack


def compare(real: Snapshot, model: Snapshot, limit: int = 20) -> Comparison:
    """How much of the real end state the model reproduces, and where it does not."""
    rk, rstack = _kept(real)
    mk, mstack = _kept(model)
    # VMAs never overlap, so a start names one VMA on each side: a VMA both have is one
    # start both have with the same end and permissions.
    rs, ms = real.start[rk], model.start[mk]
    same = np.zeros(len(rk), bool)  # per compared real VMA: the model has it
    hit = np.zeros(len(model), bool)  # per model VMA: the real state has it
    if len(ms):
        order = np.argsort(ms, kind="stable")
        at = np.minimum(np.searchsorted(ms, rs, sorter=order), len(ms) - 1)
        mi = mk[order[at]]
        same = ((model.start[mi] == rs) & (model.end[mi] == real.end[rk])
                & (model.perms[mi] == real.perms[rk]))
        hit[mi[same]] = True
    matched = int(same.sum())
    bad_real = rk[~same].tolist()
    bad_model = mk[~hit[mk]].tolist()
    if (rstack is not None and mstack is not None and rstack in bad_real
            and int(real.end[rstack]) == int(model.end[mstack])):
        matched += 1  # the stack grew by faults the recorder does not keep
        bad_real.remove(rstack)
        if mstack in bad_model:
            bad_model.remove(mstack)
    spans = sorted([(int(real.start[i]), int(real.end[i]), 0, i) for i in bad_real]
                   + [(int(model.start[i]), int(model.end[i]), 1, i) for i in bad_model])
    regions: list[Region] = []
    for lo, hi, side, i in spans:
        if regions and lo <= regions[-1].end:
            r = regions[-1]
            r.end = max(r.end, hi)
        else:
            name = (real if side == 0 else model).name(i) or ""
            r = Region(lo, hi, 0, 0, name)
            regions.append(r)
        if side == 0:
            r.real += 1
        else:
            r.model += 1
    regions.sort(key=lambda r: (-max(r.real, r.model), r.start))
    return Comparison(real=len(rk), model=len(mk), matched=matched, regions=regions[:limit])

