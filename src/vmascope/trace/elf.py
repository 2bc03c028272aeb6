"""A small ELF reader for symbolization: PT_LOAD headers and function/object symbols.

Reads ELF64 and ELF32 little-endian files (executables, PIEs, shared libraries), with
the symbols of ``.symtab`` and ``.dynsym``, of an embedded ``.gnu_debugdata``
(MiniDebugInfo) and of a detached debug file found by build-id
(``/usr/lib/debug/.build-id/xx/yyyy.debug``) or ``.gnu_debuglink``. Symbol tables are
read as numpy structured arrays straight from the file's bytes, so that a binary with a
hundred thousand symbols (node; libjvm.so has fifty thousand) loads in about 50 ms, and
looked up with a binary search. :func:`load` caches per (path, device, inode, mtime).

Nothing here raises on a bad file: a file that cannot be opened, is not ELF, is
big-endian, truncated or inconsistent gives :data:`EMPTY` (no segments, no symbols), or
whatever part of it was sound (the program headers without the symbols, say).
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import lzma
import os
import stat
import struct
import threading
import zlib
from collections import OrderedDict

import numpy as np

PT_LOAD = 1
PT_NOTE = 4
SHT_SYMTAB = 2
SHT_NOTE = 7
SHT_NOBITS = 8
SHT_DYNSYM = 11
SHN_UNDEF = 0
STT_OBJECT = 1
STT_FUNC = 2
STT_GNU_IFUNC = 10
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
NT_GNU_BUILD_ID = 3
ET_EXEC, ET_DYN = 2, 3

# Where detached debug files are looked for (the GDB convention).
DEBUG_DIR = "/usr/lib/debug"
# How many symbols before an address are looked at for one that contains it.
NEST_SCAN = 256
# The largest .gnu_debugdata section read (compressed; it may expand 8 times as much).
MINI_MAX = 32 << 20

_SYM64 = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"),
                   ("value", "<u8"), ("size", "<u8")])
_SYM32 = np.dtype([("name", "<u4"), ("value", "<u4"), ("size", "<u4"), ("info", "u1"),
                   ("other", "u1"), ("shndx", "<u2")])
# (e_type .. e_shstrndx) after e_ident, program header and section header layouts
_EHDR = {64: struct.Struct("<HHIQQQIHHHHHH"), 32: struct.Struct("<HHIIIIIHHHHHH")}
_SHDR = {64: struct.Struct("<IIQQQQIIQQ"), 32: struct.Struct("<IIIIIIIIII")}
_PHDR64 = struct.Struct("<IIQQQQQQ")  # type flags offset vaddr paddr filesz memsz align
_PHDR32 = struct.Struct("<IIIIIIII")  # type offset vaddr paddr filesz memsz flags align
_MAX_SECTIONS = 1 << 16
_MAX_SEGMENTS = 1 << 12


class _Bad(Exception):
    """The file is not an ELF this reader understands (never leaves the module)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Segment:
    """One PT_LOAD program header."""

    offset: int
    vaddr: int
    filesz: int
    memsz: int
    flags: int  # PF_X 1, PF_W 2, PF_R 4


@dataclasses.dataclass(eq=False)
class ElfFile:
    """What symbolization needs of one ELF file.

    ``addr``/``end`` are the sorted symbol start addresses (ELF virtual addresses) and
    the end of each symbol (``addr + size``; a symbol of size 0 runs to the next one);
    ``name_off`` indexes ``strtab``. Several symbols at one address (``mmap``,
    ``__mmap``, ``mmap64``) keep one: a function before an object, global before weak
    before local.
    """

    elf_class: int = 0  # 32 or 64; 0 when the file was not read
    etype: int = 0
    segments: tuple[Segment, ...] = ()
    addr: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.uint64))
    end: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.uint64))
    name_off: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.uint32))
    strtab: bytes = b""
    build_id: str | None = None
    debuglink: str | None = None
    debuglink_crc: int | None = None
    debug_file: str | None = None  # the detached debug file the symbols came from
    minidebuginfo: bool = False  # symbols from .gnu_debugdata were added
    # lazily built: the running maximum of ``end``, decoded names, lists for bisect
    _cover: np.ndarray | None = dataclasses.field(default=None, init=False, repr=False)
    _names: dict[int, str] = dataclasses.field(default_factory=dict, init=False, repr=False)
    _lists: tuple[list[int], list[int]] | None = dataclasses.field(
        default=None, init=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.elf_class != 0

    def __len__(self) -> int:
        return len(self.addr)

    def vaddr_of(self, file_offset: int) -> int | None:
        """The virtual address a file offset is loaded at (None: in no PT_LOAD)."""
        for s in self.segments:
            if s.offset <= file_offset < s.offset + max(s.filesz, 1):
                return file_offset - s.offset + s.vaddr
        return None

    def vaddrs_of(self, file_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``vaddr_of`` for many offsets: (addresses, which were in a PT_LOAD)."""
        off = np.asarray(file_offsets, dtype=np.uint64)
        out = np.zeros(len(off), np.uint64)
        found = np.zeros(len(off), bool)
        for s in self.segments:
            inside = ~found & (off >= np.uint64(s.offset)) \
                & (off < np.uint64(s.offset + max(s.filesz, 1)))
            out[inside] = off[inside] - np.uint64(s.offset) + np.uint64(s.vaddr)
            found |= inside
        return out, found

    def name(self, i: int) -> str:
        got = self._names.get(i)
        if got is None:
            off = int(self.name_off[i])
            stop = self.strtab.find(b"\0", off)
            got = self.strtab[off:stop if stop >= 0 else len(self.strtab)].decode(
                "utf-8", "replace")
            self._names[i] = got
        return got

    def lookup_many(self, vaddrs: np.ndarray) -> np.ndarray:
        """Index of the symbol containing each address, -1 where none does."""
        v = np.asarray(vaddrs, dtype=np.uint64)
        if not len(self.addr):
            return np.full(len(v), -1, np.int64)
        i = np.searchsorted(self.addr, v, side="right").astype(np.int64) - 1
        safe = np.maximum(i, 0)
        hit = (i >= 0) & (v < self.end[safe])
        if self._cover is None:
            self._cover = np.maximum.accumulate(self.end)
        # an address past its nearest symbol may still be inside an earlier, larger one
        # (nesting is shallow: look back NEST_SCAN symbols at most)
        for k in np.flatnonzero(~hit & (i >= 0) & (v < self._cover[safe])):
            lo = max(int(i[k]) - NEST_SCAN, 0)
            back = np.flatnonzero((self.addr[lo:i[k]] <= v[k]) & (v[k] < self.end[lo:i[k]]))
            i[k] = lo + int(back[-1]) if len(back) else -1
            hit[k] = len(back) > 0
        return np.where(hit, i, -1)

    def index_of(self, vaddr: int) -> int:
        """``lookup_many`` for one address, without numpy's overhead in the usual case."""
        if self._lists is None:
            self._lists = (self.addr.tolist(), self.end.tolist())
        addr, end = self._lists
        i = bisect.bisect_right(addr, vaddr) - 1
        if i < 0:
            return -1
        if vaddr < end[i]:
            return i
        return int(self.lookup_many(np.array([vaddr], np.uint64))[0])

    def lookup(self, vaddr: int) -> tuple[str, int] | None:
        """(symbol, offset into it) for one virtual address."""
        i = self.index_of(vaddr)
        if i < 0:
            return None
        return self.name(i), vaddr - int(self.addr[i])


EMPTY = ElfFile()


class _Source:
    """Bounded reads of a file (by descriptor) or of bytes (an embedded ELF)."""

    def __init__(self, fd: int | None = None, data: bytes | None = None) -> None:
        self.fd, self.data = fd, data
        self.size = len(data) if data is not None else os.fstat(fd).st_size  # type: ignore[arg-type]

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise _Bad("out of the file")
        if self.data is not None:
            return self.data[offset:offset + length]
        got = os.pread(self.fd, length, offset)  # type: ignore[arg-type]
        if len(got) != length:
            raise _Bad("short read")
        return got


def _notes(data: bytes) -> str | None:
    """The GNU build-id in a run of notes, as hex."""
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        name_at = pos + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        nxt = desc_at + ((descsz + 3) & ~3)
        if nxt > len(data) or nxt <= pos:
            return None
        if ntype == NT_GNU_BUILD_ID and data[name_at:name_at + namesz] == b"GNU\0" \
                and 0 < descsz <= 64:
            return data[desc_at:desc_at + descsz].hex()
        pos = nxt
    return None


_Part = tuple[np.ndarray, bytes]  # kept symbols of one table, and its string table


def _parse(src: _Source, nested: bool = False) -> tuple[ElfFile, list[_Part]]:
    """The file's headers, and its symbol tables (finished by ``_finish``). A
    ``.gnu_debugdata`` section (MiniDebugInfo: an xz-compressed ELF with the symbols
    stripped from this one) adds its tables, unless ``nested``."""
    ident = src.read(0, 16)
    if ident[:4] != b"\x7fELF":
        raise _Bad("not ELF")
    if ident[5] != 1:
        raise _Bad("not little-endian")
    cls = {1: 32, 2: 64}.get(ident[4])
    if cls is None:
        raise _Bad("unknown class")
    eh = _EHDR[cls]
    (etype, _machine, _version, _entry, phoff, shoff, _flags, _ehsize, phentsize, phnum,
     shentsize, shnum, shstrndx) = eh.unpack(src.read(16, eh.size))
    out = ElfFile(elf_class=cls, etype=etype)
    # program headers
    ph = _PHDR64 if cls == 64 else _PHDR32
    segs = []
    if phoff and phnum and phentsize == ph.size and phnum <= _MAX_SEGMENTS:
        with contextlib.suppress(_Bad):
            raw = src.read(phoff, phnum * ph.size)
            for k in range(phnum):
                f = ph.unpack_from(raw, k * ph.size)
                if cls == 64:
                    ptype, pflags, poff, vaddr, _pa, filesz, memsz, _al = f
                else:
                    ptype, poff, vaddr, _pa, filesz, memsz, pflags, _al = f
                if ptype == PT_LOAD and max(poff + filesz, vaddr + memsz) < 1 << 64:
                    segs.append(Segment(poff, vaddr, filesz, memsz, pflags))
                elif ptype == PT_NOTE and out.build_id is None and 0 < filesz <= 1 << 16:
                    with contextlib.suppress(_Bad):
                        out.build_id = _notes(src.read(poff, filesz))
    out.segments = tuple(segs)
    parts: list[_Part] = []
    # section headers: what is wrong there leaves the program headers usable
    with contextlib.suppress(_Bad):
        _sections(src, cls, shoff, shentsize, shnum, shstrndx, out, parts, nested)
    return out, parts


def _sections(src: _Source, cls: int, shoff: int, shentsize: int, shnum: int,
              shstrndx: int, out: ElfFile, parts: list[_Part], nested: bool) -> None:
    sh = _SHDR[cls]
    if not shoff or shentsize != sh.size:
        return
    if shnum == 0:  # extended numbering: the count is in section 0's sh_size
        shnum = sh.unpack(src.read(shoff, sh.size))[5]
    if not 0 < shnum <= _MAX_SECTIONS:
        return
    raw = src.read(shoff, shnum * sh.size)
    secs = [sh.unpack_from(raw, k * sh.size) for k in range(shnum)]
    if shstrndx == 0xFFFF:
        shstrndx = secs[0][6]
    names = b""
    if 0 < shstrndx < shnum and secs[shstrndx][1] != SHT_NOBITS \
            and secs[shstrndx][5] <= 1 << 20:
        names = src.read(secs[shstrndx][4], secs[shstrndx][5])

    def sec_name(s: tuple[int, ...]) -> bytes:
        stop = names.find(b"\0", s[0])
        return names[s[0]:stop] if s[0] < len(names) and stop >= 0 else b""

    mini = None
    for s in secs:
        stype, offset, length = s[1], s[4], s[5]
        if stype in (SHT_SYMTAB, SHT_DYNSYM):
            parts.extend(_table(src, cls, secs, s))
        elif stype == SHT_NOTE and out.build_id is None and 0 < length <= 1 << 16:
            out.build_id = _notes(src.read(offset, length))
        elif stype == SHT_NOBITS:
            continue
        elif sec_name(s) == b".gnu_debuglink" and length <= 4096:
            data = src.read(offset, length)
            link_name = data.split(b"\0", 1)[0]
            crc_at = (len(link_name) + 1 + 3) & ~3
            if link_name and b"/" not in link_name and crc_at + 4 <= len(data):
                out.debuglink = os.fsdecode(link_name)
                out.debuglink_crc = struct.unpack_from("<I", data, crc_at)[0]
        elif sec_name(s) == b".gnu_debugdata" and not nested and length <= MINI_MAX:
            mini = (offset, length)
    if mini is not None:
        with contextlib.suppress(_Bad, lzma.LZMAError, EOFError):
            dec = lzma.LZMADecompressor()
            data = dec.decompress(src.read(*mini), max_length=MINI_MAX * 8)
            inner, inner_parts = _parse(_Source(data=data), nested=True)
            if inner.elf_class == cls:
                parts.extend(inner_parts)
                out.minidebuginfo = True


def _table(src: _Source, cls: int, secs: list[tuple[int, ...]],
           s: tuple[int, ...]) -> list[_Part]:
    """The function and object symbols of one symbol table section."""
    dtype = _SYM64 if cls == 64 else _SYM32
    stype, offset, length, link, entsize = s[1], s[4], s[5], s[6], s[9]
    if entsize != dtype.itemsize or not 0 < link < len(secs):
        return []
    strsec = secs[link]
    if strsec[1] == SHT_NOBITS or stype == SHT_NOBITS:
        return []
    try:
        raw = src.read(offset, length - length % dtype.itemsize)
        strtab = src.read(strsec[4], strsec[5])
    except _Bad:
        return []
    syms = np.frombuffer(raw, dtype=dtype)
    kind = syms["info"] & 0xF
    keep = ((kind == STT_FUNC) | (kind == STT_GNU_IFUNC) | (kind == STT_OBJECT)) \
        & (syms["shndx"] != SHN_UNDEF) & (syms["value"] != 0) \
        & (syms["name"] != 0) & (syms["name"] < len(strtab))
    return [(syms[keep], strtab)]


def _finish(out: ElfFile, parts: list[_Part]) -> ElfFile:
    """Every table's symbols in one sorted array, one string table for all of them."""
    if not parts:
        return out
    bases = np.cumsum([0] + [len(t) for _, t in parts[:-1]])
    addr = np.concatenate([p["value"].astype(np.uint64) for p, _ in parts])
    size_ = np.concatenate([p["size"].astype(np.uint64) for p, _ in parts])
    name = np.concatenate([p["name"].astype(np.uint64) + np.uint64(b)
                           for (p, _), b in zip(parts, bases)])
    info = np.concatenate([p["info"] for p, _ in parts])
    kind, bind = info & 0xF, info >> 4
    # among symbols at one address: functions first, then global, weak, local, and
    # one with a size (an alias may have none): a stable sort by address of the symbols
    # in that order of preference
    rank = np.where(kind == STT_OBJECT, 8, 0) + np.where(
        bind == STB_GLOBAL, 0, np.where(bind == STB_WEAK, 2, 4)) + (size_ == 0)
    pref = np.argsort(rank, kind="stable")
    order = pref[np.argsort(addr[pref], kind="stable")]
    addr, size_, name = addr[order], size_[order], name[order]
    first = np.ones(len(addr), bool)
    first[1:] = addr[1:] != addr[:-1]
    addr, size_, name = addr[first], size_[first], name[first]
    nxt = np.append(addr[1:], addr[-1] + np.uint64(1) if len(addr) else addr)
    out.addr, out.end, out.name_off = addr, np.where(size_ > 0, addr + size_, nxt), name
    out.strtab = b"".join(t for _, t in parts)
    return out


def parse(path: str | os.PathLike[str]) -> ElfFile:
    """Read one file; :data:`EMPTY` (or what could be read) whatever is wrong with it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError):
        return EMPTY
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return EMPTY
        return _finish(*_parse(_Source(fd)))
    except Exception:  # noqa: BLE001 (a bad file is "no symbols", whatever broke)
        return EMPTY
    finally:
        os.close(fd)


def parse_bytes(data: bytes) -> ElfFile:
    """``parse`` for an image in memory (the vDSO)."""
    try:
        return _finish(*_parse(_Source(data=bytes(data))))
    except Exception:  # noqa: BLE001
        return EMPTY


def _debug_candidates(path: str, elf: ElfFile, root: str) -> list[str]:
    """Detached debug files for ``path`` (GDB's order): by build-id, then by debuglink."""
    out = []
    dirs = [os.path.join(root, DEBUG_DIR.lstrip("/"))]
    if os.path.normpath(root) != "/":
        dirs.append(DEBUG_DIR)
    if elf.build_id and len(elf.build_id) > 2:
        for d in dirs:
            out.append(os.path.join(d, ".build-id", elf.build_id[:2],
                                    elf.build_id[2:] + ".debug"))
    if elf.debuglink:
        here = os.path.dirname(path)
        rel = os.path.relpath(here, root) if root != "/" else here.lstrip("/")
        out.append(os.path.join(here, elf.debuglink))
        out.append(os.path.join(here, ".debug", elf.debuglink))
        for d in dirs:
            out.append(os.path.join(d, rel, elf.debuglink))
    return out


def _crc32(path: str) -> int | None:
    """The CRC-32 of a whole file, as .gnu_debuglink records it."""
    crc = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                crc = zlib.crc32(chunk, crc)
    except OSError:
        return None
    return crc


def with_debug(path: str, elf: ElfFile, root: str = "/") -> ElfFile:
    """``elf`` with the symbols of its detached debug file, when one is installed and
    has more symbols: its build-id must match, or when either has none, the CRC-32 that
    .gnu_debuglink records."""
    if not elf.ok:
        return elf
    for cand in _debug_candidates(path, elf, root):
        if os.path.abspath(cand) == os.path.abspath(path) or not os.path.isfile(cand):
            continue
        dbg = parse(cand)
        if not dbg.ok or len(dbg) <= len(elf):
            continue
        if elf.build_id and dbg.build_id:
            if dbg.build_id != elf.build_id:
                continue
        elif elf.debuglink_crc is not None and _crc32(cand) != elf.debuglink_crc:
            continue
        return dataclasses.replace(elf, addr=dbg.addr, end=dbg.end, name_off=dbg.name_off,
                                   strtab=dbg.strtab, debug_file=cand)
    return elf


# -- a cache per file identity -------------------------------------------------------------

CACHE_SIZE = 128
_cache: OrderedDict[tuple[str, int, int, int, int, str], ElfFile] = OrderedDict()
_lock = threading.Lock()


def load(path: str, root: str = "/", debug: bool = True, name: str | None = None) -> ElfFile:
    """``parse`` (and ``with_debug``) cached per (path, device, inode, mtime): a file
    replaced in place is read again. ``name``: the path debug files are looked for by
    when ``path`` is another way to the file (/proc/PID/map_files/...)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return EMPTY
    name = name or path
    key = (name, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, root if debug else "")
    with _lock:
        got = _cache.get(key)
        if got is not None:
            _cache.move_to_end(key)
            return got
    elf = parse(path)
    if debug:
        elf = with_debug(name, elf, root)
    with _lock:
        _cache[key] = elf
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return elf


def clear_cache() -> None:
    with _lock:
        _cache.clear()
