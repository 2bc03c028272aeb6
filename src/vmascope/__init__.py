"""vmascope: find, explain, predict and prevent Linux VMA exhaustion.

Notebook API::

    import vmascope
    snap = vmascope.snapshot(1234)        # a live process
    snap = vmascope.load("app.vmasnap")   # a pid, snapshot file, maps/smaps dump, or "-"
"""

from __future__ import annotations

from .errors import (
    AccessDenied,
    ParseError,
    ProcessNotFound,
    VmascopeError,
)

__version__ = "0.1.0"
TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at start-up

if TYPE_CHECKING:
    from os import PathLike
    from typing import Any

    from .model import Snapshot, SnapshotMeta, Vma


def __getattr__(name: str) -> "Any":
    # The model (and numpy) load on first use, so that `import vmascope` and the CLI's
    # start-up stay fast (and Ctrl-C then is handled, not a traceback from an import).
    if name in ("Snapshot", "SnapshotMeta", "Vma"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def snapshot(pid: int, *, smaps: bool = True, numa: bool = True) -> "Snapshot":
    """Read a live process into a Snapshot."""
    from .procfs.live import read_process

    return read_process(pid, smaps=smaps, numa=numa)


def load(target: "str | int | PathLike[str]") -> "Snapshot":
    """A pid, a snapshot file, a raw maps or smaps text file, or '-' for stdin."""
    from .procfs.load import load_target

    return load_target(target)


def simulate(text: str, kernel: "Any" = None, **kwargs: "Any") -> "Any":
    """Run an op script in the kernel simulator; returns an :class:`Outcome`.

    ``kernel``: a release string or an Epoch (default: the running kernel, with this
    machine's patch level, build options and THP setting)."""
    from . import host
    from .kernel.epochs import Epoch
    from .ops.language import load_script

    source = kwargs.pop("source", "<script>")
    ops = load_script(text, source)  # a bad script is a ParseError before anything else
    epoch = kernel if isinstance(kernel, Epoch) else host.epoch_for(kernel)
    kwargs.setdefault("thp", host.machine_thp(epoch.release))
    kwargs.setdefault("script", source)
    from .kernel.sim import simulate_ops

    return simulate_ops(ops, epoch, **kwargs)


__all__ = [
    "AccessDenied", "ParseError", "ProcessNotFound", "Snapshot", "SnapshotMeta", "Vma",
    "VmascopeError", "load", "simulate", "snapshot",
]
