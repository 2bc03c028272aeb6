"""Watching processes: sample, store, forecast, and act when a threshold is crossed.

A target is a pid or ``comm:NAME`` (the process with that comm and the most VMAs). With
``follow`` ("comm" or "cmdline"), a pid target whose process exits is picked up again in
the process that has the same comm (or the same command line), e.g. after a restart.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable

from .. import host
from ..errors import UsageError
from ..procfs.count import ProcCount, read_count
from .causes import causes_of
from .forecast import Forecast, forecast
from .reading import read_host
from .store import Sample, Store

EXIT_OVER = 9  # as `vmascope check`


@dataclasses.dataclass
class Target:
    spec: str  # as given: "1234" or "comm:java"
    pid: int | None = None
    start_ticks: int | None = None
    comm: str | None = None
    cmdline: str | None = None
    alerted: bool = False

    @classmethod
    def parse(cls, spec: str) -> Target:
        if spec.isdigit() and int(spec) > 0:
            return cls(spec=spec, pid=int(spec))
        if spec.startswith("comm:") and len(spec) > 5:
            return cls(spec=spec, comm=spec[5:])
        raise UsageError(f"not a target: {spec!r} (expected a pid or comm:NAME)")


def resolve(t: Target, follow: str | None) -> ProcCount | None:
    """The target's process now, or None (gone and not found again)."""
    if t.pid is not None:
        p = read_count(t.pid, cmdline=True)
        if p is not None and (t.start_ticks is None or p.start_ticks == t.start_ticks):
            return p
        if t.spec.startswith("comm:"):
            follow = "comm"
        if follow is None or (t.comm is None and t.cmdline is None):
            return None
    elif t.comm is None:
        return None
    want_cmd = follow == "cmdline" and t.cmdline is not None
    found = [p for p in read_host(cmdline=want_cmd).processes
             if (p.cmdline == t.cmdline if want_cmd else p.comm == t.comm)
             and p.pid != os.getpid()]
    return max(found, key=lambda p: (p.map_count, -p.pid)) if found else None


@dataclasses.dataclass
class Watch:
    store: Store
    targets: list[Target]
    interval: float = 5.0
    alert_pct: float | None = None
    exec_cmd: str | None = None
    follow: str | None = None
    causes_every: int = 10
    window: float = 1800.0  # seconds of samples the forecast fits
    out: Callable[[str], None] = print
    samples_taken: int = 0

    def sample_once(self) -> int | None:
        """Sample every target; the exit code to end with, or None to go on."""
        limit = host.max_map_count()
        now = time.time()
        gone = 0
        for t in self.targets:
            p = resolve(t, self.follow)
            if p is None:
                gone += 1
                continue
            if t.pid != p.pid and t.start_ticks is not None:
                self.out(f"{t.spec}: following {p.comm} as pid {p.pid}")
            t.pid, t.start_ticks, t.comm, t.cmdline = p.pid, p.start_ticks, p.comm, p.cmdline
            causes = None
            if self.causes_every and self.samples_taken % self.causes_every == 0:
                c = causes_of(p.pid)
                causes = c.counts if c else None
            self.store.add(Sample(time=now, pid=p.pid, comm=p.comm, map_count=p.map_count,
                                  max_map_count=limit, rss_bytes=p.rss_bytes,
                                  start_ticks=p.start_ticks, cmdline=p.cmdline,
                                  causes=causes, target=t.spec))
            f = self.forecast(t, limit)
            self.out(line(p, limit, f))
            code = self.check(t, p, limit, f)
            if code is not None:
                return code
        self.samples_taken += 1
        if gone == len(self.targets):
            self.out("every target has exited")
            return 3
        return None

    def forecast(self, t: Target, limit: int | None) -> Forecast | None:
        if not limit:
            return None
        rows = self.store.samples(target=t.spec, since=time.time() - self.window)
        rows = [r for r in rows if r.pid == t.pid and r.start_ticks == t.start_ticks]
        return forecast([r.time for r in rows], [r.map_count for r in rows], limit)

    def check(self, t: Target, p: ProcCount, limit: int | None,
              f: Forecast | None) -> int | None:
        if self.alert_pct is None or not limit:
            return None
        pct = 100.0 * p.map_count / limit
        if pct < self.alert_pct:
            t.alerted = False
            return None
        if t.alerted:
            return None
        t.alerted = True
        msg = (f"{p.comm} (pid {p.pid}) crossed {self.alert_pct:g} % of vm.max_map_count: "
               f"{p.map_count} of {limit} ({pct:.1f} %)")
        if self.exec_cmd is None:
            print(f"vmascope: {msg}", file=sys.stderr)
            return EXIT_OVER
        env = {**os.environ, "VMASCOPE_PID": str(p.pid), "VMASCOPE_COMM": p.comm,
               "VMASCOPE_MAP_COUNT": str(p.map_count), "VMASCOPE_MAX_MAP_COUNT": str(limit),
               "VMASCOPE_PERCENT": f"{pct:.2f}", "VMASCOPE_TARGET": t.spec,
               "VMASCOPE_ETA_SECONDS": "" if f is None or f.eta is None else f"{f.eta:.0f}"}
        self.out(f"{msg}: running {self.exec_cmd}")
        try:
            subprocess.run(self.exec_cmd, shell=True, env=env, timeout=max(60.0, self.interval))
        except subprocess.TimeoutExpired:
            self.out("the --exec command ran too long and was stopped")
        return None

    def run(self, count: int | None = None) -> int:
        n = 0
        while True:
            t0 = time.monotonic()
            code = self.sample_once()
            if code is not None:
                return code
            n += 1
            if count is not None and n >= count:
                return 0
            time.sleep(max(0.0, self.interval - (time.monotonic() - t0)))


def header(targets: int, interval: float, db: str) -> list[str]:
    """What a terminal shows before the first sample: what runs, and the columns of
    :func:`line`."""
    what = "1 target" if targets == 1 else f"{targets} targets"
    first = [f"watching {what} every {interval:g} s into {db} (Ctrl-C stops)"]
    if len(first[0]) > 80:  # the database on a line of its own, whole
        first = [f"watching {what} every {interval:g} s (Ctrl-C stops) into", f"  {db}"]
    return [*first, f"{'time':<8} {'comm':<12} {'pid':>7} {'VMAs':>7} {'limit':>6} "
            f"{'growth':>12} full in (95 % band)"]


def line(p: ProcCount, limit: int | None, f: Forecast | None) -> str:
    from .forecast import fmt_eta

    pct = f"{100 * p.map_count / limit:5.1f}%" if limit else "    ?%"
    when = time.strftime("%H:%M:%S")
    s = f"{when} {p.comm[:12]:<12} {p.pid:>7} {p.map_count:>7} {pct}"
    if f is not None:
        s += f" {f.per_minute:+8.0f}/min"
        if f.eta is not None:
            s += f" full in {fmt_eta(f.eta)} ({fmt_eta(f.eta_early)}..{fmt_eta(f.eta_late)})"
    return s[:80]


__all__ = ["EXIT_OVER", "Target", "Watch", "header", "line", "resolve"]
