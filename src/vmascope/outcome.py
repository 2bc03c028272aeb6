"""What running an op script leaves behind, whoever ran it: the one result type.

An :class:`Outcome` is a :class:`~vmascope.model.Snapshot` of the address space the script
worked on (the lab's arena, or a whole simulated process), the ops that failed with their
errno, the touches that faulted with their signal, and a Snapshot per fork child. The
simulator, the host executor and the microVMs all return Outcomes (see
:mod:`vmascope.lab.backends`), and ``lab run``, ``lab verify`` and ``compare`` compare
Outcomes, never one backend's private shapes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .kconst import PAGE_SHIFT
from .model import FLAG_ORDER, Snapshot

# VmFlags that never take part in a comparison: soft-dirty is set on every VMA when the
# kernel has CONFIG_MEM_SOFT_DIRTY=y, and merging ignores it.
IGNORED_FLAGS = frozenset({"sd"})


def _print_rank(mnemonic: str) -> tuple[int, str]:
    """Sort key: the order in which smaps prints VmFlags (unknown mnemonics last)."""
    try:
        return FLAG_ORDER.index(mnemonic), ""
    except ValueError:
        return len(FLAG_ORDER), mnemonic


@dataclasses.dataclass(frozen=True, slots=True)
class OpError:
    """An op that failed: its index in the script, its line, and the errno name."""

    op: int
    line: int
    errno: str

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "line": self.line, "errno": self.errno}


@dataclasses.dataclass(frozen=True, slots=True)
class Fault:
    """A touch that was refused: its index, its line, the address and the signal name."""

    op: int
    line: int
    addr: int
    signal: str

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "line": self.line, "addr": hex(self.addr),
                "signal": self.signal}


@dataclasses.dataclass
class Outcome:
    """The result of one script on one backend.

    ``snapshot.meta`` carries the kernel release, the vm.max_map_count the script ran
    under, the source ("simulated" or "lab") and the script's name (``comm``).
    ``process_map_count`` is the whole process's map count when the snapshot covers only
    part of it (the lab's arena); ``outside`` is then what the rest of the process holds.
    """

    snapshot: Snapshot
    errors: list[OpError] = dataclasses.field(default_factory=list)
    faults: list[Fault] = dataclasses.field(default_factory=list)
    children: list[Snapshot] = dataclasses.field(default_factory=list)
    process_map_count: int | None = None
    epoch: str | None = None
    brk: int | None = None
    crash: int | None = None  # wait status when the script's process died
    trace: list[str] = dataclasses.field(default_factory=list)
    # (op index, process map count after it), when sampled (lab compare)
    samples: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    # overcommit settings and memory before the ops, in kB (the lab's I record)
    memory: dict[str, int] = dataclasses.field(default_factory=dict)

    # -- access ---------------------------------------------------------------------------

    @property
    def vmas(self) -> list[Any]:
        """The VMAs as :class:`~vmascope.model.Vma` records."""
        return list(self.snapshot)

    @property
    def map_count(self) -> int:
        return len(self.snapshot)

    @property
    def kernel(self) -> str | None:
        return self.snapshot.meta.kernel_release

    @property
    def script(self) -> str | None:
        return self.snapshot.meta.comm

    @property
    def max_map_count(self) -> int | None:
        return self.snapshot.meta.max_map_count

    @property
    def outside(self) -> int:
        """VMAs of the process that the snapshot does not cover."""
        if self.process_map_count is None:
            return 0
        return max(self.process_map_count - len(self.snapshot), 0)

    @property
    def simulated(self) -> bool:
        return self.snapshot.meta.source == "simulated"

    def to_snapshot(self) -> Snapshot:
        return self.snapshot

    def maps_text(self) -> str:
        return self.snapshot.maps_text()

    # -- comparison -----------------------------------------------------------------------

    def layout(self) -> list[tuple[int, int, str, tuple[str, ...], str | None]]:
        """(start, end, perms, VmFlags without the ignored ones, name) per VMA."""
        snap = self.snapshot
        out = []
        for i in range(len(snap)):
            flags = snap.flags(i) or frozenset()
            out.append((int(snap.start[i]), int(snap.end[i]), snap.perms_text(i),
                        tuple(sorted(flags - IGNORED_FLAGS)), snap.name(i)))
        return out

    # -- JSON (the shape `vmascope simulate --json` and `lab run --json` print) ----------

    def vma_json(self, i: int) -> dict[str, Any]:
        snap = self.snapshot
        v = snap.vma(i)
        flags = sorted(v.flags or (), key=_print_rank)
        if self.simulated:
            pgoff: int | None = v.offset >> PAGE_SHIFT
        else:
            # /proc prints an offset only for file-backed (and shared) mappings.
            file_backed = v.perms.endswith("s") or (v.name is not None
                                                    and v.name.startswith("/"))
            pgoff = v.offset >> PAGE_SHIFT if file_backed else None
        out: dict[str, Any] = {"start": hex(v.start), "end": hex(v.end), "perms": v.perms,
                               "flags": flags, "pgoff": pgoff, "anon_vma": v.anon_vma,
                               "name": v.name}
        if "Anonymous" in snap.smaps:
            out["anonymous"] = max(int(snap.smaps["Anonymous"][i]), 0)
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "script": self.script, "kernel": self.kernel, "epoch": self.epoch,
            "map_count": self.map_count,
        }
        if self.process_map_count is not None:
            key = "map_count_total" if self.simulated else "process_map_count"
            out[key] = self.process_map_count
        out["vmas"] = [self.vma_json(i) for i in range(len(self.snapshot))]
        out["errors"] = [e.to_json() for e in self.errors]
        out["faults"] = [f.to_json() for f in self.faults]
        if self.brk is not None:
            out["brk"] = hex(self.brk)
        if self.crash is not None:
            out["crash"] = self.crash
        if self.children:
            out["children"] = [
                {"map_count": len(c),
                 "vmas": [Outcome(c, epoch=self.epoch).vma_json(i) for i in range(len(c))]}
                for c in self.children]
        return out


__all__ = ["IGNORED_FLAGS", "Fault", "OpError", "Outcome"]
