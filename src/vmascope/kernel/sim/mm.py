"""mm_struct: one simulated address space, its VMA tree and the kernel objects it holds.

The VMAs are kept sorted by address twice over: a blocked sorted index of start addresses
(O(log n) lookup, like the maple tree) and a doubly linked list for the neighbours. Every
handler elsewhere in this package takes the :class:`MM` as its first argument, as the
kernel's functions take ``struct mm_struct *`` or a VMA of it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from typing import Any

from ...kconst import DEFAULT_MAX_MAP_COUNT, PAGE_SHIFT, TASK_SIZE
from ...ops.language import PROT_EXEC, PROT_READ, PROT_WRITE
from .. import vmflags as F
from ..epochs import Epoch

MMAP_MIN_ADDR = 0x10000
MMAP_BASE = 0x7F0000000000  # top-down placement starts below this
PMD_SIZE = 2 << 20


class OpFailed(Exception):
    """An operation failed with an errno (caught per op; the script goes on)."""

    def __init__(self, errno: str) -> None:
        super().__init__(errno)
        self.errno = errno


def prot_bits(prot: int) -> int:
    """PROT_* bits -> VM_READ|VM_WRITE|VM_EXEC."""
    return _PROT_BITS[prot & (PROT_READ | PROT_WRITE | PROT_EXEC)]


_PROT_BITS = [(F.VM_READ if p & PROT_READ else 0) | (F.VM_WRITE if p & PROT_WRITE else 0)
              | (F.VM_EXEC if p & PROT_EXEC else 0)
              for p in range((PROT_READ | PROT_WRITE | PROT_EXEC) + 1)]


# -- kernel objects ---------------------------------------------------------------------------


class AnonVma:
    """struct anon_vma: the counters the reuse rules look at."""

    __slots__ = ("id", "_root", "_parent", "num_children", "num_active_vmas")

    def __init__(self, ident: int, parent: AnonVma | None = None) -> None:
        self.id = ident
        # A root anon_vma is its own root and parent, as in the kernel; that is kept as
        # None, so that an anon_vma is no reference cycle of its own (freed at once, not
        # by the garbage collector).
        self._parent = parent
        self._root = None if parent is None else parent.root
        self.num_children = 0
        self.num_active_vmas = 0

    @property
    def parent(self) -> AnonVma:
        return self if self._parent is None else self._parent

    @property
    def root(self) -> AnonVma:
        return self if self._root is None else self._root

    def __repr__(self) -> str:
        return f"av{self.id}"


class SVma:
    """struct vm_area_struct (the fields that matter for merging)."""

    __slots__ = ("start", "end", "pgoff", "flags", "file", "anon_vma", "chain", "anon_name",
                 "policy", "uffd", "prev", "next", "born")

    def __init__(self, start: int, end: int, pgoff: int, flags: int, file: Any = None,
                 anon_name: str | None = None, policy: Any = None) -> None:
        self.start = start
        self.end = end
        self.pgoff = pgoff
        self.flags = flags
        self.file = file
        self.anon_vma: AnonVma | None = None
        # The anon_vma_chain, as an immutable tuple: splits and dup_anon_vma copy it,
        # which for a tuple is sharing it.
        self.chain: tuple[AnonVma, ...] = ()
        self.anon_name = anon_name
        self.policy = policy
        self.uffd: Any = None
        self.prev: SVma | None = None
        self.next: SVma | None = None
        self.born = -1  # the op that made the boundary at start (MM.cur_op at the time)

    def split_off(self, addr: int) -> SVma:
        """The part [addr, end) of this VMA as a new VMA with the same attributes, the
        anon_vma and its chain shared (not yet linked: MM.insert). This one is unchanged."""
        new = _new_vma(SVma)
        new.start = addr
        new.end = self.end
        new.pgoff = self.pgoff + ((addr - self.start) >> PAGE_SHIFT)
        new.flags = self.flags
        new.file = self.file
        new.anon_vma = self.anon_vma
        new.chain = self.chain
        new.anon_name = self.anon_name
        new.policy = self.policy
        new.uffd = self.uffd
        new.born = -1
        return new

    def copy(self) -> SVma:
        """The same range and attributes as a new VMA without an anon_vma, not linked."""
        c = self.split_off(self.start)
        c.anon_vma, c.chain = None, ()
        c.prev = c.next = None
        return c

    def __repr__(self) -> str:
        return f"[{self.start:#x},{self.end:#x})"


_new_vma = object.__new__


class ShmemFile:
    """The shmem file behind a MAP_SHARED|MAP_ANONYMOUS mapping ("/dev/zero (deleted)")."""

    __slots__ = ("inode", "pages")

    def __init__(self, inode: int) -> None:
        self.inode = inode
        self.pages: set[int] = set()  # indexes in its page cache (faulted in)

    def __repr__(self) -> str:
        return f"/dev/zero (deleted) inode {self.inode}"


class MemFile:
    """A memfd (mm/memfd.c memfd_create): a shmem file with a name and a size."""

    __slots__ = ("inode", "name", "size", "pages")

    def __init__(self, inode: int, name: str, size: int) -> None:
        self.inode = inode
        self.name = name
        self.size = size  # bytes (ftruncate)
        self.pages: set[int] = set()  # indexes in its page cache (faulted in)

    def __repr__(self) -> str:
        return f"/memfd:{self.name} inode {self.inode}"


def shmem_file(v: SVma) -> ShmemFile | MemFile | None:
    """The VMA's shmem file (mm.h vma_is_shmem): a shared anonymous mapping's, a
    memfd's; None for anonymous memory and other files."""
    f = v.file
    return f if isinstance(f, (ShmemFile, MemFile)) else None


def linear_page_index(v: SVma, addr: int) -> int:
    """include/linux/pagemap.h linear_page_index: the file page mapped at addr."""
    return v.pgoff + ((addr - v.start) >> PAGE_SHIFT)


class _StartIndex:
    """The VMAs sorted by start address, in blocks (the start addresses beside them):
    O(log n) search, cheap insert and remove."""

    LOAD = 256

    __slots__ = ("_keys", "_vmas", "_maxes")

    def __init__(self) -> None:
        self._keys: list[list[int]] = []
        self._vmas: list[list[SVma]] = []
        self._maxes: list[int] = []  # the last start address of each block

    def find_le(self, x: int) -> SVma | None:
        """The VMA with the greatest start <= x."""
        maxes = self._maxes
        if not maxes:
            return None
        i = bisect_left(maxes, x)
        if i == len(maxes):
            return self._vmas[-1][-1]
        j = bisect_right(self._keys[i], x)
        if j:
            return self._vmas[i][j - 1]
        return self._vmas[i - 1][-1] if i else None

    def add(self, v: SVma) -> None:
        x = v.start
        maxes, keys, vmas = self._maxes, self._keys, self._vmas
        if not maxes:
            keys.append([x])
            vmas.append([v])
            maxes.append(x)
            return
        i = bisect_left(maxes, x)
        if i == len(maxes):
            i -= 1
            ks = keys[i]
            ks.append(x)
            vmas[i].append(v)
            maxes[i] = x
        else:
            ks = keys[i]
            j = bisect_right(ks, x)
            ks.insert(j, x)
            vmas[i].insert(j, v)
        if len(ks) > 2 * self.LOAD:
            vs = vmas[i]
            keys.insert(i + 1, ks[self.LOAD:])
            vmas.insert(i + 1, vs[self.LOAD:])
            del ks[self.LOAD:], vs[self.LOAD:]
            maxes.insert(i, ks[-1])

    def remove(self, x: int) -> None:
        maxes, keys = self._maxes, self._keys
        i = bisect_left(maxes, x)
        ks = keys[i]
        j = bisect_left(ks, x)
        del ks[j], self._vmas[i][j]
        if not ks:
            del keys[i], self._vmas[i], maxes[i]
        elif j == len(ks):
            maxes[i] = ks[-1]

    def replace(self, old: int, new: int) -> None:
        """Change a start address without changing its rank."""
        maxes = self._maxes
        i = bisect_left(maxes, old)
        ks = self._keys[i]
        j = bisect_left(ks, old)
        ks[j] = new
        if j == len(ks) - 1:
            maxes[i] = new


class MM:
    """One simulated address space (struct mm_struct)."""

    def __init__(self, epoch: Epoch, *, max_map_count: int = DEFAULT_MAX_MAP_COUNT,
                 trace: bool = False, thp: str = "madvise", numa_nodes: int = 1,
                 pku: bool = True) -> None:
        self.epoch = epoch
        self.max_map_count = max_map_count
        self.map_count = 0
        self.tracing = trace
        self.log: list[str] = []
        self.thp = thp
        self.numa_nodes = numa_nodes
        self.start_brk: int | None = None
        self.brk: int | None = None
        self.guards: set[int] = set()  # page numbers with a guard marker
        self.children: list[MM] = []
        self._index = _StartIndex()
        self.head: SVma | None = None  # the lowest VMA (the list is linked by prev/next)
        self._last: SVma | None = None  # the VMA found last, in the tree (unlink clears it)
        self.next_anon_id = 1
        self.next_inode = 1
        self.soft_dirty = F.VM_SOFTDIRTY if epoch.soft_dirty else 0
        self.sticky = F.VM_MAYBE_GUARD if epoch.sticky_guard_flag else 0
        self.inferred_anon_vmas = 0  # anon_vmas guessed by from_snapshot
        self.def_flags = 0  # mm->def_flags: VM_LOCKED(ONFAULT) after mlockall(MCL_FUTURE)
        self.files: dict[str, MemFile] = {}  # the script's memfds by name (the latest)
        self.exited = False  # a fork child that has exited (exit_mmap)
        self.pku = pku  # the CPU has protection keys (and the kernel uses them: OSPKE)
        self.pkeys = 1 if pku else 0  # allocated protection keys (with PKU: key 0)
        self.overcommit: Any = None  # util.Overcommit: the machine's policy (None: never refuse)
        self.sample_every = 0  # run_ops records (op index, map_count) every N ops
        self.samples: list[tuple[int, int]] = []
        self.resident: set[int] | None = None  # pages with private anonymous memory, if kept
        # When kept (run_ops keeps it for a script with uffd ops): page numbers of private
        # memory with a page table entry (a fault mapped a page, the zero page too), and
        # the shmem files' page caches (ShmemFile/MemFile.pages): what a userfaultfd
        # registered for missing pages sees.
        self.present: set[int] | None = None
        self.uffd: Any = None  # the script's userfaultfd context, once made
        # The lab's arena: the executor's fence above it, a VMA the model does not keep
        # (lab.backends.SimulatorBackend sets it; a lookup past the arena finds it).
        self.fence_above: int | None = None
        # Attribution (replay): the op being run, stamped on each VMA whose start it makes
        # (SVma.born), and when kept (not None) every refused merge: (op, address, codes).
        self.cur_op = -1
        self.refusals: list[tuple[int, int, tuple[str, ...]]] | None = None
        # When kept (replay): the op that made each VMA's start, logged as VMAs come
        # (born_in) and go (born_out); the VMAs alive at any moment by the op that made them.
        self.keep_born = False
        self.born_in: list[int] = []
        self.born_out: list[int] = []

    def dispose(self) -> None:
        """Unlink every VMA from its neighbours (here and in the fork children), so that
        dropping the mm frees its VMAs at once rather than leaving one reference cycle of
        them all to the garbage collector. The mm is empty afterwards."""
        for child in self.children:
            child.dispose()
        v = self.head
        while v is not None:
            nxt = v.next
            v.prev = v.next = None
            v = nxt
        self.head = self._last = None
        self._index = _StartIndex()
        self.map_count = 0

    def drop_resident(self, start: int, end: int) -> None:
        """Pages in [start, end) are no longer resident (unmapped, zapped)."""
        lo, hi = start >> 12, end >> 12
        for name in ("resident", "present"):
            pages = getattr(self, name)
            if not pages:
                continue
            if hi - lo > len(pages):
                setattr(self, name, {p for p in pages if not lo <= p < hi})
            else:
                pages.difference_update(range(lo, hi))

    def move_pages(self, old: int, length: int, new: int) -> None:
        """mremap moved the page table entries of [old, old + length) to new."""
        lo, hi, shift = old >> 12, (old + length) >> 12, (new - old) >> 12
        for name in ("resident", "present"):
            pages = getattr(self, name)
            if not pages:
                continue
            moved = [p for p in pages if lo <= p < hi] if hi - lo > len(pages) else [
                p for p in range(lo, hi) if p in pages]
            pages.difference_update(moved)
            pages.update(p + shift for p in moved)

    @classmethod
    def from_snapshot(cls, snapshot: Any, epoch: Any = None, **kwargs: Any) -> MM:
        """An mm in the state a Snapshot shows (see kernel/sim/fromsnap.py for what is
        inferred). ``epoch``: an Epoch or a release (default: the snapshot's kernel)."""
        from .fromsnap import mm_from_snapshot

        return mm_from_snapshot(snapshot, epoch, **kwargs)

    def __iter__(self) -> Iterator[SVma]:
        v = self.head
        while v is not None:
            yield v
            v = v.next

    def find_vma(self, addr: int) -> SVma | None:
        """The first VMA with end > addr (the kernel's find_vma)."""
        # The VMA found last, or the one after it (a program's next call or fault is
        # mostly there); else the index.
        v = self._last
        if v is not None and v.start <= addr:
            if addr < v.end:
                return v
            v = v.next
            if v is not None and addr < v.end:
                self._last = v
                return v
        v = self._index.find_le(addr)
        if v is None:
            v = self.head
        elif v.end <= addr:
            v = v.next
        if v is not None:
            self._last = v
        return v

    def vma_lookup(self, addr: int) -> SVma | None:
        """The VMA containing addr, or None."""
        v = self.find_vma(addr)
        return v if v is not None and v.start <= addr else None

    def insert(self, v: SVma, prev: SVma | None) -> None:
        """Link v after prev (None: at the head) and index it. map_count += 1."""
        nxt = prev.next if prev is not None else self.head
        v.prev = prev
        v.next = nxt
        if prev is not None:
            prev.next = v
        else:
            self.head = v
        if nxt is not None:
            nxt.prev = v
        self._index.add(v)
        self.map_count += 1
        v.born = self.cur_op
        if self.keep_born:
            self.born_in.append(v.born)

    def prev_of(self, addr: int) -> SVma | None:
        """The last VMA that starts below addr."""
        return self._index.find_le(addr - 1) if addr else None

    def unlink(self, v: SVma) -> None:
        """Remove v from the tree; map_count -= 1; drop its anon_vma link."""
        if v.prev is not None:
            v.prev.next = v.next
        else:
            self.head = v.next
        if v.next is not None:
            v.next.prev = v.prev
        self._index.remove(v.start)
        self.map_count -= 1
        if self.keep_born:
            self.born_out.append(v.born)
        if v.anon_vma is not None:
            v.anon_vma.num_active_vmas -= 1
        if self._last is v:
            self._last = None

    def set_start(self, v: SVma, start: int) -> None:
        old = v.start
        self._index.replace(old, start)
        v.start = start
        if self.keep_born:
            self.born_out.append(v.born)
            self.born_in.append(self.cur_op)
        v.born = self.cur_op

    def note(self, text: str) -> None:
        self.log.append("  " + text)

    def range_free(self, start: int, end: int) -> bool:
        v = self.find_vma(start)
        return v is None or v.start >= end

    def last_vma(self) -> SVma | None:
        v = self.head
        if v is None:
            return None
        return self._index.find_le(TASK_SIZE)

    def vma_name(self, v: SVma) -> str | None:
        if isinstance(v.file, MemFile):
            return f"/memfd:{v.file.name} (deleted)"
        if isinstance(v.file, ShmemFile):
            return "/dev/zero (deleted)"
        if (self.start_brk is not None and self.brk is not None and v.file is None
                and v.start <= self.brk and v.end >= self.start_brk):
            return "[heap]"
        if v.anon_name is not None:
            return f"[anon:{v.anon_name}]"
        return None


def av_text(v: SVma | None) -> str:
    if v is None:
        return "-"
    return "0" if v.anon_vma is None else repr(v.anon_vma)
