"""Rendering of ``vmascope simulate``: an Outcome as text (with the decision log) or JSON."""

from __future__ import annotations

from typing import Any

from ..outcome import Outcome


def outcome_json(result: Outcome, *, trace: bool) -> dict[str, Any]:
    data = result.to_json()
    if trace:
        data["trace"] = result.trace
    return data


def outcome_text(result: Outcome, *, trace: bool) -> str:
    lines = [f"== {result.script}: kernel {result.kernel} (epoch {result.epoch}), "
             f"map_count {result.map_count}"]
    if trace:
        lines += result.trace
        lines.append("-- final VMAs")
    for i in range(result.map_count):
        v = result.vma_json(i)
        anon = "-" if v["anon_vma"] is None else f"av{v['anon_vma']}"
        lines.append(f"{int(v['start'], 16):012x}-{int(v['end'], 16):012x} {v['perms']} "
                     f"pgoff {v['pgoff']:#x} anon_vma {anon:<5} {' '.join(v['flags'])}"
                     + (f"  {v['name']}" if v["name"] else ""))
    for e in result.errors:
        lines.append(f"error: op {e.op} (line {e.line}) failed with {e.errno}")
    for f in result.faults:
        lines.append(f"fault: op {f.op} (line {f.line}) {f.signal} at {f.addr:#x}")
    return "\n".join(lines) + "\n"
