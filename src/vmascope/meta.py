"""A snapshot's metadata and the summary figures that need no VMA: what the process is,
its map count against the limit, its backings ranked. No numpy here, so a summary
(``snapshot PID``) loads no more than it needs."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .kconst import PAGE_SIZE

SCHEMA_VERSION = 1


@dataclasses.dataclass(slots=True)
class SnapshotMeta:
    pid: int | None = None
    comm: str | None = None
    cmdline: list[str] | None = None
    kernel_release: str | None = None
    page_size: int = PAGE_SIZE
    max_map_count: int | None = None
    time: float = dataclasses.field(default_factory=time.time)
    source: str = "unknown"  # live | file | maps-dump | smaps-dump | simulated | lab
    status: dict[str, str] = dataclasses.field(default_factory=dict)
    smaps_rollup: dict[str, int] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SnapshotMeta:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def rank_backings(counts: Iterable[int], names: Sequence[str]) -> list[tuple[str, int]]:
    """(backing, VMA count), most VMAs first, ties in name order: ``counts[0]`` is the
    unnamed VMAs ('[anon]'), ``counts[i]`` those named ``names[i - 1]``."""
    vals = [int(c) for c in counts]
    return [("[anon]" if i == 0 else names[i - 1], vals[i])
            for i in sorted(range(len(vals)), key=vals.__getitem__, reverse=True)
            if vals[i] > 0]


def headroom(meta: SnapshotMeta, count: int) -> tuple[int, int | None, float | None]:
    """(map_count, max_map_count, percent used) of ``count`` VMAs."""
    mmc = meta.max_map_count
    return count, mmc, None if not mmc else 100.0 * count / mmc


def summary_head(meta: SnapshotMeta, count: int) -> dict[str, Any]:
    """The keys every JSON form of a snapshot starts with."""
    count, mmc, pct = headroom(meta, count)
    return {"schema_version": SCHEMA_VERSION, "meta": meta.to_json(), "map_count": count,
            "max_map_count": mmc, "percent_used": None if pct is None else round(pct, 3)}
