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
from pathlib import Path
from typing import IO, Any

import zstandard

from ..errors import UsageError
from ..model import Snapshot
from ..ops.language import Op

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
