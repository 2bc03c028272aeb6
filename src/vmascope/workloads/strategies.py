"""Mitigation strategies: how an allocator's verbs become system calls.

Each is a :class:`~vmascope.workloads.Strategy` that overrides one or two verbs; the base
class (``mprotect``) is the way the workloads themselves work. Add one with::

    @strategy
    class Mine(Strategy):
        name = "mine"
        title = "what it changes, in one line"

        def commit(self, a, addr, length):
            ...
"""

from __future__ import annotations

from ..ops.language import PROT_NONE
from . import FIXED, RW, Alloc, Strategy, strategy

strategy(Strategy)


@strategy
class MapFixed(Strategy):
    name = "map-fixed"
    title = "commit by mmap(MAP_FIXED) read-write over the reservation"

    def commit(self, a: Alloc, addr: int, length: int) -> None:
        a.mmap(addr, length, RW, FIXED)
        if a.dump_toggle and self.dump:
            a.madvise(addr, length, "dodump")


@strategy
class Prefault(Strategy):
    name = "prefault"
    title = ("the seed's hack: map the reservation read-write (accounted), touch its "
             "first page so it has an anon_vma, then mprotect it PROT_NONE")

    def reserve(self, a: Alloc, addr: int, length: int) -> None:
        a.mmap(addr, length, RW, FIXED)
        a.write(addr)
        a.mprotect(addr, length, PROT_NONE)


@strategy
class Madvise(Strategy):
    name = "madvise"
    title = "decommit with MADV_DONTNEED and keep the pages read-write (no dump toggling)"
    dump = False

    def decommit(self, a: Alloc, addr: int, length: int) -> bool:
        a.madvise(addr, length, "dontneed")
        return False


@strategy
class UniformDump(Strategy):
    name = "uniform-dump"
    title = "the workload's own way without MADV_DONTDUMP/MADV_DODUMP toggling"
    dump = False


@strategy
class Coarse(Strategy):
    name = "coarse"
    title = "commit in 2 MiB pieces (aligned, within the reservation); decommit only whole ones"

    def granule(self, a: Alloc) -> int:
        return 2 << 20
