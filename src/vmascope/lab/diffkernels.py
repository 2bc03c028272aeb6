"""``lab diff-kernels``: what changed between two real kernels, minimised and named.

The scenarios and a random sample run on both kernels; every script whose Outcomes
differ is a difference. One example of each kind is minimised by delta debugging (each
round runs both kernels on all candidates), and then named: the simulator tries the
older kernel's epoch with one behaviour switch at a time set to the newer kernel's
value, and the switch whose change alone turns the first kernel's outcome into the
second's is the kernel change that made the difference (with its commit, from
kernel/changes.py). When no single switch does it, the difference is reported as
needing several switches, or as one the model does not reproduce.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import host
from ..kernel import changes
from ..kernel.epochs import Epoch
from ..ops.language import Op
from ..outcome import Outcome
from . import compare, scenarios
from .backends import SimulatorBackend, epoch_of, real_backend, sim_release
from .kernels import Kernel
from .verify import Disagreement, minimise_all, one_of_each, random_scripts

# Epoch fields that are not behaviour switches.
_NOT_SWITCHES = {"release", "version", "hypotheses"}


@dataclasses.dataclass
class Explanation:
    switches: list[str]  # the switch(es) whose change alone reproduces the difference
    citations: list[str]  # "879bca0a2c4f (6.16) mm/vma: fix ..." per switch
    verdict: str  # "one switch", "several switches", "not reproduced by the model"


@dataclasses.dataclass
class KernelDiff:
    a: Kernel
    b: Kernel
    release_a: str
    release_b: str
    cases: int
    differing: int
    minimised: list[tuple[Disagreement, Explanation]]
    seconds: float


class PairChecker:
    """Runs scripts on two real kernels at once and compares their Outcomes."""

    def __init__(self, a: Kernel, b: Kernel) -> None:
        self.backends = (real_backend(a), real_backend(b))

    def check(self, scripts: Sequence[Sequence[Op]]) -> list[Disagreement | None]:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            ra, rb = pool.map(lambda be: be.run(scripts), self.backends)
        out: list[Disagreement | None] = []
        names = (self.backends[0].name, self.backends[1].name)
        for ops, x, y in zip(scripts, ra, rb):
            diffs = compare.differences(x, y, names=names)
            out.append(Disagreement(list(ops), x, y, diffs, list(ops)) if diffs else None)
        return out

    @property
    def releases(self) -> tuple[str, str]:
        return self.backends[0].release, self.backends[1].release


def _switches(ea: Epoch, eb: Epoch) -> list[str]:
    return [f.name for f in dataclasses.fields(Epoch)
            if f.name not in _NOT_SWITCHES and getattr(ea, f.name) != getattr(eb, f.name)]


def _citation(switch: str, value: Any) -> str:
    for c in changes.CHANGES:
        if c.switch == switch and c.value == value:
            return f"{c.citation} {c.title}"
    return f"{switch} = {value!r} (build option or base value)"


def explain(ops: Sequence[Op], a: Outcome, b: Outcome, release_a: str,
            release_b: str) -> Explanation:
    """Which behaviour switch turns kernel A's outcome of ``ops`` into kernel B's."""
    ea, eb = epoch_of(release_a), epoch_of(release_b)

    def predict(epoch: Epoch, like: Outcome) -> Outcome:
        (out,) = SimulatorBackend(epoch).run([ops], like=[like])
        return out

    if compare.differences(predict(ea, a), a) or compare.differences(predict(eb, b), b):
        return Explanation([], [], "not reproduced by the model")
    switches = _switches(ea, eb)
    alone = [s for s in switches
             if not compare.differences(
                 predict(dataclasses.replace(ea, **{s: getattr(eb, s)}), a), b)]
    if alone:
        return Explanation(alone, [_citation(s, getattr(eb, s)) for s in alone], "one switch")
    return Explanation(switches, [_citation(s, getattr(eb, s)) for s in switches],
                       "several switches")


def diff_kernels(a: Kernel, b: Kernel, *, cases: int, seed: int, minimise: int = 5,
                 batch: int = 500, scripts: Sequence[list[Op]] | None = None,
                 progress: Callable[[int], None] | None = None) -> KernelDiff:
    """``scripts``: what to compare besides ``cases`` random scripts (default: every
    scenario but exhaust)."""
    t0 = time.monotonic()
    checker = PairChecker(a, b)
    # PR_SET_MM (the heap op) needs CAP_SYS_RESOURCE on the host
    heap = not (a.is_host or b.is_host) or host.can_set_brk()
    if scripts is None:
        scripts = [scenarios.get(n) for n in scenarios.names() if n != "exhaust"]
    scripts = list(scripts) + random_scripts(cases, seed, heap=heap)
    found: list[Disagreement] = []
    for i in range(0, len(scripts), batch):
        chunk = scripts[i:i + batch]
        found += [d for d in checker.check(chunk) if d is not None]
        if progress:
            progress(len(chunk))
    small = minimise_all(checker, one_of_each(found)[:minimise])  # type: ignore[arg-type]
    ra, rb = checker.releases
    va, vb = sim_release(a), sim_release(b)
    named = [(d, explain(d.script, d.real, d.sim, va, vb) if d.differences and d.sim
              else Explanation([], [], "no longer differs when re-run")) for d in small]
    return KernelDiff(a, b, ra, rb, len(scripts), len(found), named,
                      time.monotonic() - t0)
