"""Capture a live process into a snapshot file, streaming.

The raw text of maps, smaps and numa_maps is compressed and parsed in the same pass as
it is read; the parse here only validates and counts (map count, VMAs per backing), so
memory does not grow with the text. Loading the file re-parses the raw text.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from .. import host
from ..model import SCHEMA_VERSION
from ..util import atomic_write
from .live import check_has_mappings, host_meta, meta_from_raw, read_raw_meta
from .parse import TextParser
from .reader import Background, as_pid, check_alive, proc_path, stream_proc
from .snapfile import FORMAT_VERSION, SnapshotWriter


@dataclasses.dataclass
class CaptureResult:
    path: str
    pid: int
    comm: str | None
    map_count: int
    max_map_count: int | None
    backing_counts: list[tuple[str, int]]
    raw_bytes: int
    file_bytes: int
    sections: dict[str, int]
    seconds: float


def _backing_counts(res: dict) -> list[tuple[str, int]]:
    pairs = [("[anon]", int(res["anon_count"]))] if res["anon_count"] else []
    pairs += [(name, int(c)) for name, c in zip(res["names"], res["name_counts"]) if c]
    pairs.sort(key=lambda p: -p[1])
    return pairs


def capture(
    pid: int | str,
    path: str | os.PathLike[str],
    *,
    smaps: bool = True,
    numa: bool = True,
    level: int = 1,
) -> CaptureResult:
    """Write /proc/PID's maps (and smaps, numa_maps, status, ...) to one snapshot file.

    The file appears only when complete (atomic rename); on any error or Ctrl-C
    nothing is left behind.
    """
    pid = as_pid(pid)
    t0 = time.perf_counter()
    started = time.time()
    raw = read_raw_meta(pid)
    meta = host_meta(meta_from_raw(pid, raw, source="file"))
    meta.time = started
    path = Path(path)
    counted: dict = {}
    # With smaps, the maps text is not read separately: every maps line is in smaps
    # verbatim (both print show_map_vma()), and reading it again would cost kernel time.
    names = ["smaps"] if smaps else ["maps"]
    if numa and host.has_numa_maps():
        names.append("numa_maps")
    with atomic_write(path) as fh:
        w = SnapshotWriter(fh, level=level)
        w.json_section("meta.json", {
            "schema_version": SCHEMA_VERSION,
            "format_version": FORMAT_VERSION,
            "sections": names,
            "meta": meta.to_json(),
        })
        for name in ("comm", "cmdline", "status"):
            w.section(name, raw[name])
        rollup = Background(pid, "smaps_rollup") if smaps else None
        for name in names:
            parser = TextParser(proc_path(pid, name),
                                kind="numa" if name == "numa_maps" else "maps", keep=False)
            w.begin(name)
            stream_proc(pid, name, [parser.feed, w.write])
            counted[name] = parser.finish()
        if rollup is not None:
            w.section("smaps_rollup", rollup.result())
        check_alive(pid)
        main = counted[names[0]]
        check_has_mappings(pid, main)
        w.json_section("end.json", {
            "time": time.time(),
            "map_count": int(main["n"]),
            "sections": dict(w.sections),
        })
        w.close()
    return CaptureResult(
        path=str(path),
        pid=pid,
        comm=meta.comm,
        map_count=int(main["n"]),
        max_map_count=meta.max_map_count,
        backing_counts=_backing_counts(main),
        raw_bytes=w.raw_bytes,
        file_bytes=path.stat().st_size,
        sections=dict(w.sections),
        seconds=time.perf_counter() - t0,
    )
