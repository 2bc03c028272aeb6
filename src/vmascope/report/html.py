"""HTML rendering: one self-contained file (inline CSS, inline SVG, no scripts, no network).

Pictures:

* an address-space strip per large reservation: each pixel column is coloured by the
  protection that covers most of it, with a tick wherever VMA boundaries fall (red where
  the two sides look identical in maps, i.e. an unmerged split; dark grey where the
  protection changes);
* the VMA size histogram (all VMAs, and those in look-alike runs);
* splits per reason.

The strip is drawn with numpy straight into SVG rectangles (tens of thousands of VMAs
become at most a few hundred rectangles); the two charts are plain SVG bars written here
(a plotting library's import alone took longer than the whole text report). jinja2 is
the ``report`` extra.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..reasons import Code
from ..errors import UsageError
from ..model import PERM_EXEC, PERM_READ, PERM_WRITE
from .fmt import human_bytes, kernel_title, pct, process_title, size_range

if TYPE_CHECKING:
    from ..analysis import Analysis, Reservation

TEMPLATES = Path(__file__).parent / "templates"
STRIP_WIDTH = 960
STRIP_HEIGHT = 26
STRIPS = 6

# Protection classes of the strip: (label, colour).
PROT_CLASSES: tuple[tuple[str, str], ...] = (
    ("---p (reserved)", "#c9ced6"),
    ("r--p", "#5b8def"),
    ("rw-p (committed)", "#3aa35b"),
    ("executable", "#e8912d"),
)
LOOKALIKE_TICK = "#d62828"
CHANGE_TICK = "#2b2d42"


def prot_class(perms: np.ndarray) -> np.ndarray:
    out = np.zeros(len(perms), dtype=np.int64)  # no access
    out[(perms & PERM_READ) != 0] = 1
    out[(perms & PERM_WRITE) != 0] = 2
    out[(perms & PERM_EXEC) != 0] = 3
    return out


@dataclasses.dataclass
class Strip:
    title: str
    svg: str


def strip_svg(a: Analysis, r: Reservation, width: int = STRIP_WIDTH) -> str:
    """An SVG strip of one reservation, as described in the module docstring."""
    snap = a.snapshot
    lo, hi = r.first_index, r.first_index + r.vma_count
    starts = snap.start[lo:hi].astype(np.float64) - r.start
    ends = snap.end[lo:hi].astype(np.float64) - r.start
    span = float(r.span)
    classes = prot_class(snap.perms[lo:hi])
    edges = np.concatenate([[0.0], ends])  # contiguous VMAs: ends are the next starts
    cols = np.linspace(0.0, span, width + 1)
    cover = np.empty((len(PROT_CLASSES), width))
    sizes = ends - starts
    for c in range(len(PROT_CLASSES)):
        cum = np.concatenate([[0.0], np.cumsum(np.where(classes == c, sizes, 0.0))])
        at = np.interp(cols, edges, cum)
        cover[c] = np.diff(at)
    dominant = cover.argmax(axis=0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {STRIP_HEIGHT}" '
             f'width="{width}" height="{STRIP_HEIGHT}" role="img">']
    change = np.flatnonzero(np.diff(dominant)) + 1
    run_starts = np.concatenate([[0], change])
    run_ends = np.concatenate([change, [width]])
    for s, e in zip(run_starts, run_ends):
        colour = PROT_CLASSES[int(dominant[s])][1]
        parts.append(f'<rect x="{s}" y="0" width="{e - s}" height="{STRIP_HEIGHT}" '
                     f'fill="{colour}"/>')
    # Boundaries inside the reservation: between VMA k and k+1 for k in [lo, hi - 1).
    inner = np.arange(lo, hi - 1)
    if len(inner):
        pos = np.minimum((ends[:-1] / span * width).astype(np.int64), width - 1)
        lookalike = np.zeros(len(inner), dtype=bool)
        pairs = a.why.pair_index
        if len(pairs):
            k = np.searchsorted(pairs, inner)
            k = np.minimum(k, len(pairs) - 1)
            lookalike = pairs[k] == inner
        for mask, colour, y0, h in ((~lookalike, CHANGE_TICK, 0, STRIP_HEIGHT // 2),
                                    (lookalike, LOOKALIKE_TICK, STRIP_HEIGHT // 2,
                                     STRIP_HEIGHT - STRIP_HEIGHT // 2)):
            counts = np.bincount(pos[mask], minlength=width)
            for x in np.flatnonzero(counts):
                op = min(1.0, 0.45 + 0.15 * np.log2(counts[x]))
                parts.append(f'<rect x="{x}" y="{y0}" width="1" height="{h}" fill="{colour}" '
                             f'fill-opacity="{op:.2f}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(label)}" '
            'font-family="sans-serif" font-size="11">' + "".join(body) + "</svg>")


def _esc(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def histogram_svg(a: Analysis) -> str | None:
    """VMA sizes: all VMAs and those in look-alike runs per size bucket, log scale."""
    import math

    hist = a.fragmentation.histogram
    if not hist:
        return None
    left, top, plot_h, slot = 64, 28, 170, 44
    width = left + slot * len(hist) + 20
    height = top + plot_h + 90
    high = max(max(b.all_vmas for b in hist), 1)
    decades = max(1, math.ceil(math.log10(high / 0.7)))

    def y(v: int) -> float:  # log scale from 0.7 (bottom) over whole decades
        return top + plot_h - (plot_h * math.log10(v / 0.7) / decades if v > 0 else 0)

    body = [f'<text x="{left}" y="14">VMAs per size bucket (log scale); blue: all VMAs, '
            f'red: in look-alike runs</text>']
    for d in range(decades + 1):  # grid lines at 1, 10, 100, ...
        v = 10 ** d
        if v > 0.7 * 10 ** decades:
            break
        yy = y(v)
        body.append(f'<line x1="{left}" x2="{width - 20}" y1="{yy:.1f}" y2="{yy:.1f}" '
                    'stroke="#e6e8eb"/>'
                    f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{v:,}</text>')
    for k, b in enumerate(hist):
        x = left + slot * k + 4
        for dx, v, colour in ((0, b.all_vmas, "#5b8def"), (17, b.in_runs, LOOKALIKE_TICK)):
            if v:
                yy = y(v)
                body.append(f'<rect x="{x + dx}" y="{yy:.1f}" width="16" '
                            f'height="{top + plot_h - yy:.1f}" fill="{colour}">'
                            f'<title>{v:,}</title></rect>')
        lx, ly = x + 17, top + plot_h + 12
        body.append(f'<text x="{lx}" y="{ly}" text-anchor="end" '
                    f'transform="rotate(-45 {lx} {ly})">{_esc(human_bytes(b.low))}</text>')
    body.append(f'<line x1="{left}" x2="{width - 20}" y1="{top + plot_h}" '
                f'y2="{top + plot_h}" stroke="#2b2d42"/>')
    body.append(f'<text x="{left}" y="{height - 6}">VMA size (bucket start; each bucket '
                'doubles)</text>')
    return _svg(width, height, body, "VMA size histogram")


def reasons_svg(a: Analysis) -> str | None:
    """Splits per reason: one horizontal bar each."""
    w = a.why
    rows = [(f"{r.label} ({r.confidence})", r.count) for r in w.reasons]
    if w.unexplained:
        rows.append((Code.UNEXPLAINED.label, w.unexplained))
    if not rows:
        return None
    label_w, bar_w, row_h = 330, 480, 24
    width, height = label_w + bar_w + 90, row_h * len(rows) + 40
    high = max(c for _, c in rows) or 1
    body = []
    for k, (label, c) in enumerate(rows):
        yy = 8 + row_h * k
        bw = max(1.0, bar_w * c / high)
        body.append(f'<text x="{label_w - 8}" y="{yy + 15}" text-anchor="end">'
                    f'{_esc(label)}</text>'
                    f'<rect x="{label_w}" y="{yy + 3}" width="{bw:.1f}" height="{row_h - 8}" '
                    f'fill="#d62828"/><text x="{label_w + bw + 4:.1f}" y="{yy + 15}">'
                    f'{c:,}</text>')
    body.append(f'<text x="{label_w}" y="{height - 8}">splits (of {w.pairs:,} look-alike '
                'adjacent pairs)</text>')
    return _svg(width, height, body, "splits per reason")


def gauge_svg(a: Analysis) -> str | None:
    h = a.headroom
    if h.percent_used is None:
        return None
    width, height = 400, 16
    used = min(1.0, h.percent_used / 100.0)
    colour = {"ok": "#3aa35b", "elevated": "#e0b000", "warning": "#e8912d",
              "critical": "#d62828"}.get(h.level, "#888")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><rect width="{width}" height="{height}" '
            f'fill="#e6e8eb"/><rect width="{used * width:.1f}" height="{height}" '
            f'fill="{colour}"/></svg>')


def _trace_context(a: Analysis) -> dict[str, Any]:
    """analyze --trace: the replay's summary, its top call sites and the timeline."""
    if a.trace is None:
        return {"trace": None}
    from .replay import replay_json, timeline_svg

    rep, att = a.trace
    return {"trace": replay_json(rep, att), "trace_sites": att.sites[:15],
            "trace_svg": timeline_svg(att, "map_count over time, by the call site that "
                                      "made the VMAs")}


class HtmlReporter:
    def __init__(self, strips: int = STRIPS) -> None:
        self.strips = strips

    def context(self, a: Analysis) -> dict[str, Any]:
        strips = []
        for r in a.attribution.reservations[: self.strips]:
            title = (f"{r.start:x}-{r.end:x}: {human_bytes(r.span)}, {r.vma_count:,} VMAs "
                     f"({human_bytes(r.committed)} committed, {human_bytes(r.reserved)} "
                     "reserved)")
            strips.append(Strip(title, strip_svg(a, r)))
        from .budget_html import context as budget_context

        return {
            **budget_context(a),
            "a": a,
            "title": process_title(a),
            "kernel": kernel_title(a.why),
            "gauge": gauge_svg(a),
            "strips": strips,
            "legend": PROT_CLASSES,
            "lookalike_tick": LOOKALIKE_TICK,
            "change_tick": CHANGE_TICK,
            "histogram": histogram_svg(a),
            "reasons_chart": reasons_svg(a),
            "unexplained_label": Code.UNEXPLAINED.label,
            "human_bytes": human_bytes,
            "size_range": size_range,
            "pct": pct,
            **_trace_context(a),
        }

    def render(self, a: Analysis) -> str:
        try:
            import jinja2
        except ImportError as exc:
            raise UsageError(
                "the HTML report needs jinja2 (it is missing): pip install 'vmascope[report]'"
            ) from exc
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATES)),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        return env.get_template("analyze.html.j2").render(**self.context(a))
