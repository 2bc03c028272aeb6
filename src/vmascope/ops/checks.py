"""The op language's vocabulary and the kernel's ranges: what a script may hold.

``check_op`` checks one op's fields, ``check_script`` what refers to earlier ops (a
memfd's name, a fork child's number). Every op that passes both can be run by the
simulator and by the lab executor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..kconst import PAGE_SIZE

PROT_NONE = 0
PROT_READ = 1
PROT_WRITE = 2
PROT_EXEC = 4

MMAP_FLAGS = frozenset({"private", "shared", "anonymous", "fixed", "noreserve", "populate",
                        "growsdown", "stack"})
MREMAP_FLAGS = frozenset({"maymove", "fixed", "dontunmap"})
MLOCK_FLAGS = frozenset({"onfault"})
MLOCKALL_FLAGS = frozenset({"current", "future", "onfault"})
MLOCKALL_ORDER = ("current", "future", "onfault")
# userfaultfd registration modes (UFFDIO_REGISTER_MODE_MISSING, _WP); none: unregister
UFFD_MODES = frozenset({"missing", "wp"})
UFFD_ORDER = ("missing", "wp")
MADVICE = (
    "dontneed", "free", "dontdump", "dodump", "dontfork", "dofork", "wipeonfork",
    "keeponfork", "hugepage", "nohugepage", "mergeable", "unmergeable", "guard_install",
    "guard_remove", "populate_write", "populate_read", "normal", "random", "sequential",
    "willneed", "cold", "pageout", "collapse",
)
# The kernel's MADV_* numbers (include/uapi/asm-generic/mman-common.h).
MADV_NUMBERS = {
    "normal": 0, "random": 1, "sequential": 2, "willneed": 3, "dontneed": 4, "free": 8,
    "dontfork": 10, "dofork": 11, "mergeable": 12, "unmergeable": 13, "hugepage": 14,
    "nohugepage": 15, "dontdump": 16, "dodump": 17, "wipeonfork": 18, "keeponfork": 19,
    "cold": 20, "pageout": 21, "populate_read": 22, "populate_write": 23, "collapse": 25,
    "guard_install": 102, "guard_remove": 103,
}
MBIND_MODES = ("default", "bind", "interleave", "preferred")

KINDS = ("mmap", "munmap", "mprotect", "madvise", "mremap", "touch", "fork", "name",
         "mbind", "heap", "brk", "mlock", "munlock", "mlockall", "munlockall", "mseal", "exit",
         "memfd", "pkey_alloc", "pkey_mprotect", "uffd")
# Ops whose fields hold no address (left alone when a script is moved into an arena).
NO_ADDRESS = frozenset({"fork", "exit", "memfd", "pkey_alloc", "mlockall", "munlockall"})

# The kernel's own ranges (x86-64 with 4-level page tables):
# TASK_SIZE_MAX = (1 << 47) - PAGE_SIZE (arch/x86/include/asm/page_64_types.h);
# MAX_NUMNODES = 1 << CONFIG_NODES_SHIFT, at most 1 << 10 (include/linux/numa.h);
# a length is a size_t.
TASK_SIZE = (1 << 47) - PAGE_SIZE
MAX_NUMNODES = 1 << 10
MAX_LENGTH = (1 << 64) - 1
MAX_NAME = 4096  # prctl(PR_SET_VMA_ANON_NAME) refuses more than 80 bytes (EINVAL)
MAX_TOKEN = 64  # a number token longer than this is never in range
MAX_CHILDREN = 64  # forks a script may make (the executor keeps this many children)
_FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # a memfd's name in a script


def check_op(op: Any) -> str | None:
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
    elif k == "uffd":
        if op.flags - UFFD_MODES:
            return "MODES: a comma list of missing, wp (or off)"
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
    return _check_new_fields(op)


def _check_new_fields(op: Any) -> str | None:
    """The fields of the file, seal, exit and pkey ops."""
    k = op.kind
    if op.fd is not None:
        if k != "mmap" or not isinstance(op.fd, str) or not _FILE_NAME.match(op.fd):
            return "fd=NAME with mmap only, NAME of letters, digits, '_', '.', '-'"
        if "anonymous" in op.flags:
            return "no anonymous with fd=NAME"
    if not isinstance(op.offset, int) or isinstance(op.offset, bool) or not (
            0 <= op.offset <= MAX_LENGTH) or (op.offset and op.fd is None):
        return "off=N, a size_t, with fd=NAME only"
    if k == "memfd":
        if not isinstance(op.name, str) or not _FILE_NAME.match(op.name):
            return "NAME of 1 to 64 letters, digits, '_', '.', '-'"
    elif op.name is not None and k != "name":
        return "NAME with name and memfd only"
    if not isinstance(op.index, int) or isinstance(op.index, bool):
        return "CHILD or PKEY an integer"
    if k == "exit" and not 0 <= op.index < MAX_CHILDREN:
        return f"CHILD from 0 to {MAX_CHILDREN - 1}"
    if k == "fork" and not -1 <= op.index < MAX_CHILDREN:
        return f"CHILD from 0 to {MAX_CHILDREN - 1} (-1: the script's process)"
    if k == "pkey_mprotect" and not -1 <= op.index < 1 << 31:
        return "PKEY from -1 to 2^31-1"
    if op.index and k not in ("exit", "fork", "pkey_mprotect"):
        return "CHILD with exit and fork, PKEY with pkey_mprotect only"
    return None


def check_script(ops: Iterable[Any]) -> tuple[int, str] | None:
    """What is wrong with a whole script (line, message), or None: an ``fd=NAME`` must
    name an earlier memfd, ``exit CHILD`` and ``fork CHILD`` an earlier fork child (not
    yet exited)."""
    files: set[str] = set()
    forks = 0
    gone: set[int] = set()
    for op in ops:
        if op.kind == "memfd" and op.name is not None:
            files.add(op.name)
        elif op.kind == "mmap" and op.fd is not None and op.fd not in files:
            return op.line, f"mmap: fd={op.fd} names no earlier memfd"
        elif op.kind == "fork":
            if op.index >= 0 and (op.index >= forks or op.index in gone):
                return op.line, (f"fork: child {op.index} is not a running fork child "
                                 f"({forks} forked so far, counted from 0)")
            forks += 1
        elif op.kind == "exit":
            if op.index >= forks or op.index in gone:
                return op.line, (f"exit: child {op.index} is not a running fork child "
                                 f"({forks} forked so far, counted from 0)")
            gone.add(op.index)
    if forks > MAX_CHILDREN:
        return 0, f"fork: at most {MAX_CHILDREN} forks in a script"
    return None


