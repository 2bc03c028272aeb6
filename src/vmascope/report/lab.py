"""Rendering of ``lab run``, ``lab verify`` and ``kernels list``: JSON documents and
rich tables, built from what vmascope.lab.session returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..outcome import IGNORED_FLAGS, Outcome
from ..lab.compare import pages


# -- lab run ------------------------------------------------------------------------------


def run_json(runs: Sequence[Any]) -> Any:
    """The ``lab run --json`` document: one object per script (a list for several)."""
    docs = []
    for sr in runs:
        entries = []
        for e in sr.kernels:
            real = e.real.to_json()
            sim = e.sim.to_json()
            entries.append({"kernel": e.kernel.name, "release": e.release,
                            "seconds": round(e.seconds, 2), "real": real, "simulator": sim,
                            "agree": e.agree, "differences": e.differences,
                            "first_error": e.first_error(sr.ops)})
        docs.append({"script": sr.name, "ops": len(sr.ops), "kernels": entries})
    return docs[0] if len(docs) == 1 else docs


def _vma_text(o: Outcome, i: int) -> str:
    snap = o.snapshot
    flags = " ".join(sorted((snap.flags(i) or frozenset()) - IGNORED_FLAGS))
    text = (f"{pages(int(snap.start[i]))}-{pages(int(snap.end[i]))} {snap.perms_text(i)} "
            f"{flags}")
    name = snap.name(i)
    return text + (f" {name}" if name else "")


def print_run(runs: Sequence[Any], console: Any) -> None:
    """``lab run`` as tables: a summary per script, then the VMAs side by side (stacked per
    kernel when the terminal is too narrow for all of them)."""
    from rich.table import Table

    for sr in runs:
        summary = Table(title=f"{sr.name}: {len(sr.ops)} ops (real / simulator)")
        for col in ("kernel", "release", "VMAs", "errors", "faults", "verdict"):
            summary.add_column(col)
        for e in sr.kernels:
            verdict = "[green]agree[/]" if e.agree else "[bold red]DIFFER[/]"
            summary.add_row(e.kernel.name, e.release,
                            f"{e.real.map_count} / {e.sim.map_count}",
                            f"{len(e.real.errors)} / {len(e.sim.errors)}",
                            f"{len(e.real.faults)} / {len(e.sim.faults)}", verdict)
        console.print(summary)
        if all(e.real.map_count <= 40 for e in sr.kernels):
            _print_vmas(sr.kernels, console)
        for e in sr.kernels:
            fe = e.first_error(sr.ops)
            if fe:
                console.print(f"{e.kernel.name}: first error at op {fe['op']} (line "
                              f"{fe['line']}): {fe['text']} -> {fe['errno']}; "
                              f"{e.real.map_count} VMAs in the arena, "
                              f"{e.real.process_map_count} in the process")
            for d in e.differences:
                console.print(f"[red]{e.kernel.name}: {d}[/]")


def _cells(e: Any, i: int) -> tuple[str, str]:
    """Row ``i`` of a kernel's VMAs: the real one, and the simulator's = or ≠ its own."""
    r = _vma_text(e.real, i) if i < e.real.map_count else ""
    s = _vma_text(e.sim, i) if i < e.sim.map_count else ""
    if s != r:
        return f"[red]{r}[/]", f"[bold red]≠ {s or '(none)'}[/]"
    return r, "[green]=[/]" if s else ""


def _side_by_side_width(entries: Sequence[Any]) -> int:
    """Columns the side-by-side table needs (each cell with its borders and padding)."""
    from rich.text import Text

    width = 1
    for e in entries:
        rows = max(e.real.map_count, e.sim.map_count)
        for col in range(2):
            texts = [Text.from_markup(_cells(e, i)[col]).cell_len for i in range(rows)]
            head = len(f"{e.kernel.name} {'sim' if col else 'real'}")
            width += max([head, *texts]) + 3
    return width


def _print_vmas(entries: Sequence[Any], console: Any) -> None:
    from rich.table import Table

    if _side_by_side_width(entries) > console.width:
        # too narrow for every kernel side by side: one table per kernel, stacked
        for e in entries:
            t = Table(title=f"{e.kernel.name} {e.release}: arena VMAs (pages)")
            t.add_column("real", overflow="fold")
            t.add_column("simulator: = or ≠", overflow="fold")
            for i in range(max(e.real.map_count, e.sim.map_count)):
                t.add_row(*_cells(e, i))
            console.print(t)
        return
    vmas = Table(title="VMAs in the arena (pages): real, and the simulator's = or ≠")
    for e in entries:
        vmas.add_column(f"{e.kernel.name} real")
        vmas.add_column(f"{e.kernel.name} sim")
    rows = max(max(e.real.map_count, e.sim.map_count) for e in entries)
    for i in range(rows):
        vmas.add_row(*[c for e in entries for c in _cells(e, i)])
    console.print(vmas)


# -- lab verify ---------------------------------------------------------------------------


def verdict_json(v: Any) -> dict[str, Any]:
    from ..lab.verify import script_lines

    return {
        "kernel": v.kernel.name, "release": v.release, "family": v.family,
        "cases": v.cases, "agreed": v.agreed,
        "percent": round(v.percent, 3), "seconds": round(v.seconds, 1),
        "scripts_per_minute": round(60 * v.cases / v.seconds) if v.seconds else None,
        "disagreements": len(v.disagreements),
        "minimise_seconds": round(v.minimise_seconds, 1),
        "minimised": [{"script": script_lines(d.script), "differences": d.differences,
                       "similar": d.similar, "real": d.real.to_json(),
                       "simulator": d.sim.to_json() if d.sim is not None else None}
                      for d in v.minimised],
    }


def print_verdicts(verdicts: Sequence[Any], console: Any) -> None:
    from rich.table import Table

    from ..lab.verify import script_lines

    table = Table(title="lab verify: real kernel vs simulator")
    families = len({v.family for v in verdicts}) > 1 or any(
        v.family != "random" for v in verdicts)
    for col in ("kernel", *(("family",) if families else ()), "release", "cases", "agree",
                "%", "scripts/min"):
        table.add_column(col)
    for v in verdicts:
        rate = f"{60 * v.cases / v.seconds:.0f}" if v.seconds else "-"
        pct = f"{v.percent:.2f}"
        table.add_row(v.kernel.name, *((v.family,) if families else ()),
                      v.release.split("+")[0] if families else v.release, str(v.cases),
                      str(v.agreed), pct if v.agreed == v.cases else f"[bold red]{pct}[/]",
                      rate)
    console.print(table)
    for v in verdicts:
        for i, d in enumerate(v.minimised, 1):
            console.print(f"\n[bold]{v.kernel.name} {v.family} disagreement {i}[/] "
                          f"({d.similar} "
                          f"script(s) of this kind; minimised from {len(d.original)} to "
                          f"{len(d.script)} ops):")
            for line in script_lines(d.script):
                console.print(f"    {line}")
            for diff in d.differences or ["(no longer disagrees when re-run)"]:
                console.print(f"  [red]{diff}[/]")


# -- lab diff-kernels ---------------------------------------------------------------------


def diff_json(diff: Any) -> dict[str, Any]:
    from ..lab.verify import script_lines

    return {
        "kernels": [diff.a.name, diff.b.name], "releases": [diff.release_a, diff.release_b],
        "cases": diff.cases, "differing": diff.differing, "seconds": round(diff.seconds, 1),
        "differences": [
            {"script": script_lines(d.script), "differences": d.differences,
             "similar": d.similar, "explained_by": e.switches, "citations": e.citations,
             "verdict": e.verdict}
            for d, e in diff.minimised],
    }


def print_diff(diff: Any, console: Any) -> None:
    from ..lab.verify import script_lines

    console.print(f"[bold]{diff.a.name}[/] vs [bold]{diff.b.name}[/]: {diff.differing} of "
                  f"{diff.cases} scripts differ")
    console.print(f"  ({diff.release_a}; {diff.release_b})")
    if not diff.differing:
        console.print("No difference: the two kernels did the same with every script.")
    for i, (d, e) in enumerate(diff.minimised, 1):
        console.print(f"\n[bold]difference {i}[/] ({d.similar} script(s) of this kind; "
                      f"minimised from {len(d.original)} to {len(d.script)} ops):")
        for line in script_lines(d.script):
            console.print(f"    {line}")
        for text in d.differences:
            console.print(f"  {text}")
        if e.verdict == "one switch":
            for s, c in zip(e.switches, e.citations):
                console.print(f"  [green]explained by[/] {s}: {c}")
        elif e.verdict == "several switches":
            console.print("  explained only by several switches together: "
                          + ", ".join(e.switches))
        else:
            console.print(f"  [yellow]{e.verdict}[/]")


# -- kernels list -------------------------------------------------------------------------


def print_kernels(rows: Sequence[dict[str, Any]], console: Any) -> None:
    """``kernels list``: a table when it fits the terminal (the paths under it when only
    they do not), else a block per kernel; nothing is cut, a long path folds."""
    from rich.table import Table

    cols = ("name", "suite", "fetched", "version", "release", "path")
    cells = [(r["name"], r["suite"] or "-", "yes" if r["fetched"] else "no",
              r["version"] or "-", r["release"] or "-", r["path"] or "-") for r in rows]
    widths = [max(len(c[i]) for c in [cols, *cells]) for i in range(len(cols))]

    def fits(n: int) -> bool:  # a rich table of the first n columns: 3 per cell + 1
        return sum(widths[:n]) + 3 * n + 1 <= console.width

    if not fits(len(cols) - 1):
        _print_kernel_blocks(cells, console)
        return
    below = not fits(len(cols))  # the paths go under the table
    shown = cols[:-1] if below else cols
    table = Table(title="lab kernels")
    for col in shown:
        table.add_column(col, no_wrap=True)
    for c in cells:
        table.add_row(*c[: len(shown)])
    console.print(table)
    if below:
        for c in cells:
            if c[-1] != "-":
                _print_labelled(console, f"{c[0]}: {c[-1]}", f"{c[0]}:", c[-1])


def _print_labelled(console: Any, line: str, label: str, value: str) -> None:
    """``line`` (a label and its value); wider than the terminal, the label and then the
    value on a line of its own, folded only if it is wider still."""
    from rich.text import Text

    if len(line) > console.width:
        console.print(Text(label))
        line = f"  {value}"
    console.print(Text(line), overflow="fold")


def _print_kernel_blocks(cells: Sequence[tuple[str, ...]], console: Any) -> None:
    """Too narrow for the table: a block per kernel, its name and suite on the first line
    and a labelled line for each of version, release and path (a value too long for its
    label's line on a line of its own)."""
    from rich.text import Text

    console.print(Text("lab kernels", style="bold"))
    for name, suite, fetched, version, release, path in cells:
        head = name if suite == "-" else f"{name} ({suite})"
        console.print(Text(head + ("" if fetched == "yes" else ", not fetched"),
                           style="bold"), overflow="fold")
        for label, value in (("version", version), ("release", release), ("path", path)):
            if value != "-":
                _print_labelled(console, f"  {label:<8} {value}", f"  {label}:", value)
