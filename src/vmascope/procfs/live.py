"""Reading a live process into a Snapshot."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import host
from ..errors import ProcessNotFound
from ..meta import SnapshotMeta, rank_backings
from .early import keep_off_one_cpu, restore_cpus, yield_to_main_read
from .text import TextParser, parse_rollup, parse_status
from .reader import (
    Background,
    as_pid,
    check_alive,
    check_not_kthread,
    parse_proc,
    proc_path,
    read_small,
    stream_proc,
)

if TYPE_CHECKING:
    from ..model import Snapshot


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


def check_has_mappings(pid: int, count: int) -> None:
    """A user process always has mappings (its stack, the vDSO): none means it was
    exiting (its mm already released, not yet a zombie) while the text was read."""
    if count == 0:
        raise ProcessNotFound(pid, "exited while being read: no mappings left")


def _begin(pid: int | str, smaps: bool) -> tuple[int, SnapshotMeta, Background | None]:
    """A live read's start: the pid, the metadata (its time: now), and with smaps the
    read of smaps_rollup (4.14), on the other core while smaps streams; it needs the same
    access as smaps, whose read reports any failure with the right message."""
    pid = as_pid(pid)
    started = time.time()
    meta = host_meta(meta_from_raw(pid, read_raw_meta(pid), source="live"))
    meta.time = started
    return pid, meta, Background(pid, "smaps_rollup") if smaps else None


def _end(pid: int, meta: SnapshotMeta, rollup: Background | None, count: int) -> None:
    """A live read's end: smaps_rollup into the metadata, and the process still there
    with its mappings."""
    if rollup is not None:
        meta.smaps_rollup = parse_rollup(os.fsdecode(rollup.result()))
    check_alive(pid)
    check_has_mappings(pid, count)


@contextlib.contextmanager
def _one_cpu_free() -> Iterator[frozenset[int] | None]:
    """This thread and those it starts inside keep off one CPU, for the reading thread
    given the CPUs yielded (``early.keep_off_one_cpu``); given back at the end."""
    cpus = keep_off_one_cpu()
    try:
        yield cpus
    finally:
        restore_cpus(threading.get_native_id(), cpus)


@contextlib.contextmanager
def _exits_while_read(pid: int) -> Iterator[None]:
    """The process was there when its metadata was read: if a read finds it gone, it
    exited while being read."""
    try:
        yield
    except ProcessNotFound:
        raise ProcessNotFound(pid, "exited while being read") from None


def read_process(pid: int | str, smaps: bool = True, numa: bool = True,
                 fields: tuple[str, ...] | None = None, rollup: bool = True) -> Snapshot:
    """Read /proc/PID (smaps or maps, numa_maps, status, ...) into a Snapshot;
    ``fields``: the smaps fields to keep (None: all); ``rollup`` False: no smaps_rollup
    in the metadata (its read walks every VMA's page tables again: 0.15 s of CPU at
    2M VMAs)."""
    from .parse import snapshot_from_result

    pid, meta, rollup_read = _begin(pid, smaps and rollup)
    name = "smaps" if smaps else "maps"
    # the read of smaps gets a CPU of its own; numa_maps walks the page tables as smaps
    # does: read meanwhile, beside the parse
    with _one_cpu_free() as cpus:
        numa_read = _NumaRead(pid) if numa and host.has_numa_maps() else None
        parser = TextParser(proc_path(pid, name), fields=fields)
        try:
            with _exits_while_read(pid):
                parse_proc(pid, name, parser, cpus)
        except BaseException:
            if numa_read is not None:
                numa_read.join()  # the smaps error is the one to report
            raise
    with _exits_while_read(pid):
        nres = numa_read.result() if numa_read is not None else None
    res = parser.finish()
    _end(pid, meta, rollup_read, int(res["n"]))
    return snapshot_from_result(res, meta, numa=nres)


class Streamed(NamedTuple):
    """What :func:`stream_process` knows at the end: the metadata, the VMA count, their
    total size, and (backing, VMAs) ranked as ``Snapshot.backing_counts`` ranks them."""

    meta: SnapshotMeta
    count: int
    total_size: int
    backings: list[tuple[str, int]]


def stream_process(pid: int | str, rows: Callable[[Snapshot], object], *,
                   smaps: bool = True) -> Streamed:
    """Read /proc/PID/smaps (or maps) handing each piece of complete VMAs, as it is
    parsed, to ``rows`` as a Snapshot of those VMAs (its names: every name seen so far):
    memory stays a piece's worth however many VMAs there are."""
    from .parse import snapshot_from_result

    pid, meta, rollup = _begin(pid, smaps)
    name = "smaps" if smaps else "maps"
    parser = TextParser(proc_path(pid, name))
    names: list[str] = []
    count = [0]

    def piece(res: dict[str, Any]) -> None:
        names.extend(res["names"])
        if res["n"]:
            snap = snapshot_from_result({**res, "names": names}, meta)
            count[0] += len(snap)
            rows(snap)

    def feed(view: memoryview) -> None:
        parser.feed(view)
        piece(parser.take(len(names)))

    with _exits_while_read(pid):
        stream_proc(pid, name, [feed])
    res = parser.finish()
    res["names"] = res["names"][len(names):]
    piece(res)
    _end(pid, meta, rollup, count[0])
    return _streamed(meta, count[0], res, names)


def summarize_process(pid: int | str) -> Streamed:
    """What the summary of ``snapshot PID`` shows, counted while /proc/PID/maps is parsed:
    the VMA count, their total size and (backing, VMAs). No VMA is kept, so the parse
    writes next to nothing beside the kernel's text generation."""
    pid, meta, _ = _begin(pid, smaps=False)
    parser = TextParser(proc_path(pid, "maps"), keep=False)
    with _one_cpu_free() as cpus, _exits_while_read(pid):
        parse_proc(pid, "maps", parser, cpus)
    res = parser.finish()
    count = int(res["n"])
    _end(pid, meta, None, count)
    return _streamed(meta, count, res, res["names"])


def _streamed(meta: SnapshotMeta, count: int, res: dict[str, Any],
              names: list[str]) -> Streamed:
    """The end of a read that kept no whole process: the parser's finish (``res``, its
    total size and VMAs per name over the whole text) and every name in order."""
    counts = [int(res["anon_count"]), *map(int, res["name_counts"])]
    return Streamed(meta, count, int(res["total_size"]), rank_backings(counts, names))


class _NumaRead:
    """/proc/PID/numa_maps streamed into its parser in a thread; ``result()`` joins it
    and returns the parse (or raises what the read or the parse raised)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._out: Any = None
        self._exc: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vmascope-numa_maps",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        yield_to_main_read()
        try:
            nparser = TextParser(proc_path(self._pid, "numa_maps"), kind="numa")
            self._out = parse_proc(self._pid, "numa_maps", nparser).finish()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self._exc = exc

    def join(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._exc is not None:
            raise self._exc
        return self._out
