"""Analysis of a Snapshot: headroom, attribution, fragmentation, why not merged, advice.

``analyze(snapshot, kernel=None)`` builds an :class:`Analysis`, a plain data result that
the reporters (text, JSON, HTML) render. Everything works on the Snapshot's numpy columns;
the only per-item Python loops are over *kinds* of pairs, reservations and runs listed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..kernel.epochs import Epoch
from ..model import SCHEMA_VERSION, Snapshot
from .advice import Advice, advise
from .attribution import Attribution, Reservation, attribute, backing_classes
from .budget import Budget, budget
from .explain import WhyNotMerged, why_not_merged
from .fixes import Fix, fixes, summary_line
from .fragmentation import Fragmentation, Run, fragmentation, lookalike_pairs
from .headroom import Headroom, headroom
from .kview import KernelCheck, kernel_check
from .limit import LimitAdvice, recommend
from .patterns import Pattern, find_patterns
from .runtimes import Fingerprint, claim, fingerprint

ANALYSIS_SCHEMA_VERSION = 1


@dataclasses.dataclass
class Analysis:
    snapshot: Snapshot = dataclasses.field(repr=False)
    headroom: Headroom
    attribution: Attribution
    fragmentation: Fragmentation
    why: WhyNotMerged
    advice: list[Advice]
    budget: Budget | None = None
    patterns: list[Pattern] = dataclasses.field(default_factory=list)
    runtimes: list[Fingerprint] = dataclasses.field(default_factory=list)
    fixes: list[Fix] = dataclasses.field(default_factory=list)
    limit: LimitAdvice | None = None
    kernel_check: KernelCheck | None = None  # with the kernel view: what it changed
    # analyze --trace: (trace.replay.Replay, trace.sites.Attribution) of a recorded run
    trace: Any = dataclasses.field(default=None, repr=False)

    @property
    def healthy_line(self) -> str | None:
        """One line when nothing is worth fixing (None otherwise)."""
        if self.budget is None:
            return None
        return summary_line(self.budget, self.patterns, self.fixes, self.headroom)

    @property
    def reservations(self) -> list[Reservation]:
        return self.attribution.reservations

    def to_json(self, run_limit: int | None = 200) -> dict[str, Any]:
        meta = self.snapshot.meta
        h = self.headroom
        return {
            "schema_version": ANALYSIS_SCHEMA_VERSION,
            "snapshot_schema_version": SCHEMA_VERSION,
            "process": {
                "pid": meta.pid,
                "comm": meta.comm,
                "source": meta.source,
                "kernel_release": meta.kernel_release,
                "time": meta.time,
            },
            "kernel": self.why.kernel,
            "kernel_source": self.why.kernel_source,
            "map_count": h.map_count,
            "max_map_count": h.max_map_count,
            "headroom": h.to_json(),
            "attribution": self.attribution.to_json(),
            "reservations": [r.to_json() for r in self.attribution.reservations],
            "fragmentation": self._fragmentation_json(run_limit),
            "why_not_merged": self.why.to_json(),
            "kernel_view": None if self.kernel_check is None else self.kernel_check.to_json(),
            "reasons": [r.to_json() for r in self.why.reasons],
            "advice": [a.to_json() for a in self.advice],
            **self._budget_json(),
        }

    def _budget_json(self) -> dict[str, Any]:
        if self.budget is None:
            return {}
        return {
            "budget": self.budget.to_json(),
            "patterns": [p.to_json() for p in self.patterns],
            "runtimes": [f.to_json() for f in self.runtimes],
            "fixes": [f.to_json() for f in self.fixes],
            "nothing_to_fix": self.healthy_line,
            "limit": None if self.limit is None else self.limit.to_json(),
        }


    def _fragmentation_json(self, run_limit: int | None) -> dict[str, Any]:
        out = self.fragmentation.to_json(run_limit)
        runs = out["runs"]
        assert isinstance(runs, list)
        for run, entry in zip(self.fragmentation.runs, runs):
            entry["reasons"] = self.why.run_reasons(run.first_index, run.vma_count)
        return out


def _named(command: str, snap: Snapshot) -> str:
    """A suggested command with the real pid or file name in place of PID and TARGET."""
    import shlex

    meta = snap.meta
    if meta.pid is not None:
        command = command.replace("/proc/PID/", f"/proc/{meta.pid}/")
    target = (str(meta.pid) if meta.source == "live" and meta.pid is not None
              else meta.extra.get("path"))
    if target:
        target = shlex.quote(str(target))
        command = command.replace("analyze PID", f"analyze {target}")
        command = command.replace("analyze TARGET", f"analyze {target}")
    return command


def analyze(
    snap: Snapshot,
    kernel: str | None = None,
    *,
    reservation_limit: int | None = 50,
    run_limit: int | None = 200,
    epoch: Epoch | None = None,
) -> Analysis:
    """Analyse a snapshot for the given kernel release (default: the snapshot's own).

    Reads nothing from the host: ``epoch`` carries the running kernel's facts when the
    caller has them (``vmascope.host.epoch_for``)."""
    classes = backing_classes(snap)
    pairs = lookalike_pairs(snap, classes)
    h = headroom(snap)
    why = why_not_merged(snap, pairs, kernel, epoch=epoch)
    frag = fragmentation(snap, classes, pairs, run_limit)
    b = budget(snap, why, classes, reservation_limit)
    pats = find_patterns(snap, b, frag, classes)
    fps = fingerprint(snap, pats, b)
    claim(b, fps)
    return Analysis(
        snapshot=snap,
        headroom=h,
        attribution=attribute(snap, classes, reservation_limit),
        fragmentation=frag,
        why=why,
        advice=[dataclasses.replace(a, test_command=_named(a.test_command, snap))
                for a in advise(why, h)],
        budget=b,
        patterns=pats,
        runtimes=fps,
        fixes=[dataclasses.replace(f, command=_named(f.command, snap))
               for f in fixes(b, pats, fps, h)],
        limit=recommend(h.map_count, h.max_map_count),
        kernel_check=kernel_check(snap, pairs, why, kernel, epoch),
    )


__all__ = [
    "Advice", "Analysis", "Attribution", "Budget", "Fingerprint", "Fix", "Fragmentation",
    "Headroom", "KernelCheck", "LimitAdvice", "Pattern", "Reservation", "Run", "WhyNotMerged", "analyze",
]
