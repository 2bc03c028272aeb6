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
from typing import Any

import numpy as np

from .. import host
from ..errors import KernelViewUnavailable
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


def _check_kview(pid: int, before: Any, main: dict) -> None:
    """The kernel view read again must equal the one read before the text, and count
    the VMAs the text has (all but the gate page, [vsyscall], which is no VMA)."""
    from . import kview

    after = kview.read_records(pid)
    fields = ["start", "end", "vm_flags", "anon_vma", "file"]
    gate = sum(int(c) for name, c in zip(main["names"], main["name_counts"])
               if name == "[vsyscall]")
    if (len(after) != len(before) or len(before) + gate != int(main["n"])
            or any(not np.array_equal(before[f], after[f]) for f in fields)):
        raise _Moved()


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
    kernel_view: bool = False,
) -> CaptureResult:
    """Write /proc/PID's maps (and smaps, numa_maps, status, ...) to one snapshot file.

    The file appears only when complete (atomic rename); on any error or Ctrl-C
    nothing is left behind. With ``kernel_view`` the BPF reader's records go in too:
    read before and after the /proc text, and the capture is made again while the two
    readings differ or do not count the VMAs the text has.
    """
    pid = as_pid(pid)
    if not kernel_view:
        return _capture(pid, path, smaps, numa, level, None)
    from . import kview

    for _ in range(kview.TRIES):
        before = kview.read_records(pid)
        try:
            return _capture(pid, path, smaps, numa, level, before)
        except _Moved:
            continue
    raise KernelViewUnavailable(f"no kernel view: pid {pid} kept changing its mappings "
                                f"({kview.TRIES} tries)")


class _Moved(Exception):
    """The mappings changed while they were captured with the kernel view."""


def _capture(pid: int, path: str | os.PathLike[str], smaps: bool, numa: bool, level: int,
             kview_recs: Any) -> CaptureResult:
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
    if kview_recs is not None:
        names.append("kview")
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
            if name == "kview":
                continue
            parser = TextParser(proc_path(pid, name),
                                kind="numa" if name == "numa_maps" else "maps", keep=False)
            w.begin(name)
            stream_proc(pid, name, [parser.feed, w.write])
            counted[name] = parser.finish()
        if rollup is not None:
            w.section("smaps_rollup", rollup.result())
        check_alive(pid)
        main = counted[names[0]]
        check_has_mappings(pid, int(main["n"]))
        if kview_recs is not None:
            _check_kview(pid, kview_recs, main)
            w.section("kview", kview_recs.tobytes())
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
