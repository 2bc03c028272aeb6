"""Headroom: how many mappings the process has and how many are left before ENOMEM.

The kernel refuses a new mapping when ``map_count > max_map_count`` (do_mmap) and a split
when ``map_count >= max_map_count`` (split_vma), so "left" counts the splits still allowed:
``max_map_count - map_count``.
"""

from __future__ import annotations

import dataclasses

from ..model import Snapshot

# Warning levels by percentage of vm.max_map_count in use.
LEVELS: tuple[tuple[float, str], ...] = (
    (95.0, "critical"),
    (80.0, "warning"),
    (50.0, "elevated"),
    (0.0, "ok"),
)


@dataclasses.dataclass(frozen=True)
class Headroom:
    map_count: int
    max_map_count: int | None
    percent_used: float | None
    left: int | None
    level: str  # ok | elevated | warning | critical | unknown
    max_map_count_source: str  # snapshot | host | unknown

    def to_json(self) -> dict[str, object]:
        return {
            "map_count": self.map_count,
            "max_map_count": self.max_map_count,
            "percent_used": None if self.percent_used is None else round(self.percent_used, 3),
            "left": self.left,
            "level": self.level,
            "max_map_count_source": self.max_map_count_source,
        }


def level_for(percent: float | None) -> str:
    if percent is None:
        return "unknown"
    for threshold, name in LEVELS:
        if percent >= threshold:
            return name
    return "ok"


def headroom(snap: Snapshot) -> Headroom:
    count = snap.map_count
    mmc = snap.meta.max_map_count
    source = "snapshot"
    if not mmc:
        return Headroom(count, None, None, None, "unknown", "unknown")
    pct = 100.0 * count / mmc
    return Headroom(count, mmc, pct, mmc - count, level_for(pct), source)
