"""Rendering of ``vmascope snapshot``: the summary (text or JSON) and the capture line."""

from __future__ import annotations

from typing import Any

from .fmt import PathCell, human_bytes


def summary_json(snap: Any, top: list[tuple[str, int]], *, vmas: bool) -> dict[str, Any]:
    out = snap.to_json(vmas=vmas)
    out.update(_summary_tail(snap.meta, len(snap), top, int(snap.sizes().sum())))
    if snap.kview is not None:
        out["kernel_view"] = kview_summary(snap)
    return out


def _summary_tail(meta: Any, count: int, top: list[tuple[str, int]],
                  total_size: int) -> dict[str, Any]:
    mmc = meta.max_map_count
    return {"mappings_left": None if mmc is None else mmc - count,
            "top_backings": [{"backing": b, "vmas": c} for b, c in top],
            "total_size": total_size}


def stream_json_with_vmas(pid: int | str, out: Any, *, top: int, smaps: bool = True,
                          max_map_count: int | None = None) -> None:
    """``snapshot PID --json --vmas`` as the text streams in: each piece of VMAs is
    written as soon as it is parsed (the C row writer), so memory stays flat and the
    kernel's text generation, the parse and the writing overlap. The document is the
    one :func:`write_json_with_vmas` writes, with "vmas" first (the summary needs the
    whole process)."""
    import json

    from ..procfs.live import stream_process

    dumps = json.JSONEncoder(separators=(",", ":")).encode
    first = [True]
    writer = _RowWriter(dumps)

    def rows(piece: Any) -> None:
        # nothing is written before the first VMAs: an error in reading the metadata
        # (no such pid, a kernel thread) leaves standard output empty
        text = writer(piece, 0, len(piece))
        out.write('{"vmas":[' + text if first[0] else "," + text)
        first[0] = False

    done = stream_process(pid, rows, smaps=smaps)
    if max_map_count:
        done.meta.max_map_count = max_map_count
    out.write("]," + dumps(counted_json(done, done.backings[:top]))[1:] + "\n")


def kview_summary(snap: Any) -> dict[str, int]:
    """What the kernel view counts: distinct anon_vmas and open files, VMAs with a fork
    child's chain (more than one anon_vma linked)."""
    import numpy as np

    kv = snap.kview
    return {"anon_vmas": len(np.unique(kv["anon_vma"][kv["anon_vma"] > 0])),
            "open_files": len(np.unique(kv["file"][kv["file"] > 0])),
            "fork_chains": int((kv["chain"] > 1).sum())}


def print_summary(snap: Any, top: list[tuple[str, int]], console: Any) -> None:
    print_counts(snap.meta, len(snap), int(snap.sizes().sum()), top, console,
                 kview_summary(snap) if snap.kview is not None else None)


def counted_json(done: Any, top: list[tuple[str, int]]) -> dict[str, Any]:
    """The summary's JSON from counts alone (``procfs.live.Streamed``): the document
    ``summary_json(snap, top, vmas=False)`` gives for the whole snapshot."""
    from ..meta import summary_head

    out = summary_head(done.meta, done.count)
    out.update(_summary_tail(done.meta, done.count, top, done.total_size))
    return out


def print_counts(meta: Any, count: int, total_size: int, top: list[tuple[str, int]],
                 console: Any, kview: dict[str, int] | None = None) -> None:
    """The text summary: who, the map count against the limit, the size, the top
    backings (and what the kernel view counts, when it was read)."""
    from rich.table import Table
    from rich.text import Text

    from ..meta import headroom

    m = meta
    count, mmc, pct = headroom(meta, count)
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
    console.print(f"mapped {human_bytes(total_size, spaced=True)}")
    if kview is not None:
        console.print(f"kernel view: {kview['anon_vmas']} anon_vmas, {kview['open_files']} "
                      f"open files, {kview['fork_chains']} VMAs with a fork chain")
    if top:
        table = Table(title="Top backings by VMA count", title_justify="left", box=None)
        table.add_column("VMAs", justify="right")
        table.add_column("%", justify="right")
        table.add_column("backing", overflow="fold")
        for backing, c in top:
            # not markup: names such as [heap] or [anon:x] must print as they are
            table.add_row(str(c), f"{100.0 * c / max(count, 1):.1f}", PathCell(backing))
        console.print(table)


def capture_json(res: Any, top: int) -> dict[str, Any]:
    from ..meta import SCHEMA_VERSION

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


def write_json_with_vmas(snap: Any, top: list[tuple[str, int]], out: Any,
                         chunk: int = 1 << 15) -> None:
    """``summary_json(snap, top, vmas=True)`` as compact JSON, written to ``out`` piece by
    piece: the VMA array is never built as Python objects (the C row writer reads the
    columns), so memory stays flat and the text is the same as
    ``json.dumps(..., separators=(",", ":"))`` of the whole document.
    """
    import json

    dumps = json.JSONEncoder(separators=(",", ":")).encode
    head = dumps(summary_json(snap, top, vmas=False))
    out.write(head[:-1] + (',"vmas":[' if head != "{}" else '"vmas":['))
    rows = _RowWriter(dumps)
    for lo in range(0, len(snap), chunk):
        if lo:
            out.write(",")
        out.write(rows(snap, lo, min(len(snap), lo + chunk)))
    out.write("]}\n")


class _RowWriter:
    """Rows lo..hi of a snapshot as JSON text, by the C row writer: the segments (key,
    kind, column) of ``Snapshot.vma_json``'s object. The JSON text of every name,
    protection, flag, policy and smaps key is made once: the pieces of a stream share
    these tables, which only grow (new names, flags and keys are appended)."""

    def __init__(self, dumps: Any) -> None:
        from ..model import _PERMS_TABLE
        from . import _rows as r

        self.dumps, self.r = dumps, r
        # index 0 is "no name" / "no policy" / no protection (id -1)
        self.perms = ["null", *map(dumps, _PERMS_TABLE)]
        self._texts: dict[str, list[str]] = {}

    def _table(self, kind: str, values: list[Any], first: list[str],
               suffix: str = "") -> list[str]:
        """The JSON texts of ``values`` after ``first``, extended by what is new."""
        texts = self._texts.setdefault(kind, list(first))
        texts.extend(self.dumps(v) + suffix for v in values[len(texts) - len(first):])
        return texts

    def __call__(self, snap: Any, lo: int, hi: int) -> str:
        import numpy as np

        from ..model import kview_json

        r = self.r

        def col(a: Any) -> Any:
            return np.ascontiguousarray(a[lo:hi], dtype=np.int64 if a.dtype.kind == "i"
                                        or a.itemsize < 8 else a.dtype)

        start, end = col(snap.start), col(snap.end)
        segs: list[tuple[str, int, Any, Any]] = [
            ('{"start":', r.HEX, start, None), (',"end":', r.HEX, end, None),
            (',"size":', r.UDEC, end - start, None),
            (',"perms":', r.TABLE, col(snap.perms), self.perms),
            (',"offset":', r.UDEC, col(snap.offset), None),
            (',"dev":', r.DEV, col(snap.dev), None),
            (',"inode":', r.UDEC, col(snap.inode), None),
            (',"name":', r.TABLE, col(snap.name_id),
             self._table("names", snap.names, ["null"]))]
        if snap.vmflags is not None:
            segs.append((',"flags":', r.FLAGS, col(snap.vmflags),
                         self._table("flags", snap.flag_names, [])))
        if snap.anon_vma is not None:
            segs.append((',"anon_vma":', r.NULLABLE, col(snap.anon_vma), None))
        if snap.policy_id is not None:
            segs.append((',"policy":', r.TABLE, col(snap.policy_id),
                         self._table("policies", snap.policies, ["null"])))
        if snap.kview is not None:
            segs.append((',"kernel":', r.TEXT, [self.dumps(kview_json(snap.kview_of(i)))
                                                for i in range(lo, hi)], None))
        if snap.smaps:
            segs.append(("", r.SMAPS, tuple(col(c) for c in snap.smaps.values()),
                         self._table("smaps", list(snap.smaps), [], ":")))
        segs.append(("}", r.END, None, None))
        return r.rows(hi - lo, segs)
