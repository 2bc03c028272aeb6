"""Rendering of ``vmascope snapshot``: the summary (text or JSON) and the capture line."""

from __future__ import annotations

from typing import Any

from ..model import kview_json
from .fmt import human_bytes


def summary_json(snap: Any, top: list[tuple[str, int]], *, vmas: bool) -> dict[str, Any]:
    out = snap.to_json(vmas=vmas)
    count, mmc, _ = snap.headroom()
    out["mappings_left"] = None if mmc is None else mmc - count
    out["top_backings"] = [{"backing": b, "vmas": c} for b, c in top]
    out["total_size"] = int(snap.sizes().sum())
    if snap.kview is not None:
        out["kernel_view"] = kview_summary(snap)
    return out


def kview_summary(snap: Any) -> dict[str, int]:
    """What the kernel view counts: distinct anon_vmas and open files, VMAs with a fork
    child's chain (more than one anon_vma linked)."""
    import numpy as np

    kv = snap.kview
    return {"anon_vmas": len(np.unique(kv["anon_vma"][kv["anon_vma"] > 0])),
            "open_files": len(np.unique(kv["file"][kv["file"] > 0])),
            "fork_chains": int((kv["chain"] > 1).sum())}


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
    if snap.kview is not None:
        k = kview_summary(snap)
        console.print(f"kernel view: {k['anon_vmas']} anon_vmas, {k['open_files']} open "
                      f"files, {k['fork_chains']} VMAs with a fork chain")
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


def write_json_with_vmas(snap: Any, top: list[tuple[str, int]], out: Any,
                         chunk: int = 1 << 15) -> None:
    """``summary_json(snap, top, vmas=True)`` as compact JSON, written to ``out`` piece by
    piece: the VMA array is never built as Python objects, so memory stays flat and the
    text is the same as ``json.dumps(..., separators=(",", ":"))`` of the whole document.
    """
    import json

    import numpy as np

    from ..model import _PERMS_TABLE, decode_dev

    dumps = json.JSONEncoder(separators=(",", ":")).encode
    head = dumps(summary_json(snap, top, vmas=False))
    out.write(head[:-1] + (',"vmas":[' if head != "{}" else '"vmas":['))
    n = len(snap)
    names = [dumps(x) for x in snap.names]
    perms = [dumps(p) for p in _PERMS_TABLE]
    devs: dict[int, str] = {}
    flags: dict[int, str] = {}
    bits = list(enumerate(snap.flag_names))
    fields = list(snap.smaps.items())
    # every smaps field present (the usual case): one %-format for the whole object
    smaps_fmt = ',"smaps":{' + ",".join(dumps(k).replace("%", "%%") + ":%d"
                                        for k, _ in fields) + "}"
    fast = _FastRows(snap, dumps)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        cols: list[list[Any]] = [snap.start[lo:hi].tolist(), snap.end[lo:hi].tolist(),
                                 snap.perms[lo:hi].tolist(), snap.offset[lo:hi].tolist(),
                                 snap.dev[lo:hi].tolist(), snap.inode[lo:hi].tolist(),
                                 snap.name_id[lo:hi].tolist()]
        vf = None if snap.vmflags is None else snap.vmflags[lo:hi].tolist()
        av = None if snap.anon_vma is None else snap.anon_vma[lo:hi].tolist()
        po = None if snap.policy_id is None else snap.policy_id[lo:hi].tolist()
        sm = list(zip(*[col[lo:hi].tolist() for _, col in fields])) if fields else []
        full = (np.all([col[lo:hi] >= 0 for _, col in fields], axis=0).tolist()
                if fields else [False] * (hi - lo))
        if all(full) or not fields:
            out.write(("," if lo else "") + _fast_rows(snap, lo, hi, fast, dumps))
            continue
        parts = []
        for j, (s, e, p, off, dev, ino, nid) in enumerate(zip(*cols)):
            d = devs.get(dev)
            if d is None:
                d = devs[dev] = '"%02x:%02x"' % decode_dev(dev)
            row = (f'{{"start":"{s:#x}","end":"{e:#x}","size":{e - s},"perms":{perms[p]},'
                   f'"offset":{off},"dev":{d},"inode":{ino},'
                   f'"name":{names[nid] if nid >= 0 else "null"}')
            if vf is not None:
                b = vf[j]
                f = flags.get(b)
                if f is None:
                    f = flags[b] = dumps([name for k, name in bits if b >> k & 1])
                row += f',"flags":{f}'
            if av is not None:
                row += f',"anon_vma":{av[j] if av[j] >= 0 else "null"}'
            if po is not None:
                row += f',"policy":{dumps(snap.policies[po[j]]) if po[j] >= 0 else "null"}'
            if snap.kview is not None:
                row += ',"kernel":' + dumps(kview_json(snap.kview_of(lo + j)))
            if full[j]:
                row += smaps_fmt % sm[j]
            elif fields:
                some = {k: v for (k, _), v in zip(fields, sm[j]) if v >= 0}
                if some:
                    row += ',"smaps":' + dumps(some)
            parts.append(row + "}")
        if lo:
            out.write(",")
        out.write(",".join(parts))
    out.write("]}\n")


class _FastRows:
    """What the rows of one snapshot share: one %-template, and the JSON text of every
    name, protection and policy, looked up by column value with numpy."""

    def __init__(self, snap: Any, dumps: Any) -> None:
        import numpy as np

        from ..model import _PERMS_TABLE

        esc = lambda text: text.replace("%", "%%")  # noqa: E731
        tmpl = ('{"start":"%s","end":"%s","size":%d,"perms":%s,"offset":%d,"dev":%s,'
                '"inode":%d,"name":%s')
        if snap.vmflags is not None:
            tmpl += ',"flags":%s'
        if snap.anon_vma is not None:
            tmpl += ',"anon_vma":%s'
        if snap.policy_id is not None:
            tmpl += ',"policy":%s'
        if snap.kview is not None:
            tmpl += ',"kernel":%s'
        if snap.smaps:
            tmpl += ',"smaps":{' + ",".join(esc(dumps(k)) + ":%d" for k in snap.smaps) + "}"
        self.tmpl = tmpl + "}"
        # index 0 is "no name" / "no policy" (id -1)
        self.names = np.array(["null", *map(dumps, snap.names)], dtype=object)
        self.policies = np.array(["null", *map(dumps, snap.policies)], dtype=object)
        self.perms = np.array([dumps(p) for p in _PERMS_TABLE], dtype=object)


def _fast_rows(snap: Any, lo: int, hi: int, fast: _FastRows, dumps: Any) -> str:
    """Rows lo..hi as JSON, every smaps field present (or none at all)."""
    import numpy as np

    from ..model import decode_dev

    start, end = snap.start[lo:hi], snap.end[lo:hi]
    cols: list[Any] = [list(map(hex, start.tolist())), list(map(hex, end.tolist())),
                       (end - start).tolist(), fast.perms[snap.perms[lo:hi]].tolist(),
                       snap.offset[lo:hi].tolist()]
    devs, inv = np.unique(snap.dev[lo:hi], return_inverse=True)
    dev_text = np.array(['"%02x:%02x"' % decode_dev(int(d)) for d in devs], dtype=object)
    cols += [dev_text[inv].tolist(), snap.inode[lo:hi].tolist(),
             fast.names[snap.name_id[lo:hi].astype(np.int64) + 1].tolist()]
    if snap.vmflags is not None:
        bits, inv = np.unique(snap.vmflags[lo:hi], return_inverse=True)
        flag_text = np.array([dumps([name for k, name in enumerate(snap.flag_names)
                                     if int(b) >> k & 1]) for b in bits], dtype=object)
        cols.append(flag_text[inv].tolist())
    if snap.anon_vma is not None:
        cols.append([str(a) if a >= 0 else "null" for a in snap.anon_vma[lo:hi].tolist()])
    if snap.policy_id is not None:
        cols.append(fast.policies[snap.policy_id[lo:hi].astype(np.int64) + 1].tolist())
    if snap.kview is not None:
        cols.append([dumps(kview_json(snap.kview_of(i))) for i in range(lo, hi)])
    cols += [col[lo:hi].tolist() for col in snap.smaps.values()]
    return ",".join(map(fast.tmpl.__mod__, zip(*cols)))
