"""The budget's pictures for the HTML report, as inline SVG drawn with numpy:

* a stacked bar: the VMAs beyond the ideal, one segment per cause;
* a strip per reservation with the most VMAs: each pixel column is coloured by the
  commonest cause of the boundaries that fall in it (light grey where none falls).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from ..analysis.budget import CAUSE_COLOURS, CAUSE_LABELS, CAUSES
from .budget_view import TERMS, cause_rows, headline
from .fmt import human_bytes

if TYPE_CHECKING:
    from ..analysis import Analysis
    from ..analysis.budget import BudgetReservation

WIDTH = 960
BAR_HEIGHT = 30
STRIP_HEIGHT = 22
EMPTY = "#eef0f2"


@dataclasses.dataclass
class BudgetStrip:
    title: str
    svg: str


def bar_svg(a: Analysis, width: int = WIDTH) -> str | None:
    b = a.budget
    if b is None or b.excess == 0:
        return None
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {BAR_HEIGHT}" '
             f'width="{width}" height="{BAR_HEIGHT}" role="img">']
    x = 0.0
    for code in CAUSES:
        n = b.totals.counts[code]
        if not n:
            continue
        w = width * n / b.excess
        parts.append(f'<rect x="{x:.2f}" y="0" width="{max(w, 1.0):.2f}" height="{BAR_HEIGHT}" '
                     f'fill="{CAUSE_COLOURS[code]}"><title>{CAUSE_LABELS[code]}: {n:,}'
                     '</title></rect>')
        x += w
    parts.append("</svg>")
    return "".join(parts)


def strip_svg(a: Analysis, r: BudgetReservation, width: int = WIDTH) -> str:
    b = a.budget
    assert b is not None
    snap = a.snapshot
    lo, hi = r.first_index, r.first_index + r.vma_count - 1  # boundaries lo .. hi - 1
    cause = b.cause[lo:hi].astype(np.int64)
    span = float(r.end - r.start) or 1.0
    pos = ((snap.end[lo:hi].astype(np.float64) - r.start) / span * width).astype(np.int64)
    pos = np.clip(pos, 0, width - 1)
    nc = len(CAUSES)
    counts = np.bincount(pos * nc + cause, minlength=width * nc).reshape(width, nc)
    has = counts.sum(axis=1) > 0
    top = np.where(has, counts.argmax(axis=1), -1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {STRIP_HEIGHT}" '
             f'width="{width}" height="{STRIP_HEIGHT}" role="img">'
             f'<rect width="{width}" height="{STRIP_HEIGHT}" fill="{EMPTY}"/>']
    change = np.flatnonzero(np.diff(top)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [width]])
    for s, e in zip(starts, ends):
        c = int(top[s])
        if c < 0:
            continue
        parts.append(f'<rect x="{s}" y="0" width="{e - s}" height="{STRIP_HEIGHT}" '
                     f'fill="{CAUSE_COLOURS[CAUSES[c]]}"/>')
    parts.append("</svg>")
    return "".join(parts)


def context(a: Analysis, strips: int = 3) -> dict[str, Any]:
    b = a.budget
    if b is None:
        return {"budget": None}
    shown = [r for r in b.reservations[:strips] if r.vma_count > 1]
    return {
        "budget": b,
        "budget_headline": headline(a),
        "budget_bar": bar_svg(a),
        "budget_rows": cause_rows(b.totals),
        "budget_legend": [(CAUSE_LABELS[c], CAUSE_COLOURS[c], b.totals.counts[c])
                          for c in CAUSES if b.totals.counts[c]],
        "budget_strips": [BudgetStrip(
            f"{r.start:x}-{r.end:x} {r.label}"
            + (f" ({r.owner})" if r.owner else "") + f": {r.vma_count:,} VMAs, ideal 1, "
            f"{human_bytes(r.end - r.start)}", strip_svg(a, r)) for r in shown],
        "budget_empty": EMPTY,
        "terms": TERMS,
    }
