"""Instruction pointers to call sites, without DWARF.

A recorder hands over user stacks as absolute instruction pointers (the BPF recorder) or
already symbolized as ``module:symbol+0xoff`` strings (strace). Both become
:class:`Frame`\\ s here:

* :class:`Symbolizer` names an address from Snapshots of the target (the first and last
  of a trace: a library loaded or unloaded in between is in one of them): the VMA that
  holds it, then the file offset (``ip - vma.start + vma.offset``), then the ELF virtual
  address through the PT_LOAD header holding that offset, then the symbol (``.symtab``,
  ``.dynsym``, or a detached debug file found by build-id or ``.gnu_debuglink``).
  A file is read under ``root`` only when it is the inode the snapshot names (else
  through /proc/PID/map_files of a live target): a file replaced since, another host's
  dump or a container's file looked for outside its root give ``module`` frames, never
  another file's symbols. Return addresses (every frame but the innermost) are named
  after the call instruction before them.
* :meth:`Frame.parse` reads strace's forms.
* :func:`call_site` picks the frame that made the call, for ranking: the first frame
  outside the system modules (:data:`SYSTEM_MODULES`), so that ``mmap`` called from
  libc's ``malloc`` is charged to malloc's caller, while an allocator of its own
  (jemalloc, mimalloc, bdwgc, tcmalloc) is the answer when it calls mmap.

Frame kinds: ``elf`` (a symbol holds the address), ``module`` (in a file mapping but in
no symbol: module+0xoff, the offset an ELF virtual address when the file could be read,
else a file offset), ``jit`` (an anonymous executable mapping: the runtime's name and
the mapping's range), ``vdso`` (the vDSO, named from its image in a live target's memory or
this process's own under the same kernel; or the vsyscall page), ``unknown`` (in no mapping
of any snapshot, or in a mapping nothing runs from).
"""

from __future__ import annotations

import bisect
import dataclasses
import fnmatch
import itertools
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

from ..model import PERM_EXEC, Snapshot
from ..procfs.reader import proc_path
from . import elf as elfmod
from .events import Event

KINDS = ("elf", "module", "jit", "vdso", "unknown")
SPECIAL_VDSO = ("[vdso]", "[vsyscall]")  # names compared whole (brackets are not globs)

# The system modules call_site looks through, by basename: the C library (glibc, musl),
# the dynamic loader, libpthread and libdl (thin parts of glibc), and the vDSO. An
# allocator is never one of them: when jemalloc, mimalloc, tcmalloc or bdwgc calls mmap,
# the allocator is the call site.
SYSTEM_MODULES: tuple[str, ...] = (
    "libc.so*", "libc-*.so", "libc.musl-*.so*", "ld-linux*.so*", "ld-*.so*", "ld64.so*",
    "ld-musl-*.so*", "libpthread*", "libdl.so*", "libdl-*.so", "linux-vdso.so*",
    "linux-gate.so*",
)

# Runtimes that generate code into anonymous executable mappings, recognized by a
# module they load (basename patterns, first match wins); otherwise a JIT region is
# named after the process's comm.
JIT_RUNTIMES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("libjvm.so",), "java JIT"),
    (("node", "nodejs", "libnode.so*", "libv8*.so*", "d8"), "V8 JIT"),
    (("libmono*.so*", "mono", "mono-sgen"), "mono JIT"),
    (("libcoreclr.so", "libclrjit.so"), ".NET JIT"),
    (("libluajit*.so*", "luajit*"), "LuaJIT"),
    (("libjulia*.so*",), "Julia JIT"),
    (("beam.smp",), "Erlang JIT"),
    (("python*", "libpython*.so*"), "Python"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    """One frame of a stack, named.

    ``module`` is the mapped file's path (or the name a recorder gave), the runtime's
    name for ``jit`` ("V8 JIT"), ``[vdso]`` for the vDSO; ``symbol`` is None unless
    ``kind == "elf"`` (or ``vdso`` when its image could be read); ``offset`` is into the
    symbol, else the ELF virtual address or file offset (module), or into the mapping
    (jit, vdso). ``start``/``end`` are the
    mapping's range for ``jit``.
    """

    module: str | None
    symbol: str | None
    offset: int
    kind: str
    ip: int | None = None
    start: int | None = None
    end: int | None = None

    @property
    def basename(self) -> str:
        return os.path.basename(self.module) if self.module else "?"

    def __str__(self) -> str:
        return site_key(self)

    @classmethod
    def parse(cls, text: str) -> Frame:
        """A frame as a recorder printed it: ``module:symbol+0xoff`` (Event.frames),
        ``module+0xoff``, or strace's own ``module(symbol+0xoff) [0xaddr]`` and
        ``module() [0xaddr]``. Anything else is an ``unknown`` frame naming the text."""
        return parse_frame(text)


UNKNOWN = Frame(None, None, 0, "unknown")

_STRACE = re.compile(r"^\s*>?\s*(?P<mod>[^(\[]*?)\s*\((?P<sym>.*)\)\s*"
                     r"(?:\[(?P<addr>0x[0-9a-fA-F]+)\])?\s*$")
_OFF = re.compile(r"^(?P<sym>.*?)\+(?P<off>0x[0-9a-fA-F]+|\d+)$")
_MODSEP = re.compile(r"(?<!:):(?!:)")  # a colon that is not part of a C++ "::"


def _kind_of_module(module: str) -> str:
    base = os.path.basename(module)
    return "vdso" if base in SPECIAL_VDSO or _is(base, ("linux-vdso.so*", "linux-gate.so*")) \
        else "module"


def parse_frame(text: str) -> Frame:
    s = text.strip()
    m = _STRACE.match(s)
    if m and m.group("mod") and not _MODSEP.search(m.group("mod")):
        module, rest = m.group("mod"), m.group("sym")
        addr = int(m.group("addr"), 16) if m.group("addr") else None
        o = _OFF.match(rest)
        sym, off = (o.group("sym"), int(o.group("off"), 0)) if o else (rest, 0)
        if sym:
            return Frame(module, sym, off, "elf")
        return Frame(module, None, addr if addr is not None else off,
                     _kind_of_module(module))
    sep = _MODSEP.search(s)
    if sep:
        module, rest = s[:sep.start()], s[sep.end():]
        o = _OFF.match(rest)
        sym, off = (o.group("sym"), int(o.group("off"), 0)) if o else (rest, 0)
        if module and sym:
            return Frame(module, sym, off, "elf")
        if module:
            return Frame(module, None, off, _kind_of_module(module))
    o = _OFF.match(s)
    if o and o.group("sym"):
        return Frame(o.group("sym"), None, int(o.group("off"), 0),
                     _kind_of_module(o.group("sym")))
    return Frame(s or None, None, 0, "unknown")


# -- ranking -----------------------------------------------------------------------------


def _is(basename: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(basename, p) for p in patterns)


def is_system(frame: Frame) -> bool:
    """Is the frame in the C library, the dynamic loader, libpthread or the vDSO?"""
    if frame.kind == "vdso" or frame.basename in SPECIAL_VDSO:
        return True
    return frame.kind in ("elf", "module") and _is(frame.basename, SYSTEM_MODULES)


def _call_site_index(frames: Sequence[Frame]) -> int:
    for i, f in enumerate(frames):
        if f.kind != "unknown" and not is_system(f):
            return i
    return 0


def call_site(frames: Sequence[Frame]) -> Frame:
    """The frame that made the call (frames innermost first): the first one outside
    the system modules, or the innermost when all are system modules. Frames in no
    mapping (``unknown``: a frame-pointer walk through code built without them) are
    passed over. An empty stack gives an ``unknown`` frame."""
    if not frames:
        return UNKNOWN
    return frames[_call_site_index(frames)]


def site_key(frame: Frame) -> str:
    """A short stable text for grouping: ``prog:grow_arena+0x1a``, ``libgc.so.1+0x2f40``,
    ``[V8 JIT 0x7f..-0x7f..]``, ``[vdso]+0x9c0``, ``[unknown 0x...]``."""
    if frame.kind == "elf":
        return f"{frame.basename}:{frame.symbol}+{frame.offset:#x}"
    if frame.kind == "jit":
        if frame.start is not None and frame.end is not None:
            return f"[{frame.module} {frame.start:#x}-{frame.end:#x}]"
        return f"[{frame.module}]"
    if frame.kind == "vdso" and frame.symbol:
        return f"{frame.basename}:{frame.symbol}+{frame.offset:#x}"
    if frame.kind in ("module", "vdso"):
        return f"{frame.basename}+{frame.offset:#x}"
    if frame.ip is not None:
        return f"[unknown {frame.ip:#x}]"
    return f"[unknown {frame.module}]" if frame.module else "[unknown]"


def caller_chain(frames: Sequence[Frame], n: int = 3) -> str:
    """The call site and its callers, ``n`` frames at most: ``a <- b <- c``."""
    if not frames:
        return site_key(UNKNOWN)
    i = _call_site_index(frames)
    chain = [f for f in frames[i:] if f.kind != "unknown"] or [frames[i]]
    return " <- ".join(site_key(f) for f in chain[:max(n, 1)])


# -- symbolizing addresses ---------------------------------------------------------------


def runtime_name(snapshots: Sequence[Snapshot]) -> str:
    """Who generates code here: a runtime recognized by a module it loads, or comm."""
    bases = {os.path.basename(n.removesuffix(" (deleted)"))
             for s in snapshots for n in s.names if n.startswith("/")}
    for patterns, name in JIT_RUNTIMES:
        if any(_is(b, patterns) for b in bases):
            return name
    for s in snapshots:
        if s.meta.comm:
            return f"{s.meta.comm} JIT"
    return "JIT"


class _Maps:
    """One snapshot's VMAs, for finding the one holding an address."""

    def __init__(self, snap: Snapshot) -> None:
        order = np.argsort(snap.start, kind="stable")
        self.snap = snap
        self.order = order
        self.start = snap.start[order]
        self.end = snap.end[order]
        self._lists: tuple[list[int], list[int], list[int]] | None = None

    def find_one(self, ip: int) -> int:
        if self._lists is None:
            self._lists = (self.start.tolist(), self.end.tolist(), self.order.tolist())
        start, end, order = self._lists
        k = bisect.bisect_right(start, ip) - 1
        return order[k] if k >= 0 and ip < end[k] else -1

    def find(self, ips: np.ndarray) -> np.ndarray:
        """The snapshot's VMA index holding each address, -1 where none does."""
        if not len(self.start):
            return np.full(len(ips), -1, np.int64)
        i = np.searchsorted(self.start, ips, side="right").astype(np.int64) - 1
        safe = np.maximum(i, 0)
        hit = (i >= 0) & (ips < self.end[safe])
        return np.where(hit, self.order[safe], -1)


class Symbolizer:
    """Names instruction pointers of one process.

    ``snapshots``: one or more Snapshots of the target, looked up in order (an address
    is named after the first snapshot that maps it). ``root``: where the target's files
    are (``/proc/PID/root`` for a process in another mount namespace; "/" by default).
    ``debug``: also look for detached debug files (build-id, debuglink).
    """

    def __init__(self, snapshots: Snapshot | Sequence[Snapshot], root: str | None = None,
                 *, debug: bool = True) -> None:
        snaps = [snapshots] if isinstance(snapshots, Snapshot) else list(snapshots)
        self.snapshots = snaps
        self.root = root or "/"
        self.debug = debug
        self.runtime = runtime_name(snaps)
        self._maps = [_Maps(s) for s in snaps]
        self._elf: dict[tuple[int, int], elfmod.ElfFile] = {}
        self._cache: dict[int, Frame] = {}
        # anonymous ranges executable in some snapshot: code a runtime generated, even if
        # another snapshot caught it writable between two W^X flips
        self._exec_anon = [(int(s.start[i]), int(s.end[i])) for s in snaps
                           for i in np.flatnonzero(s.perms & PERM_EXEC)
                           if not _is_file(s.name(int(i)))]

    def frame(self, ip: int) -> Frame:
        """The Frame of one address (``frames`` for many)."""
        ip = int(ip) & 0xFFFFFFFFFFFFFFFF
        got = self._cache.get(ip)
        if got is None:
            got = self._one(ip)
            if len(self._cache) < 1 << 20:
                self._cache[ip] = got
        return got

    def _one(self, ip: int) -> Frame:
        for si, maps in enumerate(self._maps):
            i = maps.find_one(ip)
            if i < 0:
                continue
            snap = self.snapshots[si]
            name = snap.name(i)
            if name in SPECIAL_VDSO or not _is_file(name):
                return self._in_vma(si, i, np.array([ip], np.uint64))[0]
            assert name is not None
            elf = self._elf_of(si, i)
            fileoff = ip - int(snap.start[i]) + int(snap.offset[i])
            path = name.removesuffix(" (deleted)")
            vaddr = elf.vaddr_of(fileoff)
            if vaddr is None:
                return Frame(path, None, fileoff, "module", ip=ip)
            j = elf.index_of(vaddr)
            if j < 0:
                return Frame(path, None, vaddr, "module", ip=ip)
            return Frame(path, elf.name(j), vaddr - int(elf.addr[j]), "elf", ip=ip)
        return Frame(None, None, 0, "unknown", ip=ip)

    def frames(self, ips: Iterable[int] | np.ndarray) -> list[Frame]:
        """One Frame per address, in order (a batch is much faster than one at a time)."""
        arr = np.fromiter((int(x) & 0xFFFFFFFFFFFFFFFF for x in ips), np.uint64) \
            if not isinstance(ips, np.ndarray) else ips.astype(np.uint64)
        out: list[Frame | None] = [self._cache.get(int(x)) for x in arr] \
            if len(arr) <= 64 else [None] * len(arr)
        todo = np.array([k for k, f in enumerate(out) if f is None], np.int64)
        for si, maps in enumerate(self._maps):
            if not len(todo):
                break
            vma = maps.find(arr[todo])
            found = vma >= 0
            # the addresses grouped by VMA: one sort, then one slice per VMA
            order = np.argsort(vma[found], kind="stable")
            picks, vmas = todo[found][order], vma[found][order]
            cuts = np.flatnonzero(np.diff(vmas)) + 1
            bounds = [0, *cuts.tolist(), len(vmas)] if len(vmas) else []
            for lo, hi in itertools.pairwise(bounds):
                pick = picks[lo:hi]
                for k, f in zip(pick.tolist(), self._in_vma(si, int(vmas[lo]), arr[pick])):
                    out[k] = f
            todo = todo[~found]
        for k in todo:
            out[int(k)] = Frame(None, None, 0, "unknown", ip=int(arr[k]))
        frames: list[Frame] = out  # type: ignore[assignment]
        if len(self._cache) < 1 << 20:
            for x, f in zip(arr.tolist(), frames):
                self._cache[x] = f
        return frames

    def event_frames(self, event: Event) -> list[Frame]:
        """An Event's stack as Frames: the recorder's own names when it gave them."""
        if event.frames:
            return [parse_frame(t) for t in event.frames]
        return self.stack_frames(event.stack)

    def site(self, event: Event) -> Frame:
        """The call site of an Event (:func:`call_site` of its frames)."""
        return call_site(self.event_frames(event))

    def stack_frames(self, stack: Sequence[int]) -> list[Frame]:
        """A stack innermost first: the first address as it is (where the call was made
        or the faulting instruction), the others return addresses, named after the
        instruction before them (the call), as a call the last instruction of a function
        (to a noreturn function) returns to the start of the next one. Offsets stay those
        of the addresses themselves."""
        if not stack:
            return []
        first = self.frames(stack[:1])
        callers = self.frames([max(int(ip) - 1, 0) for ip in stack[1:]])
        return first + [dataclasses.replace(f, offset=f.offset + 1, ip=int(ip))
                        if f.kind != "unknown" else dataclasses.replace(f, ip=int(ip))
                        for f, ip in zip(callers, stack[1:])]

    # -- one VMA ---------------------------------------------------------------------------

    def _in_vma(self, si: int, i: int, ips: np.ndarray) -> list[Frame]:
        snap = self.snapshots[si]
        start, end = int(snap.start[i]), int(snap.end[i])
        name = snap.name(i)
        if name in SPECIAL_VDSO:
            img = self._vdso(si, i)
            vaddrs, inside = img.vaddrs_of(ips - np.uint64(start))
            idx = np.where(inside, img.lookup_many(vaddrs), -1).tolist()
            return [Frame(name, img.name(j), int(v) - int(img.addr[j]), "vdso", ip=int(ip))
                    if j >= 0 else Frame(name, None, int(ip) - start, "vdso", ip=int(ip))
                    for ip, v, j in zip(ips, vaddrs, idx)]
        if not _is_file(name):
            lo, hi = self._exec_range(start, end)
            if lo is None:
                return [Frame(name, None, int(ip) - start, "unknown", ip=int(ip))
                        for ip in ips]
            return [Frame(self.runtime, None, int(ip) - lo, "jit", ip=int(ip), start=lo,
                          end=hi) for ip in ips]
        assert name is not None
        path = name.removesuffix(" (deleted)")
        elf = self._elf_of(si, i)
        fileoff = ips - np.uint64(start) + snap.offset[i]
        vaddrs, inside = elf.vaddrs_of(fileoff)
        idx = np.where(inside, elf.lookup_many(vaddrs), -1)
        named = idx >= 0
        offs = np.where(named, vaddrs - elf.addr[np.maximum(idx, 0)] if len(elf) else 0,
                        np.where(inside, vaddrs, fileoff)).tolist()
        names = {j: elf.name(j) for j in np.unique(idx[named]).tolist()}
        return [Frame(path, names[j], off, "elf", ip=ip) if j >= 0
                else Frame(path, None, off, "module", ip=ip)
                for ip, j, off in zip(ips.tolist(), idx.tolist(), offs)]

    def _exec_range(self, start: int, end: int) -> tuple[int | None, int | None]:
        """The executable anonymous mapping overlapping [start, end), if any."""
        for lo, hi in self._exec_anon:
            if lo < end and start < hi:
                return max(lo, start), min(hi, end)
        return None, None

    def _elf_of(self, si: int, i: int) -> elfmod.ElfFile:
        got = self._elf.get((si, i))
        if got is None:
            got = elfmod.EMPTY
            for cand, name in self._candidates(si, i):
                got = elfmod.load(cand, self.root, self.debug, name=name)
                if got.ok:
                    break
            self._elf[(si, i)] = got
        return got

    def _vdso(self, si: int, i: int) -> elfmod.ElfFile:
        """The vDSO's image: read from a live target's memory, or this process's own
        when the snapshot was taken under the running kernel (one image per build)."""
        got = self._elf.get((si, i))
        if got is not None:
            return got
        got = elfmod.EMPTY
        snap = self.snapshots[si]
        start, size = int(snap.start[i]), int(snap.end[i] - snap.start[i])
        where = []
        if snap.name(i) == "[vdso]" and size <= 1 << 20:
            if snap.meta.pid and snap.meta.source == "live":
                where.append((proc_path(snap.meta.pid, "mem"), start))
            if snap.meta.kernel_release == os.uname().release:
                where.extend(("/proc/self/mem", lo) for lo in _own_vdso())
        for path, at in where:
            try:
                with open(path, "rb", buffering=0) as fh:
                    fh.seek(at)
                    got = elfmod.parse_bytes(fh.read(size))
            except (OSError, ValueError, OverflowError):
                continue
            if len(got):
                break
        self._elf[(si, i)] = got
        return got

    def _candidates(self, si: int, i: int) -> list[tuple[str, str]]:
        """Where the mapped file may be read, as (path to open, path in the target):
        the path under ``root`` when it is the inode the snapshot names (or the
        snapshot names none), so that a file replaced since, another host's dump or a
        container's file read outside its root gives no symbols rather than wrong ones;
        then /proc/PID/map_files of a live target, which is the mapped file itself."""
        snap = self.snapshots[si]
        name = snap.name(i)
        assert name is not None
        target = name.removesuffix(" (deleted)")
        path = os.path.join(self.root, target.lstrip("/"))
        inode = int(snap.inode[i])
        out = []
        try:
            if not inode or os.stat(path).st_ino == inode:
                out.append((path, path))
        except (OSError, ValueError):
            pass
        if snap.meta.pid and snap.meta.source == "live":
            mapped = f"{int(snap.start[i]):x}-{int(snap.end[i]):x}"
            out.append((proc_path(snap.meta.pid, f"map_files/{mapped}"), path))
        return out


def _own_vdso() -> list[int]:
    """Where this process's vDSO starts (from /proc/self/maps)."""
    try:
        with open("/proc/self/maps", "rb") as fh:
            return [int(line.split(b"-", 1)[0], 16) for line in fh
                    if line.rstrip().endswith(b"[vdso]")]
    except (OSError, ValueError):
        return []


def _is_file(name: str | None) -> bool:
    """A VMA name that is a file an ELF could be read from (not memfd, SysV shm, or
    /dev/zero, which hold what a runtime wrote into them)."""
    return bool(name) and name.startswith("/") and not name.startswith(  # type: ignore[union-attr]
        ("/memfd:", "/SYSV", "/dev/zero", "/dev/shm/", "/anon_hugepage"))

