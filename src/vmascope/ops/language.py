"""The operation language: one op per line, shared by the simulator, the lab and traces.

See docs/op-language.md for the full description. In short::

    mmap     ADDR LEN PROT [FLAGS]       FLAGS: private|shared,anonymous,fixed,noreserve,populate,growsdown
    munmap   ADDR LEN
    mprotect ADDR LEN PROT
    madvise  ADDR LEN ADVICE
    mremap   ADDR OLDLEN NEWLEN [NEWADDR] [FLAGS]   FLAGS: maymove,fixed,dontunmap
    touch    ADDR [write|read]
    fork
    name     ADDR LEN NAME|-
    mbind    ADDR LEN default|bind:NODES|interleave:NODES|preferred:NODE
    heap     ADDR                         the initial program break (start_brk = brk = ADDR)
    brk      ADDR
    mlock    ADDR LEN [onfault]           mlock, or mlock2(MLOCK_ONFAULT)
    munlock  ADDR LEN
    mlockall FLAGS                        FLAGS: current,future,onfault
    munlockall

Numbers are decimal, 0x-hex, or carry a unit: ``16p`` (pages of 4 KiB), ``4K``, ``2M``, ``1G``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

from ..errors import ParseError
from ..kconst import PAGE_SIZE


PROT_NONE = 0
PROT_READ = 1
PROT_WRITE = 2
PROT_EXEC = 4

MMAP_FLAGS = frozenset({"private", "shared", "anonymous", "fixed", "noreserve", "populate", "growsdown"})
MREMAP_FLAGS = frozenset({"maymove", "fixed", "dontunmap"})
MLOCK_FLAGS = frozenset({"onfault"})
MLOCKALL_FLAGS = frozenset({"current", "future", "onfault"})
MLOCKALL_ORDER = ("current", "future", "onfault")
MADVICE = (
    "dontneed", "free", "dontdump", "dodump", "dontfork", "dofork", "wipeonfork",
    "keeponfork", "hugepage", "nohugepage", "mergeable", "unmergeable", "guard_install",
    "guard_remove", "populate_write", "populate_read", "normal", "random", "sequential",
    "willneed", "cold", "pageout",
)
# The kernel's MADV_* numbers (include/uapi/asm-generic/mman-common.h).
MADV_NUMBERS = {
    "normal": 0, "random": 1, "sequential": 2, "willneed": 3, "dontneed": 4, "free": 8,
    "dontfork": 10, "dofork": 11, "mergeable": 12, "unmergeable": 13, "hugepage": 14,
    "nohugepage": 15, "dontdump": 16, "dodump": 17, "wipeonfork": 18, "keeponfork": 19,
    "cold": 20, "pageout": 21, "populate_read": 22, "populate_write": 23,
    "guard_install": 102, "guard_remove": 103,
}
MBIND_MODES = ("default", "bind", "interleave", "preferred")

KINDS = ("mmap", "munmap", "mprotect", "madvise", "mremap", "touch", "fork", "name",
         "mbind", "heap", "brk", "mlock", "munlock", "mlockall", "munlockall")

# The kernel's own ranges (x86-64 with 4-level page tables):
# TASK_SIZE_MAX = (1 << 47) - PAGE_SIZE (arch/x86/include/asm/page_64_types.h);
# MAX_NUMNODES = 1 << CONFIG_NODES_SHIFT, at most 1 << 10 (include/linux/numa.h);
# a length is a size_t.
TASK_SIZE = (1 << 47) - PAGE_SIZE
MAX_NUMNODES = 1 << 10
MAX_LENGTH = (1 << 64) - 1
MAX_NAME = 4096  # prctl(PR_SET_VMA_ANON_NAME) refuses more than 80 bytes (EINVAL)
MAX_TOKEN = 64  # a number token longer than this is never in range

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
        return out

    def shifted(self, base: int) -> Op:
        """The same op with every address moved by ``base`` (arena-relative -> absolute)."""
        if self.kind == "fork":
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
        return f"mmap {n(op.addr)} {n(op.length)} {prot_text(op.prot)} {_flag_text(op.flags, MMAP_ORDER)}"
    if k == "munmap":
        return f"munmap {n(op.addr)} {n(op.length)}"
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
        return "fork"
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
    if k == "munlock":
        return f"munlock {n(op.addr)} {n(op.length)}"
    if k == "mlockall":
        return f"mlockall {_flag_text(op.flags, MLOCKALL_ORDER)}"
    if k == "munlockall":
        return "munlockall"
    raise ValueError(f"unknown op kind {k!r}")


MMAP_ORDER = ("private", "shared", "anonymous", "fixed", "noreserve", "populate", "growsdown")
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
        count(3, 4, "mmap ADDR LEN PROT [FLAGS]")
        flags = frozenset({"private", "anonymous"})
        if len(args) == 4:
            flags = frozenset(args[3].lower().split(","))
            bad = flags - MMAP_FLAGS
            if bad or ("private" in flags) == ("shared" in flags):
                raise fail("FLAGS: a comma list with private or shared, and of "
                            + ", ".join(sorted(MMAP_FLAGS)))
            flags = flags | {"anonymous"}
        return Op("mmap", addr=num(0, "ADDR"), length=num(1, "LEN"), prot=prot(2),
                  flags=flags, line=lineno)
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
        count(0, 0, "fork (no arguments)")
        return Op("fork", line=lineno)
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
    if kind == "munlockall":
        count(0, 0, "munlockall (no arguments)")
        return Op("munlockall", line=lineno)
    raise ParseError(source, lineno or None, f"unknown operation {words[0]!r}; expected one of "
                     + ", ".join(KINDS))


def check_op(op: Op) -> str | None:
    """What is wrong with ``op`` against the kernel's ranges, or None.

    Addresses are below TASK_SIZE, lengths fit a size_t, PROT has only the read, write
    and exec bits, flags and advice are known names, node ids are below MAX_NUMNODES.
    Every op that passes can be run by the simulator and the lab executor.
    """
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    k = op.kind
    if k not in KINDS:
        return "an operation, one of " + ", ".join(KINDS)
    for field, hi, what in (("addr", TASK_SIZE - 1, "ADDR"), ("length", MAX_LENGTH, "LEN"),
                            ("new_len", MAX_LENGTH, "NEWLEN")):
        v = getattr(op, field)
        if not is_int(v) or not 0 <= v <= hi:
            return f"{what} an integer from 0 to {hi:#x}"
    if op.new_addr is not None and (not is_int(op.new_addr)
                                    or not 0 <= op.new_addr < TASK_SIZE):
        return f"NEWADDR an integer from 0 to {TASK_SIZE - 1:#x}"
    if not is_int(op.prot) or not 0 <= op.prot <= (PROT_READ | PROT_WRITE | PROT_EXEC):
        return "PROT of the read (1), write (2) and exec (4) bits"
    if not isinstance(op.flags, frozenset) or not all(isinstance(f, str) for f in op.flags):
        return "FLAGS as a set of flag names"
    if k == "mmap":
        if op.flags - MMAP_FLAGS or ("private" in op.flags) == ("shared" in op.flags):
            return ("FLAGS: a comma list with private or shared, and of "
                    + ", ".join(sorted(MMAP_FLAGS)))
    elif k == "mremap":
        if op.flags - MREMAP_FLAGS:
            return "FLAGS: a comma list of maymove, fixed, dontunmap"
    elif k == "mlock":
        if op.flags - MLOCK_FLAGS:
            return "FLAGS: onfault or nothing"
    elif k == "mlockall":
        if op.flags - MLOCKALL_FLAGS or not op.flags:
            return "FLAGS: a comma list of current, future, onfault"
    elif op.flags:
        return "no FLAGS"
    if (k == "madvise") != (op.advice is not None):
        return "ADVICE with madvise only"
    if op.advice is not None and op.advice not in MADVICE:
        return "ADVICE, one of " + " ".join(MADVICE)
    if not isinstance(op.write, bool):
        return "write or read"
    if op.name is not None and (not isinstance(op.name, str) or len(op.name) > MAX_NAME):
        return f"NAME of at most {MAX_NAME} characters"
    if not isinstance(op.nodes, tuple) or not all(is_int(n) and 0 <= n < MAX_NUMNODES
                                                  for n in op.nodes):
        return f"node ids below MAX_NUMNODES ({MAX_NUMNODES})"
    if k == "mbind":
        mode = op.mode or "default"
        if mode not in MBIND_MODES:
            return "MODE: default, bind:NODES, interleave:NODES or preferred:NODE"
        if (mode == "default") != (not op.nodes) or (mode == "preferred" and len(op.nodes) != 1):
            return "MODE: default, bind:NODES, interleave:NODES or preferred:NODE"
    elif op.mode is not None or op.nodes:
        return "MODE and NODES with mbind only"
    return None


def load_script(text: str, source: str = "<script>") -> list[Op]:
    """Text or JSONL, detected by the first non-blank character."""
    first = text.lstrip()[:1]
    if first == "{":
        from .jsonl import parse_jsonl

        return parse_jsonl(text, source)
    return parse_script(text, source)
