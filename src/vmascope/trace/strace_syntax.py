"""The pieces of strace's output syntax: argument lists, values, -k frames; and where each
module's file offsets lie in an address space (to turn -k frames into addresses)."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

from ..kconst import page_align
from ..model import Snapshot
from . import uapi
from .events import CALLS

MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1

# The calls an strace recorder asks for (the kernel's names; ``fault`` is no system call).
TRACED_CALLS: tuple[str, ...] = tuple(sorted(CALLS - {"fault"}))

# Argument kinds per call (x86-64 prototypes): l = long or pointer, i = int (32 bits),
# s = string, p = pointer to an array or struct (address not in the log).
SIGNATURES: dict[str, str] = {
    "mmap": "llllil", "munmap": "ll", "mprotect": "lll", "pkey_mprotect": "llli",
    "madvise": "lli", "process_madvise": "iplil", "mremap": "lllll", "brk": "l",
    "mlock": "ll", "mlock2": "lli", "munlock": "ll", "mlockall": "i", "munlockall": "",
    "mseal": "lll", "prctl": "illll", "mbind": "lllpll", "set_mempolicy": "ipl",
    "memfd_create": "si", "clone": "lllll", "clone3": "ll", "fork": "", "vfork": "",
    "execve": "spp", "execveat": "isppi", "exit": "i", "exit_group": "i",
    "pkey_alloc": "ll", "pkey_free": "i", "shmat": "ili", "shmdt": "l",
}
# strace prints clone's arguments by name, in its own order (x86-64: flags, stack,
# parent_tid, child_tid, tls).
CLONE_ARG_NAMES = {"flags": 0, "child_stack": 1, "stack": 1, "newsp": 1, "parent_tid": 2,
                   "parent_tidptr": 2, "ptid": 2, "child_tidptr": 3, "child_tid": 3,
                   "ctid": 3, "tls": 4, "newtls": 4}
PROCESS_CALLS = frozenset({"clone", "clone3", "fork", "vfork"})


class UnknownSymbol(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class Malformed(Exception):
    """A line that is not what strace writes; the message says what was expected."""



_FRAME = re.compile(r"^>\s+(?P<mod>[^(\s][^(]*)\((?P<inner>.*)\)\s+\[(?P<off>0[xX][0-9a-fA-F]+)\]")
_FRAME_ERR = re.compile(r"^>\s+(?P<what>.*?)(?:\s+\[(?P<off>0[xX][0-9a-fA-F]+)\])?\s*$")
_CHANGED = re.compile(r"\s*=>\s*")
_COMMENT = re.compile(r"/\*.*?\*/")
_INT = re.compile(r"^-?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$")
_SHIFT = re.compile(r"^(\d+)<<([A-Z_0-9]+)$")
# 3</path>; a file gone from its folder (a memfd) is 3</memfd:name>(deleted) with -yy
_FD = re.compile(r"^(-?\d+)<(.*)>(?:\(deleted\))?$", re.DOTALL)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "v": "\v", "f": "\f", "a": "\a", "b": "\b",
            "\\": "\\", '"': '"', "'": "'", "e": "\x1b"}


def unescape(s: str) -> str:
    """strace's C-style escapes (\\n, \\x41, \\101) back to text (bytes as latin-1
    where they are not UTF-8)."""
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c != "\\" or i + 1 == len(s):
            out += c.encode()
            i += 1
            continue
        n = s[i + 1]
        if n == "x" and re.match(r"[0-9a-fA-F]{2}", s[i + 2:i + 4]):
            out.append(int(s[i + 2:i + 4], 16))
            i += 4
        elif n in "01234567":
            m = re.match(r"[0-7]{1,3}", s[i + 1:])
            assert m
            out.append(int(m.group(0), 8) & 0xFF)
            i += 1 + len(m.group(0))
        else:
            out += _ESCAPES.get(n, n).encode()
            i += 2
    try:
        return out.decode()
    except UnicodeDecodeError:
        return out.decode("latin-1")


def split_args(text: str) -> tuple[list[str], int | None]:
    """Split ``a, b, {c, d}, "e,f")...`` at its top-level commas, up to the ``)`` that
    closes the argument list. Returns (arguments, index just past that ``)``; None when
    the text ends first: an unfinished call)."""
    args: list[str] = []
    depth = 0
    start = 0
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            if i >= n:
                raise Malformed("a closing quote")
        elif c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise Malformed("the end of a /* comment */")
            i = j + 1
        elif c == "<" and i > 0 and text[i - 1].isdigit() and not text.startswith("<<", i) \
                and text[i - 1] != "<":
            # an fd decoration 3</path> (nested <char 1:5> with -yy)
            level = 0
            while i < n:
                if text[i] == "<":
                    level += 1
                elif text[i] == ">":
                    level -= 1
                    if level == 0:
                        break
                elif text[i] == "\\":
                    i += 1
                i += 1
            if i >= n:
                raise Malformed("the end of an fd decoration <...>")
        elif c in "([{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth < 0:
                raise Malformed("balanced brackets")
        elif c == ")":
            if depth == 0:
                piece = text[start:i].strip()
                if piece or args:
                    args.append(piece)
                return args, i + 1
            depth -= 1
        elif c == "," and depth == 0:
            args.append(text[start:i].strip())
            start = i + 1
        i += 1
    piece = text[start:].strip()
    if piece or args:
        args.append(piece)
    return args, None


def value(tok: str) -> tuple[int, str | None, str | None]:
    """One argument -> (number, its string if it was one, an fd's path)."""
    tok = _COMMENT.sub("", tok).strip()
    tok = _CHANGED.split(tok, 1)[0].strip()  # an argument the call changed: "{...} => {...}"
    if not tok:
        return 0, None, None
    if tok[0] == '"':
        end = tok.rfind('"')
        return 0, unescape(tok[1:end]), None
    if tok[0] in "[{":
        return 0, None, None
    m = _FD.match(tok)
    if m:
        path = m.group(2)
        # -yy adds "<char 1:5>" or similar after the path: keep the path
        inner = re.match(r"^(.*?)(?:<[^<>]*>)?$", path, re.DOTALL)
        return int(m.group(1)), None, unescape(inner.group(1) if inner else path)
    total = 0
    for term in tok.split("|"):
        term = term.strip()
        if _INT.match(term):
            neg = term.startswith("-")
            body = term[1:] if neg else term
            if body.startswith(("0x", "0X")):
                v = int(body, 16)
            elif len(body) > 1 and body.startswith("0"):
                v = int(body, 8)
            else:
                v = int(body)
            total |= (-v if neg else v) & MASK64
            continue
        m = _SHIFT.match(term)
        if m:
            if m.group(2) not in uapi.SHIFTS:
                raise UnknownSymbol(m.group(2))
            total |= int(m.group(1)) << uapi.SHIFTS[m.group(2)]
            continue
        if term == "NULL":
            continue
        if re.match(r"^[A-Z_][A-Z_0-9]*$", term):
            if term not in uapi.SYMBOLS:
                raise UnknownSymbol(term)
            total |= uapi.SYMBOLS[term]
            continue
        raise Malformed(f"an argument (a number, a constant, a string), not {tok!r}")
    return total, None, None


def struct_fields(tok: str) -> dict[str, str]:
    """``{flags=A|B, stack=0x1}`` -> {"flags": "A|B", "stack": "0x1"}."""
    tok = _COMMENT.sub("", tok).strip()
    tok = _CHANGED.split(tok, 1)[0].strip()
    if not (tok.startswith("{") and tok.endswith("}")):
        raise Malformed("a struct {...}")
    parts, _ = split_args(tok[1:-1])
    out = {}
    for p in parts:
        if "=" in p:
            k, v = p.split("=", 1)
            out[k.strip()] = v.strip()
    return out


# -- frames -------------------------------------------------------------------------------


# A clone3 whose struct strace did not decode (-e raw=all) is taken as glibc's
# pthread_create (posix_spawn's children exec at once; fork uses clone).
RAW_CLONE3_FLAGS = uapi.CLONE_VM | uapi.CLONE_THREAD


@dataclasses.dataclass(slots=True)
class Pending:
    """A call strace printed as <unfinished ...>."""

    name: str
    text: str
    lineno: int


@dataclasses.dataclass(slots=True)
class Frame:
    text: str
    module: str | None  # path as strace printed it
    offset: int | None  # offset in the module's file


def frame(line: str) -> Frame:
    body = line.strip()
    m = _FRAME.match(body)
    if m:
        mod = m.group("mod").strip()
        off = int(m.group("off"), 16)
        inner = m.group("inner")
        base = os.path.basename(mod)
        sym, plus, soff = inner.rpartition("+0x")
        if plus and re.fullmatch(r"[0-9a-fA-F]+", soff):
            text = f"{base}:{sym}+0x{int(soff, 16):x}"
        elif inner and "+" not in inner:
            text = f"{base}:{inner}+0x0"
        else:
            text = f"{base}:+0x{off:x}"
        return Frame(text, mod, off)
    if _FRAME_ERR.match(body):
        return Frame("?", None, None)
    raise Malformed("a -k stack line ' > module(symbol+0xoff) [0xoff]'")


class Modules:
    """Where each module's file offsets are in one address space: file mmaps seen in the
    trace, then the ``maps`` given by the caller."""

    def __init__(self, maps: Snapshot | Mapping[str, int] | None) -> None:
        self.seen: dict[str, list[tuple[int, int, int]]] = {}  # path -> (start, end, off)
        self.maps = maps
        self._snap_index: dict[str, list[tuple[int, int, int]]] | None = None

    def copy(self) -> Modules:
        other = Modules(self.maps)
        other.seen = {k: list(v) for k, v in self.seen.items()}
        other._snap_index = self._snap_index
        return other

    def add(self, path: str, start: int, length: int, off: int) -> None:
        self.seen.setdefault(path, []).append((start, start + page_align(length), off))

    def _snapshot_index(self) -> dict[str, list[tuple[int, int, int]]]:
        if self._snap_index is None:
            idx: dict[str, list[tuple[int, int, int]]] = {}
            snap = self.maps
            assert isinstance(snap, Snapshot)
            for i in range(len(snap)):
                name = snap.name(i)
                if name:
                    idx.setdefault(name, []).append(
                        (int(snap.start[i]), int(snap.end[i]), int(snap.offset[i])))
            self._snap_index = idx
        return self._snap_index

    def address(self, path: str, off: int) -> int | None:
        for start, end, foff in reversed(self.seen.get(path, ())):
            if foff <= off < foff + (end - start):
                return start + off - foff
        if isinstance(self.maps, Snapshot):
            for start, end, foff in self._snapshot_index().get(path, ()):
                if foff <= off < foff + (end - start):
                    return start + off - foff
        elif self.maps is not None and path in self.maps:
            return self.maps[path] + off
        return None


# -- lines strace writes ------------------------------------------------------------------

LINE = re.compile(
    r"^(?:\[pid\s+(?P<bpid>\d+)\]\s*|(?P<cpid>\d+)\s+(?=\S))?"
    r"(?:(?P<clock>\d\d:\d\d:\d\d(?:\.\d+)?)\s+|(?P<num>\d+\.\d+)\s+)?"
    r"(?P<body>.*)$")
CALL = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z_0-9]*)\((?P<rest>.*)$")
RESUMED = re.compile(r"^<\.\.\.\s+(?P<name>[A-Za-z_][A-Za-z_0-9]*)\s+resumed>(?P<rest>.*)$")
UNFINISHED = re.compile(r"\s*<unfinished \.\.\.>\s*$")
RESULT = re.compile(
    r"^=\s+(?P<val>-?\d+|0[xX][0-9a-fA-F]+|\?)(?:<[^>]*>(?:\(deleted\))?)?"
    r"(?:\s+(?P<err>E[A-Z0-9_]+)(?:\s+\([^)]*\))?)?"
    r"(?:\s+\(errno\s+(?P<errnum>\d+)\))?"
    r"(?:\s+\([^)]*\))?"  # "(flags O_RDWR)" and other notes
    r"(?:\s+<(?:unavailable|detached \.\.\.)>)?"
    r"(?:\s+<(?P<dur>\d+(?:\.\d+)?)>)?\s*$")
EXIT = re.compile(r"^\+\+\+ (?:exited with (?P<code>-?\d+)|killed by (?P<sig>SIG[A-Z0-9+-]+)"
                   r"(?: \(core dumped\))?|(?P<super>superseded by execve.*?)) \+\+\+\s*$")
# "mmap(...strace: Process 12 attached": the notice, written to stderr while a call's
# line was half printed, and the rest of the line follows on the next one (what was
# printed before it is kept as it is, a trailing space included: "wait4(12, strace: ...")
# ("/usr/bin/strace: ..." when strace was run by its path). Alone on its line, the
# notice leaves nothing to carry over.
NOTE_INSIDE = re.compile(
    r"^(.*?)(?:(?:/[\w.+-]+)*/)?strace: Process \d+ (?:attached|detached)\s*$")
STRACE_NOTE = re.compile(
    r"^(?:(?:\S*/)?strace: |Process \d+ (?:attached|detached)|\?\?\?|<\.\.\. resuming"
    r"|\[ Process PID=\d+ runs in )")


def result_value(res: re.Match[str]) -> int | None:
    """The number a RESULT match stands for: None for '?', -errno for an error."""
    val = res.group("val")
    if val == "?":
        return None
    v = int(val, 16) if val.startswith(("0x", "0X")) else int(val)
    if v >= 1 << 63:
        v -= 1 << 64
    if v == -1 and res.group("err"):
        num = uapi.errno_number(res.group("err"))
        if num is None:
            raise UnknownSymbol(res.group("err"))
        return -num
    if v == -1 and res.group("errnum"):
        return -int(res.group("errnum"))
    return v
