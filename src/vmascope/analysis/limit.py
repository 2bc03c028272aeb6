"""The limit to set: a recommended ``vm.max_map_count`` from a process's map count and
its trend.

Reasoning, stated in the result:

* the trend is the growth rate between two snapshots (mappings per hour); with one
  snapshot it is taken as flat;
* the count is projected ``horizon`` hours ahead (default a week) at that rate, never
  below the current count;
* the recommendation doubles the projection (a 100 % margin: a GC can double its
  mappings in one bad cycle) and rounds up to a multiple of 65,536; it is never below
  the kernel's default, 65,530 (DEFAULT_MAX_MAP_COUNT).
"""

from __future__ import annotations

import dataclasses
import math

KERNEL_DEFAULT = 65530  # include/linux/mm.h DEFAULT_MAX_MAP_COUNT
STEP = 65536
MARGIN = 2.0


@dataclasses.dataclass(frozen=True)
class LimitAdvice:
    map_count: int
    max_map_count: int | None
    rate_per_hour: float | None  # None: one snapshot only
    horizon_hours: float
    projected: int
    recommended: int
    reasoning: list[str]

    @property
    def enough(self) -> bool | None:
        return None if self.max_map_count is None else self.max_map_count >= self.recommended

    def to_json(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "enough": self.enough}


def recommend(count: int, max_map_count: int | None, *,
              previous: tuple[float, int] | None = None, now: float | None = None,
              horizon_hours: float = 168.0) -> LimitAdvice:
    """``previous`` is (time, map_count) of an earlier snapshot; ``now`` this one's time."""
    rate = None
    why = []
    if previous is not None and now is not None and now > previous[0]:
        rate = (count - previous[1]) / ((now - previous[0]) / 3600.0)
        why.append(f"trend: {previous[1]:,} -> {count:,} mappings in "
                   f"{now - previous[0]:.3g} s, {rate:+,.0f} an hour")
    else:
        why.append("trend: one snapshot, taken as flat")
    growth = max(0.0, rate or 0.0) * horizon_hours
    projected = int(math.ceil(count + growth))
    why.append(f"projected in {horizon_hours:g} h: {projected:,}")
    doubled = projected * MARGIN
    want = int(math.ceil(doubled / STEP)) * STEP
    recommended = KERNEL_DEFAULT if doubled <= KERNEL_DEFAULT else want
    if recommended == KERNEL_DEFAULT:
        why.append(f"twice that fits the kernel default {KERNEL_DEFAULT:,}")
    else:
        why.append(f"twice that, rounded up to a multiple of {STEP:,}: {recommended:,}")
    if max_map_count is not None:
        verdict = ("enough" if max_map_count >= recommended else "too low")
        why.append(f"vm.max_map_count is {max_map_count:,}: {verdict}")
    return LimitAdvice(count, max_map_count, rate, horizon_hours, projected, recommended, why)


__all__ = ["KERNEL_DEFAULT", "LimitAdvice", "recommend"]
