"""The operation language: one op per line, shared by the simulator, the lab and traces.

See docs/op-language.md for the full description. In short::

    mmap     ADDR LEN PROT [FLAGS [fd=NAME] [off=N]]   FLAGS: private|shared,anonymous,fixed,
                                          noreserve,populate,growsdown,stack; fd=: a
                                          memfd's pages
    munmap   ADDR LEN
    mprotect ADDR LEN PROT
    madvise  ADDR LEN ADVICE
    mremap   ADDR OLDLEN NEWLEN [NEWADDR] [FLAGS]   FLAGS: maymove,fixed,dontunmap
    touch    ADDR [write|read]
    fork     [CHILD]                      the script's process forks; CHILD: its fork child
                                          CHILD forks (the new one is numbered next)
    name     ADDR LEN NAME|-
    mbind    ADDR LEN default|bind:NODES|interleave:NODES|preferred:NODE
    heap     ADDR                         the initial program break (start_brk = brk = ADDR)
    brk      ADDR
    mlock    ADDR LEN [onfault]           mlock, or mlock2(MLOCK_ONFAULT)
    munlock  ADDR LEN
    mlockall FLAGS                        FLAGS: current,future,onfault
    munlockall
    mseal    ADDR LEN
    exit     CHILD                        the fork child CHILD (0-based, in fork order) exits
    memfd    NAME LEN                     memfd_create(NAME) + ftruncate(LEN)
    pkey_alloc                            pkey_alloc(0, 0): keys 1, 2, ... in order
    pkey_mprotect ADDR LEN PROT PKEY      PKEY -1 is plain mprotect
    uffd     ADDR LEN MODES|off           register the range with the script's userfaultfd
                                          (MODES: missing,wp) or unregister it (off)

Numbers are decimal, 0x-hex, or carry a unit: ``16p`` (pages of 4 KiB), ``4K``, ``2M``, ``1G``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

from ..errors import ParseError
from ..kconst import PAGE_SIZE
from .checks import (  # noqa: F401 (the vocabulary is part of this module's interface)
    KINDS, MADV_NUMBERS, MADVICE, MAX_CHILDREN, MAX_LENGTH, MAX_NAME, MAX_NUMNODES,
    MAX_TOKEN, MBIND_MODES, MLOCK_FLAGS, MLOCKALL_FLAGS, MLOCKALL_ORDER, MMAP_FLAGS,
    UFFD_MODES, UFFD_ORDER,
    MREMAP_FLAGS, NO_ADDRESS, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, TASK_SIZE,
    check_op, check_script,
)


_NUM = re.compile(r"^(0[xX][0-9a-fA-F]+|[0-9]+)([pPkKmMgG]?)$")
_UNITS = {"": 1, "p": PAGE_SIZE, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_PROT = re.compile(r"^[r-][w-][x-]$")
_NODES = re.compile(r"^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$")


@dataclasses.dataclass(frozen=True, slots=True)
class Op:
    """One operation. Unused fields keep their defaults."""

    kind: str
    addr: int = 0
    length: int = 0
    prot: int = PROT_NONE
    flags: frozenset[str] = frozenset()
    advice: str | None = None
    new_len: int = 0
    new_addr: int | None = None
    write: bool = True
    name: str | None = None
    mode: str | None = None
    nodes: tuple[int, ...] = ()
    fd: str | None = None  # mmap: the memfd mapped (its NAME), None for anonymous memory
    offset: int = 0  # mmap of a memfd: the file offset in bytes
    index: int = 0  # exit: the fork child; fork: the one that forks (-1: the script's
    # process, so Op("fork", index=-1) is the plain ``fork``); pkey_mprotect: the key
    line: int = 0  # line in the script it came from (0 when built in code)

    @property
    def end(self) -> int:
        return self.addr + self.length

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.kind}
        for f in dataclasses.fields(self):
            if f.name in ("kind", "line"):
                continue
            val = getattr(self, f.name)
            if val == f.default:
                continue
            if isinstance(val, frozenset):
                val = sorted(val)
            elif isinstance(val, tuple):
                val = list(val)
            out[f.name] = val
        if self.kind == "fork":  # no index: the script's process; child 0 is index 0
            out.pop("index", None)
            if self.index >= 0:
                out["index"] = self.index
        return out

    def shifted(self, base: int) -> Op:
        """The same op with every address moved by ``base`` (arena-relative -> absolute)."""
        if self.kind in NO_ADDRESS:
            return self
        new_addr = None if self.new_addr is None else self.new_addr + base
        return dataclasses.replace(self, addr=self.addr + base, new_addr=new_addr)


def prot_text(prot: int) -> str:
    return ("r" if prot & PROT_READ else "-") + ("w" if prot & PROT_WRITE else "-") + (
        "x" if prot & PROT_EXEC else "-"
    )


def parse_number(token: str) -> int:
    """'16p' -> 65536, '0x10' -> 16, '2M' -> 2097152. ValueError if malformed."""
    if len(token) > MAX_TOKEN:
        raise ValueError(token[:MAX_TOKEN] + "...")
    if token.isdigit():
        return int(token)
    if token[-1:] in ("p", "P") and token[:-1].isdigit():
        return int(token[:-1]) * PAGE_SIZE
    m = _NUM.match(token)
    if not m:
        raise ValueError(token)
    return int(m.group(1), 0) * _UNITS[m.group(2).lower()]


def format_number(value: int) -> str:
    """Shortest faithful spelling: pages where aligned, hex otherwise."""
    if value and value % PAGE_SIZE == 0:
        return f"{value // PAGE_SIZE}p"
    return hex(value) if value >= 16 else str(value)


def format_op(op: Op) -> str:
    n = format_number
    k = op.kind
    if k == "mmap":
        text = f"mmap {n(op.addr)} {n(op.length)} {prot_text(op.prot)} {_flag_text(op.flags, MMAP_ORDER)}"
        if op.fd is not None:
            text += f" fd={op.fd}" + (f" off={n(op.offset)}" if op.offset else "")
        return text
    if k in ("munmap", "munlock", "mseal"):
        return f"{k} {n(op.addr)} {n(op.length)}"
    if k == "mprotect":
        return f"mprotect {n(op.addr)} {n(op.length)} {prot_text(op.prot)}"
    if k == "madvise":
        return f"madvise {n(op.addr)} {n(op.length)} {op.advice}"
    if k == "mremap":
        parts = ["mremap", n(op.addr), n(op.length), n(op.new_len)]
        if op.new_addr is not None:
            parts.append(n(op.new_addr))
        if op.flags:
            parts.append(_flag_text(op.flags, MREMAP_ORDER))
        return " ".join(parts)
    if k == "touch":
        return f"touch {n(op.addr)} {'write' if op.write else 'read'}"
    if k == "fork":
        return "fork" if op.index < 0 else f"fork {op.index}"
    if k == "name":
        return f"name {n(op.addr)} {n(op.length)} {op.name if op.name is not None else '-'}"
    if k == "mbind":
        mode = op.mode or "default"
        if mode != "default":
            mode += ":" + ",".join(str(x) for x in op.nodes)
        return f"mbind {n(op.addr)} {n(op.length)} {mode}"
    if k in ("heap", "brk"):
        return f"{k} {n(op.addr)}"
    if k == "mlock":
        return f"mlock {n(op.addr)} {n(op.length)}" + (" onfault" if op.flags else "")
    if k == "mlockall":
        return f"mlockall {_flag_text(op.flags, MLOCKALL_ORDER)}"
    if k in ("munlockall", "pkey_alloc"):
        return k
    if k == "exit":
        return f"exit {op.index}"
    if k == "memfd":
        return f"memfd {op.name} {n(op.length)}"
    if k == "pkey_mprotect":
        return f"pkey_mprotect {n(op.addr)} {n(op.length)} {prot_text(op.prot)} {op.index}"
    if k == "uffd":
        return f"uffd {n(op.addr)} {n(op.length)} {_flag_text(op.flags, UFFD_ORDER) or 'off'}"
    raise ValueError(f"unknown op kind {k!r}")


MMAP_ORDER = ("private", "shared", "anonymous", "fixed", "noreserve", "populate", "growsdown",
              "stack")
MREMAP_ORDER = ("maymove", "fixed", "dontunmap")


def _flag_text(flags: frozenset[str], order: tuple[str, ...]) -> str:
    return ",".join(f for f in order if f in flags)


def script_text(ops: Iterable[Op]) -> str:
    return "".join(format_op(op) + "\n" for op in ops)


def _strip_comment(line: str) -> str:
    # '#' starts a comment at the start of a line or after white space.
    if "#" not in line:
        return line
    for i, ch in enumerate(line):
        if ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def parse_script(text: str, source: str = "<script>") -> list[Op]:
    """Parse a whole script. Raises ParseError naming source:line and what was expected."""
    ops: list[Op] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        ops.append(parse_line(line, source, lineno))
    problem = check_script(ops)
    if problem:
        raise ParseError(source, problem[0] or None, problem[1])
    return ops


def parse_line(line: str, source: str = "<script>", lineno: int = 0) -> Op:
    op = _parse_line(line, source, lineno)
    problem = check_op(op)
    if problem:
        raise ParseError(source, lineno or None, f"{op.kind}: expected {problem}, got {line!r}")
    return op


def _parse_line(line: str, source: str, lineno: int) -> Op:
    words = line.split()
    kind = words[0].lower()
    args = words[1:]

    def fail(expected: str) -> ParseError:
        return ParseError(source, lineno or None, f"{kind}: expected {expected}, got {line!r}")

    def num(i: int, what: str) -> int:
        if i >= len(args):
            raise fail(what)
        try:
            return parse_number(args[i])
        except ValueError:
            raise fail(f"{what} as a number (decimal, 0x-hex, or with p/K/M/G)") from None

    def prot(i: int) -> int:
        if i >= len(args) or not _PROT.match(args[i]):
            raise fail("PROT as maps prints it (---, r--, rw-, r-x, rwx)")
        t = args[i]
        return (PROT_READ if t[0] == "r" else 0) | (PROT_WRITE if t[1] == "w" else 0) | (
            PROT_EXEC if t[2] == "x" else 0
        )

    def count(lo: int, hi: int, usage: str) -> None:
        if not lo <= len(args) <= hi:
            raise fail(usage)

    if kind == "mmap":
        usage = "mmap ADDR LEN PROT [FLAGS [fd=NAME] [off=N]]"
        count(3, 6, usage)
        flags = frozenset({"private", "anonymous"})
        fd, off = None, 0
        for word in args[4:]:
            key, eq, value = word.partition("=")
            if key.lower() == "fd" and eq and fd is None:
                fd = value
            elif key.lower() == "off" and eq and not off:
                try:
                    off = parse_number(value)
                except ValueError:
                    raise fail("off=N as a number") from None
            else:
                raise fail(usage)
        if off and fd is None:
            raise fail("off=N with fd=NAME only")
        if len(args) >= 4:
            flags = frozenset(args[3].lower().split(","))
            bad = flags - MMAP_FLAGS
            if bad or ("private" in flags) == ("shared" in flags):
                raise fail("FLAGS: a comma list with private or shared, and of "
                            + ", ".join(sorted(MMAP_FLAGS)))
            if fd is None:
                flags = flags | {"anonymous"}
            elif "anonymous" in flags:
                raise fail("no anonymous with fd=NAME")
        return Op("mmap", addr=num(0, "ADDR"), length=num(1, "LEN"), prot=prot(2),
                  flags=flags, fd=fd, offset=off, line=lineno)
    if kind == "munmap":
        count(2, 2, "munmap ADDR LEN")
        return Op("munmap", addr=num(0, "ADDR"), length=num(1, "LEN"), line=lineno)
    if kind == "mprotect":
        count(3, 3, "mprotect ADDR LEN PROT")
        return Op("mprotect", addr=num(0, "ADDR"), length=num(1, "LEN"), prot=prot(2), line=lineno)
    if kind == "madvise":
        count(3, 3, "madvise ADDR LEN ADVICE")
        advice = args[2].lower()
        if advice not in MADVICE:
            raise fail("ADVICE, one of " + " ".join(MADVICE))
        return Op("madvise", addr=num(0, "ADDR"), length=num(1, "LEN"), advice=advice, line=lineno)
    if kind == "mremap":
        count(3, 5, "mremap ADDR OLDLEN NEWLEN [NEWADDR] [FLAGS]")
        rest = args[3:]
        flags: frozenset[str] = frozenset()
        if rest and not _NUM.match(rest[-1]):
            flags = frozenset(f for f in rest[-1].lower().split(",") if f not in ("", "-", "none"))
            if flags - MREMAP_FLAGS:
                raise fail("FLAGS: a comma list of maymove, fixed, dontunmap")
            rest = rest[:-1]
        if len(rest) > 1:
            raise fail("mremap ADDR OLDLEN NEWLEN [NEWADDR] [FLAGS]")
        new_addr = num(3, "NEWADDR") if rest else None
        return Op("mremap", addr=num(0, "ADDR"), length=num(1, "OLDLEN"), new_len=num(2, "NEWLEN"),
                  new_addr=new_addr, flags=flags, line=lineno)
    if kind == "touch":
        count(1, 2, "touch ADDR [write|read]")
        mode = args[1].lower() if len(args) == 2 else "write"
        if mode not in ("write", "read"):
            raise fail("write or read")
        return Op("touch", addr=num(0, "ADDR"), write=mode == "write", line=lineno)
    if kind == "fork":
        count(0, 1, "fork [CHILD] (no argument: the script's process forks; CHILD: its "
              "fork child CHILD does)")
        return Op("fork", index=num(0, "CHILD") if args else -1, line=lineno)
    if kind == "name":
        if len(args) < 3:
            raise fail("name ADDR LEN NAME (or - to clear)")
        addr, length = num(0, "ADDR"), num(1, "LEN")
        name = line.split(None, 3)[3].strip()
        return Op("name", addr=addr, length=length, name=None if name == "-" else name, line=lineno)
    if kind == "mbind":
        count(3, 3, "mbind ADDR LEN MODE")
        mode, _, nodes_text = args[2].lower().partition(":")
        if mode not in MBIND_MODES or (mode == "default") != (nodes_text == ""):
            raise fail("MODE: default, bind:NODES, interleave:NODES or preferred:NODE")
        if nodes_text and not _NODES.match(nodes_text):
            raise fail("NODES like 0, 0-1 or 0,2")
        nodes: list[int] = []
        for part in filter(None, nodes_text.split(",")):
            lo, _, hi = part.partition("-")
            if len(lo) > 5 or len(hi) > 5 or int(lo) >= MAX_NUMNODES or (
                    hi and int(hi) >= MAX_NUMNODES):
                raise fail(f"node ids below MAX_NUMNODES ({MAX_NUMNODES})")
            if hi and int(hi) < int(lo):
                raise fail("node ranges LO-HI with LO <= HI")
            nodes.extend(range(int(lo), int(hi or lo) + 1))
        nodes = sorted(set(nodes))
        if mode == "preferred" and len(nodes) != 1:
            raise fail("preferred:NODE with one node")
        return Op("mbind", addr=num(0, "ADDR"), length=num(1, "LEN"), mode=mode,
                  nodes=tuple(nodes), line=lineno)
    if kind in ("heap", "brk"):
        count(1, 1, f"{kind} ADDR")
        return Op(kind, addr=num(0, "ADDR"), line=lineno)
    if kind == "mlock":
        count(2, 3, "mlock ADDR LEN [onfault]")
        if len(args) == 3 and args[2].lower() != "onfault":
            raise fail("mlock ADDR LEN [onfault]")
        return Op("mlock", addr=num(0, "ADDR"), length=num(1, "LEN"),
                  flags=frozenset({"onfault"}) if len(args) == 3 else frozenset(), line=lineno)
    if kind == "munlock":
        count(2, 2, "munlock ADDR LEN")
        return Op("munlock", addr=num(0, "ADDR"), length=num(1, "LEN"), line=lineno)
    if kind == "mlockall":
        count(1, 1, "mlockall FLAGS (a comma list of current, future, onfault)")
        flags = frozenset(args[0].lower().split(","))
        if flags - MLOCKALL_FLAGS or not flags:
            raise fail("FLAGS: a comma list of current, future, onfault")
        return Op("mlockall", flags=flags, line=lineno)
    if kind in ("munlockall", "pkey_alloc"):
        count(0, 0, f"{kind} (no arguments)")
        return Op(kind, line=lineno)
    if kind == "uffd":
        count(3, 3, "uffd ADDR LEN MODES (a comma list of missing, wp; or off)")
        word = args[2].lower()
        modes = frozenset() if word == "off" else frozenset(word.split(","))
        if modes - UFFD_MODES or (not modes and word != "off"):
            raise fail("MODES: a comma list of missing, wp; or off")
        return Op("uffd", addr=num(0, "ADDR"), length=num(1, "LEN"), flags=modes, line=lineno)
    if kind == "mseal":
        count(2, 2, "mseal ADDR LEN")
        return Op("mseal", addr=num(0, "ADDR"), length=num(1, "LEN"), line=lineno)
    if kind == "exit":
        count(1, 1, "exit CHILD (a fork child's number, from 0)")
        return Op("exit", index=num(0, "CHILD"), line=lineno)
    if kind == "memfd":
        count(2, 2, "memfd NAME LEN")
        return Op("memfd", name=args[0], length=num(1, "LEN"), line=lineno)
    if kind == "pkey_mprotect":
        count(4, 4, "pkey_mprotect ADDR LEN PROT PKEY")
        key = -1 if args[3] == "-1" else num(3, "PKEY")
        return Op("pkey_mprotect", addr=num(0, "ADDR"), length=num(1, "LEN"), prot=prot(2),
                  index=key, line=lineno)
    raise ParseError(source, lineno or None, f"unknown operation {words[0]!r}; expected one of "
                     + ", ".join(KINDS))


def load_script(text: str, source: str = "<script>") -> list[Op]:
    """Text or JSONL, detected by the first non-blank character."""
    first = text.lstrip()[:1]
    if first == "{":
        from .jsonl import parse_jsonl

        return parse_jsonl(text, source)
    return parse_script(text, source)
