"""Run the same op scripts on several real kernels in parallel (threads that wait on the
executor and qemu; the work is in the child processes)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Sequence

from ..ops.language import Op
from ..outcome import Outcome
from .backends import real_backend, timed_run
from .kernels import Kernel


@dataclasses.dataclass
class KernelRun:
    kernel: Kernel
    release: str  # uname -r as the kernel reported it
    results: list[Outcome]
    seconds: float


def run_scripts(kernel: Kernel, scripts: Sequence[Sequence[Op]], *,
                max_map_count: int | None = None, host_sysctl: bool = False,
                smp: int = 1, names: Sequence[str | None] | None = None) -> KernelRun:
    backend = real_backend(kernel, max_map_count=max_map_count, host_sysctl=host_sysctl,
                           smp=smp)
    results, seconds = timed_run(backend, scripts, names=names)
    return KernelRun(kernel, backend.release, results, seconds)


def run_many(kernels: Sequence[Kernel], scripts: Sequence[Sequence[Op]], *,
             max_map_count: int | None = None, host_sysctl: bool = False,
             smp: int = 1, names: Sequence[str | None] | None = None) -> list[KernelRun]:
    """The same scripts on every kernel, in parallel; results in the order of ``kernels``."""
    kw = dict(max_map_count=max_map_count, host_sysctl=host_sysctl, smp=smp, names=names)
    if len(kernels) == 1:
        return [run_scripts(kernels[0], scripts, **kw)]  # type: ignore[arg-type]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(kernels)) as pool:
        futures = [pool.submit(run_scripts, k, scripts, **kw) for k in kernels]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            from . import procs
            procs.kill_all()
            raise
