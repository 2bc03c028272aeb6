"""Run op scripts on real kernels: the host directly, other kernels in microVMs, several
kernels in parallel (threads that wait on qemu; the work is in the child processes)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import LabError, UsageError
from ..ops.language import Op
from . import executor, microvm
from .kernels import Kernel

MAX_MAP_COUNT = Path("/proc/sys/vm/max_map_count")


@dataclasses.dataclass
class KernelRun:
    kernel: Kernel
    release: str  # uname -r as the kernel reported it
    results: list[executor.RunResult]
    seconds: float


@contextlib.contextmanager
def host_max_map_count(value: int | None, *, allow_lower: bool) -> Iterator[None]:
    """Set vm.max_map_count on the host for the block and restore it afterwards.

    Raising is harmless to other processes; lowering can make them fail, so it needs
    ``allow_lower`` (the CLI's --host-sysctl)."""
    if value is None:
        yield
        return
    try:
        old = int(MAX_MAP_COUNT.read_text())
    except OSError as exc:
        raise LabError(f"{MAX_MAP_COUNT}: cannot read ({exc.strerror})") from None
    if value == old:
        yield
        return
    if value < old and not allow_lower:
        raise UsageError(f"--max-map-count {value} would lower vm.max_map_count on this host "
                         f"(now {old}) for every process: add --host-sysctl to allow it "
                         "(it is restored afterwards), or run the script in a microVM")
    try:
        MAX_MAP_COUNT.write_text(f"{value}\n")
    except OSError as exc:
        raise LabError(f"cannot set vm.max_map_count: {exc.strerror} (needs root)") from None
    try:
        yield
    finally:
        MAX_MAP_COUNT.write_text(f"{old}\n")


def _vm_timeout(scripts: Sequence[Sequence[Op]]) -> float:
    ops = sum(len(s) for s in scripts)
    return 60.0 + 0.03 * len(scripts) + 0.002 * ops


def run_scripts(kernel: Kernel, scripts: Sequence[Sequence[Op]], *,
                max_map_count: int | None = None, host_sysctl: bool = False,
                smp: int = 1) -> KernelRun:
    t0 = time.monotonic()
    if kernel.is_host:
        with host_max_map_count(max_map_count, allow_lower=host_sysctl):
            results = executor.run_on_host(scripts)
        return KernelRun(kernel, kernel.release, results, time.monotonic() - t0)
    assert kernel.vmlinuz is not None
    data = executor.encode_input(scripts, max_map_count=max_map_count)
    out = microvm.boot(kernel.vmlinuz, data, timeout=_vm_timeout(scripts), smp=smp)
    results = executor.parse_output(out.body, len(scripts), kernel.name)
    return KernelRun(kernel, out.release or kernel.release, results, time.monotonic() - t0)


def run_many(kernels: Sequence[Kernel], scripts: Sequence[Sequence[Op]], *,
             max_map_count: int | None = None, host_sysctl: bool = False,
             smp: int = 1) -> list[KernelRun]:
    """The same scripts on every kernel, in parallel; results in the order of ``kernels``."""
    if len(kernels) == 1:
        return [run_scripts(kernels[0], scripts, max_map_count=max_map_count,
                            host_sysctl=host_sysctl, smp=smp)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(kernels)) as pool:
        futures = [pool.submit(run_scripts, k, scripts, max_map_count=max_map_count,
                               host_sysctl=host_sysctl, smp=smp) for k in kernels]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            from . import procs
            procs.kill_all()
            raise
