"""``lab compare``: allocator workloads x mitigation strategies x kernels, measured on real
kernels beside the model's prediction.

Every (workload, strategy) becomes an op script (``vmascope.workloads``). Each kernel runs
all of them in one go (one microVM boot, or one executor on the host), under:

* the default limit (vm.max_map_count 65530);
* ``--max-map-count N`` if asked: set inside microVMs, and on the host reached inside the
  script's process by mapping 65530 - N filler VMAs first (the sysctl is not touched);
* vm.overcommit_memory 1 and 2 (microVMs only; 0 is the default run): which strategies
  are possible at all.

The simulator predicts every run with the same limit, the executor's own VMAs and the
machine's memory (the ``like=`` of :class:`~.backends.SimulatorBackend`). Each cell holds
both, as :class:`Metrics`, and whether they agree (layout, errors, faults, the sampled
map counts and the memory figures).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import UsageError
from ..kconst import DEFAULT_MAX_MAP_COUNT
from ..kernel.epochs import Epoch
from ..ops.language import Op, format_op
from ..outcome import Outcome
from ..workloads import build, get_strategy, get_workload
from . import compare, procs
from .backends import SimulatorBackend, real_backend, sim_release
from .kernels import Kernel

DEFAULT_KERNELS = "host,6.1,6.12,newest"
SAMPLES = 100  # map-count samples per run (every len(ops) // SAMPLES ops)
OVERCOMMIT_MODES = (1, 2)  # besides the default run's 0


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a run was made under: the limit (None: default) and the overcommit mode
    (None: the machine's own)."""

    limit: int | None = None
    overcommit: int | None = None

    @property
    def label(self) -> str:
        if self.limit is not None:
            return f"max_map_count {self.limit}"
        if self.overcommit is not None:
            return f"overcommit {self.overcommit}"
        return "default"


@dataclasses.dataclass
class Metrics:
    """What one run left and cost."""

    vmas: int  # the workload's VMAs at the end
    map_count: int | None  # the whole process at the end
    peak: int | None  # the highest sampled map count of the process
    enomem: int | None  # the index of the first op that failed with ENOMEM
    failure: str | None  # the first failed op or refused touch, as text
    resident_kb: int
    committed_kb: int
    syscalls: int  # ops other than touches
    samples: list[tuple[int, int]]

    @classmethod
    def of(cls, o: Outcome, ops: Sequence[Op]) -> Metrics:
        snap = o.snapshot
        anon = snap.smaps.get("Anonymous")
        resident = int(anon[anon > 0].sum()) // 1024 if anon is not None else 0
        committed = 0
        if "ac" in snap.flag_names and len(snap):
            bit = 1 << snap.flag_names.index("ac")
            sizes = (snap.end - snap.start).astype("int64")
            committed = int(sizes[(snap.vmflags & bit) != 0].sum()) // 1024
        peak = max([n for _, n in o.samples] + ([o.process_map_count]
                                                if o.process_map_count is not None else []),
                   default=None)
        enomem = next((e.op for e in o.errors if e.errno == "ENOMEM"), None)
        failure = None
        first = min([(e.op, f"{e.errno}") for e in o.errors]
                    + [(f.op, f.signal) for f in o.faults], default=None)
        if first is not None:
            i, what = first
            failure = f"op {i} ({format_op(ops[i]).split()[0]}): {what}"
        if o.crash is not None:
            failure = f"the process died (wait status {o.crash})"
        return cls(len(snap), o.process_map_count, peak, enomem, failure, resident,
                   committed, sum(1 for op in ops if op.kind != "touch"), list(o.samples))

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["samples"] = [list(s) for s in self.samples]
        return out


# What must be equal for a prediction to count as right, beside compare.differences.
_FIGURES = ("vmas", "map_count", "peak", "enomem", "resident_kb", "committed_kb")


@dataclasses.dataclass
class Cell:
    workload: str
    strategy: str
    kernel: str
    release: str
    setting: Setting
    measured: Metrics
    predicted: Metrics
    differences: list[str]

    @property
    def agree(self) -> bool:
        return not self.differences

    @property
    def possible(self) -> bool:
        return self.measured.failure is None

    def to_json(self) -> dict[str, Any]:
        return {"workload": self.workload, "strategy": self.strategy,
                "kernel": self.kernel, "release": self.release,
                "setting": self.setting.label, "limit": self.setting.limit,
                "overcommit": self.setting.overcommit, "agree": self.agree,
                "differences": self.differences, "measured": self.measured.to_json(),
                "predicted": self.predicted.to_json()}


def judge(real: Outcome, sim: Outcome, m: Metrics, p: Metrics) -> list[str]:
    out = compare.differences(real, sim)
    for f in _FIGURES:
        a, b = getattr(m, f), getattr(p, f)
        if a != b:
            out.append(f"{f}: real {a}, simulator {b}")
    if m.samples != p.samples:
        i = next((k for k, (a, b) in enumerate(zip(m.samples, p.samples)) if a != b),
                 min(len(m.samples), len(p.samples)))
        out.append(f"map count after op {(m.samples + p.samples)[i][0]}: real "
                   f"{m.samples[i][1] if i < len(m.samples) else '-'}, simulator "
                   f"{p.samples[i][1] if i < len(p.samples) else '-'}")
    return out


@dataclasses.dataclass
class Matrix:
    workloads: list[str]
    strategies: list[str]
    kernels: list[str]
    settings: list[Setting]
    cells: list[Cell]
    scripts: dict[tuple[str, str], list[Op]]
    hypothetical: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def cell(self, workload: str, strategy: str, kernel: str,
             setting: Setting = Setting()) -> Cell | None:
        for c in self.cells:
            if (c.workload, c.strategy, c.kernel, c.setting) == (workload, strategy, kernel,
                                                                  setting):
                return c
        return None

    @property
    def agreement(self) -> tuple[int, int]:
        return sum(c.agree for c in self.cells), len(self.cells)

    def to_json(self) -> dict[str, Any]:
        ok, total = self.agreement
        return {"workloads": self.workloads, "strategies": self.strategies,
                "kernels": self.kernels, "settings": [s.label for s in self.settings],
                "agreement": {"agree": ok, "cells": total},
                "cells": [c.to_json() for c in self.cells],
                "hypothetical": self.hypothetical}


def parse_list(text: str, known: Sequence[str], what: str) -> list[str]:
    if text == "all":
        return list(known)
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UsageError(f"--{what}: expected a comma list (or all)")
    return items


def scripts_for(workloads: Sequence[str], strategies: Sequence[str], *, seed: int = 1,
                size: str | None = None, params: dict[str, Any] | None = None
                ) -> dict[tuple[str, str], list[Op]]:
    """The op script of every (workload, strategy)."""
    out = {}
    for w in workloads:
        get_workload(w)
        for s in strategies:
            get_strategy(s)
            out[(w, s)] = build(w, s, seed=seed, size=size, **(params or {}))
    return out


def run_kernel(kernel: Kernel, scripts: dict[tuple[str, str], list[Op]],
               settings: Sequence[Setting],
               progress: Callable[[Kernel, str], None] | None = None) -> list[Cell]:
    """Every script under every setting on one kernel, and the prediction of each."""
    keys = list(scripts)
    runs = [(key, st) for st in settings for key in keys
            if st.overcommit is None or not kernel.is_host]
    ops_list = [scripts[key] for key, _ in runs]
    # About SAMPLES map counts a script. None at a lower limit: on the host the filler
    # VMAs would make every count read tens of thousands of maps lines.
    every = [0 if st.limit else max(1, len(ops) // SAMPLES)
             for ops, (_, st) in zip(ops_list, runs)]
    backend = real_backend(kernel, fill=True)
    if progress:
        progress(kernel, f"running {len(runs)} scripts")
    limits = [st.limit for _, st in runs]
    if kernel.is_host:
        real = backend.run(ops_list, sample_every=every, limits=limits)  # type: ignore[call-arg]
    else:
        real = backend.run(ops_list, sample_every=every, limits=limits,  # type: ignore[call-arg]
                           overcommits=[st.overcommit for _, st in runs])
    if progress:
        progress(kernel, "predicting")
    sim = SimulatorBackend(sim_release(kernel)).run(ops_list, like=real, sample_every=every,
                                                    resident=True)
    cells = []
    for ((w, s), st), r, p, ops in zip(runs, real, sim, ops_list):
        m, pr = Metrics.of(r, ops), Metrics.of(p, ops)
        cells.append(Cell(w, s, kernel.name, backend.release or kernel.release, st, m, pr,
                          judge(r, p, m, pr)))
    if progress:
        progress(kernel, "done")
    return cells


def check_limit(max_map_count: int | None) -> None:
    if max_map_count is not None and not 100 <= max_map_count <= DEFAULT_MAX_MAP_COUNT:
        raise UsageError(f"--max-map-count {max_map_count}: expected 100 to "
                         f"{DEFAULT_MAX_MAP_COUNT} (the workbench lowers the limit)")


def compare_matrix(scripts: dict[tuple[str, str], list[Op]], kernels: Sequence[Kernel], *,
                   max_map_count: int | None = None, overcommit: bool = True,
                   progress: Callable[[Kernel, str], None] | None = None) -> Matrix:
    """The whole matrix of ``scripts`` (from :func:`scripts_for`); kernels run side by
    side (microVMs in parallel)."""
    check_limit(max_map_count)
    workloads = list(dict.fromkeys(w for w, _ in scripts))
    strategies = list(dict.fromkeys(s for _, s in scripts))
    settings = [Setting()]
    if max_map_count is not None:
        settings.append(Setting(limit=max_map_count))
    if overcommit:
        settings += [Setting(overcommit=m) for m in OVERCOMMIT_MODES]
    with procs.signal_guard(), concurrent.futures.ThreadPoolExecutor(
            max_workers=min(len(kernels), 2)) as pool:
        futures = [pool.submit(run_kernel, k, scripts, settings, progress) for k in kernels]
        try:
            parts = [f.result() for f in futures]
        except BaseException:
            procs.stop()
            raise
    cells = [c for part in parts for c in part]
    return Matrix(workloads, strategies, [k.name for k in kernels], settings, cells, scripts)


def what_if(matrix: Matrix, kernel: Kernel, hypotheses: Sequence[str]) -> None:
    """Add to ``matrix.hypothetical`` what each hypothetical rule would leave on top of
    ``kernel`` for every script (simulated only: no released kernel has these rules)."""
    from ..kernel.whatif import apply

    base = SimulatorBackend(sim_release(kernel))
    keys = list(matrix.scripts)
    scripts = [matrix.scripts[k] for k in keys]
    now = base.run(scripts)
    for name in hypotheses:
        epoch: Epoch = apply(base.epoch, name)
        alt = SimulatorBackend(epoch, thp=base.thp).run(scripts)
        for (w, s), a, b in zip(keys, now, alt):
            matrix.hypothetical.append({
                "hypothetical": True, "hypothesis": name, "kernel": kernel.name, "release": base.release,
                "workload": w, "strategy": s, "vmas": len(a.snapshot),
                "vmas_hypothetical": len(b.snapshot), "saved": len(a.snapshot) - len(b.snapshot)})
