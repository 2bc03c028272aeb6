"""Call sites: which code made the VMAs a replay ends with, and why they stay apart.

Each VMA of the model's end state was made by one op (``Replay.born``); the op's event has
a user stack; the stack's call site (``symbols.call_site``: the first frame outside the C
library and the dynamic loader) names the code. Each VMA's start boundary has a cause
from the budget analysis of the model's end state (protection, anon_vma, ...), and each
refused merge the model saw has reason codes: both are summed per call site.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from .format import Trace
from .replay import PRESENT, Replay

AT_START = "(present when recording started)"
UNKNOWN = "(no stack)"


@dataclasses.dataclass
class Site:
    key: str
    vmas: int = 0  # VMAs of the end state this site made
    excess: int = 0  # of them, VMAs that a merge would have saved (a boundary inside)
    causes: Counter[str] = dataclasses.field(default_factory=Counter)
    refused: Counter[str] = dataclasses.field(default_factory=Counter)  # reason -> count
    refusals: int = 0  # merges refused at this site (one may have several reasons)
    ops: Counter[str] = dataclasses.field(default_factory=Counter)  # op kind -> VMAs
    chain: str = ""  # a short caller chain, innermost first
    example: int = -1  # an op index

    def to_json(self) -> dict[str, Any]:
        return {"site": self.key, "vmas": self.vmas, "excess": self.excess,
                "causes": dict(self.causes.most_common()),
                "refusals": self.refusals,
                "refused_merges": dict(self.refused.most_common()),
                "ops": dict(self.ops.most_common()), "chain": self.chain,
                "example_op": self.example}


@dataclasses.dataclass
class Attribution:
    sites: list[Site]  # most VMAs first
    refusals: int
    timeline: list[tuple[float, int, dict[str, int]]]  # (t, map_count, {site: VMAs})

    def to_json(self, limit: int = 30) -> dict[str, Any]:
        return {"sites": [s.to_json() for s in self.sites[:limit]],
                "refused_merges": self.refusals,
                "timeline": [{"t": t, "map_count": n, "by_site": by}
                             for t, n, by in self.timeline]}


class SiteNamer:
    """Op index -> call site key, through the trace's ``#sym`` table, the recorder's own
    frames (strace -k) or, on the machine the trace was recorded on, the ELF symbols."""

    def __init__(self, trace: Trace, symbolizer: Any = None) -> None:
        self.trace = trace
        self.sym = symbolizer
        self._cache: dict[int, tuple[str, str]] = {}
        self._by_stack: dict[str, tuple[str, str]] = {}  # "at=..."/"fr=..." text -> site

    @staticmethod
    def _stack_text(note: str) -> str:
        """The ``at=`` and ``fr=`` words of an annotation: ops with the same ones have
        the same call site, so the frames are worked out once per stack."""
        return " ".join(w for w in note.split() if w.startswith(("at=", "fr=")))

    def _frames(self, note: str) -> list[Any]:
        from . import symbols
        from .format import parse_annotation

        a = parse_annotation(note)
        if a.frames:
            return [symbols.parse_frame(f) for f in a.frames]
        out = []
        for ip in a.stack:
            text = self.trace.symbols.get(ip)
            if text is not None:
                out.append(symbols.parse_frame(text))
            elif self.sym is not None:
                out.append(self.sym.frame(ip))
            else:
                out.append(symbols.Frame(None, None, 0, "unknown", ip=ip))
        return out

    def prepare(self, ops: set[int]) -> None:
        """Name the call sites of ``ops`` at once, C++ names demangled in one batch."""
        for i in ops:
            self.site(i)
        texts = [t for pair in self._by_stack.values() for t in pair]
        table = demangle_keys(texts)
        for t in texts:  # strace -k names C++ frames with their parameters: drop them
            plain = _PARAMS.sub("", table.get(t, t))
            if plain != t:
                table[t] = plain
        if not table:
            return
        renamed = {pair: (table.get(pair[0], pair[0]), table.get(pair[1], pair[1]))
                   for pair in set(self._by_stack.values())}
        self._by_stack = {k: renamed[v] for k, v in self._by_stack.items()}
        self._cache = {k: renamed.get(v, v) for k, v in self._cache.items()}

    def site(self, i: int) -> tuple[str, str]:
        """(site key, short chain) of op i."""
        if i == PRESENT:
            return AT_START, ""
        hit = self._cache.get(i)
        if hit is None:
            stack = self._stack_text(self.trace.notes[i])
            hit = self._by_stack.get(stack)
            if hit is None:
                from . import symbols

                frames = self._frames(stack)
                if not frames:
                    hit = (UNKNOWN, "")
                else:
                    hit = (symbols.site_key(symbols.call_site(frames)),
                           symbols.caller_chain(frames))
                self._by_stack[stack] = hit
            self._cache[i] = hit
        return hit


def boundary_causes(rep: Replay) -> np.ndarray:
    """Per boundary of the model's end state: its cause (``budget.CAUSES`` index, or
    ``budget.NONE`` between reservations), from the budget analysis alone."""
    from ..analysis.attribution import backing_classes
    from ..analysis.budget import budget
    from ..analysis.explain import why_not_merged
    from ..analysis.fragmentation import lookalike_pairs

    snap = rep.snapshot
    classes = backing_classes(snap)
    why = why_not_merged(snap, lookalike_pairs(snap, classes), None, epoch=rep.epoch)
    return budget(snap, why, classes, limit=0).cause


def attribute(rep: Replay, namer: SiteNamer | None = None, top: int = 6) -> Attribution:
    from ..analysis.budget import CAUSES, NONE

    namer = namer or SiteNamer(rep.trace)
    sampled = rep.sampled_ops().tolist()
    namer.prepare(set(rep.born.tolist()) | {i for i, _a, _c in rep.refusals} | set(sampled))
    cause = boundary_causes(rep)
    sites: dict[str, Site] = {}
    ops = rep.trace.ops

    def get(i: int) -> Site:
        key, chain = namer.site(i)
        s = sites.get(key)
        if s is None:
            s = sites[key] = Site(key, chain=chain, example=i)
        return s

    # per VMA: its site (through the distinct ops), and per boundary: its cause
    uniq, inv = np.unique(rep.born, return_inverse=True)
    site_of = [get(int(i)) for i in uniq.tolist()]
    listed = list(sites.values())
    nsites = len(listed)
    position = {s.key: k for k, s in enumerate(listed)}
    col = np.array([position[s.key] for s in site_of], dtype=np.int64)[inv]
    for k, c in enumerate(np.bincount(col, minlength=nsites).tolist()):
        listed[k].vmas += c
    kinds = [ops[i].kind if i >= 0 else "present" for i in uniq.tolist()]
    kind_names = sorted(set(kinds))
    kind_of = np.array([kind_names.index(k) for k in kinds], dtype=np.int64)[inv]
    per = np.bincount(col * len(kind_names) + kind_of, minlength=nsites * len(kind_names))
    for flat in np.flatnonzero(per).tolist():
        listed[flat // len(kind_names)].ops[kind_names[flat % len(kind_names)]] += int(per[flat])
    if len(col) > 1:
        inside = cause != NONE
        after = col[1:][inside]
        c_idx = cause[inside].astype(np.int64)
        per = np.bincount(after * len(CAUSES) + c_idx, minlength=nsites * len(CAUSES))
        for flat in np.flatnonzero(per).tolist():
            s = listed[flat // len(CAUSES)]
            s.causes[CAUSES[flat % len(CAUSES)]] += int(per[flat])
            s.excess += int(per[flat])
    for i, _addr, codes in rep.refusals:
        s = get(i)
        s.refusals += 1
        for c in codes:
            s.refused[c] += 1
    ordered = sorted(sites.values(), key=lambda s: (-s.vmas, -s.excess, s.key))
    # the timeline: the top sites by VMAs at the end, the rest as "other"
    names = [s.key for s in ordered[:top]]
    timeline: list[tuple[float, int, dict[str, int]]] = []
    ops_seen = np.array(sampled, dtype=np.int64)
    cols = names + ["other"]
    col_of = np.array([cols.index(k) if (k := namer.site(o)[0]) in names else len(names)
                       for o in sampled], dtype=np.int64)
    alive = rep.alive_by(lambda born: col_of[np.searchsorted(ops_seen, born)], len(cols))
    for (i, n), sums in zip(rep.samples, alive.tolist()):
        by = {cols[c]: v for c, v in enumerate(sums) if v}
        t = rep.trace.annotation(i).t
        timeline.append((t if t is not None else float(i), n, by))
    return Attribution(sites=ordered, refusals=len(rep.refusals),
                       timeline=timeline)


_PARAMS = re.compile(r"\((?:[^()]|\([^()]*\))*\)(?:_?const)?(?=\+0x)")
_MANGLED = re.compile(r"(?<=:)_Z[A-Za-z0-9_.$]+(?=\+)")


def demangle_keys(texts: Iterable[str]) -> dict[str, str]:
    """Site keys and chains with their C++ symbols (``_Z...``) made readable, without the
    parameter lists (``c++filt -p``), for the texts that change. Empty when binutils'
    c++filt is not installed: the mangled names stay, as they are correct anyway."""
    import shutil
    import subprocess

    texts = list(texts)
    names = sorted({m.group(0) for t in texts for m in _MANGLED.finditer(t)})
    exe = shutil.which("c++filt")
    if not names or exe is None:
        return {}
    try:
        proc = subprocess.run([exe, "-p"], input="\n".join(names) + "\n",
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    plain = proc.stdout.splitlines()
    if proc.returncode != 0 or len(plain) != len(names):
        return {}
    table = {m: p for m, p in zip(names, plain) if p and " " not in p.strip()}
    out = {}
    for t in texts:
        new = _MANGLED.sub(lambda m: table.get(m.group(0), m.group(0)), t)
        if new != t:
            out[t] = new
    return out
