"""Rendering a replay: agreement, differing regions, top call sites, and the timeline.

Text fits 80 columns; JSON is :func:`replay_json`; the timeline is an SVG of map_count
over time with the top call sites stacked (:func:`timeline_svg`), which the HTML report
embeds and ``replay --plot FILE`` writes.
"""

from __future__ import annotations

from html import escape
from typing import Any

from ..trace.replay import Replay
from ..trace.sites import Attribution

WIDTH = 80
COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#9c755f")
OTHER_COLOUR = "#bab0ac"


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def replay_json(rep: Replay, att: Attribution | None) -> dict[str, Any]:
    tr = rep.trace
    out: dict[str, Any] = {
        "trace": tr.source, "recorder": tr.header.get("recorder"),
        "recorded_on": tr.header.get("kernel"), "kernel": rep.epoch.release,
        "epoch": rep.epoch.name, "ops": len(tr.ops), "skipped": len(tr.skipped),
        "lost_events": tr.lost, "map_count": len(rep.snapshot),
        "model_refused": [{"op": i, "line": tr.ops[i].line, "errno": e}
                          for i, e in rep.errors[:50]],
        "model_refused_count": len(rep.errors),
        "comparison": rep.comparison.to_json() if rep.comparison else None,
        "seconds": round(rep.seconds, 3),
    }
    if att is not None:
        out["attribution"] = att.to_json()
    return out


def replay_text(rep: Replay, att: Attribution | None, top: int = 10) -> str:
    tr = rep.trace
    lines: list[str] = []
    w = lines.append
    head = tr.header
    what = head.get("command") or head.get("comm") or f"pid {head.get('pid', '?')}"
    w(_cut(f"Replay of {what}", WIDTH))
    w(_cut(f"  recorded on {head.get('kernel', '?')} ({head.get('recorder', '?')}), "
           f"replayed on the model of {rep.epoch.release}", WIDTH))
    ev = head.get("events", "")
    w(f"  {len(tr.ops):,} ops replayed, {len(tr.skipped):,} events not replayed"
      + (f", {int(ev):,} recorded" if ev.isdigit() else ""))
    if tr.restarts:
        w(f"  the target exec'd another program {tr.restarts} time(s): the replay starts "
          "from the last")
    if tr.lost:
        w(f"  WARNING: {tr.lost:,} events were lost while recording: the replay misses them")
    c = rep.comparison
    if c is None:
        w("  no final snapshot in the trace: the end state cannot be compared")
    else:
        w(_cut(f"  agreement with the real end state: {c.agreement:.2f}% of the VMAs",
               WIDTH))
        w(f"    ({c.matched:,} alike; the real end state has {c.real:,}, the model "
          f"{c.model:,})")
        if c.regions:
            w("")
            w("Where the model and the real end state differ")
            w(f"  {'region':<33} {'real':>6} {'model':>6}  name")
            for r in c.regions[:top]:
                rng = f"{r.start:#x}-{r.end:#x}"
                w(_cut(f"  {rng:<33} {r.real:>6} {r.model:>6}  {r.name}", WIDTH))
    if rep.errors:
        i, e = rep.errors[0]
        w(f"  the model refused {len(rep.errors):,} ops the real kernel did (first: line "
          f"{tr.ops[i].line}, {e})")
    if att is not None and att.sites:
        w("")
        w("Top call sites creating VMAs (in the end state)")
        w(f"  {'VMAs':>7} {'extra':>7}  {'main cause':<12} call site")
        for s in [s for s in att.sites if s.vmas][:top]:
            cause = s.causes.most_common(1)[0][0] if s.causes else "-"
            w(_cut(f"  {s.vmas:>7,} {s.excess:>7,}  {cause:<12} {s.key}", WIDTH))
            callers = s.chain.split(" <- ")[1:]
            if callers:
                w(_cut(f"  {'':>7} {'':>7}  {'':<12}   from {' <- '.join(callers)}", WIDTH))
        refused = [s for s in att.sites if s.refused]
        if refused:
            w("")
            w(f"Refused merges by call site ({att.refusals:,} in all; one can have "
              "several reasons)")
            for s in sorted(refused, key=lambda s: (-s.refusals, s.key))[:top]:
                why = ", ".join(f"{k} {v:,}" for k, v in s.refused.most_common(3))
                w(_cut(f"  {s.refusals:>7,}  {s.key}: {why}", WIDTH))
    return "\n".join(lines) + "\n"


def timeline_svg(att: Attribution, title: str = "map_count over time",
                 width: int = 720, height: int = 300) -> str:
    """Stacked areas: VMAs alive at each sample, by the call site that made them."""
    tl = att.timeline
    keys: list[str] = []
    for _t, _n, by in tl:
        for k in by:
            if k not in keys and k != "other":
                keys.append(k)
    if any("other" in by for _t, _n, by in tl):
        keys.append("other")
    left, right, top_, bottom = 60, 10, 28, 40 + 16 * ((len(keys) + 1) // 2)
    ph = height - top_ - 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{height + bottom - 40}" font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="16" font-size="13">{escape(title)}</text>']
    if not tl:
        out.append(f'<text x="{left}" y="{top_ + 20}">no samples</text></svg>')
        return "\n".join(out)
    t0, t1 = tl[0][0], tl[-1][0]
    span = (t1 - t0) or 1.0
    ymax = max(n for _t, n, _b in tl) or 1
    pw = width - left - right

    def x(t: float) -> float:
        return left + pw * (t - t0) / span

    def y(v: float) -> float:
        return top_ + ph - ph * v / ymax

    base = [0.0] * len(tl)
    for k, key in enumerate(keys):
        colour = OTHER_COLOUR if key == "other" else COLOURS[k % len(COLOURS)]
        tops = [b + by.get(key, 0) for b, (_t, _n, by) in zip(base, tl)]
        pts = [f"{x(t):.1f},{y(v):.1f}" for (t, _n, _b), v in zip(tl, tops)]
        pts += [f"{x(t):.1f},{y(v):.1f}" for (t, _n, _b), v in reversed(list(zip(tl, base)))]
        out.append(f'<polygon points="{" ".join(pts)}" fill="{colour}" opacity="0.85">'
                   f'<title>{escape(key)}</title></polygon>')
        base = tops
    out.append(f'<line x1="{left}" y1="{top_ + ph}" x2="{left + pw}" y2="{top_ + ph}" '
               'stroke="#333"/>')
    out.append(f'<line x1="{left}" y1="{top_}" x2="{left}" y2="{top_ + ph}" stroke="#333"/>')
    for frac in (0, 0.5, 1):
        v = ymax * frac
        out.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{int(v):,}</text>')
        tv = t0 + span * frac
        out.append(f'<text x="{x(tv):.1f}" y="{top_ + ph + 14}" text-anchor="middle">'
                   f'{tv:.2f} s</text>')
    for k, key in enumerate(keys):
        colour = OTHER_COLOUR if key == "other" else COLOURS[k % len(COLOURS)]
        lx = left + (k % 2) * (pw // 2)
        ly = top_ + ph + 30 + 16 * (k // 2)
        out.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{lx + 14}" y="{ly}">{escape(_cut(key, 52))}</text>')
    out.append("</svg>")
    return "\n".join(out)
