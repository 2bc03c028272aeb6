"""Rendering of ``vmascope snapshot``: the summary (text or JSON) and the capture line."""

from __future__ import annotations

from typing import Any

from .fmt import human_bytes


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


def print_summary(snap: Any, top: list[tuple[str, int]], out: Any = None) -> None:
    print_counts(snap.meta, len(snap), int(snap.sizes().sum()), top, out,
                 kview_summary(snap) if snap.kview is not None else None)


def counted_json(done: Any, top: list[tuple[str, int]]) -> dict[str, Any]:
    """The summary's JSON from counts alone (``procfs.live.Streamed``): the document
    ``summary_json(snap, top, vmas=False)`` gives for the whole snapshot."""
    from ..meta import summary_head

    out = summary_head(done.meta, done.count)
    out.update(_summary_tail(done.meta, done.count, top, done.total_size))
    return out


def _colour(out: Any) -> bool:
    """ANSI styles on a terminal, unless NO_COLOR is set or the terminal is dumb."""
    import os

    isatty = getattr(out, "isatty", None)
    return (bool(isatty and isatty()) and "NO_COLOR" not in os.environ
            and os.environ.get("TERM") != "dumb")


def print_counts(meta: Any, count: int, total_size: int, top: list[tuple[str, int]],
                 out: Any = None, kview: dict[str, int] | None = None, *,
                 width: int | None = None) -> None:
    """The text summary: who, the map count against the limit, the size, the top
    backings (and what the kernel view counts, when it was read). Plain text, not rich:
    the summary races ``cat maps`` (bench/bench_first.py), and rich's import was a tenth
    of its time. ``width``: the terminal's (COLUMNS, the terminal, or 80)."""
    import shutil
    import sys
    import textwrap

    from ..meta import headroom
    from .fmt import elide_path

    out = out or sys.stdout
    width = width or shutil.get_terminal_size().columns
    colour = _colour(out)

    def sgr(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if colour else text

    m = meta
    count, mmc, pct = headroom(meta, count)
    who = f"pid {m.pid}" if m.pid is not None else "dump"
    if m.comm:
        who += f" ({m.comm})"
    bits = [who]
    if m.kernel_release:
        bits.append(f"kernel {m.kernel_release}")
    bits.append(f"source {m.source}")
    lines = textwrap.wrap("  ".join(bits), width)
    styles = [(f"mappings {count} ", f"mappings {sgr(str(count), '1')} ")]
    if mmc and pct is not None:
        code = "1;31" if pct >= 90 else "33" if pct >= 50 else "32"
        used = f"{pct:.1f}% used"
        styles.append((used, sgr(used, code)))
        text = f"mappings {count} of max_map_count {mmc}: {used}, {mmc - count} left"
    else:
        text = f"mappings {count} (max_map_count unknown for this source)"
    for line in textwrap.wrap(text, width):  # a style applies where its words stay whole
        for plain, styled in styles:
            line = line.replace(plain, styled, 1)
        lines.append(line)
    lines.append(f"mapped {human_bytes(total_size, spaced=True)}")
    if kview is not None:
        lines += textwrap.wrap(f"kernel view: {kview['anon_vmas']} anon_vmas, "
                               f"{kview['open_files']} open files, {kview['fork_chains']} "
                               "VMAs with a fork chain", width)
    if top:
        nums = [(str(c), f"{100.0 * c / max(count, 1):.1f}") for _, c in top]
        w1 = max(4, *(len(n) for n, _ in nums))
        w2 = max(1, *(len(p) for _, p in nums))
        lead = 1 + w1 + 2 + w2 + 2  # the columns before the backing
        room = max(8, width - lead)
        lines.append(sgr("Top backings by VMA count", "1"))
        lines.append(sgr(f" {'VMAs':>{w1}}  {'%':>{w2}}  backing", "1"))
        for (backing, _), (n, share) in zip(top, nums):
            # a path loses folders from the left; a longer name folds under its column
            name = elide_path(backing, room)
            pieces = [name[i:i + room] for i in range(0, len(name), room)] or [""]
            lines.append(f" {n:>{w1}}  {share:>{w2}}  {pieces[0]}")
            lines += [" " * lead + piece for piece in pieces[1:]]
    out.write("\n".join(lines) + "\n")


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
