"""The /proc text parsers that need no numpy: the streaming maps/smaps/numa_maps parser
(the C extension does the line work) and the small files (status, smaps_rollup). A summary
that only counts (``procfs.live.summarize_process``) loads nothing more."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import ParseError
from ..kconst import KNOWN_VMFLAGS
from . import _fastparse


class TextParser:
    """Streaming parser of maps/smaps (``kind="maps"``) or numa_maps (``kind="numa"``) text.

    ``feed`` takes chunks as they are read (a chunk may end mid-line); ``finish`` returns
    the parse result. With ``keep=False`` only counts are kept (map count, VMAs per
    name): memory stays flat however long the text is. ``fields``: the smaps fields kept
    as columns (None: all of them); the others are still parsed and checked.
    """

    def __init__(self, source: str, *, kind: str = "maps", keep: bool = True,
                 fields: tuple[str, ...] | None = None) -> None:
        if kind not in ("maps", "numa"):
            raise ValueError(kind)
        self.source = source
        self.kind = kind
        self.keep = keep
        self.fields = fields
        self._p = _fastparse.Parser(KNOWN_VMFLAGS, numa=(kind == "numa"), keep=keep,
                                    fields=fields)

    def adopt(self, raw: Any) -> None:
        """Take over a C parser that was fed elsewhere (``procfs.early``)."""
        self._p = raw

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        try:
            self._p.feed(chunk)
        except _fastparse.ParseFailure as exc:
            line, expected = exc.args
            raise ParseError(self.source, int(line), str(expected)) from None

    def take(self, names_from: int = 0) -> dict[str, Any]:
        """The rows parsed so far but the last (whose smaps fields may still come), as
        ``finish`` gives them, with the names from index ``names_from`` on; the parser
        goes on with the rest."""
        return dict(self._p.take(names_from))

    def feed_fd(self, fd: int, cpus: frozenset[int] | None = None) -> int:
        """Read ``fd`` to its end and parse it (OSError from the read); the byte count.

        A thread of its own reads, first on the highest of ``cpus`` (the one
        ``early.keep_off_one_cpu`` keeps the others off), then on any of them (None:
        where this one runs). It parses maps and numa_maps text itself, while each read
        is in its cache; once smaps fields show, it only reads, into a ring of buffers
        this thread parses."""
        try:
            return int(self._p.feed_fd(fd, cpus))
        except _fastparse.ParseFailure as exc:
            line, expected = exc.args
            raise ParseError(self.source, int(line), str(expected)) from None

    def finish(self) -> dict[str, Any]:
        try:
            return dict(self._p.finish())
        except _fastparse.ParseFailure as exc:
            line, expected = exc.args
            raise ParseError(self.source, int(line), str(expected)) from None

    @property
    def count(self) -> int:
        return int(self._p.count)

    @property
    def max_bytes(self) -> int:
        """If not 0, the most memory the columns may take (the parser refuses text that
        would need more); by default they may take 16 bytes per byte of text + 16 MiB."""
        return int(self._p.max_bytes)

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        self._p.max_bytes = int(value)


def parse_status(text: str) -> dict[str, str]:
    """/proc/PID/status as {field: value} (values as printed, whitespace trimmed)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_kb_fields(lines: Iterable[str]) -> dict[str, int]:
    """``Key: N kB`` lines (smaps_rollup) -> {Key: bytes}; plain numbers kept as is."""
    out: dict[str, int] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        parts = value.split()
        if not sep or not parts or not parts[0].isdigit():
            continue
        n = int(parts[0])
        out[key.strip()] = n * 1024 if parts[1:] == ["kB"] else n
    return out


def parse_rollup(text: str) -> dict[str, int]:
    """/proc/PID/smaps_rollup (a header line, then kB fields) -> {field: bytes}."""
    return parse_kb_fields(text.splitlines()[1:])
