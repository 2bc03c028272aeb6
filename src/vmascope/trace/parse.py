"""Reading a trace file (the format is in trace/format.py): its header, its two snapshots,
its op lines (the recorder's own shape in C, ``ops/_oplines.c``; any other line through the
op language's parser, which names the line of a mistake) and their annotations."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import io
import lzma
import os
import re
from pathlib import Path
from typing import Any

import zstandard

from ..errors import ParseError
from ..model import Snapshot
from ..ops._oplines import ops_block
from ..util import gc_paused
from ..ops.language import MADVICE, TASK_SIZE, Op, check_script, parse_line
from .format import MAGIC_LINE, VERSION, Trace


_HEADER = re.compile(r"^# ([a-z_]+): (.*)$")
_FILE_NOTE = re.compile(r"\bfile=(\S+)")


def _decompressed(data: bytes, source: str) -> bytes:
    try:
        if data[:2] == b"\x1f\x8b":
            return gzip.decompress(data)
        if data[:4] == b"\x28\xb5\x2f\xfd":
            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        if data[:6] == b"\xfd7zXZ\x00":
            return lzma.decompress(data)
    except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise ParseError(source, None, f"a compressed trace that does not decompress ({exc})")
    return data


def read_trace(path: str | os.PathLike[str]) -> Trace:
    """Read a trace file (compressed or not). ParseError naming the line on bad input."""
    source = str(path)
    from ..procfs.load import open_input

    with open_input(Path(path), source, "a trace file") as fh:
        data = fh.read()
    return parse_trace(_decompressed(data, source), source)


def _snapshot_from(payload: str, source: str, lineno: int) -> Snapshot:
    from ..procfs.load import load_stream

    try:
        raw = base64.b64decode(payload, validate=True)
    except ValueError:
        raise ParseError(source, lineno, "base64 lines (#=...) of a snapshot file") from None
    return load_stream(io.BytesIO(raw), f"{source}:{lineno}")


def _whole_snapshot(text: str, at: int) -> tuple[str, int, int] | None:
    """The snapshot whose "#=" lines start at ``at`` when it is well formed: (its base64
    text, where its "#snapshot end" line starts, the count of its lines); None otherwise
    (the lines are then read one by one, which names the first wrong one)."""
    stop = text.find("\n#snapshot end", at - 1)
    if stop < 0:
        return None
    body = text[at:stop + 1]  # its "#=" lines, each with its newline
    lines = body.count("\n")
    if lines and (not body.startswith("#=") or body.count("\n#=") != lines - 1):
        return None
    payload = body.replace("\n#=", "")[2:-1] if lines else ""
    return (payload, stop + 1, lines) if _BASE64.fullmatch(payload) else None


_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def parse_trace(data: bytes, source: str = "<trace>") -> Trace:
    """A trace from its (uncompressed) bytes. ParseError naming the line on bad input."""
    with gc_paused():  # an Op per line, no garbage cycles
        return _parse_trace(data, source)


def _parse_trace(data: bytes, source: str) -> Trace:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ParseError(source, line, "UTF-8 text (a vmascope trace)") from None
    first = text.partition("\n")[0]
    if not first.startswith(MAGIC_LINE):
        raise ParseError(source, 1, f"a vmascope trace starting with {MAGIC_LINE!r}")
    try:
        version = int(first.split()[1])
    except (IndexError, ValueError):
        raise ParseError(source, 1, f"{MAGIC_LINE} VERSION") from None
    if version > VERSION:
        raise ParseError(source, 1, f"trace version {VERSION} or older, got {version}")
    header: dict[str, str] = {}
    snaps: dict[str, Snapshot] = {}
    ops: list[Op] = []
    notes: list[str] = []
    skipped: list[tuple[str, str]] = []
    symbols: dict[int, str] = {}
    files: dict[str, str] = {}
    op_block = _OpBlock(source)
    restarts = 0
    in_snap: str | None = None
    snap_lines: list[str] = []
    snap_start = 0

    # A '#' line at a time (header, snapshots, symbols, skipped events), a well-formed
    # snapshot at once, and the op lines between two '#' lines as one block (_OpBlock).
    pos, lineno, n = 0, 1, len(text)
    while pos < n:
        if text[pos] != "#":
            nxt = text.find("\n#", pos)
            end = n if nxt < 0 else nxt + 1
            block = text[pos:end]
            if in_snap is not None and block.strip("\n"):
                ahead = len(block) - len(block.lstrip("\n"))  # empty lines before it
                raise ParseError(source, lineno + ahead, "#= lines or #snapshot end")
            block_ops, block_notes = op_block(block, lineno, files)
            ops.extend(block_ops)
            notes.extend(block_notes)
            lineno += block.count("\n")
            pos = end
            continue
        end = text.find("\n", pos)
        end = n if end < 0 else end
        line = text[pos:end]
        here = lineno
        pos, lineno = end + 1, lineno + 1
        if in_snap is not None:
            if line.startswith("#="):
                snap_lines.append(line[2:].strip())
                continue
            if line.startswith("#snapshot end"):
                snaps[in_snap] = _snapshot_from("".join(snap_lines), source, snap_start)
                if in_snap == "first" and (ops or skipped):
                    # the target exec'd another program: the trace starts again
                    restarts += 1
                    ops, notes, skipped, files = [], [], [], {}
                    op_block.others = []
                in_snap, snap_lines = None, []
                continue
            raise ParseError(source, here, "#= lines or #snapshot end")
        if line.startswith("#snapshot "):
            in_snap = line.split()[1]
            snap_start = here
            whole = _whole_snapshot(text, pos)
            if whole is not None:  # on to its "#snapshot end" line
                payload, pos, lines = whole
                snap_lines = [payload]
                lineno += lines
            continue
        if line.startswith("#- "):
            body, _, note = line[3:].partition("  # ")
            skipped.append((body.strip(), note))
            continue
        if line.startswith("#sym "):
            parts = line.split(None, 2)
            try:
                symbols[int(parts[1], 16)] = parts[2] if len(parts) > 2 else "?"
            except (ValueError, IndexError):
                raise ParseError(source, here, "#sym ADDR NAME") from None
            continue
        hm = _HEADER.match(line)
        if hm:
            header[hm.group(1)] = hm.group(2)
    if in_snap is not None:
        raise ParseError(source, snap_start, "#snapshot end (the trace is cut short)")
    problem = check_script(op_block.others)
    if problem:
        raise ParseError(source, problem[0] or None, problem[1])
    return Trace(header=header, first=snaps.get("first"), last=snaps.get("last"), ops=ops,
                 notes=notes, skipped=skipped, symbols=symbols, files=files, source=source,
                 restarts=restarts)


class _OpBlock:
    """Op lines (no '#' line among them) into ops and their notes: the C reader
    (``ops._oplines``) takes the lines of the recorder's exact shape; every other line
    goes through :class:`_FastParser` and, failing that, the op language's own parser."""

    def __init__(self, source: str) -> None:
        self.parse = _FastParser(source)
        self.advice = {a: a for a in MADVICE}
        # In order, the ops not of the C reader's kinds: the only ones check_script
        # looks at (memfd, mmap, fork, exit).
        self.others: list[Op] = []

    def __call__(self, text: str, lineno: int, files: dict[str, str]
                 ) -> tuple[list[Op], list[str]]:
        ops, notes, slow = ops_block(text, lineno, _TraceOp, TASK_SIZE, self.advice)
        for i, n, line in slow:
            body, sep, note = line.partition("  # ")
            if not sep and "#" in line:
                body, sep, note = line.partition("#")
            op = self.parse(body, n)
            ops[i] = op
            self.others.append(op)
            notes[i] = note
            if op.kind == "memfd" and "file=" in note:
                fm = _FILE_NOTE.search(note)
                if fm and op.name:
                    files[op.name] = fm.group(1)
        return ops, notes


class _TraceOp(Op):
    """An Op built without the dataclass's checks and field-by-field frozen setattr: a
    subclass with the defaults as class attributes and only the fields a line sets in
    the instance's dict. It is an Op in every way (fields, equality, hash, replace)."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Op):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in _NAMES)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, n) for n in _NAMES))


_NAMES = tuple(f.name for f in dataclasses.fields(Op))
for _f in dataclasses.fields(Op):
    setattr(_TraceOp, _f.name, _f.default)
_new = object.__new__


def _op(**fields: Any) -> Op:
    op = _new(_TraceOp)
    op.__dict__.update(fields)
    return op


_PROTS = {p: (4 if p[2] == "x" else 0) | (2 if p[1] == "w" else 0) | (1 if p[0] == "r" else 0)
          for p in ("---", "r--", "rw-", "r-x", "rwx", "-w-", "-wx", "--x")}
_MAX_LEN = 1 << 64


class _FastParser:
    """The op lines the C reader leaves (``ops._oplines`` takes touch, mprotect, madvise,
    munmap and the mlock family): an anonymous mmap of the recorder's exact shape
    (lower-case hex numbers, canonical words, values the general parser would accept)
    without the general parser; any other line goes through
    :func:`vmascope.ops.language.parse_line`, so an edited trace is checked like any
    script."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._flags: dict[str, frozenset[str] | None] = {}

    def _mmap_flags(self, word: str) -> frozenset[str] | None:
        hit = self._flags.get(word, False)
        if hit is False:
            try:
                hit = parse_line(f"mmap 0x1000 0x1000 rw- {word}").flags
            except ParseError:
                hit = None
            self._flags[word] = hit
        return hit  # type: ignore[return-value]

    def __call__(self, body: str, lineno: int) -> Op:
        w = body.split()
        if not w:
            raise ParseError(self.source, lineno, "an op")
        # int(x, 16) takes 0x1_0; the language does not
        if (len(w) == 5 and w[0] == "mmap" and "_" not in body and w[1][:2] == "0x"
                and w[2][:2] == "0x" and w[3] in _PROTS):
            flags = self._mmap_flags(w[4])
            try:
                addr, length = int(w[1], 16), int(w[2], 16)
            except ValueError:
                flags = None
            if (flags is not None and "anonymous" in flags and addr < TASK_SIZE
                    and length < _MAX_LEN):
                return _op(kind="mmap", addr=addr, length=length, prot=_PROTS[w[3]],
                           flags=flags, line=lineno)
        return parse_line(body.strip(), self.source, lineno)

