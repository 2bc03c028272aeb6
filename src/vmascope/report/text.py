"""Terminal rendering with rich: short tables that fit an 80-column terminal."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..analysis.budget import CAUSE_LABELS as REASON_BUDGET
from ..reasons import Code
from .fmt import PathCell, human_bytes, kernel_title, pct, process_title, size_range

if TYPE_CHECKING:
    from ..analysis import Analysis

LEVEL_STYLE = {"ok": "green", "elevated": "yellow", "warning": "bold yellow",
               "critical": "bold red", "unknown": "dim"}
MAX_ROWS = 8
BAR = 20


class _Table(Table):
    """A rich Table whose cells are plain text: names like [heap] are not markup."""

    def add_row(self, *cells: RenderableType | None, **kw: object) -> None:  # type: ignore[override]
        super().add_row(*(Text(c) if isinstance(c, str) else c for c in cells), **kw)  # type: ignore[arg-type]


def _table(title: str, *columns: tuple[str, str]) -> Table:
    t = _Table(title=Text(title) if title else None, title_justify="left", title_style="bold",
               box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name, justify in columns:
        t.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    return t


def headroom_part(a: Analysis) -> RenderableType:
    h = a.headroom
    line = Text()
    line.append("Headroom: ", style="bold")
    if h.max_map_count is None:
        line.append(f"{h.map_count:,} mappings; vm.max_map_count unknown")
        return line
    line.append(f"{h.map_count:,} of {h.max_map_count:,} mappings "
                f"({h.percent_used:.1f}%), {h.left:,} left  ")
    if h.level == "ok" and a.fixes and a.budget is not None and a.budget.excess:
        # far from the limit, yet most of the VMAs are avoidable: not simply "OK"
        line.append("FRAGMENTED", style=LEVEL_STYLE.get("warning", ""))
        return line
    line.append(h.level.upper(), style=LEVEL_STYLE.get(h.level, ""))
    return line


def backing_part(a: Analysis) -> RenderableType:
    t = _table("Mappings by backing", ("backing", "left"), ("VMAs", "right"),
               ("share", "right"), ("size", "right"))
    for row in a.attribution.by_backing:
        t.add_row(row.backing, f"{row.vma_count:,}", pct(row.vma_count, a.headroom.map_count),
                  human_bytes(row.bytes))
    return t


def reservations_part(a: Analysis) -> RenderableType:
    at = a.attribution
    shown = at.reservations[:MAX_ROWS]
    if not shown:
        return Text("Reservations: none (no run of private anonymous VMAs holds PROT_NONE "
                    "space or more than one VMA)")
    title = (f"Reservations (contiguous private anonymous VMAs): {at.reservation_count:,}, "
             f"the largest {len(shown)}")
    t = _table(title, ("start", "left"), ("span", "right"), ("VMAs", "right"),
               ("of all", "right"), ("committed", "right"), ("reserved", "right"),
               ("avg VMA", "right"))
    for r in shown:
        t.add_row(f"{r.start:x}", human_bytes(r.span), f"{r.vma_count:,}",
                  pct(r.vma_count, a.headroom.map_count), human_bytes(r.committed),
                  human_bytes(r.reserved), human_bytes(round(r.average_vma_size)))
    parts: list[RenderableType] = [t]
    if at.largest is not None:
        parts.append(Text(f"Largest reservation/total mappings: {at.largest.vma_count:,}/"
                          f"{a.headroom.map_count:,}"))
    return Group(*parts)


def fragmentation_part(a: Analysis) -> RenderableType:
    f = a.fragmentation
    head = Text()
    head.append("Fragmentation: ", style="bold")
    head.append(f"{f.lookalike_pairs:,} adjacent look-alike pairs in {f.run_count:,} runs "
                f"({f.vmas_in_runs:,} VMAs). If every run merged: {f.ideal_count:,} VMAs, "
                f"{f.saved:,} fewer.")
    parts: list[RenderableType] = [head]
    if f.runs:
        t = _table("Longest runs", ("start", "left"), ("VMAs", "right"), ("size", "right"),
                   ("perms", "left"), ("backing", "left"))
        for r in f.runs[:MAX_ROWS]:
            t.add_row(f"{r.start:x}", f"{r.vma_count:,}", human_bytes(r.bytes), r.perms,
                      PathCell(r.backing))
        parts.append(t)
    if f.histogram:
        t = _table("VMA sizes", ("size", "left"), ("all VMAs", "right"), ("in runs", "right"),
                   ("", "left"))
        top = max(b.all_vmas for b in f.histogram) or 1
        for b in f.histogram:
            if not b.all_vmas:
                continue
            bar = "#" * max(1, round(BAR * b.all_vmas / top))
            t.add_row(size_range(b.low, b.high), f"{b.all_vmas:,}", f"{b.in_runs:,}", bar)
        parts.append(t)
    return Group(*parts)


def why_part(a: Analysis) -> RenderableType:
    w = a.why
    head = Text()
    head.append("Why not merged: ", style="bold")
    head.append(kernel_title(w))
    parts: list[RenderableType] = [head]
    if w.note:
        parts.append(Text(f"Note: {w.note}", style="yellow"))
    if w.pairs == 0:
        parts.append(Text("no adjacent look-alike pairs: nothing to explain"))
        return Group(*parts)
    t = _table("", ("pairs", "right"), ("reason", "left"), ("confidence", "left"))
    for r in w.reasons:
        t.add_row(f"{r.count:,} of {w.pairs:,}", r.label, r.confidence)
    if w.unexplained:
        t.add_row(f"{w.unexplained:,} of {w.pairs:,}", Code.UNEXPLAINED.label, "-")
    parts.append(t)
    for r in w.reasons[:3]:
        parts.append(Text(f"{r.reason}: {r.detail} [{r.rule}, {r.citation}; e.g. at "
                          f"{r.example:x}]", style="dim"))
    if a.kernel_check is not None:
        parts += [Text(line) for line in a.kernel_check.lines()]
    return Group(*parts)


def advice_part(a: Analysis) -> RenderableType:
    parts: list[RenderableType] = []
    if a.healthy_line and a.advice:
        # nothing worth fixing: one plain line, not hypotheses about normal splits
        t = Text()
        t.append("Advice: ", style="bold")
        t.append("none; nothing here is worth fixing.")
        return t
    for adv in a.advice:
        t = Text()
        t.append("Advice: ", style="bold")
        t.append(adv.hypothesis + "\n")
        t.append("Test it: ", style="bold")
        t.append(adv.test_command + "\n")
        t.append("If confirmed: ", style="bold")
        t.append(adv.mitigation)
        parts.append(t)
    return Group(*parts)


def budget_part(a: Analysis) -> RenderableType:
    from .budget_view import cause_rows, headline

    b = a.budget
    if b is None:
        return Text("")
    head = Text()
    head.append("Budget: ", style="bold")
    head.append(headline(a))
    parts: list[RenderableType] = [head]
    if b.excess:
        t = _table(f"Where the {b.excess:,} VMAs beyond the ideal {b.ideal:,} come from",
                   ("boundaries", "right"), ("share", "right"), ("cause", "left"),
                   ("which", "left"))
        for _, label, n, what in cause_rows(b.totals):
            t.add_row(f"{n:,}", pct(n, b.excess), label, what)
        parts.append(t)
        t = _table("Reservations with the most VMAs", ("start", "left"), ("VMAs", "right"),
                   ("ideal", "right"), ("what", "left"), ("commonest cause", "left"))
        for r in b.reservations[:5]:
            if r.vma_count < 2:
                break
            top = r.causes.dominant()
            t.add_row(f"{r.start:x}", f"{r.vma_count:,}", "1",
                      PathCell(r.label + (f" ({r.owner})" if r.owner else "")),
                      REASON_BUDGET.get(top or "", "-"))
        parts.append(t)
    for p in a.patterns[:6]:
        parts.append(Text(f"Pattern: {p.name}: {p.detail}"))
    for f in a.runtimes:
        parts.append(Text(f"Runtime: {f.runtime}"
                          + (f" ({f.detail})" if f.detail else "")
                          + f", {f.confidence}: " + "; ".join(f.evidence[:2])))
    for fx in a.fixes[:3]:
        t = Text()
        t.append("Fix: ", style="bold")
        t.append(fx.change + "\n")
        t.append("Effect: ", style="bold")
        t.append(fx.effect + "\n")
        t.append("Show it: ", style="bold")
        t.append(fx.command)
        if fx.scripts:
            t.append(" (the scripts are in the JSON report: fixes[].scripts)")
        parts.append(t)
    if a.limit is not None:
        parts.append(Text(f"Limit: recommended vm.max_map_count {a.limit.recommended:,} ("
                          + "; ".join(a.limit.reasoning[1:]) + ")"))
    return Group(*parts)


class TextReporter:
    def __init__(self, width: int = 80, color: bool = False) -> None:
        self.width = width
        self.color = color

    def renderables(self, a: Analysis) -> list[RenderableType]:
        title = Text(f"vmascope analyze: {process_title(a)}", style="bold")
        parts = [title, budget_part(a), headroom_part(a), backing_part(a),
                 reservations_part(a), fragmentation_part(a), why_part(a), advice_part(a)]
        if a.trace is not None:
            from .replay import replay_text

            parts.append(Text(replay_text(*a.trace).rstrip("\n")))
        return parts

    def print(self, a: Analysis, console: Console) -> None:
        for part in self.renderables(a):
            console.print(part)
            console.print()

    def render(self, a: Analysis) -> str:
        buf = io.StringIO()
        console = Console(file=buf, width=self.width, force_terminal=self.color,
                          color_system="standard" if self.color else None, highlight=False,
                          soft_wrap=False)
        self.print(a, console)
        return buf.getvalue()
