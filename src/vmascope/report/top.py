"""Rendering ``vmascope top``: a rich table that fits the terminal, and JSON."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..analysis.budget import CAUSE_LABELS, CAUSE_SHORT
from ..monitor.reading import Reading
from ..monitor.top import SORTS, Row

HELP = "q quit  s delay  P %limit  R growth  M RSS  N pid  space refresh"


def _size(n: int) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _short(label: str | None, width: int) -> str:
    if not label:
        return ""
    label = os.path.basename(label) if label.startswith("/") else label
    return label if len(label) <= width else label[:width - 1] + "~"


def note_lines(reading: Reading, width: int) -> list[str]:
    return _wrap(reading.note() or "", width)


def table(reading: Reading, rows: Sequence[Row], sort: str, delay: float,
          width: int = 80, prompt: str | None = None) -> Group:
    limit = reading.limit
    title = (f"vmascope top: {len(reading.processes)} processes, limit "
             f"{limit if limit else '?'}, every {delay:g} s, by {SORTS[sort]}")
    t = Table(box=None, pad_edge=False, expand=True, header_style="bold reverse")
    t.add_column("PID", justify="right", no_wrap=True)
    t.add_column("COMMAND", no_wrap=True, max_width=15)
    t.add_column("VMAS", justify="right", no_wrap=True)
    t.add_column("%LIM", justify="right", no_wrap=True)
    t.add_column("/MIN", justify="right", no_wrap=True)
    t.add_column("RSS", justify="right", no_wrap=True)
    spare = max(20, width - 52)
    wide = width >= 110  # room for the long header and the causes' whole labels
    t.add_column("BIGGEST RESERVATION" if wide else "RESERVATION", no_wrap=True, ratio=3,
                 overflow="crop")
    t.add_column("CAUSE", no_wrap=True, ratio=2, overflow="crop")
    for r in rows:
        pct = f"{r.percent:.1f}" if r.percent is not None else "?"
        style = ("bold red" if (r.percent or 0) >= 90 else
                 "yellow" if (r.percent or 0) >= 70 else "")
        growth = "" if r.growth_per_min is None else f"{r.growth_per_min:+.0f}"
        big = (f"{r.biggest_count} {_short(r.biggest, spare)}" if r.biggest else "")
        cause = (CAUSE_LABELS if wide else CAUSE_SHORT).get(r.cause, r.cause) if r.cause else ""
        t.add_row(str(r.pid), _short(r.comm, 15), str(r.map_count), Text(pct, style),
                  growth, _size(r.rss_bytes), big, _short(cause, spare // 2))
    foot = [Text(line[:width], "dim") for line in note_lines(reading, width)]
    last = Text(prompt[:width], "bold") if prompt else Text(HELP[:width], "dim")
    return Group(Text(title[:width], "bold"), t, *foot, last)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) if text else []


def to_json(reading: Reading, rows: Sequence[Row]) -> dict[str, Any]:
    return {**reading.to_json(), "processes": [r.to_json() for r in rows]}
