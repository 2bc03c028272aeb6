"""The snapshot file container (documented in docs/snapshot-format.md).

::

    magic   8 bytes  b"\\x89VMASNAP"
    version 4 bytes  little-endian uint32 (FORMAT_VERSION)
    body    one zstd frame (with content checksum) holding records:
              b"S" u16 len NAME       a section starts (NAME is ASCII)
              b"D" u32 len BYTES      data of the current section
              b"E"                    the end: nothing follows

Sections: ``meta.json`` first, then raw /proc text (``comm``, ``cmdline``, ``status``,
``smaps`` or ``maps``, ``numa_maps``, ``smaps_rollup``), from version 2 optionally
``kview`` (the kernel view: the BPF reader's records, identities renumbered), then
``end.json``. Readers skip sections they do not know. A file without its ``E`` record
is truncated. Files of version 1 (no ``kview``) load as before.
"""

from __future__ import annotations

import collections
import json
import math
import re
import struct
from collections.abc import Callable, Iterator
from typing import IO, Any

import zstandard

from ..errors import SnapshotFormatError

MAGIC = b"\x89VMASNAP"
FORMAT_VERSION = 2
HEADER = struct.Struct("<8sI")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
MAX_DATA = 1 << 26

# Bounds on what a file may make the reader do (see docs/snapshot-format.md):
# the body may decompress to at most MAX_RATIO bytes per compressed byte (plus
# RATIO_SLACK); real /proc text of a fragmented heap compresses ~250:1 at level 1;
# compressed input is decompressed in slices of IN_SLICE bytes, so one call can never
# produce more than ~4 MiB (a zstd block of 128 KiB needs at least 4 bytes).
MAX_RATIO = 2048
RATIO_SLACK = 1 << 20
IN_SLICE = 128
FILL_OUT = 1 << 20  # decompress until about this much output is ready
# Sections read whole (JSON and the small /proc files) are at most this big.
MAX_SMALL_SECTION = 8 << 20
# Section names: short, of letters, digits, '.', '_' and '-'.
SECTION_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class SnapshotWriter:
    """Writes sections into an open binary file; call ``close()`` to finish the frame."""

    def __init__(self, fh: IO[bytes], level: int = 1) -> None:
        self._fh = fh
        fh.write(HEADER.pack(MAGIC, FORMAT_VERSION))
        self._z = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()
        self.raw_bytes = 0
        self.sections: dict[str, int] = {}
        self._current: str | None = None

    def _put(self, data: bytes | memoryview) -> None:
        out = self._z.compress(data)
        if out:
            self._fh.write(out)

    def begin(self, name: str) -> None:
        encoded = name.encode("ascii")
        self._put(b"S" + _U16.pack(len(encoded)) + encoded)
        self._current = name
        self.sections.setdefault(name, 0)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Data of the current section (any size; split into records)."""
        assert self._current is not None
        view = memoryview(data)
        for pos in range(0, len(view), MAX_DATA):
            part = view[pos : pos + MAX_DATA]
            self._put(b"D" + _U32.pack(len(part)))
            self._put(part)
        self.sections[self._current] += len(view)
        self.raw_bytes += len(view)

    def section(self, name: str, data: bytes) -> None:
        self.begin(name)
        self.write(data)

    def json_section(self, name: str, obj: Any) -> None:
        self.section(name, json.dumps(obj, sort_keys=True).encode())

    def close(self) -> None:
        self._put(b"E")
        self._fh.write(self._z.flush())


class _Body:
    """The decompressed body, read in exact byte counts.

    A short read means truncation; at the end record the zstd frame must be complete
    (its content checksum verified), so a file cut anywhere is detected. Reads of data
    return views into the decompressed blocks (no copy).
    """

    def __init__(self, fh: IO[bytes], source: str, read_size: int = 1 << 17) -> None:
        self._fh = fh
        self._source = source
        self._read_size = read_size
        self._d = zstandard.ZstdDecompressor().decompressobj()
        self._blocks: collections.deque[memoryview] = collections.deque()
        self._avail = 0
        self._pending = memoryview(b"")  # compressed input read, not yet decompressed
        self.bytes_in = 0  # compressed bytes consumed
        self.bytes_out = 0  # decompressed bytes produced

    def _corrupt(self, why: str) -> SnapshotFormatError:
        return SnapshotFormatError(self._source, None, f"corrupt snapshot file ({why})")

    def _truncated(self) -> SnapshotFormatError:
        return SnapshotFormatError(
            self._source, None, "truncated snapshot file (ends before its end record)"
        )

    def _fill(self) -> bool:
        if self._d.eof:
            return False
        if not self._pending:
            data = self._fh.read(self._read_size)
            if not data:
                return False
            self._pending = memoryview(data)
        # Decompress slice by slice, and stop once a little output is ready: what is
        # held decompressed stays small whatever the compression ratio.
        produced = 0
        while self._pending and produced < FILL_OUT:
            if self._d.eof:
                raise self._corrupt("data after the end of the compressed body")
            piece, self._pending = self._pending[:IN_SLICE], self._pending[IN_SLICE:]
            try:
                out = self._d.decompress(piece)
            except zstandard.ZstdError as exc:
                raise self._corrupt(f"zstd: {exc}") from None
            self.bytes_in += len(piece)
            if out:
                produced += len(out)
                self.bytes_out += len(out)
                if self.bytes_out > MAX_RATIO * self.bytes_in + RATIO_SLACK:
                    raise self._corrupt(
                        f"decompresses to more than {MAX_RATIO} times its size")
                self._blocks.append(memoryview(out))
                self._avail += len(out)
        return True

    def read(self, n: int) -> bytes | memoryview:
        while self._avail < n:
            if not self._fill():
                raise self._truncated()
        self._avail -= n
        first = self._blocks[0]
        if len(first) >= n:
            out = first[:n]
            if len(first) == n:
                self._blocks.popleft()
            else:
                self._blocks[0] = first[n:]
            return out if n >= 4096 else bytes(out)
        parts = []
        while n:
            block = self._blocks[0]
            take = min(n, len(block))
            parts.append(block[:take])
            if take == len(block):
                self._blocks.popleft()
            else:
                self._blocks[0] = block[take:]
            n -= take
        return b"".join(parts)

    def finish(self) -> None:
        """After the end record: the frame must end here, complete."""
        while self._fill():
            pass
        if self._avail:
            raise self._corrupt("data after the end record")
        if not self._d.eof:
            raise self._truncated()


def is_snapshot_file(head: bytes) -> bool:
    return head[: len(MAGIC)] == MAGIC


def iter_sections(
    fh: IO[bytes], source: str, chunk: int = 1 << 20, body_out: list[Any] | None = None
) -> Iterator[tuple[str, Iterator[bytes | memoryview]]]:
    """Yield (section name, iterator of its data chunks). Consume each iterator in turn
    (unconsumed data is skipped). Raises SnapshotFormatError on a bad or truncated file.

    ``body_out``, if given, receives the body reader, whose ``bytes_in`` tells how much
    of the file has been consumed."""
    head = fh.read(HEADER.size)
    if len(head) < HEADER.size or not is_snapshot_file(head):
        raise SnapshotFormatError(source, None, "not a vmascope snapshot file (bad magic)")
    _, version = HEADER.unpack(head)
    if version > FORMAT_VERSION:
        raise SnapshotFormatError(
            source, None,
            f"snapshot format version {version} is newer than this vmascope reads "
            f"({FORMAT_VERSION}); upgrade vmascope",
        )
    if version < 1:
        raise SnapshotFormatError(source, None, f"bad snapshot format version {version}")
    r = _Body(fh, source)
    if body_out is not None:
        body_out.append(r)
    pending: list[int] = [0]  # data bytes of the current record not yet read

    def data_chunks() -> Iterator[bytes | memoryview]:
        while True:
            if pending[0]:
                n = min(pending[0], chunk)
                pending[0] -= n
                yield r.read(n)
                continue
            tag = r.read(1)
            if tag == b"D":
                (pending[0],) = _U32.unpack(r.read(4))
                continue
            pushback.append(tag)
            return

    pushback: list[bytes] = []
    while True:
        if pushback:
            tag = pushback.pop()
        else:
            tag = r.read(1)
        if tag == b"E":
            r.finish()
            return
        if tag != b"S":
            raise SnapshotFormatError(source, None, f"corrupt snapshot file (record {tag!r})")
        (length,) = _U16.unpack(r.read(2))
        if length > 64:
            raise SnapshotFormatError(
                source, None, f"corrupt snapshot file (section name of {length} bytes; "
                "expected at most 64)")
        try:
            name = bytes(r.read(length)).decode("ascii")
        except UnicodeDecodeError:
            raise SnapshotFormatError(source, None, "corrupt snapshot file (section name)") from None
        if not SECTION_NAME.match(name):
            raise SnapshotFormatError(
                source, None, f"corrupt snapshot file (section name {name!r}; expected "
                "letters, digits, '.', '_' or '-')")
        it = data_chunks()
        yield name, it
        for _ in it:  # skip what the caller did not consume
            pass


def read_all_sections(
    fh: IO[bytes], source: str, want: Callable[[str], bool] = lambda name: True
) -> dict[str, bytes]:
    """Small helper: {section: bytes} for the sections ``want`` accepts."""
    out: dict[str, bytes] = {}
    for name, chunks in iter_sections(fh, source):
        if want(name):
            out[name] = b"".join(chunks)
    return out


# -- reading small sections and validating the JSON ones ---------------------------------

def read_small_section(
    chunks: Iterator[bytes | memoryview], name: str, source: str,
    limit: int = MAX_SMALL_SECTION,
) -> bytes:
    """A section read whole, refused if it is bigger than ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    for c in chunks:
        size += len(c)
        if size > limit:
            raise SnapshotFormatError(
                source, None, f"corrupt snapshot file (section {name} is larger than "
                f"{limit >> 20} MiB)")
        parts.append(bytes(c))
    return b"".join(parts)


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def parse_json_section(data: bytes, name: str, source: str) -> dict[str, Any]:
    """The JSON object of section ``name``, validated against its schema."""
    try:
        obj = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else "not JSON"
        raise SnapshotFormatError(source, None, f"corrupt snapshot file ({name}: {why})") from None
    schema = _META_SCHEMA if name == "meta.json" else _END_SCHEMA
    problem = _check(obj, schema, name)
    if problem:
        raise SnapshotFormatError(source, None, f"corrupt snapshot file ({problem})")
    return obj


# A small schema language: a schema is a checker function taking (value, path) and
# returning a problem description or None.
Checker = Callable[[Any, str], "str | None"]


def _int(lo: int, hi: int, *, nullable: bool = False) -> Checker:
    def check(v: Any, path: str) -> str | None:
        if v is None and nullable:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            return f"{path}: expected an integer, found {_kind(v)}"
        if not lo <= v <= hi:
            return f"{path}: expected an integer from {lo} to {hi}, found {v}"
        return None
    return check


def _number() -> Checker:
    def check(v: Any, path: str) -> str | None:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"{path}: expected a number, found {_kind(v)}"
        if not math.isfinite(v) or abs(v) > 1e12:
            return f"{path}: expected a time in Unix seconds, found {v}"
        return None
    return check


def _str(max_len: int, *, nullable: bool = False) -> Checker:
    def check(v: Any, path: str) -> str | None:
        if v is None and nullable:
            return None
        if not isinstance(v, str):
            return f"{path}: expected a string, found {_kind(v)}"
        if len(v) > max_len:
            return f"{path}: expected a string of at most {max_len} characters"
        return None
    return check


def _list(item: Checker, max_items: int, *, nullable: bool = False) -> Checker:
    def check(v: Any, path: str) -> str | None:
        if v is None and nullable:
            return None
        if not isinstance(v, list):
            return f"{path}: expected a list, found {_kind(v)}"
        if len(v) > max_items:
            return f"{path}: expected at most {max_items} items"
        for i, x in enumerate(v):
            problem = item(x, f"{path}[{i}]")
            if problem:
                return problem
        return None
    return check


def _map(value: Checker, max_items: int) -> Checker:
    def check(v: Any, path: str) -> str | None:
        if not isinstance(v, dict):
            return f"{path}: expected an object, found {_kind(v)}"
        if len(v) > max_items:
            return f"{path}: expected at most {max_items} entries"
        for k, x in v.items():
            if len(k) > 256:
                return f"{path}: expected keys of at most 256 characters"
            problem = value(x, f"{path}.{k}")
            if problem:
                return problem
        return None
    return check


def _any(v: Any, path: str) -> str | None:
    return None


def _object(fields: dict[str, Checker], required: tuple[str, ...] = ()) -> Checker:
    """An object with these keys (others are ignored: a newer writer may add some)."""
    def check(v: Any, path: str) -> str | None:
        if not isinstance(v, dict):
            return f"{path}: expected an object, found {_kind(v)}"
        for k in required:
            if k not in v:
                return f"{path}: expected a key {k!r}"
        for k, checker in fields.items():
            if k in v:
                problem = checker(v[k], f"{path}.{k}")
                if problem:
                    return problem
        return None
    return check


def _power_of_two(lo: int, hi: int) -> Checker:
    inner = _int(lo, hi)

    def check(v: Any, path: str) -> str | None:
        problem = inner(v, path)
        if problem is None and v & (v - 1):
            return f"{path}: expected a power of two, found {v}"
        return problem
    return check


def _section_name(v: Any, path: str) -> str | None:
    if not isinstance(v, str) or not SECTION_NAME.match(v):
        return f"{path}: expected a section name, found {_kind(v)}"
    return None


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, str):
        return "a string" if len(v) < 40 else "a long string"
    if isinstance(v, (int, float)):
        return f"the number {v}" if len(repr(v)) < 40 else "a number"
    return {dict: "an object", list: "a list"}.get(type(v), type(v).__name__)


PID_MAX_LIMIT = 1 << 22  # include/linux/threads.h
_META_SCHEMA = _object(
    {
        "schema_version": _int(1, 1 << 16),
        "format_version": _int(1, FORMAT_VERSION),
        "sections": _list(_section_name, 64),
        "meta": _object({
            "pid": _int(1, PID_MAX_LIMIT, nullable=True),
            "comm": _str(256, nullable=True),
            "cmdline": _list(_str(1 << 20), 1 << 16, nullable=True),
            "kernel_release": _str(256, nullable=True),
            "page_size": _power_of_two(1024, 1 << 30),
            "max_map_count": _int(0, (1 << 31) - 1, nullable=True),
            "time": _number(),
            "source": _str(64),
            "status": _map(_str(1 << 16), 1024),
            "smaps_rollup": _map(_int(-(1 << 63), (1 << 63) - 1), 1024),
            "extra": _map(_any, 1024),
        }),
    },
    required=("meta",),
)
_END_SCHEMA = _object(
    {
        "time": _number(),
        "map_count": _int(0, 1 << 40),
        "sections": _map(_int(0, 1 << 62), 64),
    },
)


def _check(obj: Any, schema: Checker, name: str) -> str | None:
    return schema(obj, name)
