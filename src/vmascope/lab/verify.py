"""Differential verification: random op scripts on real kernels and in the simulator.

Scripts are biased to what allocators do (reserve PROT_NONE, commit read-write, touch,
decommit, madvise, fork, mremap, names, brk). Each kernel runs its scripts in batches
(one microVM boot per batch); every disagreement is minimised by delta debugging (ddmin
over the ops), re-running the real kernel and the simulator on all candidate scripts of
one round in a single batch.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable, Generator, Sequence
from typing import Any

from ..ops.language import Op, format_op, parse_line
from . import compare, runner
from .executor import RunResult
from .kernels import Kernel

DEFAULT_MAX_MAP_COUNT = 65530  # the kernel's DEFAULT_MAX_MAP_COUNT (include/linux/mm.h)


def host_can_set_brk() -> bool:
    """PR_SET_MM (the ``heap`` op) needs CAP_SYS_RESOURCE; containers often drop it."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> 24 & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def sim_kernel(kernel: Kernel) -> str:
    """What the simulator is asked for: the host's full release (its config is read), or
    the upstream version of a Debian kernel (its package version carries the point
    release that uname's 6.1.0-N does not)."""
    return kernel.release if kernel.is_host else kernel.version


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
        heap_at: int | None = None
        for _ in range(r.randint(2, 12)):
            kind = r.choices(
                ("commit", "touch", "decommit", "madvise", "mmap", "munmap", "mremap",
                 "fork", "name", "heap", "protect", "mbind"),
                weights=(24, 22, 8, 10, 8, 5, 7, 3, 4, 4, 5, 2))[0]
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
                                   "willneed", "populate_write"))
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
                    forks += 1
            elif kind == "mbind":
                # node 0 exists everywhere; a policy different from its neighbours' keeps
                # a range apart (vma_policy is compared when merging)
                lines.append(f"mbind {s}p {n}p {r.choice(('bind:0', 'preferred:0', 'default'))}")
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
    real: dict[str, Any]
    sim: dict[str, Any]
    differences: list[str]
    original: list[Op]
    similar: int = 1  # how many of the random scripts disagreed the same way

    def signature(self) -> tuple[Any, ...]:
        """A coarse class: which aspects differ and the kinds of op whose errors or
        faults differ (so that one example of each class gets minimised)."""
        aspects = tuple(sorted({d.split()[0].rstrip(":") for d in self.differences}))
        kinds: set[str] = set()
        for key in ("errors", "faults"):
            real = {(x["op"], str(x.get("errno") or x.get("signal"))) for x in self.real.get(key, [])}
            sim = {(x["op"], str(x.get("errno") or x.get("signal"))) for x in self.sim.get(key, [])}
            for i, _ in real ^ sim:
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

    @property
    def percent(self) -> float:
        return 100.0 * self.agreed / self.cases if self.cases else 100.0


class Checker:
    """Runs scripts on one kernel and in the simulator and compares the two."""

    def __init__(self, kernel: Kernel, *, max_map_count: int | None = None) -> None:
        self.kernel = kernel
        self.max_map_count = max_map_count
        self.release = kernel.release
        self.version = sim_kernel(kernel)

    def run_real(self, scripts: Sequence[Sequence[Op]]) -> list[RunResult]:
        run = runner.run_scripts(self.kernel, scripts, max_map_count=self.max_map_count)
        self.release = run.release
        return run.results

    def judge(self, ops: Sequence[Op], res: RunResult) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        real = res.to_json(ops, kernel=self.release)
        limit = self.max_map_count or DEFAULT_MAX_MAP_COUNT
        # The rest of the executor's address space (its binary, stack, the two fences)
        # counts against the same limit.
        others = max(res.process_map_count - len(res.vmas), 0)
        try:
            sim = compare.simulate(ops, self.version, max_map_count=limit - others)
        except Exception as exc:  # a simulator crash is a disagreement to report
            sim = {"vmas": [], "errors": [], "faults": [], "crash": f"{type(exc).__name__}: {exc}"}
            return real, sim, [f"simulator raised {type(exc).__name__}: {exc}"]
        if res.crash is not None:
            return real, sim, [f"the real script's process died (wait status {res.crash})"]
        return real, sim, compare.differences(real, sim)


def verify_kernel(kernel: Kernel, scripts: Sequence[list[Op]], *, batch: int = 500,
                  minimise: int = 5, max_map_count: int | None = None,
                  progress: Callable[[int], None] | None = None) -> KernelVerdict:
    import time

    t0 = time.monotonic()
    checker = Checker(kernel, max_map_count=max_map_count)
    agreed = 0
    bad: list[Disagreement] = []
    for i in range(0, len(scripts), batch):
        chunk = scripts[i:i + batch]
        for ops, res in zip(chunk, checker.run_real(chunk)):
            real, sim, diffs = checker.judge(ops, res)
            if diffs:
                bad.append(Disagreement(list(ops), real, sim, diffs, list(ops)))
            else:
                agreed += 1
        if progress:
            progress(len(chunk))
    seconds = time.monotonic() - t0
    # One example of each class of disagreement, the shortest first.
    classes: dict[tuple[Any, ...], list[Disagreement]] = {}
    for d in bad:
        classes.setdefault(d.signature(), []).append(d)
    picked = []
    for members in classes.values():
        best = min(members, key=lambda d: len(d.script))
        best.similar = len(members)
        picked.append(best)
    picked.sort(key=lambda d: -d.similar)
    t1 = time.monotonic()
    minimised = minimise_all(checker, picked[:minimise])
    return KernelVerdict(kernel, checker.release, len(scripts), agreed, bad, minimised,
                         seconds, time.monotonic() - t1)


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
        results = checker.run_real(flat)
        verdicts: dict[int, list[bool]] = {}
        for ops, res, k in zip(flat, results, owners):
            real, sim, diffs = checker.judge(ops, res)
            # Keep a candidate only if it still disagrees the same way, so that the
            # minimisation cannot drift to another, unrelated disagreement.
            same = bool(diffs) and Disagreement(ops, real, sim, diffs, ops).signature() == wanted[k]
            verdicts.setdefault(k, []).append(same)
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
    results = checker.run_real(scripts) if scripts else []
    for ops, res, d in zip(scripts, results, found):
        real, sim, diffs = checker.judge(ops, res)
        out.append(Disagreement(ops, real, sim, diffs, d.original, d.similar))
    return out


def script_lines(ops: Sequence[Op]) -> list[str]:
    return [format_op(op) for op in ops]
