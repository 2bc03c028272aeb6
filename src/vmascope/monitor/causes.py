"""The VMA budget of a few processes: their biggest reservation and why it is split.

This reads and parses the whole maps text, so it is only done for the top few processes
of a reading.
"""

from __future__ import annotations

import dataclasses

from ..analysis.budget import CAUSES, budget
from ..errors import VmascopeError
from ..procfs.live import read_process


@dataclasses.dataclass(frozen=True)
class Causes:
    pid: int
    counts: dict[str, int]  # boundaries (VMAs beyond one per reservation) per cause
    dominant: str | None  # the cause with the most boundaries
    biggest: str | None  # the reservation with the most VMAs: "label (N VMAs)"
    biggest_count: int
    biggest_cause: str | None

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def causes_of(pid: int) -> Causes | None:
    """The budget causes of a live process from its maps; None if it cannot be read."""
    try:
        snap = read_process(pid, smaps=False, numa=False)
    except VmascopeError:
        return None
    b = budget(snap, limit=1)
    big = b.largest
    return Causes(
        pid=pid, counts={c: int(b.totals.counts.get(c, 0)) for c in CAUSES},
        dominant=b.totals.dominant(),
        biggest=big.label if big else None, biggest_count=big.vma_count if big else 0,
        biggest_cause=big.causes.dominant() if big else None)


__all__ = ["Causes", "causes_of"]
