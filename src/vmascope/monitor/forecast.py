"""When does a process reach vm.max_map_count? A straight line through the recent
samples (least squares), with a 95 % prediction interval around it.

The forecast is the time at which the fitted line reaches the limit; the band is when
the upper and the lower bound of the prediction interval reach it (the lower may never,
then the band is open-ended). No growth, or fewer than 3 samples: no forecast.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# Two-sided 95 % quantiles of Student's t by degrees of freedom.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000,
        120: 1.980}
HORIZON = 10 * 365 * 86400.0  # beyond ten years: never


def t95(df: int) -> float:
    if df <= 0:
        return math.inf
    keys = sorted(_T95)
    if df >= keys[-1]:
        return 1.96
    below = max(k for k in keys if k <= df)
    above = min(k for k in keys if k >= df)
    if below == above:
        return _T95[below]
    f = (df - below) / (above - below)
    return _T95[below] + f * (_T95[above] - _T95[below])


@dataclasses.dataclass(frozen=True)
class Forecast:
    now: float  # time of the last sample
    count: int  # map count at the last sample
    limit: int
    n: int  # samples fitted
    per_minute: float  # slope, VMAs per minute
    eta: float | None  # seconds from `now` to the limit on the fitted line
    eta_early: float | None  # ... on the upper bound of the 95 % interval
    eta_late: float | None  # ... on the lower bound; None: not within the horizon

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _first_crossing(f, lo: float, hi: float) -> float | None:  # type: ignore[no-untyped-def]
    """The first t in [lo, hi] with f(t) >= 0 (f scanned on a geometric grid, then
    bisected)."""
    if f(lo) >= 0:
        return lo
    prev = lo
    step = 1.0
    while prev < hi:
        t = min(hi, lo + step)
        if f(t) >= 0:
            a, b = prev, t
            for _ in range(60):
                m = (a + b) / 2
                a, b = (a, m) if f(m) >= 0 else (m, b)
            return b
        prev, step = t, step * 1.5
    return None


def forecast(times: np.ndarray | list[float], counts: np.ndarray | list[int],
             limit: int) -> Forecast | None:
    t = np.asarray(times, dtype=np.float64)
    y = np.asarray(counts, dtype=np.float64)
    n = len(t)
    if n < 3 or limit <= 0:
        return None
    tbar, ybar = t.mean(), y.mean()
    sxx = float(((t - tbar) ** 2).sum())
    if sxx <= 0:
        return None
    slope = float(((t - tbar) * (y - ybar)).sum() / sxx)
    icpt = ybar - slope * tbar
    resid = y - (icpt + slope * t)
    s = math.sqrt(float((resid ** 2).sum()) / (n - 2)) if n > 2 else 0.0
    q = t95(n - 2)
    now = float(t[-1])
    count = int(y[-1])

    def line(x: float) -> float:
        return icpt + slope * x

    def half(x: float) -> float:
        return q * s * math.sqrt(1 + 1 / n + (x - tbar) ** 2 / sxx)

    eta = early = late = None
    if count >= limit:
        eta = early = late = 0.0
    elif slope > 0:
        hi = now + HORIZON
        c = _first_crossing(lambda x: line(x) - limit, now, hi)
        e = _first_crossing(lambda x: line(x) + half(x) - limit, now, hi)
        lt = _first_crossing(lambda x: line(x) - half(x) - limit, now, hi)
        eta = None if c is None else c - now
        early = None if e is None else e - now
        late = None if lt is None else lt - now
    return Forecast(now=now, count=count, limit=limit, n=n, per_minute=slope * 60,
                    eta=eta, eta_early=early, eta_late=late)


def fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


__all__ = ["Forecast", "fmt_eta", "forecast", "t95"]
