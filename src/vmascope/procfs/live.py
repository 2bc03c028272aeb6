"""Reading a live process into a Snapshot."""

from __future__ import annotations

import os
import time

from .. import host
from ..errors import ProcessNotFound
from ..model import Snapshot, SnapshotMeta
from .parse import TextParser, attach_numa, parse_rollup, parse_status, snapshot_from_result
from .reader import (
    Background,
    as_pid,
    check_alive,
    check_not_kthread,
    proc_path,
    read_small,
    stream_proc,
)


def read_raw_meta(pid: int) -> dict[str, bytes]:
    """The small per-process files, raw: comm, cmdline and status."""
    check_not_kthread(pid)
    return {
        "comm": read_small(pid, "comm"),
        "cmdline": read_small(pid, "cmdline"),
        "status": read_small(pid, "status"),
    }


def meta_from_raw(pid: int | None, raw: dict[str, bytes], *, source: str) -> SnapshotMeta:
    comm = os.fsdecode(raw.get("comm", b"")).rstrip("\n") or None
    cmd = raw.get("cmdline", b"")
    cmdline = [os.fsdecode(a) for a in cmd.split(b"\0")[:-1]] if cmd else []
    return SnapshotMeta(
        pid=pid,
        comm=comm,
        cmdline=cmdline,
        source=source,
        status=parse_status(os.fsdecode(raw.get("status", b""))),
        smaps_rollup=parse_rollup(os.fsdecode(raw.get("smaps_rollup", b""))),
    )


def host_meta(meta: SnapshotMeta) -> SnapshotMeta:
    """What the host adds to a live process's metadata: kernel, page size, the limit."""
    meta.kernel_release = host.release()
    meta.page_size = host.page_size()
    meta.max_map_count = host.max_map_count()
    return meta


def check_has_mappings(pid: int, res: dict) -> None:
    """A user process always has mappings (its stack, the vDSO): none means it was
    exiting (its mm already released, not yet a zombie) while the text was read."""
    if int(res["n"]) == 0:
        raise ProcessNotFound(pid, "exited while being read: no mappings left")


def read_process(pid: int | str, smaps: bool = True, numa: bool = True) -> Snapshot:
    """Read /proc/PID (smaps or maps, numa_maps, status, ...) into a Snapshot."""
    pid = as_pid(pid)
    started = time.time()
    raw = read_raw_meta(pid)
    meta = host_meta(meta_from_raw(pid, raw, source="live"))
    meta.time = started
    name = "smaps" if smaps else "maps"
    # smaps_rollup (4.14) is read on the other core while smaps streams; it needs the
    # same access as smaps, whose read reports any failure with the right message.
    rollup = Background(pid, "smaps_rollup") if smaps else None
    parser = TextParser(proc_path(pid, name))
    stream_proc(pid, name, [parser.feed])
    res = parser.finish()
    if rollup is not None:
        meta.smaps_rollup = parse_rollup(os.fsdecode(rollup.result()))
    check_alive(pid)
    check_has_mappings(pid, res)
    snap = snapshot_from_result(res, meta)
    if numa and host.has_numa_maps():
        nparser = TextParser(proc_path(pid, "numa_maps"), kind="numa")
        stream_proc(pid, "numa_maps", [nparser.feed])
        unmatched = attach_numa(snap, nparser.finish())
        if unmatched:
            meta.extra["numa_unmatched"] = unmatched
    return snap
