"""Draw docs/architecture.svg from the package's own imports.

Run ``python docs/gen_architecture.py`` after moving code between modules; a test checks
that the committed picture is what this script draws from the current tree. Each box is a
top-level module or package of vmascope; an arrow A -> B means A imports B. Rows are
layers: a module sits one row above the highest module it imports.
"""

from __future__ import annotations

import ast
import sys
from html import escape
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "vmascope"
OUT = Path(__file__).resolve().parent / "architecture.svg"

ROLE = {
    "kconst": "kernel ABI constants", "errors": "error types and exit codes",
    "model": "Snapshot, Vma", "outcome": "Outcome: one result type", "reasons":
    "reason codes, labels, advice", "util": "atomic writes, cache",
    "ops": "the op language", "kernel": "changes, epochs, rules, sim/",
    "host": "host probes (one place)", "procfs": "/proc readers, snapshot files",
    "analysis": "budget of VMAs, why not merged", "lab": "backends, executor, microVMs",
    "report": "text, JSON, HTML", "cli": "one module per verb",
    "output": "the one safe writer", "monitor": "host readings, history, exporter", "_start": "console script, signals",
    "workloads": "allocator workloads, strategies",
    "trace": "record, trace files, replay",
    "native": "builds the BPF tools and the preload",
}


def units() -> list[str]:
    out = []
    for p in sorted(SRC.iterdir()):
        if p.is_dir() and (p / "__init__.py").exists():
            out.append(p.name)
        elif p.suffix == ".py" and p.stem not in ("__init__", "__main__"):
            out.append(p.stem)
    return out


def imports_in(path: Path) -> set[str]:
    """The vmascope top-level modules one file imports (relative or absolute)."""
    pkg = ["vmascope", *path.relative_to(SRC).with_suffix("").parts][:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                full = pkg[:len(pkg) - (node.level - 1)] + (
                    node.module.split(".") if node.module else [])
            else:
                full = (node.module or "").split(".")
            if full[0] != "vmascope":
                continue
            if len(full) == 1:
                found.update(a.name for a in node.names)
            else:
                found.add(full[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("vmascope."))
    return found


def imports_of(unit: str, names: set[str]) -> set[str]:
    root = SRC / unit
    files = list(root.rglob("*.py")) if root.is_dir() else [SRC / f"{unit}.py"]
    found: set[str] = set()
    for path in files:
        found |= imports_in(path)
    return (found & names) - {unit}


def layers(graph: dict[str, set[str]]) -> dict[str, int]:
    level: dict[str, int] = {}

    def depth(u: str, seen: tuple[str, ...] = ()) -> int:
        if u in level:
            return level[u]
        if u in seen:  # an import circle: draw it, keep the layer finite
            return 0
        d = 1 + max((depth(v, seen + (u,)) for v in graph[u]), default=-1)
        level[u] = d
        return d

    for u in graph:
        depth(u)
    return level


def reduce(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop the edges a longer path already implies (the picture stays readable)."""
    def reach(u: str, skip: str) -> set[str]:
        seen: set[str] = set()
        todo = [w for w in graph[u] if w != skip]
        while todo:
            w = todo.pop()
            if w not in seen:
                seen.add(w)
                todo.extend(graph[w])
        return seen

    return {u: {v for v in vs if v not in reach(u, v)} for u, vs in graph.items()}


def draw() -> str:
    names = units()
    graph = {u: imports_of(u, set(names)) for u in names}
    level = layers(graph)
    graph = reduce(graph)
    rows: dict[int, list[str]] = {}
    for u in names:
        rows.setdefault(level[u], []).append(u)
    bw, bh, gx, gy, pad = 176, 44, 28, 56, 20
    width = max(len(r) for r in rows.values()) * (bw + gx) - gx + 2 * pad
    height = len(rows) * (bh + gy) - gy + 2 * pad + 30
    pos: dict[str, tuple[float, float]] = {}
    top = max(rows)
    for lv, members in rows.items():
        y = pad + 30 + (top - lv) * (bh + gy)
        span = len(members) * (bw + gx) - gx
        x0 = (width - span) / 2
        for i, u in enumerate(sorted(members)):
            pos[u] = (x0 + i * (bw + gx), y)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
           f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
           'font-family="sans-serif">',
           '<defs><marker id="a" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#888"/>'
           '</marker></defs>',
           f'<text x="{pad}" y="{pad + 8}" font-size="14" font-weight="bold">vmascope: '
           'who imports whom</text>']
    for u in sorted(graph):
        x1, y1 = pos[u]
        for v in sorted(graph[u]):
            x2, y2 = pos[v]
            out.append(f'<line x1="{x1 + bw / 2:.0f}" y1="{y1 + bh:.0f}" '
                       f'x2="{x2 + bw / 2:.0f}" y2="{y2:.0f}" stroke="#bbb" '
                       'stroke-width="1" marker-end="url(#a)"/>')
    for u, (x, y) in sorted(pos.items()):
        fill = "#e8f0fe" if (SRC / u).is_dir() else "#f4f4f4"
        out.append(f'<rect x="{x:.0f}" y="{y:.0f}" width="{bw}" height="{bh}" rx="6" '
                   f'fill="{fill}" stroke="#557"/>')
        out.append(f'<text x="{x + bw / 2:.0f}" y="{y + 18:.0f}" font-size="13" '
                   f'text-anchor="middle" font-weight="bold">{escape(u)}'
                   f'{"/" if (SRC / u).is_dir() else ".py"}</text>')
        out.append(f'<text x="{x + bw / 2:.0f}" y="{y + 34:.0f}" font-size="10" '
                   f'text-anchor="middle" fill="#333">{escape(ROLE.get(u, ""))}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    svg = draw()
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if OUT.read_text() == svg else 1)
    OUT.write_text(svg)
    print(f"wrote {OUT}")
