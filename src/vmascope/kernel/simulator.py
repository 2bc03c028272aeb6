"""The kernel VMA simulator: what /proc/PID/maps shows after a sequence of operations.

One :class:`MM` models one address space the way the kernel keeps it: VMAs sorted by
address (a blocked sorted index for O(log n) lookup plus a doubly linked list for
neighbours), flags as the kernel keeps them, pgoff, anon names, mempolicy, anon_vma
objects with root/parent/num_children/num_active_vmas and each VMA's anon_vma_chain,
map_count with the kernel's exact limit checks, and start_brk/brk.

Every merge decision goes through :mod:`vmascope.kernel.rules` (the same predicates the
explainer uses); the behaviour differences between kernels come from the
:class:`~vmascope.kernel.epochs.Epoch`.

Failures are recorded as errno names and the script goes on; a bad touch is recorded as
SIGSEGV and the script goes on.
"""

from __future__ import annotations

import dataclasses
import json
import os
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator, Sequence
from typing import Any

from ..model import Snapshot, SnapshotMeta, Vma
from ..ops.language import PROT_EXEC, PROT_READ, PROT_WRITE, Op, format_op, load_script
from . import rules as R
from .epochs import Epoch, default_release, epoch_for

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)
DEFAULT_MAX_MAP_COUNT = 65530
MMAP_MIN_ADDR = 0x10000
MMAP_BASE = 0x7F0000000000  # top-down placement starts below this
TASK_SIZE = 0x7FFFFFFFF000
PMD_SIZE = 2 << 20
STACK_GUARD_GAP = 256 << PAGE_SHIFT  # stack_guard_gap default
STACK_RLIMIT = 8 << 20  # RLIMIT_STACK default (ulimit -s 8192)
ANON_NAME_LEN_MAX = 80

_NAME_FORBIDDEN = set("\\`$[]")

_KEEP: Any = object()


def _set_attrs(v: Any, flags: int | None, anon_name: Any, policy: Any) -> Any:
    """Give a VMA (or a merge proposal) the attributes a vma_modify_* caller changes."""
    if flags is not None:
        v.flags = flags
    if anon_name is not _KEEP:
        v.anon_name = anon_name
    if policy is not _KEEP:
        v.policy = policy
    return v


def page_align(x: int) -> int:
    return (x + PAGE_SIZE - 1) & PAGE_MASK


def _prot_bits(prot: int) -> int:
    return ((R.VM_READ if prot & PROT_READ else 0) | (R.VM_WRITE if prot & PROT_WRITE else 0)
            | (R.VM_EXEC if prot & PROT_EXEC else 0))


# -- kernel objects ---------------------------------------------------------------------------


class AnonVma:
    """struct anon_vma: the counters the reuse rules look at."""

    __slots__ = ("id", "root", "parent", "num_children", "num_active_vmas")

    def __init__(self, ident: int, parent: AnonVma | None = None) -> None:
        self.id = ident
        self.parent: AnonVma = parent if parent is not None else self
        self.root: AnonVma = self.parent.root if parent is not None else self
        self.num_children = 0
        self.num_active_vmas = 0

    def __repr__(self) -> str:
        return f"av{self.id}"


class SVma:
    """struct vm_area_struct (the fields that matter for merging)."""

    __slots__ = ("start", "end", "pgoff", "flags", "file", "anon_vma", "chain", "anon_name",
                 "policy", "uffd", "prev", "next")

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

    def copy(self) -> SVma:
        c = SVma(self.start, self.end, self.pgoff, self.flags, self.file, self.anon_name,
                 self.policy)
        c.uffd = self.uffd
        return c

    def __repr__(self) -> str:
        return f"[{self.start:#x},{self.end:#x})"


class ShmemFile:
    """The shmem file behind a MAP_SHARED|MAP_ANONYMOUS mapping ("/dev/zero (deleted)")."""

    __slots__ = ("inode",)

    def __init__(self, inode: int) -> None:
        self.inode = inode

    def __repr__(self) -> str:
        return f"/dev/zero (deleted) inode {self.inode}"


class _StartIndex:
    """Sorted VMA start addresses in blocks: O(log n) search, cheap insert and remove."""

    LOAD = 256

    __slots__ = ("_lists", "_maxes")

    def __init__(self) -> None:
        self._lists: list[list[int]] = []
        self._maxes: list[int] = []

    def find_le(self, x: int) -> int | None:
        maxes = self._maxes
        if not maxes:
            return None
        i = bisect_left(maxes, x)
        if i == len(maxes):
            return maxes[-1]
        lst = self._lists[i]
        j = bisect_right(lst, x)
        if j:
            return lst[j - 1]
        return maxes[i - 1] if i else None

    def first(self) -> int | None:
        return self._lists[0][0] if self._lists else None

    def add(self, x: int) -> None:
        maxes, lists = self._maxes, self._lists
        if not maxes:
            lists.append([x])
            maxes.append(x)
            return
        i = bisect_left(maxes, x)
        if i == len(maxes):
            i -= 1
            lst = lists[i]
            lst.append(x)
            maxes[i] = x
        else:
            lst = lists[i]
            insort(lst, x)
        if len(lst) > 2 * self.LOAD:
            half = lst[self.LOAD:]
            del lst[self.LOAD:]
            lists.insert(i + 1, half)
            maxes.insert(i, lst[-1])

    def remove(self, x: int) -> None:
        maxes, lists = self._maxes, self._lists
        i = bisect_left(maxes, x)
        lst = lists[i]
        j = bisect_left(lst, x)
        del lst[j]
        if not lst:
            del lists[i]
            del maxes[i]
        elif j == len(lst):
            maxes[i] = lst[-1]

    def replace(self, old: int, new: int) -> None:
        """Change a key without changing its rank."""
        maxes = self._maxes
        i = bisect_left(maxes, old)
        lst = self._lists[i]
        j = bisect_left(lst, old)
        lst[j] = new
        if j == len(lst) - 1:
            maxes[i] = new


# -- the address space -----------------------------------------------------------------------


# madvise advice that changes VMA flags: (flags to set, flags to clear).
_FLAG_CHANGE = {
    "dontfork": (R.VM_DONTCOPY, 0), "dofork": (0, R.VM_DONTCOPY),
    "wipeonfork": (R.VM_WIPEONFORK, 0), "keeponfork": (0, R.VM_WIPEONFORK),
    "dontdump": (R.VM_DONTDUMP, 0), "dodump": (0, R.VM_DONTDUMP),
    "hugepage": (R.VM_HUGEPAGE, R.VM_NOHUGEPAGE),
    "nohugepage": (R.VM_NOHUGEPAGE, R.VM_HUGEPAGE),
    "mergeable": (R.VM_MERGEABLE, 0), "unmergeable": (0, R.VM_MERGEABLE),
    "normal": (0, R.VM_SEQ_READ | R.VM_RAND_READ),
    "sequential": (R.VM_SEQ_READ, R.VM_RAND_READ),
    "random": (R.VM_RAND_READ, R.VM_SEQ_READ),
}
# Advice that never changes a VMA (nor creates an anon_vma).
_NO_VMA_CHANGE = frozenset({"dontneed", "free", "willneed", "cold", "pageout"})


class OpFailed(Exception):
    """An operation failed with an errno (caught per op; the script goes on)."""

    def __init__(self, errno: str) -> None:
        super().__init__(errno)
        self.errno = errno


class MM:
    """One simulated address space (struct mm_struct)."""

    def __init__(self, epoch: Epoch, *, max_map_count: int = DEFAULT_MAX_MAP_COUNT,
                 trace: bool = False, thp: str = "madvise", numa_nodes: int = 1) -> None:
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
        self._by_start: dict[int, SVma] = {}
        self._head: SVma | None = None
        self._last: SVma | None = None
        self._next_anon_id = 1
        self._next_inode = 1
        self._sd = R.VM_SOFTDIRTY if epoch.soft_dirty else 0
        self._sticky = R.VM_MAYBE_GUARD if epoch.sticky_guard_flag else 0

    # -- the VMA tree ---------------------------------------------------------------------

    def __iter__(self) -> Iterator[SVma]:
        v = self._head
        while v is not None:
            yield v
            v = v.next

    def find_vma(self, addr: int) -> SVma | None:
        """The first VMA with end > addr (the kernel's find_vma)."""
        s = self._index.find_le(addr)
        if s is None:
            return self._head
        v = self._by_start[s]
        return v if v.end > addr else v.next

    def vma_lookup(self, addr: int) -> SVma | None:
        """The VMA containing addr, or None."""
        last = self._last
        if last is not None and last.start <= addr < last.end and self._by_start.get(
                last.start) is last:
            return last
        s = self._index.find_le(addr)
        if s is None:
            return None
        v = self._by_start[s]
        if v.end > addr:
            self._last = v
            return v
        return None

    def _insert(self, v: SVma, prev: SVma | None) -> None:
        """Link v after prev (None: at the head) and index it. map_count += 1."""
        nxt = prev.next if prev is not None else self._head
        v.prev = prev
        v.next = nxt
        if prev is not None:
            prev.next = v
        else:
            self._head = v
        if nxt is not None:
            nxt.prev = v
        self._index.add(v.start)
        self._by_start[v.start] = v
        self.map_count += 1

    def _prev_of(self, addr: int) -> SVma | None:
        """The last VMA that starts below addr."""
        s = self._index.find_le(addr - 1) if addr else None
        return None if s is None else self._by_start[s]

    def _unlink(self, v: SVma) -> None:
        """Remove v from the tree; map_count -= 1; drop its anon_vma link."""
        if v.prev is not None:
            v.prev.next = v.next
        else:
            self._head = v.next
        if v.next is not None:
            v.next.prev = v.prev
        self._index.remove(v.start)
        del self._by_start[v.start]
        self.map_count -= 1
        if v.anon_vma is not None:
            v.anon_vma.num_active_vmas -= 1
        if self._last is v:
            self._last = None

    def _set_start(self, v: SVma, start: int) -> None:
        old = v.start
        self._index.replace(old, start)
        del self._by_start[old]
        self._by_start[start] = v
        v.start = start

    # -- tracing --------------------------------------------------------------------------

    def _t(self, text: str) -> None:
        self.log.append("  " + text)

    @staticmethod
    def _av(v: SVma | None) -> str:
        if v is None:
            return "-"
        return "0" if v.anon_vma is None else repr(v.anon_vma)

    # -- anon_vma -------------------------------------------------------------------------

    def _new_anon_vma(self, parent: AnonVma | None = None) -> AnonVma:
        av = AnonVma(self._next_anon_id, parent)
        self._next_anon_id += 1
        return av

    def anon_vma_prepare(self, v: SVma) -> None:
        """mm/rmap.c __anon_vma_prepare: reuse a compatible neighbour's anon_vma, or make one."""
        if v.anon_vma is not None:
            return
        av = R.find_mergeable_anon_vma(v, v.prev, v.next)
        if av is None:
            av = self._new_anon_vma()
            av.num_children += 1  # the self-parent link of a new root
            if self.tracing:
                self._t(f"anon_vma_prepare {v}: new {av!r}")
        elif self.tracing:
            src = "next" if v.next is not None and v.next.anon_vma is av else "prev"
            self._t(f"anon_vma_prepare {v}: reuse {av!r} from {src} "
                    "(anon_vma_compatible, singular chain)")
        v.anon_vma = av
        v.chain = (av,)
        av.num_active_vmas += 1

    @staticmethod
    def _dup_anon_vma(dst: SVma, src: SVma) -> None:
        """mm/vma.c dup_anon_vma: dst takes src's anon_vma and chain if it has none."""
        if src.anon_vma is not None and dst.anon_vma is None:
            dst.anon_vma = src.anon_vma
            dst.chain = src.chain
            src.anon_vma.num_active_vmas += 1

    # -- split ----------------------------------------------------------------------------

    def split_vma(self, v: SVma, addr: int, check: bool = True) -> SVma:
        """mm/vma.c split_vma (check=True: map_count >= max -> ENOMEM) / __split_vma.

        ``v`` keeps [start, addr); the returned VMA is [addr, end). (Which of the two is
        the kernel's new object is not visible anywhere, so the lower part keeps its
        place in the index.) Both halves share the anon_vma and copy the chain.
        """
        if check and self.map_count >= self.max_map_count:
            if self.tracing:
                self._t(f"split {v} at {addr:#x} refused: map_count {self.map_count} >= "
                        f"max_map_count {self.max_map_count} (split_vma)")
            raise OpFailed("ENOMEM")
        new = SVma(addr, v.end, v.pgoff + ((addr - v.start) >> PAGE_SHIFT), v.flags, v.file,
                   v.anon_name, v.policy)
        new.uffd = v.uffd
        av = v.anon_vma
        if av is not None:
            new.anon_vma = av
            new.chain = v.chain
            av.num_active_vmas += 1
        v.end = addr
        self._insert(new, v)
        if self.tracing:
            self._t(f"split at {addr:#x}: {v} {new} (anon_vma {self._av(v)} shared) -> "
                    f"map_count {self.map_count}")
        return new

    # -- merging --------------------------------------------------------------------------

    def _trace_merge(self, how: str, vmg: Any, prev: SVma | None, nxt: SVma | None,
                     merge_left: bool, merge_right: bool, rl: Sequence[R.Reason],
                     rr: Sequence[R.Reason], cross: bool, note: str = "") -> None:
        """The decision log of one merge attempt, like the seed's printk."""
        self._t(f"{how} {vmg.start:#x}-{vmg.end:#x} (anon_vma {vmg.anon_vma or 0}): "
                f"merge_prev={int(merge_left)} merge_next={int(merge_right)} "
                f"prev->anon_vma={self._av(prev)} next->anon_vma={self._av(nxt)}{note}")
        if rl:
            self._t(f"  prev {prev} refused: {self._refusal(rl)}")
        if rr:
            self._t(f"  next {nxt} refused: {self._refusal(rr)}")
        if cross:
            self._t(f"  next {nxt} dropped: prev and next have different anon_vmas "
                    "(anon_vmas_compatible); prev wins")

    def _refusal(self, reasons: Sequence[R.Reason]) -> str:
        return "; ".join(f"{r.code} ({r.rule}): {r.detail}" for r in reasons)

    def merge_existing(self, vmg: R.Vmg) -> SVma | None:
        """vma_merge_existing_range (6.12+) / vma_merge cases 1-8 (up to 6.11)."""
        ep = self.epoch
        mid = vmg.middle
        left_side = vmg.start == mid.start
        right_side = vmg.end == mid.end
        if vmg.flags & R.VM_SPECIAL:
            if self.tracing:
                self._t(f"merge {vmg.start:#x}-{vmg.end:#x}: VM_SPECIAL, no merge")
            return None
        if not left_side and not right_side:
            if self.tracing:
                self._t(f"merge {vmg.start:#x}-{vmg.end:#x}: range inside {mid}, no merge")
            return None
        prev = mid.prev if left_side else None
        if prev is not None and prev.end != vmg.start:
            prev = None
        nxt = mid.next if right_side else None
        if nxt is not None and nxt.start != vmg.end:
            nxt = None
        if prev is None and nxt is None:
            if self.tracing:
                self._t(f"merge {vmg.start:#x}-{vmg.end:#x}: no adjacent neighbour")
            return None
        rl = R.can_vma_merge_after(ep, vmg, prev) if prev is not None else ()
        rr = R.can_vma_merge_before(ep, vmg, nxt) if nxt is not None else ()
        merge_left = prev is not None and not rl
        merge_right = nxt is not None and not rr
        cross = merge_left and merge_right and not R.anon_vmas_compatible(ep, prev, nxt)
        if cross:
            merge_right = False  # prev (left) wins
        if self.tracing:
            self._trace_merge("merge", vmg, prev, nxt, merge_left, merge_right, rl, rr, cross)
        if not merge_left and not merge_right:
            return None
        # Sticky flags (6.19 VM_MAYBE_GUARD) of every VMA that takes part are kept.
        sticky = (vmg.flags | mid.flags | (prev.flags if merge_left else 0)
                  | (nxt.flags if merge_right else 0)) & self._sticky
        if merge_left and merge_right:
            assert prev is not None and nxt is not None
            self._dup_anon_vma(prev, nxt if nxt.anon_vma is not None else mid)
            end = nxt.end
            self._unlink(mid)
            self._unlink(nxt)
            prev.end = end
            target = prev
        elif merge_left:
            assert prev is not None
            self._dup_anon_vma(prev, mid)
            if right_side:
                self._unlink(mid)
            else:
                mid.pgoff += (vmg.end - mid.start) >> PAGE_SHIFT
                self._set_start(mid, vmg.end)
            prev.end = vmg.end
            target = prev
        else:
            assert nxt is not None
            self._dup_anon_vma(nxt, mid)
            if left_side:
                self._unlink(mid)
            else:
                mid.end = vmg.start
            self._set_start(nxt, vmg.start)
            nxt.pgoff = vmg.pgoff
            target = nxt
        target.flags |= sticky | self._sd
        if self.tracing:
            self._t(f"merged -> {target} anon_vma {self._av(target)}; map_count "
                    f"{self.map_count}")
        return target

    def merge_new(self, vmg: R.Vmg, prev: SVma | None, nxt: SVma | None, mode: str,
                  just_expand: bool = False) -> SVma | None:
        """Merge a new range [vmg.start, vmg.end) (free) with its neighbours.

        mode: "vma_merge" (prev first, cross check; mm/mmap.c vma_merge up to 6.11),
        "next_first" (mm/mmap.c mmap_region 6.1-6.11), "merge_new_range" (mm/vma.c 6.12+).
        """
        ep = self.epoch
        if prev is not None and prev.end != vmg.start:
            prev = None
        if nxt is not None and nxt.start != vmg.end:
            nxt = None
        if vmg.flags & R.VM_SPECIAL:
            if self.tracing:
                self._t("new range: VM_SPECIAL, no merge")
            return None
        if prev is None and nxt is None:
            return None
        pglen = (vmg.end - vmg.start) >> PAGE_SHIFT
        rl: tuple[R.Reason, ...] = ()
        rr: tuple[R.Reason, ...] = ()
        cross = False
        if mode == "next_first":
            # next first with no anon_vma; then prev against next's anon_vma.
            merge_right = False
            if nxt is not None:
                rr = R.can_vma_merge_before(ep, vmg, nxt)
                merge_right = not rr
            merge_left = False
            if prev is not None:
                saved = vmg.anon_vma
                if merge_right:
                    vmg.anon_vma = nxt.anon_vma  # type: ignore[union-attr]
                rl = R.can_vma_merge_after(ep, vmg, prev)
                vmg.anon_vma = saved
                merge_left = not rl
        else:
            merge_left = prev is not None and not (rl := R.can_vma_merge_after(ep, vmg, prev))
            merge_right = False
            if nxt is not None and not just_expand:
                rr = R.can_vma_merge_before(ep, vmg, nxt)
                merge_right = not rr
                if merge_right and merge_left and not R.anon_vmas_compatible(ep, prev, nxt):
                    merge_right = False
                    cross = True
        if self.tracing:
            how = {"vma_merge": "vma_merge", "next_first": "mmap_region (next first)",
                   "merge_new_range": "vma_merge_new_range"}[mode]
            self._trace_merge(how, vmg, prev, nxt, merge_left, merge_right, rl, rr, cross,
                              " (just_expand: next not considered)" if just_expand and nxt else "")
        if not merge_left and not merge_right:
            return None
        copied = vmg.copied_from
        sticky = (vmg.flags | (prev.flags if merge_left else 0)
                  | (nxt.flags if merge_right else 0)) & self._sticky
        if merge_left:
            assert prev is not None
            if merge_right:
                assert nxt is not None
                self._dup_anon_vma(prev, nxt)
                end = nxt.end
                self._unlink(nxt)
                prev.end = end
            else:
                prev.end = vmg.end
            target = prev
        else:
            assert nxt is not None
            self._set_start(nxt, vmg.start)
            nxt.pgoff -= pglen
            target = nxt
        if copied is not None:
            if ep.anon_rule == "legacy" or ep.copied_from_dup:
                # vma_merge's importer logic (and 6.18.8+/6.19 copied_from) gives the
                # target the moved VMA's anon_vma.
                self._dup_anon_vma(target, copied)
            elif self.tracing and copied.anon_vma is not None and target.anon_vma is None:
                self._t(f"  note: {target} keeps no anon_vma although pages of "
                        f"{copied.anon_vma!r} moved in (the 6.16-6.18.7 mremap merge bug)")
        target.flags |= sticky | self._sd
        if self.tracing:
            self._t(f"merged -> {target} anon_vma {self._av(target)}; map_count "
                    f"{self.map_count}")
        return target

    def vma_modify(self, v: SVma, start: int, end: int, *, flags: int | None = None,
                   anon_name: Any = _KEEP, policy: Any = _KEEP) -> SVma:
        """mm/vma.c vma_modify: try a merge; otherwise split off [start, end) and change it."""
        if start > v.start and end < v.end and not self.tracing:
            # Touches neither edge: vma_merge_existing_range never merges; split twice.
            v = self.split_vma(v, start)
            self.split_vma(v, end)
            return _set_attrs(v, flags, anon_name, policy)
        vmg = _set_attrs(R.Vmg.from_vma(v, start, end), flags, anon_name, policy)
        merged = self.merge_existing(vmg)
        if merged is not None:
            return merged
        if v.start < start:
            v = self.split_vma(v, start)
        if v.end > end:
            self.split_vma(v, end)
        return _set_attrs(v, flags, anon_name, policy)

    # -- unmapping ------------------------------------------------------------------------

    def do_munmap(self, start: int, end: int) -> None:
        """do_vmi_munmap / vms_gather_munmap_vmas: split at the edges, remove the middle."""
        v = self.find_vma(start)
        if v is None or v.start >= end:
            return
        if start > v.start:
            if end < v.end and self.map_count >= self.max_map_count:
                if self.tracing:
                    self._t(f"munmap {start:#x}-{end:#x} inside {v} refused: map_count "
                            f"{self.map_count} >= max_map_count {self.max_map_count}")
                raise OpFailed("ENOMEM")
            v = self.split_vma(v, start, check=False)
        doomed = []
        while v is not None and v.start < end:
            if v.end > end:
                self.split_vma(v, end, check=False)
                doomed.append(v)
                break
            doomed.append(v)
            v = v.next
        for d in doomed:
            assert d is not None
            self._unlink(d)
        if self.guards:
            self.guards.difference_update(range(start >> PAGE_SHIFT, end >> PAGE_SHIFT))
        if self.tracing:
            self._t(f"unmapped {len(doomed)} VMA(s) in {start:#x}-{end:#x}; map_count "
                    f"{self.map_count}")

    # -- placement ------------------------------------------------------------------------

    def _range_free(self, start: int, end: int) -> bool:
        v = self.find_vma(start)
        return v is None or v.start >= end

    def get_unmapped_area(self, hint: int, length: int) -> int:
        """A hint that is free is used as is; otherwise top-down below MMAP_BASE."""
        if hint:
            hint = max(hint & PAGE_MASK, MMAP_MIN_ADDR)
            if hint + length <= TASK_SIZE and self._range_free(hint, hint + length):
                return hint
        top = MMAP_BASE
        v = self.find_vma(top)
        v = v.prev if v is not None else self._last_vma()
        while True:
            low = v.end if v is not None else MMAP_MIN_ADDR
            if top - low >= length:
                return top - length
            if v is None:
                raise OpFailed("ENOMEM")
            top = min(top, v.start)
            v = v.prev

    def _last_vma(self) -> SVma | None:
        v = self._head
        if v is None:
            return None
        s = self._index.find_le(TASK_SIZE)
        return None if s is None else self._by_start[s]

    # -- operations -----------------------------------------------------------------------

    def mmap(self, op: Op) -> None:
        ep = self.epoch
        length = page_align(op.length)
        if op.length == 0 or length == 0:
            raise OpFailed("EINVAL")
        shared = "shared" in op.flags
        fixed = "fixed" in op.flags
        if fixed and op.addr & ~PAGE_MASK:
            raise OpFailed("EINVAL")
        flags = _prot_bits(op.prot) | R.VM_MAYREAD | R.VM_MAYWRITE | R.VM_MAYEXEC
        if shared:
            if "growsdown" in op.flags:
                raise OpFailed("EINVAL")
            flags |= R.VM_SHARED | R.VM_MAYSHARE
        if "growsdown" in op.flags:
            flags |= R.VM_GROWSDOWN
        if "noreserve" in op.flags:
            flags |= R.VM_NORESERVE
        # mm/mmap.c do_mmap: "Too many mappings?" uses '>' (every release).
        if self.map_count > self.max_map_count:
            if self.tracing:
                self._t(f"do_mmap refused: map_count {self.map_count} > max_map_count "
                        f"{self.max_map_count}")
            raise OpFailed("ENOMEM")
        if fixed:
            addr = op.addr
            if addr + length > TASK_SIZE:
                raise OpFailed("ENOMEM")
        else:
            addr = self.get_unmapped_area(op.addr, length)
        end = addr + length
        if R.accountable_mapping(flags):
            flags |= R.VM_ACCOUNT
        flags |= self._sd
        self.do_munmap(addr, end)  # MAP_FIXED replaces what was there
        prev = self._prev_of(addr)
        nxt = prev.next if prev is not None else self._head
        v: SVma | None = None
        if shared:
            # The shmem file is set up after the merge attempt, so shared anonymous
            # memory never merges at mmap time.
            pgoff = 0
        else:
            pgoff = addr >> PAGE_SHIFT
            vmg = R.Vmg(addr, end, pgoff, flags)
            v = self.merge_new(vmg, prev, nxt, ep.new_range)
        if v is None:
            v = SVma(addr, end, pgoff, flags)
            if shared:
                v.file = ShmemFile(self._next_inode)
                self._next_inode += 1
            self._insert(v, prev)
            if self.tracing:
                self._t(f"new VMA {v} -> map_count {self.map_count}")
        if "populate" in op.flags and not shared and flags & R.VM_WRITE:
            self.anon_vma_prepare(self.vma_lookup(addr) or v)

    def munmap(self, op: Op) -> None:
        if op.addr & ~PAGE_MASK or op.length == 0:
            raise OpFailed("EINVAL")
        length = page_align(op.length)
        if op.addr + length > TASK_SIZE:
            raise OpFailed("EINVAL")
        self.do_munmap(op.addr, op.addr + length)

    def mprotect(self, op: Op) -> None:
        """mm/mprotect.c do_mprotect_pkey + mprotect_fixup."""
        ep = self.epoch
        start = op.addr
        if start & ~PAGE_MASK:
            raise OpFailed("EINVAL")
        length = page_align(op.length)
        end = start + length
        if end <= start:
            if length == 0:
                return
            raise OpFailed("ENOMEM")
        v = self.find_vma(start)
        if v is None or v.start > start:
            raise OpFailed("ENOMEM")
        prot = _prot_bits(op.prot)
        nstart = start
        while True:
            if (prot & R.VM_READ and not v.flags & R.VM_MAYREAD) or (
                    prot & R.VM_WRITE and not v.flags & R.VM_MAYWRITE) or (
                    prot & R.VM_EXEC and not v.flags & R.VM_MAYEXEC):
                raise OpFailed("EACCES")
            tmp = min(v.end, end)
            newflags = R.mprotect_newflags(ep, v.flags, prot, v.file is None,
                                           v.anon_vma is not None)
            if newflags != v.flags:
                v = self.vma_modify(v, nstart, tmp, flags=newflags)
            # Continue after the (possibly merged) VMA: vma_iter_end().
            nstart = v.end if v.end > tmp else tmp
            if nstart >= end:
                return
            nxt = v.next
            if nxt is None or nxt.start != nstart:
                raise OpFailed("ENOMEM")
            v = nxt

    def _walk(self, start: int, end: int, visit: Any) -> None:
        """mm/madvise.c madvise_walk_vmas: visit each VMA piece; holes give ENOMEM at the end."""
        v = self.find_vma(start)
        unmapped = False
        while True:
            if v is None:
                raise OpFailed("ENOMEM")
            if start < v.start:
                unmapped = True
                start = v.start
                if start >= end:
                    break
            tmp = min(v.end, end)
            v = visit(v, start, tmp)
            start = tmp
            if start < v.end:
                start = v.end
            if start >= end:
                break
            v = v.next
        if unmapped:
            raise OpFailed("ENOMEM")

    def _update(self, v: SVma, start: int, end: int, newflags: int, name: Any = _KEEP) -> SVma:
        """madvise_update_vma: nothing to do if unchanged; split failure -> EAGAIN (5.17+)."""
        if newflags == v.flags and (name is _KEEP or name == v.anon_name):
            return v
        try:
            return self.vma_modify(v, start, end, flags=newflags, anon_name=name)
        except OpFailed as exc:
            if exc.errno == "ENOMEM":
                raise OpFailed(self.epoch.madvise_split_errno) from None
            raise

    def madvise(self, op: Op) -> None:
        ep = self.epoch
        start = op.addr
        adv = op.advice or ""
        if start & ~PAGE_MASK:
            raise OpFailed("EINVAL")
        if adv in ("guard_install", "guard_remove") and not ep.guard_regions:
            raise OpFailed("EINVAL")
        length = page_align(op.length)
        end = start + length
        if length == 0:
            return
        if adv in _NO_VMA_CHANGE:
            # Advice that never changes a VMA: only holes (ENOMEM) and refusals (EINVAL).
            v = self.find_vma(start)
            unmapped = False
            while True:
                if v is None:
                    raise OpFailed("ENOMEM")
                if start < v.start:
                    unmapped = True
                if v.start >= end:
                    break
                f = v.flags
                if adv == "dontneed" and f & (R.VM_LOCKED | R.VM_PFNMAP | R.VM_HUGETLB):
                    raise OpFailed("EINVAL")
                if adv == "free" and (v.file is not None or f & R.VM_SHARED):
                    raise OpFailed("EINVAL")
                start = v.end
                if start >= end:
                    break
                v = v.next
            if unmapped:
                raise OpFailed("ENOMEM")
            return
        if adv in _FLAG_CHANGE:
            add, clear = _FLAG_CHANGE[adv]

            def visit(v: SVma, s: int, e: int) -> SVma:
                if adv == "dofork" and v.flags & R.VM_IO:
                    raise OpFailed("EINVAL")
                if adv == "wipeonfork" and (v.file is not None or v.flags & R.VM_SHARED):
                    raise OpFailed("EINVAL")
                if adv == "keeponfork" and v.flags & R.VM_DROPPABLE:
                    raise OpFailed("EINVAL")
                if adv == "dodump" and v.flags & R.VM_SPECIAL:
                    raise OpFailed("EINVAL")
                if adv == "mergeable" and v.flags & (R.VM_SHARED | R.VM_MAYSHARE | R.VM_SPECIAL
                                                     | R.VM_HUGETLB | R.VM_DROPPABLE):
                    return v  # ksm_madvise leaves these alone
                return self._update(v, s, e, (v.flags | add) & ~clear)

            self._walk(start, end, visit)
            return
        if adv == "populate_write" or adv == "populate_read":
            write = adv == "populate_write"

            def populate(v: SVma, s: int, e: int) -> SVma:
                if v.flags & (R.VM_IO | R.VM_PFNMAP):
                    raise OpFailed("EINVAL")
                if write and not v.flags & R.VM_WRITE or not v.flags & (
                        R.VM_READ | R.VM_WRITE | R.VM_EXEC):
                    raise OpFailed("EINVAL")
                if write and v.file is None and not v.flags & R.VM_SHARED:
                    self.anon_vma_prepare(v)
                return v

            if ep.populate_in_walk:
                # Inside madvise_walk_vmas: holes give ENOMEM only at the end, a bad VMA
                # gives EINVAL at once.
                self._walk(start, end, populate)
                return
            addr = start
            while addr < end:
                v = self.vma_lookup(addr)
                if v is None:
                    raise OpFailed("ENOMEM")
                if v.flags & (R.VM_IO | R.VM_PFNMAP):
                    raise OpFailed("EINVAL")
                if write and not v.flags & R.VM_WRITE or not v.flags & (
                        R.VM_READ | R.VM_WRITE | R.VM_EXEC):
                    raise OpFailed("EINVAL")
                if write and v.file is None and not v.flags & R.VM_SHARED:
                    self.anon_vma_prepare(v)
                addr = v.end
            return

        def check(v: SVma, s: int, e: int) -> SVma:
            if adv == "dontneed" and v.flags & (R.VM_LOCKED | R.VM_PFNMAP | R.VM_HUGETLB):
                raise OpFailed("EINVAL")
            if adv == "free" and (v.file is not None or v.flags & R.VM_SHARED):
                raise OpFailed("EINVAL")
            if adv == "guard_install":
                if v.flags & (R.VM_SPECIAL | R.VM_HUGETLB | R.VM_LOCKED):
                    raise OpFailed("EINVAL")
                if v.file is None and not v.flags & R.VM_SHARED:
                    # mm/madvise.c madvise_guard_install (6.13): anon_vma_prepare first.
                    self.anon_vma_prepare(v)
                if self._sticky:
                    v.flags |= self._sticky
                self.guards.update(range(s >> PAGE_SHIFT, e >> PAGE_SHIFT))
            elif adv == "guard_remove":
                self.guards.difference_update(range(s >> PAGE_SHIFT, e >> PAGE_SHIFT))
            return v

        self._walk(start, end, check)

    def name(self, op: Op) -> None:
        """prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, start, len, name)."""
        if not self.epoch.anon_vma_name:
            raise OpFailed("EINVAL")
        start = op.addr
        if start & ~PAGE_MASK:
            raise OpFailed("EINVAL")
        name = op.name
        if name is not None:
            if len(name) >= ANON_NAME_LEN_MAX or any(
                    c in _NAME_FORBIDDEN or not c.isprintable() for c in name):
                raise OpFailed("EINVAL")
        length = page_align(op.length)
        if length == 0:
            return

        def visit(v: SVma, s: int, e: int) -> SVma:
            if v.file is not None and not isinstance(v.file, ShmemFile):
                raise OpFailed("EBADF")
            return self._update(v, s, e, v.flags, name)

        self._walk(start, start + length, visit)

    def mbind(self, op: Op) -> None:
        start = op.addr
        if start & ~PAGE_MASK:
            raise OpFailed("EINVAL")
        policy = None if op.mode in (None, "default") else (op.mode, tuple(sorted(op.nodes)))
        if policy is not None and any(n >= self.numa_nodes for n in op.nodes):
            raise OpFailed("EINVAL")
        length = page_align(op.length)
        end = start + length
        if length == 0:
            return
        # queue_pages_range: an unmapped hole anywhere in the range -> EFAULT, before
        # anything changes. MPOL_DEFAULT skips the check and resets the mapped parts
        # (6.1.176, 6.12.117, 7.2.13 and 6.18.44 all do so).
        addr = start
        v = self.find_vma(start)
        if v is None or v.start >= end:
            raise OpFailed("EFAULT")  # no VMA in the range at all, whatever the mode
        while policy is not None and addr < end:
            if v is None or v.start > addr:
                raise OpFailed("EFAULT")
            addr = v.end
            v = v.next
        v = self.find_vma(start)
        s = start
        while v is not None and v.start < end:
            e = min(v.end, end)
            if v.policy != policy:
                v = self.vma_modify(v, max(s, v.start), e, policy=policy)
            s = e
            if s >= end:
                break
            v = v.next

    def touch(self, op: Op) -> str | None:
        """A fault at op.addr. Returns the signal name for a bad access."""
        addr = op.addr
        v = self.vma_lookup(addr)
        if v is None:
            v = self._expand_stack(addr)
            if v is None:
                return "SIGSEGV"
        flags = v.flags
        if op.write:
            if not flags & R.VM_WRITE:
                return "SIGSEGV"
        elif not flags & (R.VM_READ | R.VM_WRITE | R.VM_EXEC):
            return "SIGSEGV"
        if self.guards and (addr >> PAGE_SHIFT) in self.guards:
            return "SIGSEGV"
        if v.anon_vma is not None or v.file is not None or flags & R.VM_SHARED:
            return None
        if op.write or self._thp_read_fault(v, addr):
            self.anon_vma_prepare(v)
        return None

    def _expand_stack(self, addr: int) -> SVma | None:
        """mm/mmap.c expand_downwards: a fault just below a VM_GROWSDOWN VMA grows it.

        Refused (SIGSEGV) below mmap_min_addr, beyond RLIMIT_STACK (8 MiB), or when an
        accessible VMA that does not grow down ends less than stack_guard_gap (256 pages)
        below the new start. The grown VMA gets an anon_vma first (anon_vma_prepare).
        """
        v = self.find_vma(addr)
        if v is None or not v.flags & R.VM_GROWSDOWN or addr >= v.start:
            return None
        address = addr & PAGE_MASK
        if address < MMAP_MIN_ADDR or v.end - address > STACK_RLIMIT:
            return None
        prev = v.prev
        if (prev is not None and not prev.flags & R.VM_GROWSDOWN
                and prev.flags & (R.VM_READ | R.VM_WRITE | R.VM_EXEC)
                and address - prev.end < STACK_GUARD_GAP):
            return None
        if prev is not None and prev.end > address:
            return None
        self.anon_vma_prepare(v)
        grow = (v.start - address) >> PAGE_SHIFT
        v.pgoff -= grow
        self._set_start(v, address)
        if self.tracing:
            self._t(f"expand_downwards: {v} grew by {grow} page(s)")
        return v

    def _thp_read_fault(self, v: SVma, addr: int) -> bool:
        """A read fault that takes the huge-page path prepares an anon_vma too."""
        if v.flags & R.VM_NOHUGEPAGE or self.thp == "never":
            return False
        if self.thp == "madvise" and not v.flags & R.VM_HUGEPAGE:
            return False
        lo = addr & ~(PMD_SIZE - 1)
        return v.start <= lo and lo + PMD_SIZE <= v.end

    def fork(self, op: Op) -> None:
        """dup_mmap + anon_vma_fork: a child that keeps the anon_vmas shared."""
        child = MM(self.epoch, max_map_count=self.max_map_count, thp=self.thp,
                   numa_nodes=self.numa_nodes)
        child._next_anon_id = self._next_anon_id
        prev: SVma | None = None
        for p in self:
            if p.flags & R.VM_DONTCOPY:
                continue
            c = p.copy()
            c.flags &= ~(R.VM_LOCKED | R.VM_LOCKONFAULT)
            if p.flags & R.VM_WIPEONFORK or p.anon_vma is None:
                pass
            else:
                self._anon_vma_fork(c, p, child)
            child._insert(c, prev)
            prev = c
        self._next_anon_id = child._next_anon_id
        child.start_brk, child.brk = self.start_brk, self.brk
        self.children.append(child)
        if self.tracing:
            made = sum(1 for c in child if c.anon_vma is not None)
            self._t(f"fork: child {len(self.children)} has {child.map_count} VMAs, {made} "
                    "linked to new child anon_vmas (fork children: their chains are not "
                    "singular)")

    def _anon_vma_fork(self, c: SVma, p: SVma, child: MM) -> None:
        assert p.anon_vma is not None
        c.anon_vma = None
        chain: list[AnonVma] = []
        for av in reversed(p.chain):  # anon_vma_clone with reuse
            chain.append(av)
            if c.anon_vma is None and self._clone_reusable(av, p):
                c.anon_vma = av
        if c.anon_vma is not None:
            c.anon_vma.num_active_vmas += 1
            c.chain = tuple(chain)
            return
        av = child._new_anon_vma(p.anon_vma)
        av.num_active_vmas = 1
        p.anon_vma.num_children += 1
        chain.append(av)
        c.chain = tuple(chain)
        c.anon_vma = av

    def _clone_reusable(self, av: AnonVma, src: SVma) -> bool:
        if self.epoch.clone_reuse == "degree":
            # Before 2555283eb40d: anon_vma != src->anon_vma && degree < 2.
            return av is not src.anon_vma and av.num_active_vmas + av.num_children < 2
        return av.num_children < 2 and av.num_active_vmas == 0

    def heap(self, op: Op) -> None:
        self.start_brk = self.brk = page_align(op.addr)

    def brk_op(self, op: Op) -> None:
        """The brk syscall. It reports failure by returning the old break (ENOMEM here)."""
        ep = self.epoch
        if self.start_brk is None or self.brk is None:
            # No `heap` op: the real break is far from the script's addresses, and moving
            # it there fails (the kernel returns the old break).
            raise OpFailed("ENOMEM")
        brk = op.addr
        if brk < self.start_brk:
            raise OpFailed("ENOMEM")
        newbrk = page_align(brk)
        oldbrk = page_align(self.brk)
        if oldbrk == newbrk:
            self.brk = brk
            return
        if brk <= self.brk:
            self.do_munmap(newbrk, oldbrk)
            self.brk = brk
            return
        nxt = self.find_vma(oldbrk)
        if nxt is not None and newbrk + PAGE_SIZE > nxt.start:
            raise OpFailed("ENOMEM")
        # do_brk_flags
        if self.map_count > self.max_map_count:
            raise OpFailed("ENOMEM")
        flags = (R.VM_READ | R.VM_WRITE | R.VM_MAYREAD | R.VM_MAYWRITE | R.VM_MAYEXEC
                 | R.VM_ACCOUNT | self._sd)
        prev = self._prev_of(oldbrk)
        brkvma = prev if prev is not None and prev.start >= self.start_brk else None
        vmg = R.Vmg(oldbrk, newbrk, oldbrk >> PAGE_SHIFT, flags)
        merged: SVma | None = None
        mode = ep.brk_mode
        if mode == "vma_merge":
            merged = self.merge_new(vmg, prev, prev.next if prev else self._head, "vma_merge")
        elif mode in ("merge_new_range", "just_expand"):
            if brkvma is not None:
                merged = self.merge_new(vmg, brkvma, brkvma.next, "merge_new_range",
                                        just_expand=mode == "just_expand")
        elif brkvma is not None and brkvma.end == oldbrk:  # "expand" (6.1-6.11)
            reasons = R.can_vma_merge_after(ep, vmg, brkvma)
            if not reasons:
                brkvma.end = newbrk
                merged = brkvma
            if self.tracing:
                self._t(f"do_brk_flags: expand {brkvma} in place: "
                        + ("yes" if merged else "refused: " + self._refusal(reasons)))
        if merged is None:
            v = SVma(oldbrk, newbrk, oldbrk >> PAGE_SHIFT, flags)
            self._insert(v, prev)
            if self.tracing:
                self._t(f"do_brk_flags: new VMA {v} -> map_count {self.map_count}")
        self.brk = brk

    # -- mremap ---------------------------------------------------------------------------

    def mremap(self, op: Op) -> None:
        ep = self.epoch
        addr = op.addr
        flags = op.flags
        fixed = "fixed" in flags
        maymove = "maymove" in flags
        dontunmap = "dontunmap" in flags
        if addr & ~PAGE_MASK:
            raise OpFailed("EINVAL")
        if (fixed or dontunmap) and not maymove:
            raise OpFailed("EINVAL")
        old_len = page_align(op.length)
        new_len = page_align(op.new_len)
        if new_len == 0:
            raise OpFailed("EINVAL")
        if dontunmap and old_len != new_len:
            raise OpFailed("EINVAL")
        if fixed and ep.mremap_multi_vma:
            # 6.17's mremap rewrite checks all parameters before looking anything up.
            self._check_new_addr(addr, old_len, new_len, op.new_addr)
        if ep.mremap_lookup_first and self.vma_lookup(addr) is None:
            raise OpFailed("EFAULT")
        if fixed or dontunmap:
            self._mremap_to(addr, old_len, new_len, op.new_addr, fixed, dontunmap)
            return
        if old_len >= new_len:
            if old_len > new_len:
                self.do_munmap(addr + new_len, addr + old_len)
            return
        v = self._vma_to_resize(addr, old_len, new_len)
        delta = new_len - old_len
        if old_len == v.end - addr and self._range_free(v.end, v.end + delta) and (
                v.end + delta <= TASK_SIZE):
            if ep.mremap_expand_merges_next:
                vmg = R.Vmg(v.end, v.end + delta, v.pgoff + ((v.end - v.start) >> PAGE_SHIFT),
                            v.flags, file=v.file, anon_vma=v.anon_vma, policy=v.policy,
                            anon_name=v.anon_name, uffd=v.uffd)
                mode = "merge_new_range" if ep.copy_vma_new_range else "vma_merge"
                if self.merge_new(vmg, v, v.next, mode) is None:
                    raise OpFailed("ENOMEM")
            else:
                v.end += delta
                if self.tracing:
                    self._t(f"grow in place -> {v}")
            return
        if not maymove:
            raise OpFailed("ENOMEM")
        new_addr = self.get_unmapped_area(0, new_len)
        self._move_vma(v, addr, old_len, new_len, new_addr, dontunmap=False)

    def _vma_to_resize(self, addr: int, old_len: int, new_len: int) -> SVma:
        v = self.vma_lookup(addr)
        if v is None:
            raise OpFailed("EFAULT")
        if old_len > v.end - addr:
            raise OpFailed("EFAULT")
        if new_len > old_len and v.flags & (R.VM_DONTEXPAND | R.VM_PFNMAP):
            raise OpFailed("EFAULT")
        return v

    def _mremap_to(self, addr: int, old_len: int, new_len: int, new_addr: int | None,
                   fixed: bool, dontunmap: bool) -> None:
        ep = self.epoch
        if fixed:
            self._check_new_addr(addr, old_len, new_len, new_addr)
        if ep.mremap_limit == "legacy":
            # mm/mremap.c mremap_to: room for the worst case of splits.
            if self.map_count + 2 >= self.max_map_count - 3:
                if self.tracing:
                    self._t(f"mremap_to refused: map_count {self.map_count} + 2 >= "
                            f"max_map_count {self.max_map_count} - 3")
                raise OpFailed("ENOMEM")
        else:
            self._mremap_count_check(1 if dontunmap else 0)
        first = self.vma_lookup(addr)
        multi = (first is not None and old_len > first.end - addr and ep.mremap_multi_vma
                 and fixed and old_len == new_len and not dontunmap)
        if fixed and not multi:
            assert new_addr is not None
            self.do_munmap(new_addr, new_addr + new_len)
        if old_len > new_len:
            self.do_munmap(addr + new_len, addr + old_len)
            old_len = new_len
        v = self.vma_lookup(addr)
        if v is None:
            raise OpFailed("EFAULT")
        if old_len > v.end - addr and not multi:
            raise OpFailed("EFAULT")
        if not multi:
            v = self._vma_to_resize(addr, old_len, new_len)
        if not fixed:
            new_addr = self.get_unmapped_area(new_addr or 0, new_len)
        assert new_addr is not None
        if not multi:
            self._move_vma(v, addr, old_len, new_len, new_addr, dontunmap,
                           check=ep.mremap_limit == "legacy")
            return
        # 6.17+: move each VMA of the range, keeping the gaps between them.
        pieces = []
        w: SVma | None = v
        end = addr + old_len
        while w is not None and w.start < end:
            pieces.append((max(w.start, addr), min(w.end, end)))
            w = w.next
        for s, e in pieces:
            # Each piece replaces what is at its destination; the gaps between the
            # pieces leave the destination alone (as 6.18.44 does).
            dst = new_addr + (s - addr)
            self.do_munmap(dst, dst + (e - s))
            piece = self.vma_lookup(s)
            assert piece is not None
            self._move_vma(piece, s, e - s, e - s, dst, dontunmap=False, check=False)

    @staticmethod
    def _check_new_addr(addr: int, old_len: int, new_len: int, new_addr: int | None) -> None:
        if new_addr is None or new_addr & ~PAGE_MASK:
            raise OpFailed("EINVAL")
        if new_addr + new_len > TASK_SIZE:
            raise OpFailed("EINVAL")
        if addr + old_len > new_addr and new_addr + new_len > addr:
            raise OpFailed("EINVAL")

    def _mremap_count_check(self, extra: int) -> None:
        """6.17+: map_count (+1 when the old mapping stays) >= max_map_count - 3 -> ENOMEM."""
        if self.map_count + extra >= self.max_map_count - 3:
            if self.tracing:
                self._t(f"mremap refused: map_count {self.map_count} + {extra} >= "
                        f"max_map_count {self.max_map_count} - 3")
            raise OpFailed("ENOMEM")

    def _move_vma(self, v: SVma, old_addr: int, old_len: int, new_len: int, new_addr: int,
                  dontunmap: bool, check: bool = True) -> None:
        """mm/mremap.c move_vma + mm/vma.c copy_vma, then unmap the old range."""
        ep = self.epoch
        if check:
            self._mremap_count_check(0)
        pgoff = v.pgoff + ((old_addr - v.start) >> PAGE_SHIFT)
        if v.file is None and v.anon_vma is None and not v.flags & R.VM_SHARED:
            # An unfaulted anonymous VMA is re-linearised at its new address.
            pgoff = new_addr >> PAGE_SHIFT
        src_whole = v.start == old_addr and v.end == old_addr + old_len
        new_end = new_addr + new_len
        vmg = R.Vmg(new_addr, new_end, pgoff, v.flags, file=v.file, anon_vma=v.anon_vma,
                    policy=v.policy, anon_name=v.anon_name, uffd=v.uffd, copied_from=v)
        prev = self._prev_of(new_addr)
        nxt = prev.next if prev is not None else self._head
        if self.tracing:
            self._t(f"copy_vma {old_addr:#x}-{old_addr + old_len:#x} -> {new_addr:#x}-"
                    f"{new_end:#x} pgoff {pgoff:#x} anon_vma {self._av(v)}")
        mode = "merge_new_range" if ep.copy_vma_new_range else "vma_merge"
        new = self.merge_new(vmg, prev, nxt, mode)
        if new is None:
            new = v.copy()
            new.start, new.end, new.pgoff = new_addr, new_end, pgoff
            new.anon_vma = v.anon_vma
            new.chain = v.chain
            if v.anon_vma is not None:
                v.anon_vma.num_active_vmas += 1
            new.flags |= self._sd
            self._insert(new, prev)
            if self.tracing:
                self._t(f"new VMA {new} (anon_vma {self._av(new)}) -> map_count "
                        f"{self.map_count}")
        if dontunmap:
            old = self.vma_lookup(old_addr)
            if old is not None and old is not new:
                old.flags &= ~(R.VM_LOCKED | R.VM_LOCKONFAULT)
                if src_whole and old.start == old_addr and old.anon_vma is not None:
                    old.anon_vma.num_active_vmas -= 1
                    old.anon_vma = None
                    old.chain = ()
                    if self.tracing:
                        self._t(f"MREMAP_DONTUNMAP: {old} unlinked from its anon_vmas")
            return
        self.do_munmap(old_addr, old_addr + old_len)

    # -- snapshot helpers -----------------------------------------------------------------

    def vma_name(self, v: SVma) -> str | None:
        if isinstance(v.file, ShmemFile):
            return "/dev/zero (deleted)"
        if (self.start_brk is not None and self.brk is not None and v.file is None
                and v.start <= self.brk and v.end >= self.start_brk):
            return "[heap]"
        if v.anon_name is not None:
            return f"[anon:{v.anon_name}]"
        return None


def policy_text(policy: Any) -> str:
    """numa_maps spelling of a policy: default, bind:0-1, interleave:0,2, prefer:0."""
    if policy is None:
        return "default"
    mode, nodes = policy
    return ("prefer" if mode == "preferred" else mode) + ":" + _node_list(nodes)


def _node_list(nodes: Sequence[int]) -> str:
    parts: list[str] = []
    run: list[int] = []
    for n in sorted(nodes):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [n]
    if run:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(parts)


# -- results ----------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class SimVma:
    start: int
    end: int
    perms: str
    flags: tuple[str, ...]
    pgoff: int
    anon_vma: int | None
    name: str | None
    policy: str
    inode: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"start": hex(self.start), "end": hex(self.end), "perms": self.perms,
                "flags": list(self.flags), "pgoff": self.pgoff, "anon_vma": self.anon_vma,
                "name": self.name}


@dataclasses.dataclass
class SimResult:
    """The outcome of one script."""

    script: str | None
    kernel: str
    epoch: Epoch
    map_count: int
    max_map_count: int
    vmas: list[SimVma]
    errors: list[dict[str, Any]]
    faults: list[dict[str, Any]]
    trace: list[str]
    start_brk: int | None = None
    brk: int | None = None
    children: list[list[SimVma]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "script": self.script,
            "kernel": self.kernel,
            "epoch": self.epoch.name,
            "map_count": self.map_count,
            "vmas": [v.to_json() for v in self.vmas],
            "errors": self.errors,
            "faults": self.faults,
        }
        if self.brk is not None:
            out["brk"] = hex(self.brk)
        if self.children:
            out["children"] = [{"map_count": len(c), "vmas": [v.to_json() for v in c]}
                               for c in self.children]
        return out

    def to_snapshot(self) -> Snapshot:
        meta = SnapshotMeta(kernel_release=self.kernel, max_map_count=self.max_map_count,
                            source="simulated", comm=self.script)
        meta.extra["epoch"] = self.epoch.name
        recs = [Vma(start=v.start, end=v.end, perms=v.perms, offset=v.pgoff << PAGE_SHIFT,
                    dev=1 if v.inode else 0, inode=v.inode, name=v.name,
                    flags=frozenset(v.flags), anon_vma=v.anon_vma, policy=v.policy)
                for v in self.vmas]
        snap = Snapshot.from_vmas(recs, meta=meta)
        if snap.vmflags is None:
            import numpy as np

            snap.vmflags = np.zeros(len(snap), dtype=np.uint64)
        return snap

    def maps_text(self) -> str:
        return self.to_snapshot().maps_text()

    def counts(self) -> int:
        return len(self.vmas)


def _sim_vmas(mm: MM, lo: int = 0, hi: int | None = None) -> list[SimVma]:
    out = []
    names: dict[int, tuple[tuple[str, ...], str]] = {}  # shared per flag word
    for v in mm:
        if v.end <= lo or (hi is not None and v.start >= hi):
            continue
        f = v.flags
        hit = names.get(f)
        if hit is None:
            perms = (("r" if f & R.VM_READ else "-") + ("w" if f & R.VM_WRITE else "-")
                     + ("x" if f & R.VM_EXEC else "-") + ("s" if f & R.VM_MAYSHARE else "p"))
            hit = names[f] = (tuple(R.flag_names(f)), perms)
        out.append(SimVma(v.start, v.end, hit[1], hit[0], v.pgoff,
                          None if v.anon_vma is None else v.anon_vma.id, mm.vma_name(v),
                          policy_text(v.policy),
                          v.file.inode if isinstance(v.file, ShmemFile) else 0))
    return out


def op_text(op: Op) -> str:
    """An op as the language writes it, with addresses in hex (for the decision log)."""
    words = format_op(op).split()
    if op.kind in ("fork",):
        return words[0]
    words[1] = hex(op.addr)
    if op.kind == "mremap" and op.new_addr is not None:
        words[4] = hex(op.new_addr)
    return " ".join(words)


# -- running scripts --------------------------------------------------------------------------


def run_ops(mm: MM, ops: Sequence[Op]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Apply ops to mm. Returns (errors, faults)."""
    errors: list[dict[str, Any]] = []
    faults: list[dict[str, Any]] = []
    tracing = mm.tracing
    handlers = {
        "mmap": mm.mmap, "munmap": mm.munmap, "mprotect": mm.mprotect, "madvise": mm.madvise,
        "mremap": mm.mremap, "fork": mm.fork, "name": mm.name, "mbind": mm.mbind,
        "heap": mm.heap, "brk": mm.brk_op,
    }
    touch = mm.touch
    for i, op in enumerate(ops):
        kind = op.kind
        if tracing:
            mm.log.append(f"op {i} (line {op.line}): {op_text(op)}")
        if kind == "touch":
            sig = touch(op)
            if sig is not None:
                faults.append({"op": i, "line": op.line, "addr": hex(op.addr), "signal": sig})
                if tracing:
                    mm.log.append(f"  -> {sig} at {op.addr:#x}")
            continue
        try:
            handlers[kind](op)
        except OpFailed as exc:
            errors.append({"op": i, "line": op.line, "errno": exc.errno})
            if tracing:
                mm.log.append(f"  -> fails with {exc.errno}")
    return errors, faults


def machine_thp(release: str) -> str:
    """transparent_hugepage/enabled of the machine the release runs on.

    The running kernel's sysfs setting when ``release`` is the running kernel; otherwise
    "never", which is what the lab's microVMs have: the kernel switches THP off on
    machines with less than 512 MiB of RAM (hugepage_init), and they have 512 MiB.
    """
    try:
        if os.uname().release == release.strip():
            with open("/sys/kernel/mm/transparent_hugepage/enabled") as fh:
                text = fh.read()
            chosen = text[text.index("[") + 1:text.index("]")]
            if chosen in ("always", "madvise", "never"):
                return chosen
    except (OSError, ValueError):
        pass
    return "never"


def simulate_ops(ops: Sequence[Op], kernel: str | Epoch | None = None, *,
                 max_map_count: int = DEFAULT_MAX_MAP_COUNT, trace: bool = False,
                 thp: str | None = None, numa_nodes: int = 1,
                 script: str | None = None) -> SimResult:
    """Run parsed ops on a fresh simulated address space of ``kernel`` (default: running).

    ``thp`` is the machine's transparent_hugepage/enabled (``machine_thp`` by default):
    read faults on the huge-page path create an anon_vma.
    """
    if isinstance(kernel, Epoch):
        epoch = kernel
    else:
        epoch = epoch_for(kernel or default_release())
    if thp is None:
        thp = machine_thp(epoch.release)
    mm = MM(epoch, max_map_count=max_map_count, trace=trace, thp=thp, numa_nodes=numa_nodes)
    errors, faults = run_ops(mm, ops)
    return SimResult(
        script=script, kernel=epoch.release, epoch=epoch, map_count=mm.map_count,
        max_map_count=max_map_count, vmas=_sim_vmas(mm), errors=errors, faults=faults,
        trace=mm.log, start_brk=mm.start_brk, brk=mm.brk,
        children=[_sim_vmas(c) for c in mm.children],
    )


def simulate(text: str, kernel: str | Epoch | None = None, *, source: str = "<script>",
             **kwargs: Any) -> SimResult:
    """Parse an op script (text or JSONL) and simulate it. ParseError on a bad script."""
    ops = load_script(text, source)
    kwargs.setdefault("script", source)
    return simulate_ops(ops, kernel, **kwargs)


def result_json_line(result: SimResult) -> str:
    return json.dumps(result.to_json(), separators=(",", ":"))


__all__ = ["MM", "AnonVma", "SVma", "SimResult", "SimVma", "simulate", "simulate_ops"]
