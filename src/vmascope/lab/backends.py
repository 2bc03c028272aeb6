"""Backends: whatever runs op scripts, behind one protocol, returning Outcomes.

* :class:`SimulatorBackend`: the kernel model (``vmascope.kernel.sim``) for a release;
* :class:`HostBackend`: the lab executor on the running kernel;
* :class:`MicroVMBackend`: the lab executor as /init of a Debian kernel booted in qemu.

Lab scripts use arena-relative addresses; every backend reports the arena only, with
addresses relative to it, so their Outcomes compare directly (:mod:`.compare`).

The executor's own mappings (its binary, stack, vdso, the arena's fences) count against
vm.max_map_count as well. A real Outcome says how many there were (``outside``), and
:meth:`SimulatorBackend.run` given the real Outcomes (``like=``) runs each prediction
under the same limit less those: the one place that correction is made.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from .. import host
from ..errors import LabError, UsageError
from ..kconst import DEFAULT_MAX_MAP_COUNT
from ..kernel.epochs import Epoch
from ..ops.language import Op
from ..outcome import Outcome
from . import executor, microvm
from .kernels import Kernel


class Backend(Protocol):
    """Runs op scripts (arena-relative) and returns one Outcome per script."""

    name: str

    def run(self, scripts: Sequence[Sequence[Op]]) -> list[Outcome]: ...


@functools.lru_cache(maxsize=16)
def epoch_of(release: str) -> Epoch:
    """The epoch of a release, worked out once (for the running kernel this reads
    /proc/config.gz, which would otherwise cost more than the simulation)."""
    return host.epoch_for(release)


def sim_release(kernel: Kernel) -> str:
    """What the simulator is asked for: the host's full release (its facts are read), or
    the upstream version of a Debian kernel (its package version carries the point
    release that uname's 6.1.0-N does not)."""
    return kernel.release if kernel.is_host else kernel.version


class SimulatorBackend:
    """The kernel model of one release, run on the arena the executor uses."""

    def __init__(self, release: str | Epoch, *, max_map_count: int | None = None,
                 thp: str | None = None, name: str = "simulator") -> None:
        self.epoch = release if isinstance(release, Epoch) else epoch_of(release)
        self.release = self.epoch.release
        self.max_map_count = max_map_count or DEFAULT_MAX_MAP_COUNT
        self.thp = thp if thp is not None else host.machine_thp(self.release)
        self.pku = host.machine_pku(self.release)
        self.name = name

    def run(self, scripts: Sequence[Sequence[Op]], *, like: Sequence[Outcome] | None = None,
            names: Sequence[str | None] | None = None,
            sample_every: int | Sequence[int] = 0, resident: bool = False) -> list[Outcome]:
        """Predict each script. ``like``: the real Outcomes of the same scripts, whose
        limit, executor overhead and machine memory (for the overcommit policy) the
        prediction takes over; when one has the kernel view, its prediction has the
        model's (chain lengths, offsets, anon_vma counters: ``sim.result.model_view``).
        ``sample_every``: record the map count every N ops (one N for all, or one per
        script);
        ``resident``: keep the resident pages (smaps Anonymous in the Outcome)."""
        from ..kernel.sim import MM, outcome_of, run_ops
        from ..kernel.sim.util import Overcommit
        from .executor import ARENA_BASE, ARENA_SIZE

        out = []
        for k, ops in enumerate(scripts):
            limit, outside = self.max_map_count, 0
            overcommit = None
            if like is not None:
                limit = like[k].max_map_count or limit
                outside = like[k].outside
                overcommit = Overcommit.from_memory(like[k].memory)
            mm = MM(self.epoch, max_map_count=limit - outside, thp=self.thp, pku=self.pku)
            mm.overcommit = overcommit
            mm.fence_above = ARENA_BASE + ARENA_SIZE
            mm.sample_every = executor.per_script(sample_every, k)
            if resident:
                mm.resident = set()
            errors, faults = run_ops(mm, [op.shifted(ARENA_BASE) for op in ops])
            out.append(outcome_of(mm, errors, faults,
                                  script=names[k] if names is not None else None,
                                  lo=ARENA_BASE, hi=ARENA_BASE + ARENA_SIZE, shift=ARENA_BASE,
                                  outside=outside,
                                  kernel_view=like is not None
                                  and like[k].snapshot.kview is not None))
        return out


@contextlib.contextmanager
def host_max_map_count(value: int | None, *, allow_lower: bool) -> Iterator[None]:
    """Set vm.max_map_count on the host for the block and restore it afterwards.

    Raising is harmless to other processes; lowering can make them fail, so it needs
    ``allow_lower`` (the CLI's --host-sysctl)."""
    if value is None:
        yield
        return
    old = host.max_map_count()
    if old is None:
        raise LabError("vm.max_map_count: cannot read it")
    if value == old:
        yield
        return
    if value < old and not allow_lower:
        raise UsageError(f"--max-map-count {value} would lower vm.max_map_count on this host "
                         f"(now {old}) for every process: add --host-sysctl to allow it "
                         "(it is restored afterwards), or run the script in a microVM")
    try:
        host.set_max_map_count(value)
    except OSError as exc:
        raise LabError(f"cannot set vm.max_map_count: {exc.strerror} (needs root)") from None
    try:
        yield
    finally:
        host.set_max_map_count(old)


class _RealBackend:
    """The executor on a real kernel; ``release`` is what the kernel reported."""

    def __init__(self, kernel: Kernel, max_map_count: int | None) -> None:
        self.kernel = kernel
        self.name = kernel.name
        self.release = kernel.release
        self.max_map_count = max_map_count


class HostBackend(_RealBackend):
    """The lab executor on the running kernel."""

    def __init__(self, kernel: Kernel, *, max_map_count: int | None = None,
                 host_sysctl: bool = False, fill: bool = False) -> None:
        super().__init__(kernel, max_map_count)
        self.host_sysctl = host_sysctl
        self.fill = fill

    def run(self, scripts: Sequence[Sequence[Op]], *,
            names: Sequence[str | None] | None = None,
            sample_every: int | Sequence[int] = 0,
            limits: Sequence[int | None] | None = None) -> list[Outcome]:
        """``fill`` (set at construction): reach a --max-map-count below the host's
        inside the script's process, by mapping the difference as VMAs first, instead of
        touching the sysctl (the executor reports them as VMAs outside the arena).
        ``limits``: such a limit per script (fill only)."""
        wanted = self.max_map_count
        now = host.max_map_count() or DEFAULT_MAX_MAP_COUNT
        if self.fill and wanted is not None and wanted < now:
            limits, wanted = [wanted] * len(scripts), None
        fillers = None
        if limits is not None:
            if not self.fill:
                raise UsageError("a limit per script needs fill=True on the host")
            fillers = [max(now - n, 0) if n else 0 for n in limits]
        with host_max_map_count(wanted, allow_lower=self.host_sysctl):
            limit = host.max_map_count() or DEFAULT_MAX_MAP_COUNT
            return executor.run_on_host(scripts, release=self.release, max_map_count=limit,
                                        names=names, sample_every=sample_every,
                                        fillers=fillers)


def _vm_timeout(scripts: Sequence[Sequence[Op]], kview: bool = False) -> float:
    """Seconds for a microVM run; the kernel-view reader loads its BPF program once per
    script (about a second each without KVM)."""
    ops = sum(len(s) for s in scripts)
    return 60.0 + (3.0 if kview else 0.03) * len(scripts) + 0.002 * ops


class MicroVMBackend(_RealBackend):
    """The lab executor as /init of a kernel booted in a qemu microVM."""

    def __init__(self, kernel: Kernel, *, max_map_count: int | None = None,
                 smp: int = 1, overcommit: int | None = None) -> None:
        if kernel.vmlinuz is None:
            raise LabError(f"{kernel.name}: no kernel image to boot")
        super().__init__(kernel, max_map_count)
        self.smp = smp
        self.overcommit = overcommit

    def run(self, scripts: Sequence[Sequence[Op]], *,
            names: Sequence[str | None] | None = None,
            sample_every: int | Sequence[int] = 0,
            limits: Sequence[int | None] | None = None,
            overcommits: Sequence[int | None] | None = None) -> list[Outcome]:
        """``limits`` / ``overcommits``: vm.max_map_count / vm.overcommit_memory per
        script (None: the backend's own); ``sample_every``: one period, or one per
        script."""
        assert self.kernel.vmlinuz is not None
        settings = None
        if limits is not None or overcommits is not None or not isinstance(sample_every, int):
            base = self.max_map_count or DEFAULT_MAX_MAP_COUNT
            settings = []
            for i in range(len(scripts)):
                limit = limits[i] if limits is not None else None
                mode = overcommits[i] if overcommits is not None else None
                settings.append({"max_map_count": limit or base,
                                 "overcommit": self.overcommit or 0 if mode is None else mode,
                                 "sample_every": executor.per_script(sample_every, i)})
            limits = [int(st["max_map_count"]) for st in settings]
        reader = executor.kview_reader()  # with the setting VMASCOPE_KERNEL_VIEW=1
        data = executor.encode_input(scripts, max_map_count=self.max_map_count,
                                     sample_every=executor.per_script(sample_every, 0)
                                     if settings is None else 0, overcommit=self.overcommit,
                                     settings=settings,
                                     kview=None if reader is None else "/kview")
        out = microvm.boot(self.kernel.vmlinuz, data,
                           timeout=_vm_timeout(scripts, reader is not None),
                           smp=self.smp, kview=None if reader is None else Path(reader))
        self.release = out.release or self.kernel.release
        return executor.parse_output(out.body, scripts, self.kernel.name, release=self.release,
                                     max_map_count=self.max_map_count or DEFAULT_MAX_MAP_COUNT,
                                     names=names, limits=limits)


def real_backend(kernel: Kernel, *, max_map_count: int | None = None,
                 host_sysctl: bool = False, smp: int = 1, fill: bool = False,
                 overcommit: int | None = None) -> HostBackend | MicroVMBackend:
    """The backend that runs scripts on a real kernel: the host's, or a microVM."""
    if kernel.is_host:
        if overcommit is not None:
            raise UsageError("vm.overcommit_memory is set inside microVMs only, never on "
                             "this host: choose Debian kernels")
        return HostBackend(kernel, max_map_count=max_map_count, host_sysctl=host_sysctl,
                           fill=fill)
    return MicroVMBackend(kernel, max_map_count=max_map_count, smp=smp,
                          overcommit=overcommit)


def timed_run(backend: Backend, scripts: Sequence[Sequence[Op]],
              **kwargs: object) -> tuple[list[Outcome], float]:
    t0 = time.monotonic()
    out = backend.run(scripts, **kwargs)  # type: ignore[call-arg]
    return out, time.monotonic() - t0


__all__ = ["Backend", "HostBackend", "MicroVMBackend", "SimulatorBackend", "host_max_map_count",
           "real_backend", "sim_release", "timed_run"]
