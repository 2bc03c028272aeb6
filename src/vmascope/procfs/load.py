"""Loading any target into a Snapshot: a pid, a snapshot file, a raw maps or smaps text
file (told apart by content), or "-" for stdin."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import FileAccessDenied, ParseError, SnapshotFormatError, UsageError
from ..model import Snapshot, SnapshotMeta
from .live import meta_from_raw, read_process
from .parse import TextParser, snapshot_from_result
from .reader import CHUNK, as_pid
from .snapfile import MAGIC, iter_sections, parse_json_section, read_small_section

_META_SECTIONS = ("comm", "cmdline", "status", "smaps_rollup")
# The kernel view: 128 bytes a VMA, for at most 4 Mi VMAs.
MAX_KVIEW_SECTION = 128 << 22


# Memory the columns of a snapshot file's text may take: per byte of the file read so
# far, plus a constant (the text is up to snapfile.MAX_RATIO times bigger than the file).
# A heap of 2,000,000 alike VMAs compresses to under 3 bytes a VMA, whose row of smaps
# columns takes about 225 bytes: some 80 bytes of columns per byte of the file.
COL_BYTES_PER_FILE_BYTE = 256
COL_BYTES_SLACK = 48 << 20


def _load_snapshot_file(fh: IO[bytes], source: str, fields: tuple[str, ...] | None = None,
                        kernel_view: bool = True) -> Snapshot:
    meta_json: dict[str, Any] | None = None
    raw: dict[str, bytes] = {}
    main: dict[str, Any] | None = None
    main_name = None
    numa: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    seen: dict[str, int] = {}
    body: list[Any] = []
    kview_data: bytes | None = None
    for name, chunks in iter_sections(fh, source, body_out=body):
        if name in seen:
            raise SnapshotFormatError(source, None, f"corrupt snapshot file (section {name} "
                                      "twice)")
        if name in ("meta.json", "end.json"):
            data = read_small_section(chunks, name, source)
            seen[name] = len(data)
            obj = parse_json_section(data, name, source)
            if name == "meta.json":
                meta_json = obj
            else:
                end = obj
        elif name == "kview":
            data = read_small_section(chunks, name, source, limit=MAX_KVIEW_SECTION)
            seen[name] = len(data)
            if kernel_view:
                kview_data = data
        elif name in _META_SECTIONS:
            raw[name] = read_small_section(chunks, name, source)
            seen[name] = len(raw[name])
        elif name in ("maps", "smaps", "numa_maps"):
            if meta_json is None:
                raise SnapshotFormatError(source, None, "corrupt snapshot file (expected "
                                          f"meta.json before {name})")
            size = 0
            if name == "maps" and "smaps" in meta_json.get("sections", ()):
                for chunk in chunks:  # smaps follows and carries everything maps has
                    size += len(chunk)
                seen[name] = size
                continue
            kind = "numa" if name == "numa_maps" else "maps"
            parser = TextParser(f"{source}[{name}]", kind=kind,
                                fields=fields if kind == "maps" else None)
            for chunk in chunks:
                parser.max_bytes = (COL_BYTES_PER_FILE_BYTE * body[0].bytes_in
                                    + COL_BYTES_SLACK)
                parser.feed(chunk)
                size += len(chunk)
            seen[name] = size
            res = parser.finish()
            if kind == "numa":
                numa = res
            else:
                main, main_name = res, name
        else:
            seen[name] = sum(len(c) for c in chunks)  # a section of a newer writer
    if meta_json is None or main is None or end is None:
        missing = [n for n, v in (("meta.json", meta_json), ("maps or smaps", main),
                                  ("end.json", end)) if v is None]
        raise SnapshotFormatError(source, None, "corrupt snapshot file (sections missing: "
                                  + ", ".join(missing) + ")")
    # The sizes and the map count end.json declares must be what was read.
    for name, size in end.get("sections", {}).items():
        if name != "end.json" and seen.get(name) != size:
            raise SnapshotFormatError(
                source, None, f"corrupt snapshot file (section {name}: end.json declares "
                f"{size} bytes, found {seen.get(name, 0)})")
    if "map_count" in end and main["n"] != end["map_count"]:
        raise SnapshotFormatError(
            source, None, f"corrupt snapshot file (end.json declares {end['map_count']} "
            f"mappings, the {main_name} text has {main['n']})")
    if main["n"] == 0:
        raise SnapshotFormatError(source, None, f"corrupt snapshot file (no mapping lines in "
                                  f"its {main_name} text)")
    meta = SnapshotMeta.from_json(meta_json.get("meta", {}))
    # the raw sections are authoritative (smaps_rollup is read during the capture)
    from_raw = meta_from_raw(meta.pid, raw, source="file")
    if "status" in raw:
        meta.status = from_raw.status
    if "smaps_rollup" in raw:
        meta.smaps_rollup = from_raw.smaps_rollup
    meta.source = "file"
    meta.extra["captured_from"] = main_name
    meta.extra["path"] = source
    snap = snapshot_from_result(main, meta, numa=numa)
    if kview_data is not None:
        _attach_kview(snap, kview_data, source)
    return snap


def _attach_kview(snap: Snapshot, data: bytes, source: str) -> None:
    from . import kview

    cols = None
    if len(data) % kview.RECORD.itemsize == 0:
        recs = np.frombuffer(data, dtype=kview.RECORD)
        cols = kview.align(snap, recs) if len(recs) else None
    if cols is None:
        raise SnapshotFormatError(source, None, "corrupt snapshot file (the kview section "
                                  "does not match the maps text)")
    kview.attach(snap, cols)


def _load_text(fh: IO[bytes], source: str, first: bytes) -> Snapshot:
    parser = TextParser(source)
    size = lines = 0
    last = b""
    chunk = first
    while chunk:
        parser.feed(chunk)
        size += len(chunk)
        lines += chunk.count(b"\n")
        last = chunk[-1:]
        chunk = fh.read(CHUNK)
    if size == 0:
        raise ParseError(source, None, "expected /proc/PID/maps or smaps text, found an empty file")
    cut = ParseError(source, lines + 1, "the last line ends without a newline: the dump is "
                     "cut short (truncated while copied?)")
    try:
        res = parser.finish()
    except ParseError as exc:
        # an error on the cut line is the cut's; one before it, or in a one-line text
        # (CR line ends), is the parser's
        if last != b"\n" and lines and exc.line == lines + 1:
            raise cut from None
        raise
    if last != b"\n":
        # /proc ends every line with a newline: a last line without one was cut short
        raise cut
    if res["n"] == 0:
        raise ParseError(source, None, "expected /proc/PID/maps or smaps text, found no mapping lines")
    meta = SnapshotMeta(source="smaps-dump" if res["field_lines"] else "maps-dump")
    meta.extra["path"] = source
    return snapshot_from_result(res, meta)


def load_stream(fh: IO[bytes], source: str, *, fields: tuple[str, ...] | None = None,
                kernel_view: bool = True) -> Snapshot:
    """A snapshot file or maps/smaps text from an open binary stream. Of a snapshot
    file, only the smaps ``fields`` (None: all) are kept (the others are parsed and
    checked all the same), and its kernel view only with ``kernel_view`` (without, the
    section is read within its size bound but not matched with the VMAs)."""
    head = fh.read(len(MAGIC))
    if head == MAGIC:
        return _load_snapshot_file(_Prefixed(head, fh), source, fields, kernel_view)
    if head and MAGIC.startswith(head):
        raise SnapshotFormatError(source, None, "truncated snapshot file (ends inside its header)")
    if head[:4] == ZSTD_MAGIC or head[:2] == GZIP_MAGIC:
        return _load_compressed(_Prefixed(head, fh), source, head)
    return _load_text(fh, source, head)


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"


def _load_compressed(fh: Any, source: str, head: bytes) -> Snapshot:
    """A gzip- or zstd-compressed maps/smaps dump: read as the text it holds (errors name
    the file as compressed)."""
    import gzip
    import zlib

    import zstandard

    kind = "gzip" if head[:2] == GZIP_MAGIC else "zstd"
    named = f"{source} ({kind}-compressed)"
    stream: Any = (gzip.GzipFile(fileobj=fh, mode="rb") if kind == "gzip"
                   else zstandard.ZstdDecompressor().stream_reader(fh, closefd=False))
    try:
        first = stream.read(CHUNK)
        if first[: len(MAGIC)] == MAGIC:
            raise ParseError(named, None, "expected maps/smaps text, found a vmascope "
                             "snapshot inside (snapshot files are already compressed)")
        return _load_text(stream, named, first)
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
        raise ParseError(named, None, f"corrupt or truncated {kind} data ({exc})") from None


class _Prefixed:
    """A read-only stream that first returns bytes already read."""

    def __init__(self, head: bytes, fh: IO[bytes]) -> None:
        self._head = head
        self._fh = fh

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n < 0:
                out = self._head + self._fh.read()
                self._head = b""
                return out
            out, self._head = self._head[:n], self._head[n:]
            if len(out) < n:
                out += self._fh.read(n - len(out))
            return out
        return self._fh.read(n)

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


def load_target(target: str | int | os.PathLike[str]) -> Snapshot:
    """A pid (int or digits), a snapshot file, a raw maps/smaps text file, or '-'."""
    if isinstance(target, int) and not isinstance(target, bool):
        return read_process(as_pid(target))
    if isinstance(target, str) and target == "-":
        return load_stream(sys.stdin.buffer, "<stdin>")
    if isinstance(target, str) and target.strip().isdigit() and not os.path.exists(target):
        return read_process(as_pid(target))
    if not isinstance(target, (str, os.PathLike)):
        raise UsageError(f"not a target: {target!r} (expected a pid, a file or -)")
    path = Path(target)
    source = str(target)
    with open_input(path, source) as fh:
        return load_stream(fh, source)


def open_input(path: str | os.PathLike[str], source: str,
               expected: str = "a pid or a file") -> IO[bytes]:
    """Open an input file for reading, binary.

    A regular file or a FIFO (a pipe such as ``<(zcat dump.gz)``); a FIFO is opened
    without waiting for a writer, and one that has none reads as empty (it never blocks
    forever). A directory, device or socket is a usage error (exit 2) naming what was
    ``expected``; a file the user may not read is FileAccessDenied (exit 4).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        why = "and not a pid" if "pid" in expected else f"expected {expected}"
        raise UsageError(f"{source}: no such file ({why})") from None
    except IsADirectoryError:
        raise UsageError(f"{source}: is a directory, expected {expected}") from None
    except PermissionError:
        raise FileAccessDenied(source) from None
    except OSError as exc:
        raise UsageError(f"{source}: cannot open: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise UsageError(f"{source}: is a directory, expected {expected}")
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise UsageError(f"{source}: is a device or socket, expected {expected}")
        os.set_blocking(fd, True)  # a FIFO without writers reads as its end
        return _Checked(os.fdopen(fd, "rb"), source)
    except BaseException:
        os.close(fd)
        raise


class _Checked:
    """A binary input whose read errors (EIO, EISDIR, ...) are usage errors."""

    def __init__(self, fh: IO[bytes], source: str) -> None:
        self._fh = fh
        self._source = source

    def read(self, n: int = -1) -> bytes:
        try:
            return self._fh.read(n)
        except OSError as exc:
            raise UsageError(f"{self._source}: cannot read: {exc.strerror}") from None

    def readable(self) -> bool:
        return True

    def __enter__(self) -> _Checked:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()
