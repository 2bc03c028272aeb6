"""The trace file: the op language with absolute addresses, annotated, between two snapshots.

A trace is a valid op script (``vmascope simulate`` runs it); everything else is in
comments, so it stays readable, editable and compresses well (``.gz``, ``.zst``, ``.xz``
by name on writing, by content on reading)::

    #!vmascope-trace 1
    # recorder: bpf
    # pid: 4242
    # ...                                   more header keys (see HEADER_KEYS)
    #snapshot first
    #=<base64 of a snapshot file (docs/snapshot-format.md), 76 characters a line>
    #snapshot end
    memfd f1 0x10000000000  # file /usr/lib/x86_64-linux-gnu/libc.so.6 dev=8:1 ino=1234
    mmap 0x7f0000000000 0x200000 rw- private,anonymous,fixed  # t=0.001 tid=4242 ret=0x7f.. at=0x7f1/0x55a
    touch 0x7f0000001000 write  # t=0.002 tid=4243 at=0x55b fault
    #- mmap 0 0x1000 rw- private,anonymous  # t=0.003 tid=4250 ret=-12 skip=failed
    #snapshot last
    #=...
    #snapshot end
    #sym 0x7f1 libc.so.6:__mmap+0x26
    # lost: 0

An op line's comment holds its annotation: ``t=`` seconds since the start, ``tid=``,
``pid=`` when not the target, ``ret=`` the real result, ``at=`` the user stack
(instruction pointers, innermost first, ``/``-separated), ``fr=`` frames a recorder
symbolized itself (``|``-separated), ``inferred`` for events deduced rather than seen,
and ``fault`` for a page fault. A line starting ``#-`` is an event that is recorded but
not replayed; its ``skip=`` says why (a child process's call, a failed call, a call the
model cannot express). ``#sym ADDR TEXT`` names an instruction pointer (written at the
end of a recording, from the target's ELF symbol tables).
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import io
import lzma
import os
import re
from pathlib import Path
from typing import IO, Any

import zstandard

from ..errors import ParseError, UsageError
from ..model import Snapshot
from ..ops._oplines import ops_block
from ..ops.language import MADVICE, TASK_SIZE, Op, check_script, parse_line

MAGIC_LINE = "#!vmascope-trace"
VERSION = 1
# Header keys a reader knows (others are kept as they are).
HEADER_KEYS = ("recorder", "pid", "command", "comm", "kernel", "machine", "started",
               "duration", "faults", "lost", "events", "skipped", "follow", "max_map_count")
B64_WIDTH = 76


@dataclasses.dataclass(slots=True)
class Annotation:
    """What an op line's comment says about the event behind it."""

    t: float | None = None
    tid: int | None = None
    pid: int | None = None
    ret: int | None = None
    stack: tuple[int, ...] = ()
    frames: tuple[str, ...] = ()
    inferred: bool = False
    fault: bool = False
    skip: str | None = None
    file: str | None = None

    def text(self) -> str:
        parts = []
        if self.t is not None:
            parts.append(f"t={self.t:.6f}")
        if self.tid is not None:
            parts.append(f"tid={self.tid}")
        if self.pid is not None:
            parts.append(f"pid={self.pid}")
        if self.ret is not None:
            parts.append(f"ret={self.ret:#x}" if self.ret > 4096 else f"ret={self.ret}")
        if self.stack:
            parts.append("at=" + "/".join(f"{ip:#x}" for ip in self.stack))
        if self.frames:
            parts.append("fr=" + "|".join(f.replace(" ", "_") for f in self.frames))
        if self.fault:
            parts.append("fault")
        if self.inferred:
            parts.append("inferred")
        if self.skip:
            parts.append(f"skip={self.skip}")
        if self.file:
            parts.append(f"file={self.file}")
        return " ".join(parts)


def parse_annotation(text: str) -> Annotation:
    a = Annotation()
    for word in text.split():
        key, eq, val = word.partition("=")
        try:
            if key == "t" and eq:
                a.t = float(val)
            elif key == "tid" and eq:
                a.tid = int(val)
            elif key == "pid" and eq:
                a.pid = int(val)
            elif key == "ret" and eq:
                a.ret = int(val, 0)
            elif key == "at" and eq:
                a.stack = tuple(int(x, 16) for x in val.split("/") if x)
            elif key == "fr" and eq:
                a.frames = tuple(val.split("|"))
            elif key == "skip" and eq:
                a.skip = val
            elif key == "file" and eq:
                a.file = val
            elif word == "fault":
                a.fault = True
            elif word == "inferred":
                a.inferred = True
        except ValueError:
            continue  # an annotation is informative; a hand-edited one may be anything
    return a


@dataclasses.dataclass
class Trace:
    """A trace file, read: the ops the model replays, with their annotations."""

    header: dict[str, str]
    first: Snapshot | None
    last: Snapshot | None
    ops: list[Op]
    notes: list[str]  # each op's annotation text (parse_annotation reads it)
    skipped: list[tuple[str, str]]  # (the event text, its annotation text) of #- lines
    symbols: dict[int, str]
    files: dict[str, str]  # memfd NAME of a file mapping -> the file's path
    source: str = "<trace>"
    restarts: int = 0  # the target exec'd: ops before its last exec are dropped

    def annotation(self, i: int) -> Annotation:
        return parse_annotation(self.notes[i])

    @property
    def lost(self) -> int:
        try:
            return int(self.header.get("lost", "0").split()[0])
        except (ValueError, IndexError):
            return 0


# ---------------------------------------------------------------------------- writing

def _compressing(raw: IO[bytes], name: str) -> IO[bytes]:
    """A binary stream over ``raw`` that compresses by the file name's extension."""
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6)  # type: ignore[return-value]
    if name.endswith(".zst"):
        return zstandard.ZstdCompressor(level=6).stream_writer(raw)  # type: ignore[return-value]
    if name.endswith(".xz"):
        return lzma.LZMAFile(raw, "wb")  # type: ignore[return-value]
    return raw


def _name_tmpfile(fd: int, path: Path) -> None:
    """linkat(fd's /proc link, path, AT_SYMLINK_FOLLOW): give an O_TMPFILE file a name
    (os.link does not follow the /proc link)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, at_symlink_follow = -100, 0x400
    if libc.linkat(at_fdcwd, f"/proc/self/fd/{fd}".encode(), at_fdcwd,
                   os.fsencode(path), at_symlink_follow) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))


class TraceWriter:
    """Writes a trace to ``path`` through a temporary file renamed at :meth:`close`;
    :meth:`abort` (or an exception inside ``with``) leaves nothing behind."""

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.ips: set[int] = set()  # instruction pointers written (for the #sym lines)
        # An unnamed file (O_TMPFILE) that gets its name at close: a recording killed
        # with SIGKILL leaves nothing; where the file system cannot, a temporary name.
        self._fd: int | None = None
        try:
            try:
                self._fd = os.open(self.path.parent, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC,
                                   0o644)
                raw = os.fdopen(os.dup(self._fd), "wb")
            except (OSError, AttributeError):
                self._fd = None
                raw = open(self.tmp, "wb")
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot write: {exc.strerror}") from None
        self._raw = raw
        self._bin = _compressing(raw, self.path.name)
        self._fh = io.TextIOWrapper(self._bin, encoding="utf-8", errors="replace",
                                    newline="\n", write_through=False)
        self._fh.write(f"{MAGIC_LINE} {VERSION}\n")
        self.header(header)

    def header(self, items: dict[str, Any]) -> None:
        for key, value in items.items():
            if value is None:
                continue
            text = " ".join(str(value).split())
            self._fh.write(f"# {key}: {text}\n")

    def snapshot(self, which: str, data: bytes) -> None:
        """Embed a snapshot file's bytes (which: "first" or "last")."""
        w = self._fh.write
        w(f"#snapshot {which}\n")
        b64 = base64.b64encode(data).decode("ascii")
        for i in range(0, len(b64), B64_WIDTH):
            w("#=" + b64[i:i + B64_WIDTH] + "\n")
        w("#snapshot end\n")

    def op(self, text: str, note: Annotation | str) -> None:
        note_text = note if isinstance(note, str) else note.text()
        self._fh.write(f"{text}  # {note_text}\n" if note_text else text + "\n")

    def skipped(self, text: str, note: Annotation) -> None:
        self._fh.write(f"#- {text}  # {note.text()}\n")

    def comment(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self._fh.write(f"# {line}\n")

    def symbols(self, names: dict[int, str]) -> None:
        for ip in sorted(names):
            self._fh.write(f"#sym {ip:#x} {' '.join(names[ip].split())}\n")

    def close(self) -> None:
        self._fh.flush()
        self._fh.close()
        if not self._raw.closed:
            self._raw.close()
        if self._fd is not None:
            _name_tmpfile(self._fd, self.tmp)
            os.close(self._fd)
            self._fd = None
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self._fh.close()
        except Exception:  # noqa: BLE001 (the file goes anyway)
            pass
        if self._fd is not None:
            os.close(self._fd)  # the unnamed file is gone with its last descriptor
            self._fd = None
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ---------------------------------------------------------------------------- reading

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

    with open_input(Path(path), source) as fh:
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

    def end_snapshot(payload: str) -> None:
        nonlocal in_snap, restarts, ops, notes, skipped, files
        assert in_snap is not None
        snaps[in_snap] = _snapshot_from(payload, source, snap_start)
        if in_snap == "first" and (ops or skipped):
            # the target exec'd another program: the trace starts again
            restarts += 1
            ops, notes, skipped, files = [], [], [], {}
        in_snap = None

    # A '#' line at a time (header, snapshots, symbols, skipped events), a well-formed
    # snapshot at once, and the op lines between two '#' lines as one block (_OpBlock).
    pos, lineno, n = 0, 1, len(text)
    while pos < n:
        if text[pos] != "#":
            nxt = text.find("\n#", pos)
            end = n if nxt < 0 else nxt + 1
            block = text[pos:end]
            if in_snap is not None and block.strip("\n"):
                ahead = len(block) - len(block.lstrip("\n"))
                raise ParseError(source, lineno + block.count("\n", 0, ahead),
                                 "#= lines or #snapshot end")
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
                end_snapshot("".join(snap_lines))
                snap_lines = []
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
    problem = check_script(ops)
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

    def __call__(self, text: str, lineno: int, files: dict[str, str]
                 ) -> tuple[list[Op], list[str]]:
        ops, notes, slow = ops_block(text, lineno, _TraceOp, TASK_SIZE, self.advice)
        for i, n, line in slow:
            body, sep, note = line.partition("  # ")
            if not sep and "#" in line:
                body, sep, note = line.partition("#")
            op = self.parse(body, n)
            ops[i] = op
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
_SIMPLE = {"munmap": 3, "mprotect": 4, "madvise": 4, "mlock": 3, "munlock": 3, "mseal": 3}


class _FastParser:
    """The op lines a recorder writes, parsed without the general parser where the line
    has the recorder's exact shape (lower-case hex numbers, canonical words, values the
    general parser would accept); any other line goes through
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
        kind = w[0]
        n = len(w)
        if n >= 2 and "_" not in body:  # int(x, 16) takes 0x1_0; the language does not
            try:
                if kind == "touch":
                    if n == 3 and w[1][:2] == "0x" and w[2] in ("write", "read"):
                        addr = int(w[1], 16)
                        if addr < TASK_SIZE:
                            return _op(kind="touch", addr=addr, write=w[2] == "write",
                                       line=lineno)
                elif (_SIMPLE.get(kind) == n and w[1][:2] == "0x" and w[2][:2] == "0x"):
                    addr, length = int(w[1], 16), int(w[2], 16)
                    if addr < TASK_SIZE and length < _MAX_LEN:
                        if kind == "mprotect":
                            prot = _PROTS.get(w[3])
                            if prot is not None:
                                return _op(kind=kind, addr=addr, length=length, prot=prot,
                                           line=lineno)
                        elif kind == "madvise":
                            if w[3] in MADVICE:
                                return _op(kind=kind, addr=addr, length=length,
                                           advice=w[3], line=lineno)
                        else:
                            return _op(kind=kind, addr=addr, length=length, line=lineno)
                elif (kind == "mmap" and n == 5 and w[1][:2] == "0x" and w[2][:2] == "0x"
                      and w[3] in _PROTS):
                    flags = self._mmap_flags(w[4])
                    addr, length = int(w[1], 16), int(w[2], 16)
                    if (flags is not None and "anonymous" in flags and addr < TASK_SIZE
                            and length < _MAX_LEN):
                        return _op(kind="mmap", addr=addr, length=length,
                                   prot=_PROTS[w[3]], flags=flags, line=lineno)
            except ValueError:
                pass
        return parse_line(body.strip(), self.source, lineno)

