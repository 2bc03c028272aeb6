"""Run the same op scripts on several real kernels in parallel (threads that wait on the
executor and qemu; the work is in the child processes)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable, Sequence

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
             smp: int = 1, names: Sequence[str | None] | None = None,
             progress: Callable[[Kernel, str], None] | None = None) -> list[KernelRun]:
    """The same scripts on every kernel, in parallel; results in the order of ``kernels``.
    ``progress(kernel, state)`` is told when each kernel starts and ends."""
    kw = dict(max_map_count=max_map_count, host_sysctl=host_sysctl, smp=smp, names=names)

    def one(k: Kernel) -> KernelRun:
        if progress:
            progress(k, "running" if k.is_host else "booting in qemu, running")
        out = run_scripts(k, scripts, **kw)  # type: ignore[arg-type]
        if progress:
            progress(k, f"ran in {out.seconds:.1f} s")
        return out

    if len(kernels) == 1:
        return [one(kernels[0])]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(kernels)) as pool:
        futures = [pool.submit(one, k) for k in kernels]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            from . import procs
            procs.kill_all()
            raise
