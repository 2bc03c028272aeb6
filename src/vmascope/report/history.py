"""Rendering a watch history: a text summary, or a plot (PNG, or HTML with the PNG) of the
map count with the forecast line, its 95 % band and the limit."""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..monitor.forecast import Forecast, fmt_eta
from ..monitor.store import Sample


def summary(title: str, samples: Sequence[Sample], f: Forecast | None) -> str:
    first, last = samples[0], samples[-1]
    limit = last.max_map_count
    counts = [s.map_count for s in samples]
    pct = f" ({100 * last.map_count / limit:.1f} % of {limit})" if limit else ""
    lines = [
        title[:80],
        f"  {len(samples)} samples, {_when(first.time)} to {_when(last.time)}",
        f"  map count: last {last.map_count}{pct}, min {min(counts)}, max {max(counts)}",
    ]
    if last.causes:
        top = sorted(last.causes.items(), key=lambda kv: -kv[1])[:3]
        lines.append("  split by: " + ", ".join(f"{k} {v}" for k, v in top if v))
    if f is None:
        lines.append("  forecast: too few samples")
    else:
        lines.append(f"  growth: {f.per_minute:+.1f} VMAs/min over the last {f.n} samples")
        lines.append(f"  limit reached in: {fmt_eta(f.eta)} (95 %: "
                     f"{fmt_eta(f.eta_early)} to {fmt_eta(f.eta_late)})")
    return "\n".join(line[:80] for line in lines) + "\n"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def plot_png(title: str, samples: Sequence[Sample], f: Forecast | None) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = samples[0].time
    x = np.array([s.time - t0 for s in samples]) / 60
    y = np.array([s.map_count for s in samples])
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    ax.plot(x, y, ".-", label="map count", color="#4c72b0")
    limit = samples[-1].max_map_count
    if f is not None and f.per_minute > 0:
        end = (f.now - t0) / 60 + (f.eta_late if f.eta_late is not None else
                                   (f.eta or 600) * 2) / 60
        end = min(end, (f.now - t0) / 60 + 7 * 1440)
        xs = np.linspace(x[0], max(end, x[-1]), 200)
        ys = f.count + (xs - (f.now - t0) / 60) * f.per_minute
        ax.plot(xs, ys, "--", color="#c44e52", label=f"trend {f.per_minute:+.0f}/min")
        if f.eta is not None:
            ax.axvline((f.now - t0) / 60 + f.eta / 60, color="#c44e52", lw=0.8)
        lo = (f.now - t0) / 60 + (f.eta_early or 0) / 60
        hi = (f.now - t0) / 60 + (f.eta_late / 60 if f.eta_late is not None else end)
        if f.eta is not None:
            ax.axvspan(lo, hi, color="#c44e52", alpha=0.15,
                       label=f"limit in {fmt_eta(f.eta)} (95 % band)")
    if limit:
        ax.axhline(limit, color="black", lw=1, label=f"vm.max_map_count {limit}")
    ax.set_xlabel(f"minutes since {_when(t0)}")
    ax.set_ylabel("VMAs")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def page_html(title: str, samples: Sequence[Sample], f: Forecast | None) -> str:
    png = base64.b64encode(plot_png(title, samples, f)).decode()
    text = html.escape(summary(title, samples, f))
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>"
            f"{html.escape(title)}</title></head>\n<body><pre>{text}</pre>\n"
            f"<img alt=\"map count over time\" src=\"data:image/png;base64,{png}\">\n"
            "</body></html>\n")


def to_json(title: str, samples: Sequence[Sample], f: Forecast | None) -> dict[str, Any]:
    return {"title": title, "samples": [[s.time, s.map_count] for s in samples],
            "forecast": f.to_json() if f else None}
