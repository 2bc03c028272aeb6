"""Rendering of ``vmascope snapshot``: the summary (text or JSON) and the capture line."""

from __future__ import annotations

from typing import Any

from .fmt import human_bytes


def summary_json(snap: Any, top: list[tuple[str, int]], *, vmas: bool) -> dict[str, Any]:
    out = snap.to_json(vmas=vmas)
    count, mmc, _ = snap.headroom()
    out["mappings_left"] = None if mmc is None else mmc - count
    out["top_backings"] = [{"backing": b, "vmas": c} for b, c in top]
    out["total_size"] = int(snap.sizes().sum())
    return out


def print_summary(snap: Any, top: list[tuple[str, int]], console: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    m = snap.meta
    count, mmc, pct = snap.headroom()
    who = f"pid {m.pid}" if m.pid is not None else "dump"
    if m.comm:
        who += f" ({m.comm})"
    bits = [who]
    if m.kernel_release:
        bits.append(f"kernel {m.kernel_release}")
    bits.append(f"source {m.source}")
    console.print(Text("  ".join(bits)))
    if mmc:
        left = mmc - count
        style = "bold red" if pct is not None and pct >= 90 else (
            "yellow" if pct is not None and pct >= 50 else "green")
        console.print(
            f"mappings [bold]{count}[/] of max_map_count {mmc}: "
            f"[{style}]{pct:.1f}% used[/], {left} left"
        )
    else:
        console.print(f"mappings [bold]{count}[/] (max_map_count unknown for this source)")
    console.print(f"mapped {human_bytes(int(snap.sizes().sum()), spaced=True)}")
    if top:
        table = Table(title="Top backings by VMA count", title_justify="left", box=None)
        table.add_column("VMAs", justify="right")
        table.add_column("%", justify="right")
        table.add_column("backing", overflow="fold")
        for backing, c in top:
            # Text, not markup: names such as [heap] or [anon:x] must print as they are
            table.add_row(str(c), f"{100.0 * c / max(count, 1):.1f}", Text(backing))
        console.print(table)


def capture_json(res: Any, top: int) -> dict[str, Any]:
    from ..model import SCHEMA_VERSION

    return {
        "schema_version": SCHEMA_VERSION,
        "path": res.path,
        "pid": res.pid,
        "comm": res.comm,
        "map_count": res.map_count,
        "max_map_count": res.max_map_count,
        "top_backings": [{"backing": b, "vmas": c} for b, c in res.backing_counts[:top]],
        "raw_bytes": res.raw_bytes,
        "file_bytes": res.file_bytes,
        "sections": res.sections,
        "seconds": round(res.seconds, 3),
    }


def capture_text(res: Any) -> str:
    pct = ""
    if res.max_map_count:
        pct = f" ({100.0 * res.map_count / res.max_map_count:.1f}% of {res.max_map_count})"
    return (f"vmascope: wrote {res.path} ({res.file_bytes:,} bytes): pid {res.pid} "
            f"({res.comm}), {res.map_count} mappings{pct}, "
            f"{human_bytes(res.raw_bytes, spaced=True)} of /proc text\n")
