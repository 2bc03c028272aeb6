"""``lab run`` and ``lab verify`` as library calls: scripts or random cases on real
kernels, each with the simulator's prediction beside it. The CLI (cli/lab.py) parses the
options and the report package (report/lab.py) renders what these return."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Callable, Sequence

from ..errors import UsageError
from ..ops.language import Op, format_op
from ..outcome import Outcome
from . import compare, procs, runner, scenarios, verify
from .backends import SimulatorBackend, sim_release
from .kernels import Kernel


def load_spec(spec: str, max_map_count: int | None) -> tuple[str, list[Op]]:
    """A script file, ``-`` (stdin) or a scenario name -> (name, ops); a script without
    ops is refused (a run on a real kernel would show nothing)."""
    ops = scenarios.load(spec, max_map_count=max_map_count)
    if not ops:
        raise UsageError(f"{spec}: the script has no ops")
    return ("<stdin>" if spec == "-" else os.path.basename(spec)), ops


@dataclasses.dataclass
class KernelEntry:
    """One script on one kernel: the real Outcome and the prediction."""

    kernel: Kernel
    release: str
    seconds: float
    real: Outcome
    sim: Outcome
    differences: list[str]

    @property
    def agree(self) -> bool:
        return not self.differences

    def first_error(self, ops: Sequence[Op]) -> dict[str, object] | None:
        if not self.real.errors:
            return None
        e = self.real.errors[0]
        op = ops[e.op]
        return {"op": e.op, "line": e.line, "kind": op.kind, "text": format_op(op),
                "errno": e.errno}


@dataclasses.dataclass
class ScriptRun:
    name: str
    ops: list[Op]
    kernels: list[KernelEntry]


def run(loaded: Sequence[tuple[str, list[Op]]], kernels: Sequence[Kernel], *,
        max_map_count: int | None = None, host_sysctl: bool = False,
        progress: Callable[[Kernel, str], None] | None = None) -> list[ScriptRun]:
    """Every script on every kernel (in parallel), each with the simulator beside it;
    ``progress(kernel, state)`` follows each kernel."""
    names = [name for name, _ in loaded]
    scripts = [ops for _, ops in loaded]
    with procs.signal_guard():
        runs = runner.run_many(kernels, scripts, max_map_count=max_map_count,
                               host_sysctl=host_sysctl, names=names, progress=progress)
    out = [ScriptRun(name, ops, []) for name, ops in loaded]
    for kr in runs:
        if progress:
            progress(kr.kernel, "simulating")
        sims = SimulatorBackend(sim_release(kr.kernel)).run(scripts, like=kr.results,
                                                            names=names)
        for k, (real, sim) in enumerate(zip(kr.results, sims)):
            real.epoch = sim.epoch  # the behaviour epoch of this release
            out[k].kernels.append(KernelEntry(kr.kernel, kr.release, kr.seconds, real, sim,
                                              compare.differences(real, sim)))
        if progress:
            progress(kr.kernel, "done")
    return out


def verify_all(kernels: Sequence[Kernel], *, cases: int, seed: int, batch: int = 500,
               minimise: int = 5, families: Sequence[str] = ("random",),
               progress: Callable[[Kernel, int], None] | None = None) -> list[verify.KernelVerdict]:
    """Scripts of each family on every kernel (in parallel) against the simulator; one
    verdict per kernel and family, kernel by kernel."""
    from .. import host

    def one(k: Kernel) -> list[verify.KernelVerdict]:
        heap = not k.is_host or host.can_set_brk()
        out = []
        for fam in families:
            scripts = verify.family_scripts(fam, cases, seed, heap=heap)
            out.append(verify.verify_kernel(
                k, scripts, batch=batch, minimise=minimise, family=fam,
                progress=(lambda n: progress(k, n)) if progress else None))
        return out

    for fam in families:  # a bad name fails before any kernel boots
        verify.family_scripts(fam, 1, seed)
    with procs.signal_guard(), concurrent.futures.ThreadPoolExecutor(
            max_workers=len(kernels)) as pool:
        futures = [pool.submit(one, k) for k in kernels]
        try:
            return [v for f in futures for v in f.result()]
        except BaseException:
            procs.stop()
            raise
