"""The snapshot file container (documented in docs/snapshot-format.md).

::

    magic   8 bytes  b"\\x89VMASNAP"
    version 4 bytes  little-endian uint32 (FORMAT_VERSION)
    body    one zstd frame (with content checksum) holding records:
              b"S" u16 len NAME       a section starts (NAME is ASCII)
              b"D" u32 len BYTES      data of the current section
              b"E"                    the end: nothing follows

Sections: ``meta.json`` first, then raw /proc text (``comm``, ``cmdline``, ``status``,
``smaps`` or ``maps``, ``numa_maps``, ``smaps_rollup``), then ``end.json``. Readers skip
sections they do not know. A file without its ``E`` record is truncated.
"""

from __future__ import annotations

import collections
import json
import struct
from collections.abc import Callable, Iterator
from typing import IO, Any

import zstandard

from ..errors import SnapshotFormatError

MAGIC = b"\x89VMASNAP"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sI")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
MAX_DATA = 1 << 26


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

    def _corrupt(self, why: str) -> SnapshotFormatError:
        return SnapshotFormatError(self._source, None, f"corrupt snapshot file ({why})")

    def _truncated(self) -> SnapshotFormatError:
        return SnapshotFormatError(
            self._source, None, "truncated snapshot file (ends before its end record)"
        )

    def _fill(self) -> bool:
        if self._d.eof:
            return False
        data = self._fh.read(self._read_size)
        if not data:
            return False
        try:
            out = self._d.decompress(data)
        except zstandard.ZstdError as exc:
            raise self._corrupt(f"zstd: {exc}") from None
        if out:
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
    fh: IO[bytes], source: str, chunk: int = 1 << 20
) -> Iterator[tuple[str, Iterator[bytes | memoryview]]]:
    """Yield (section name, iterator of its data chunks). Consume each iterator in turn
    (unconsumed data is skipped). Raises SnapshotFormatError on a bad or truncated file."""
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
        try:
            name = r.read(length).decode("ascii")
        except UnicodeDecodeError:
            raise SnapshotFormatError(source, None, "corrupt snapshot file (section name)") from None
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
