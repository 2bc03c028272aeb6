"""Growth rates: each process (pid + start time) followed across readings."""

from __future__ import annotations

import collections

from .reading import Reading

Key = tuple[int, int]  # (pid, start time in clock ticks)


class Rates:
    """Keeps the last ``window`` seconds of map counts per process; ``per_minute`` is
    the slope between the oldest and the newest (VMAs per minute)."""

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self._seen: dict[Key, collections.deque[tuple[float, int]]] = {}

    def add(self, reading: Reading) -> None:
        alive = set()
        for p in reading.processes:
            key = (p.pid, p.start_ticks)
            alive.add(key)
            q = self._seen.setdefault(key, collections.deque())
            q.append((reading.time, p.map_count))
            while len(q) > 2 and reading.time - q[1][0] >= self.window:
                q.popleft()
        for key in set(self._seen) - alive:
            del self._seen[key]

    def per_minute(self, pid: int, start_ticks: int) -> float | None:
        q = self._seen.get((pid, start_ticks))
        if not q or len(q) < 2 or q[-1][0] <= q[0][0]:
            return None
        return (q[-1][1] - q[0][1]) * 60.0 / (q[-1][0] - q[0][0])


__all__ = ["Rates"]
