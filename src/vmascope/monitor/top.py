"""The state behind ``vmascope top``: readings, growth rates, budget causes of the first
rows (cached: the budget reads the whole maps text), and the sort order."""

from __future__ import annotations

import dataclasses
import time

from .causes import Causes, causes_of
from .rates import Rates
from .reading import Reading, read_host

# key -> (column name, sort key of a row)
SORTS = {
    "P": "% of limit",
    "R": "growth",
    "M": "RSS",
    "N": "pid",
}


@dataclasses.dataclass
class Row:
    pid: int
    comm: str
    map_count: int
    percent: float | None
    rss_bytes: int
    growth_per_min: float | None
    biggest: str | None = None
    biggest_count: int | None = None
    cause: str | None = None

    def to_json(self) -> dict[str, object]:
        d = dataclasses.asdict(self)
        if self.percent is not None:
            d["percent"] = round(self.percent, 3)
        if self.growth_per_min is not None:
            d["growth_per_min"] = round(self.growth_per_min, 1)
        return d


class TopState:
    def __init__(self, *, causes: int = 5, rate_window: float = 60.0) -> None:
        self.rates = Rates(rate_window)
        self.n_causes = causes
        self.sort = "P"
        self.reading: Reading | None = None
        self._causes: dict[tuple[int, int], tuple[float, int, Causes | None]] = {}

    def refresh(self) -> Reading:
        self.reading = read_host()
        self.rates.add(self.reading)
        return self.reading

    def _causes_of(self, pid: int, start: int, count: int) -> Causes | None:
        key = (pid, start)
        hit = self._causes.get(key)
        now = time.monotonic()
        if hit and now - hit[0] < 30 and abs(hit[1] - count) <= count // 10:
            return hit[2]
        c = causes_of(pid)
        self._causes[key] = (now, count, c)
        return c

    def rows(self, limit: int | None = None) -> list[Row]:
        r = self.reading
        if r is None:
            return []
        rows = []
        starts = {}
        for p in r.processes:
            starts[p.pid] = p.start_ticks
            rows.append(Row(pid=p.pid, comm=p.comm, map_count=p.map_count,
                            percent=100 * p.map_count / r.limit if r.limit else None,
                            rss_bytes=p.rss_bytes,
                            growth_per_min=self.rates.per_minute(p.pid, p.start_ticks)))
        key = {
            "P": lambda x: (-x.map_count, x.pid),
            "R": lambda x: (-(x.growth_per_min or 0), -x.map_count, x.pid),
            "M": lambda x: (-x.rss_bytes, x.pid),
            "N": lambda x: (x.pid,),
        }[self.sort]
        rows.sort(key=key)
        rows = rows[:limit] if limit is not None else rows
        by_count = sorted(rows, key=lambda x: -x.map_count)[:self.n_causes]
        for row in by_count:
            c = self._causes_of(row.pid, starts[row.pid], row.map_count)
            if c is not None:
                row.biggest, row.biggest_count = c.biggest, c.biggest_count
                row.cause = c.biggest_cause or c.dominant
        live = {(p.pid, p.start_ticks) for p in r.processes}
        for k in set(self._causes) - live:
            del self._causes[k]
        return rows


__all__ = ["Row", "SORTS", "TopState"]
