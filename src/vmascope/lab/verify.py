"""Differential verification: random op scripts on real kernels and in the simulator.

Scripts are biased to what allocators do (reserve PROT_NONE, commit read-write, touch,
decommit, madvise, fork, mremap, names, brk). Each kernel runs its scripts in batches
(one microVM boot per batch); every disagreement is minimised by delta debugging (ddmin
over the ops), re-running the real kernel and the simulator on all candidate scripts of
one round in a single batch.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Generator, Sequence
from typing import Any

from ..ops.language import Op, format_op, parse_line
from ..outcome import Outcome
from . import compare
from .backends import Backend, SimulatorBackend, real_backend, sim_release
from .families import TEXT_FAMILIES
from .kernels import Kernel


# ---------------------------------------------------------------------------------------
# Random scripts


class Generator_:
    """Random allocator-like scripts over a small arena (``pages`` pages)."""

    def __init__(self, rng: random.Random, *, pages: int = 24, heap: bool = True) -> None:
        self.rng = rng
        self.pages = pages
        self.heap = heap

    def _range(self, max_len: int = 6) -> tuple[int, int]:
        r = self.rng
        length = r.choice((1, 1, 1, 2, 2, 3, 4, max_len))
        start = r.randrange(0, self.pages - length + 1)
        return start, length

    def script(self) -> list[Op]:
        r = self.rng
        lines: list[str] = []
        # Most allocators start with a reservation.
        if r.random() < 0.85:
            prot = "---" if r.random() < 0.8 else "rw-"
            flags = r.choice(("private", "private,noreserve", "private,fixed"))
            lines.append(f"mmap 0 {self.pages}p {prot} {flags}")
        forks = 0
        alive: list[int] = []  # fork children that have not exited
        memfd = False
        keys = 0
        heap_at: int | None = None
        for _ in range(r.randint(2, 12)):
            kind = r.choices(
                ("commit", "touch", "decommit", "madvise", "mmap", "munmap", "mremap",
                 "fork", "name", "heap", "protect", "mbind", "lock", "seal", "file", "exit",
                 "pkey"),
                weights=(24, 22, 8, 10, 8, 5, 7, 3, 4, 4, 5, 2, 4, 4, 4, 2, 2))[0]
            s, n = self._range()
            if kind == "commit":
                lines.append(f"mprotect {s}p {n}p rw-")
            elif kind == "protect":
                lines.append(f"mprotect {s}p {n}p {r.choice(('r--', '---', 'rwx', 'rw-'))}")
            elif kind == "touch":
                lines.append(f"touch {r.randrange(self.pages)}p {r.choice(('write', 'write', 'read'))}")
            elif kind == "decommit":
                if r.random() < 0.5:
                    lines.append(f"mprotect {s}p {n}p ---")
                    lines.append(f"madvise {s}p {n}p dontneed")
                else:
                    lines.append(f"mmap {s}p {n}p --- private,fixed,noreserve")
            elif kind == "madvise":
                advice = r.choice(("dontneed", "free", "dontdump", "dodump", "dontfork",
                                   "dofork", "wipeonfork", "keeponfork", "hugepage",
                                   "nohugepage", "random", "sequential", "normal",
                                   "willneed", "populate_write", "mergeable",
                                   "unmergeable", "collapse"))
                lines.append(f"madvise {s}p {n}p {advice}")
            elif kind == "mmap":
                prot = r.choice(("rw-", "rw-", "---", "r--"))
                flags = r.choice(("private,fixed", "private,fixed,noreserve", "private",
                                  "shared,fixed"))
                lines.append(f"mmap {s}p {n}p {prot} {flags}")
            elif kind == "munmap":
                lines.append(f"munmap {s}p {n}p")
            elif kind == "mremap":
                choice = r.random()
                if choice < 0.3:
                    lines.append(f"mremap {s}p {n}p {max(1, n - 1)}p")
                elif choice < 0.55:
                    lines.append(f"mremap {s}p {n}p {n + r.randint(1, 3)}p")
                else:
                    dest = r.randrange(0, self.pages - n + 1)
                    lines.append(f"mremap {s}p {n}p {n}p {dest}p maymove,fixed")
            elif kind == "fork":
                if forks < 2:
                    lines.append("fork")
                    alive.append(forks)
                    forks += 1
            elif kind == "exit":
                if alive:
                    lines.append(f"exit {alive.pop(r.randrange(len(alive)))}")
            elif kind == "seal":
                lines.append(f"mseal {s}p {n}p")
            elif kind == "file":
                # a memfd mapped twice or more (a W^X double mapping, offsets that may or
                # may not continue their neighbour's)
                if not memfd:
                    lines.append(f"memfd dm {r.choice((4, 8, 16))}p")
                    memfd = True
                prot = r.choice(("rw-", "r-x", "r--"))
                share = r.choice(("shared,fixed", "shared,fixed", "private,fixed"))
                off = r.choice((0, s, r.randrange(0, 8)))
                lines.append(f"mmap {s}p {n}p {prot} {share} fd=dm"
                             + (f" off={off}p" if off else ""))
            elif kind == "pkey":
                if keys == 0 or r.random() < 0.2:
                    lines.append("pkey_alloc")
                    keys += 1
                key = r.choice((-1, 0, 1, min(keys, 2)))
                lines.append(f"pkey_mprotect {s}p {n}p {r.choice(('rw-', 'r--'))} {key}")
            elif kind == "mbind":
                # node 0 exists everywhere; a policy different from its neighbours' keeps
                # a range apart (vma_policy is compared when merging)
                lines.append(f"mbind {s}p {n}p {r.choice(('bind:0', 'preferred:0', 'default'))}")
            elif kind == "lock":
                choice = r.random()
                if choice < 0.45:
                    lines.append(f"mlock {s}p {n}p" + (" onfault" if r.random() < 0.4 else ""))
                elif choice < 0.8:
                    lines.append(f"munlock {s}p {n}p")
                elif choice < 0.93:
                    lines.append("mlockall " + r.choice(("current", "current,onfault",
                                                         "future", "current,future")))
                else:
                    lines.append("munlockall")
            elif kind == "name":
                lines.append(f"name {s}p {n}p {r.choice(('gc', 'gc', 'jit', '-'))}")
            elif kind == "heap" and self.heap:
                if heap_at is None:
                    heap_at = self.pages + 8
                    lines.append(f"heap {heap_at}p")
                top = heap_at + r.randint(0, 4)
                lines.append(f"brk {top}p")
                if r.random() < 0.6 and top > heap_at:
                    lines.append(f"touch {r.randrange(heap_at, top)}p")
        return [dataclasses.replace(parse_line(t, "<random>", i + 1), line=i + 1)
                for i, t in enumerate(lines)]


def random_scripts(count: int, seed: int, *, heap: bool = True) -> list[list[Op]]:
    rng = random.Random(seed)
    gen = Generator_(rng, heap=heap)
    return [gen.script() for _ in range(count)]


# ---------------------------------------------------------------------------------------
# Families: scripts that imitate one allocator or runtime (each workload of
# vmascope.workloads at its "verify" size, under a random strategy), or stress one
# system call ("mremap").

def family_names() -> list[str]:
    from ..workloads import names

    return ["random", *TEXT_FAMILIES, *names()[0]]


def family_scripts(family: str, count: int, seed: int, *,
                   heap: bool = True) -> list[list[Op]]:
    """``count`` scripts of one family (see :func:`family_names`)."""
    if family == "random":
        return random_scripts(count, seed, heap=heap)
    rng = random.Random(f"{family}/{seed}")
    if family in TEXT_FAMILIES:
        make = TEXT_FAMILIES[family]
        return [[dataclasses.replace(parse_line(t, f"<{family}>", i + 1), line=i + 1)
                 for i, t in enumerate(make(rng))] for _ in range(count)]
    from ..errors import UsageError
    from ..workloads import STRATEGIES, build, get_workload

    if family not in family_names():
        raise UsageError(f"--family {family}: unknown (expected all or a comma list of "
                         f"{', '.join(family_names())})")
    wl = get_workload(family)
    size = "verify" if "verify" in wl.sizes else None
    out = []
    for _ in range(count):
        ops = build(family, rng.choice(list(STRATEGIES)), seed=rng.randrange(1 << 30),
                    size=size)
        out.append([dataclasses.replace(op, line=k + 1) for k, op in enumerate(ops)])
    return out


# ---------------------------------------------------------------------------------------
# Delta debugging (ddmin), written as a generator so that many minimisations can share
# one real-kernel batch per round: it yields candidate scripts and receives, for each,
# whether it still disagrees.


def ddmin(ops: list[Op]) -> Generator[list[list[Op]], list[bool], list[Op]]:
    n = 2
    while len(ops) >= 2:
        size = len(ops)
        bounds = [size * i // n for i in range(n + 1)]
        chunks = [(bounds[i], bounds[i + 1]) for i in range(n)]
        subsets = [ops[a:b] for a, b in chunks]
        complements = [ops[:a] + ops[b:] for a, b in chunks]
        candidates = [c for c in subsets + complements if c]
        verdicts = yield candidates
        hit = next((c for c, bad in zip(candidates, verdicts) if bad), None)
        if hit is not None:
            in_subsets = any(hit is s for s in subsets)
            ops = hit
            n = 2 if in_subsets else max(n - 1, 2)
            continue
        if n >= size:
            break
        n = min(size, 2 * n)
    return ops


def renumber(ops: Sequence[Op]) -> list[Op]:
    return [dataclasses.replace(op, line=i + 1) for i, op in enumerate(ops)]


# ---------------------------------------------------------------------------------------
# Running


@dataclasses.dataclass
class Disagreement:
    script: list[Op]
    real: Outcome
    sim: Outcome | None  # None when the simulator raised
    differences: list[str]
    original: list[Op]
    similar: int = 1  # how many of the random scripts disagreed the same way

    def signature(self) -> tuple[Any, ...]:
        """A coarse class: which aspects differ and the kinds of op whose errors or
        faults differ (so that one example of each class gets minimised)."""
        aspects = tuple(sorted({d.split()[0].rstrip(":") for d in self.differences}))
        kinds: set[str] = set()
        sim = self.sim
        pairs = [({(e.op, e.errno) for e in self.real.errors},
                  {(e.op, e.errno) for e in sim.errors} if sim else set()),
                 ({(f.op, f.signal) for f in self.real.faults},
                  {(f.op, f.signal) for f in sim.faults} if sim else set())]
        for real, simulated in pairs:
            for i, _ in real ^ simulated:
                if 0 <= i < len(self.script):
                    kinds.add(self.script[i].kind)
        return aspects, tuple(sorted(kinds))


@dataclasses.dataclass
class KernelVerdict:
    kernel: Kernel
    release: str
    cases: int
    agreed: int
    disagreements: list[Disagreement]
    minimised: list[Disagreement]
    seconds: float  # running and comparing the random scripts (not minimising)
    minimise_seconds: float = 0.0
    family: str = "random"

    @property
    def percent(self) -> float:
        return 100.0 * self.agreed / self.cases if self.cases else 100.0


class Checker:
    """Runs scripts on one real kernel and in the simulator and compares the Outcomes."""

    def __init__(self, kernel: Kernel, *, max_map_count: int | None = None) -> None:
        self.kernel = kernel
        self.real: Backend = real_backend(kernel, max_map_count=max_map_count)
        self.sim = SimulatorBackend(sim_release(kernel), max_map_count=max_map_count)
        self.release = kernel.release

    def judge(self, ops: Sequence[Op], real: Outcome) -> Disagreement | None:
        """Predict one script the real kernel ran and compare: None when they agree."""
        sim: Outcome | None
        try:
            (sim,) = self.sim.run([ops], like=[real])
            diffs = compare.differences(real, sim)
        except Exception as exc:  # a simulator crash is a disagreement to report
            sim, diffs = None, [f"simulator raised {type(exc).__name__}: {exc}"]
        if real.crash is not None:
            diffs = [f"the real script's process died (wait status {real.crash})"]
        return Disagreement(list(ops), real, sim, diffs, list(ops)) if diffs else None

    def check(self, scripts: Sequence[Sequence[Op]]) -> list[Disagreement | None]:
        """Run scripts on the real kernel; per script, None or the Disagreement."""
        real = self.real.run(scripts)
        self.release = getattr(self.real, "release", self.release)
        return [self.judge(ops, r) for ops, r in zip(scripts, real)]


def verify_kernel(kernel: Kernel, scripts: Sequence[list[Op]], *, batch: int = 500,
                  minimise: int = 5, max_map_count: int | None = None,
                  progress: Callable[[int], None] | None = None,
                  family: str = "random") -> KernelVerdict:
    import time

    t0 = time.monotonic()
    checker = Checker(kernel, max_map_count=max_map_count)
    agreed = 0
    bad: list[Disagreement] = []
    for i in range(0, len(scripts), batch):
        chunk = scripts[i:i + batch]
        for d in checker.check(chunk):
            if d is None:
                agreed += 1
            else:
                bad.append(d)
        if progress:
            progress(len(chunk))
    seconds = time.monotonic() - t0
    t1 = time.monotonic()
    minimised = minimise_all(checker, one_of_each(bad)[:minimise])
    return KernelVerdict(kernel, checker.release, len(scripts), agreed, bad, minimised,
                         seconds, time.monotonic() - t1, family)


def one_of_each(found: Sequence[Disagreement]) -> list[Disagreement]:
    """The shortest example of each kind of disagreement, the commonest kind first."""
    classes: dict[tuple[Any, ...], list[Disagreement]] = {}
    for d in found:
        classes.setdefault(d.signature(), []).append(d)
    picked = []
    for members in classes.values():
        best = min(members, key=lambda d: len(d.script))
        best.similar = len(members)
        picked.append(best)
    picked.sort(key=lambda d: -d.similar)
    return picked


def minimise_all(checker: Checker, found: Sequence[Disagreement]) -> list[Disagreement]:
    """Minimise several disagreements together: one real-kernel batch per ddmin round."""
    gens = [ddmin(d.script) for d in found]
    wanted = [d.signature() for d in found]
    current: list[list[list[Op]] | None] = []
    final: list[list[Op] | None] = [None] * len(gens)
    for k, g in enumerate(gens):
        try:
            current.append(next(g))
        except StopIteration as stop:
            final[k] = stop.value
            current.append(None)
    while any(c is not None for c in current):
        flat: list[list[Op]] = []
        owners: list[int] = []
        for k, cands in enumerate(current):
            if cands is None:
                continue
            for c in cands:
                flat.append(renumber(c))
                owners.append(k)
        verdicts: dict[int, list[bool]] = {}
        for d, k in zip(checker.check(flat), owners):
            # Keep a candidate only if it still disagrees the same way, so that the
            # minimisation cannot drift to another, unrelated disagreement.
            verdicts.setdefault(k, []).append(d is not None and d.signature() == wanted[k])
        for k, cands in enumerate(current):
            if cands is None:
                continue
            try:
                current[k] = gens[k].send(verdicts[k])
            except StopIteration as stop:
                final[k] = stop.value
                current[k] = None
    out = []
    scripts = [renumber(f if f is not None else d.script) for f, d in zip(final, found)]
    checked = checker.check(scripts) if scripts else []
    for ops, again, d in zip(scripts, checked, found):
        if again is None:  # no longer disagrees when re-run
            out.append(Disagreement(ops, d.real, d.sim, [], d.original, d.similar))
        else:
            again.original, again.similar = d.original, d.similar
            out.append(again)
    return out


def script_lines(ops: Sequence[Op]) -> list[str]:
    return [format_op(op) for op in ops]
