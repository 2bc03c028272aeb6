"""``vmascope import-strace``: an strace log a user already has, written as a trace.

The log's events go through the same converter as a recording's. The snapshots come from
the user (``--first``, ``--final``: anything ``vmascope analyze`` reads, a snapshot file
or a maps/smaps text, embedded as given); without ``--first`` the trace cannot be
replayed, without ``--final`` it has no end state to compare with and no inferred
faults. Both are said in the trace's header.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

from ..errors import ParseError, UsageError
from ..model import Snapshot
from .convert import Converter
from .format import TraceWriter
from .record import FAULT_RULE_STRACE, snapshot_facts


@dataclasses.dataclass
class ImportResult:
    events: int
    ops: int
    inferred: int
    skipped: dict[str, int]
    pid: int


def _snapshot_file(path: str | None) -> tuple[bytes | None, Snapshot | None]:
    if path is None:
        return None, None
    from ..procfs.load import load_stream, open_input

    with open_input(Path(path), path, "a snapshot file") as fh:
        data = fh.read()
    return data, load_stream(io.BytesIO(data), path)


def import_strace(log: str | os.PathLike[str], out: str | os.PathLike[str], *,
                  pid: int | None = None, first: str | None = None,
                  final: str | None = None) -> ImportResult:
    from ..procfs.load import open_input
    from .faults import infer_faults
    from .strace import ParseStats, parse_strace

    source = str(log)
    with open_input(Path(log), source, "an strace log") as fh:
        data = fh.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ParseError(source, line, "a text strace log (not valid UTF-8)") from None
    first_data, first_snap = _snapshot_file(first)
    final_data, final_snap = _snapshot_file(final)
    stats = ParseStats()
    events = list(parse_strace(text.splitlines(), source, pid=pid, maps=first_snap,
                               stats=stats))
    if not events:
        raise ParseError(source, None, "strace lines of mapping calls (none found)")
    target = pid if pid is not None else next((e.pid for e in events if e.pid), 0)
    if not any(e.pid == target for e in events):
        raise UsageError(f"{source}: no call of pid {target} in the log")
    if final_snap is not None:
        events = infer_faults(events, final_snap)
    heap, files = snapshot_facts(first_snap) if first_snap is not None else (False, {})
    conv = Converter(target, heap_known=heap, files=files)
    header = {"recorder": "strace-import", "pid": target, "log": source,
              "kernel": (first_snap or final_snap).meta.kernel_release
              if (first_snap or final_snap) is not None else None,
              "faults": FAULT_RULE_STRACE if final_snap is not None else
              "none: strace sees no faults and no --final snapshot was given"}
    with TraceWriter(out, header) as w:
        if first_data is not None:
            w.snapshot("first", first_data)
        else:
            w.comment("no first snapshot (import-strace --first): replay cannot run")
        for op, skip, note in conv.lines(events):
            if op is not None:
                w.op(op, note)
            else:
                w.skipped(skip, note)
        if final_data is not None:
            w.snapshot("last", final_data)
        w.header({"events": conv.stats.events, "lost": 0,
                  "skipped": " ".join(f"{k}={v}" for k, v in sorted(conv.stats.skipped.items()))})
    return ImportResult(events=conv.stats.events, ops=conv.stats.ops,
                        inferred=conv.stats.inferred, skipped=dict(conv.stats.skipped),
                        pid=target)
