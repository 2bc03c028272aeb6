"""Allocator workloads and mitigation strategies, as generators of op scripts.

A *workload* (``catalog.py``) describes how an allocator or runtime reserves, commits,
touches, decommits and releases memory, with a seeded random stream of requests. It does
not write ops itself: it calls the verbs of an :class:`Alloc`, and a *strategy*
(``strategies.py``) decides which system calls each verb becomes. The same workload under
``mprotect`` (the workload's own way) and under ``prefault`` (the seed's hack) gives two
op scripts that the simulator and the lab run side by side.

Adding a workload is a decorated function::

    @workload("my-heap", "one 64 MiB heap grown by mprotect", decommit="dontneed")
    def my_heap(a: Alloc, rng: random.Random, p: Params) -> None:
        base = a.reserve(64 << 20)
        a.commit(base, p.scale(1 << 20))
        a.touch(base, 1 << 20)

and a strategy is a subclass of :class:`Strategy` that overrides one verb (see
``strategies.py``). Addresses are arena-relative, as in every lab script.
"""

from __future__ import annotations

import bisect
import dataclasses
import random
from collections.abc import Callable
from typing import Any

from ..errors import UsageError
from ..kconst import PAGE_SHIFT, PAGE_SIZE
from ..ops.language import PROT_NONE, PROT_READ, PROT_WRITE, Op

RW = PROT_READ | PROT_WRITE
ANON = frozenset({"private", "anonymous"})
FIXED = frozenset({"private", "anonymous", "fixed"})
FIXED_NORESERVE = frozenset({"private", "anonymous", "fixed", "noreserve"})

# Page states an Alloc keeps, so that strategies and workloads know what is committed.
UNMAPPED, RESERVED, COMMITTED = 0, 1, 2

# Where the first reservation goes in the arena (aligned, away from its fences).
FIRST = 1 << 30


def align_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def align_down(x: int, a: int) -> int:
    return x // a * a


@dataclasses.dataclass
class Params:
    """A workload's parameters: its defaults overridden by ``--param key=value``."""

    values: dict[str, Any]

    def __getattr__(self, key: str) -> Any:
        try:
            return self.values[key]
        except KeyError:
            raise AttributeError(key) from None


class Strategy:
    """How the allocator verbs become system calls. The base class is the workload's own
    way (the ``mprotect`` strategy): reserve PROT_NONE, commit with mprotect, decommit the
    way the workload says (``decommit=`` of :func:`workload`)."""

    name = "mprotect"
    title = "the workload's own way: commit with mprotect RW, its own decommit"
    dump = True  # keep the workload's MADV_DONTDUMP/DODUMP toggling

    def reserve(self, a: Alloc, addr: int, length: int) -> None:
        a.mmap(addr, length, PROT_NONE, FIXED_NORESERVE)

    def commit(self, a: Alloc, addr: int, length: int) -> None:
        a.mprotect(addr, length, RW)
        if a.dump_toggle and self.dump:
            a.madvise(addr, length, "dodump")

    def decommit(self, a: Alloc, addr: int, length: int) -> bool:
        """Decommit; True if the range is PROT_NONE again afterwards."""
        return a.native_decommit(addr, length, dump=self.dump)

    def granule(self, a: Alloc) -> int:
        """Commit and decommit in multiples of this (page by default)."""
        return PAGE_SIZE


@dataclasses.dataclass
class Workload:
    name: str
    title: str
    generate: Callable[[Alloc, random.Random, Params], None]
    decommit: str  # "map-fixed", "mprotect", "dontneed", "free", "nohugepage"
    dump_toggle: bool
    defaults: dict[str, Any]
    sizes: dict[str, dict[str, Any]]

    def params(self, size: str | None = None, **overrides: Any) -> Params:
        values = dict(self.defaults)
        if size is not None:
            if size not in self.sizes:
                raise UsageError(f"workload {self.name}: unknown size {size!r} "
                                 f"(expected one of {', '.join(self.sizes) or 'none'})")
            values.update(self.sizes[size])
        for key, value in overrides.items():
            if key not in values:
                raise UsageError(f"workload {self.name}: unknown parameter {key!r} "
                                 f"(expected one of {', '.join(sorted(values))})")
            values[key] = type(values[key])(value)
        return Params(values)


WORKLOADS: dict[str, Workload] = {}
STRATEGIES: dict[str, Strategy] = {}


def workload(name: str, title: str, *, decommit: str, dump_toggle: bool = False,
             sizes: dict[str, dict[str, Any]] | None = None,
             **defaults: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a workload generator (see the module's docstring)."""
    def add(fn: Callable[..., None]) -> Callable[..., None]:
        WORKLOADS[name] = Workload(name, title, fn, decommit, dump_toggle,
                                   defaults, sizes or {})
        return fn
    return add


def strategy(cls: type[Strategy]) -> type[Strategy]:
    """Register a Strategy subclass under its ``name``."""
    STRATEGIES[cls.name] = cls()
    return cls


class Alloc:
    """The allocator verbs a workload calls; ``ops`` is the script they became."""

    def __init__(self, wl: Workload, strat: Strategy) -> None:
        self.workload = wl
        self.strategy = strat
        self.dump_toggle = wl.dump_toggle
        self.ops: list[Op] = []
        self.top = FIRST
        self.state = bytearray()  # one byte a page from FIRST: UNMAPPED/RESERVED/COMMITTED
        self.reservations: list[tuple[int, int]] = []  # sorted (start, end)

    # -- raw system calls (the strategies use these) ---------------------------------

    def mmap(self, addr: int, length: int, prot: int, flags: frozenset[str]) -> None:
        self.ops.append(Op("mmap", addr, length, prot, flags))

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        self.ops.append(Op("mprotect", addr, length, prot))

    def madvise(self, addr: int, length: int, advice: str) -> None:
        self.ops.append(Op("madvise", addr, length, advice=advice))

    def munmap(self, addr: int, length: int) -> None:
        self.ops.append(Op("munmap", addr, length))

    def write(self, addr: int) -> None:
        self.ops.append(Op("touch", addr))

    def native_decommit(self, addr: int, length: int, *, dump: bool = True) -> bool:
        """Decommit the way the workload itself does; True if that makes it PROT_NONE."""
        how = self.workload.decommit
        if how == "mprotect":
            self.mprotect(addr, length, PROT_NONE)
            return True
        if how == "map-fixed":
            self.mmap(addr, length, PROT_NONE, FIXED_NORESERVE)
            if self.dump_toggle and dump:
                self.madvise(addr, length, "dontdump")
            return True
        if how == "dontneed":
            self.madvise(addr, length, "dontneed")
        elif how == "free":
            self.madvise(addr, length, "free")
        elif how == "nohugepage":
            self.madvise(addr, length, "dontneed")
            self.madvise(addr, length, "nohugepage")
        else:  # pragma: no cover - a workload's declaration
            raise ValueError(how)
        return False

    # -- page states ------------------------------------------------------------------

    def _pages(self, addr: int, length: int) -> tuple[int, int]:
        lo = (addr - FIRST) >> PAGE_SHIFT
        hi = (addr + length - FIRST + PAGE_SIZE - 1) >> PAGE_SHIFT
        if hi > len(self.state):
            self.state.extend(bytes(hi - len(self.state)))
        return lo, hi

    def _set(self, addr: int, length: int, value: int) -> None:
        lo, hi = self._pages(addr, length)
        self.state[lo:hi] = bytes([value]) * (hi - lo)

    def runs(self, addr: int, length: int, want: int, *, other: bool = False
             ) -> list[tuple[int, int]]:
        """The sub-ranges of [addr, addr+length) whose pages are (or, with ``other``,
        are not) in state ``want``, as (addr, length)."""
        lo, hi = self._pages(addr, length)
        out: list[tuple[int, int]] = []
        k = lo
        st = self.state
        while k < hi:
            if (st[k] == want) != other:
                j = k + 1
                while j < hi and (st[j] == want) != other:
                    j += 1
                out.append((FIRST + (k << PAGE_SHIFT), (j - k) << PAGE_SHIFT))
                k = j
            else:
                k += 1
        return out

    def reservation_of(self, addr: int) -> tuple[int, int]:
        i = bisect.bisect_right(self.reservations, (addr, 1 << 62)) - 1
        if i < 0 or not self.reservations[i][0] <= addr < self.reservations[i][1]:
            raise ValueError(f"{addr:#x} is in no reservation")
        return self.reservations[i]

    # -- the verbs a workload calls ---------------------------------------------------

    def reserve(self, length: int, *, align: int = PAGE_SIZE, gap: int = 0,
                committed: bool = False) -> int:
        """Reserve address space (PROT_NONE unless ``committed``: then it is mapped
        read-write at once, the way jemalloc and bdwgc map their chunks). Reservations
        are placed one after another, ``gap`` bytes apart."""
        length = align_up(length, PAGE_SIZE)
        addr = align_up(self.top + gap, align)
        self.top = addr + length
        bisect.insort(self.reservations, (addr, addr + length))
        if committed:
            self.mmap(addr, length, RW, FIXED)
            self._set(addr, length, COMMITTED)
        else:
            self.strategy.reserve(self, addr, length)
            self._set(addr, length, RESERVED)
        return addr

    def _widen(self, addr: int, length: int, outward: bool) -> tuple[int, int]:
        g = self.strategy.granule(self)
        if g == PAGE_SIZE:
            return addr, length
        lo, hi = self.reservation_of(addr)
        if outward:
            s, e = align_down(addr, g), align_up(addr + length, g)
            if s < lo or e > hi:  # a piece would leave the reservation: as asked
                return addr, length
        else:
            s, e = align_up(addr, g), align_down(addr + length, g)
            s, e = (max(lo, s), min(hi, e)) if e > s else (addr, addr)
        return s, e - s

    def commit(self, addr: int, length: int, *, exact: bool = False) -> None:
        """Make [addr, addr+length) usable; only what is not committed yet is.
        ``exact``: never widen it (its neighbours are guard pages)."""
        if not exact:
            addr, length = self._widen(addr, length, outward=True)
        for a, n in self.runs(addr, length, COMMITTED, other=True):
            self.strategy.commit(self, a, n)
            self._set(a, n, COMMITTED)

    def decommit(self, addr: int, length: int) -> None:
        """Give [addr, addr+length) back to the system, keeping the reservation."""
        addr, length = self._widen(addr, length, outward=False)
        if length <= 0:
            return
        for a, n in self.runs(addr, length, COMMITTED):
            if self.strategy.decommit(self, a, n):
                self._set(a, n, RESERVED)

    def touch(self, addr: int, length: int = PAGE_SIZE, stride: int = PAGE_SIZE) -> None:
        """Write to [addr, addr+length), one touch every ``stride`` bytes."""
        for a in range(align_down(addr, PAGE_SIZE), addr + length, max(stride, PAGE_SIZE)):
            self.write(a)

    def release(self, addr: int, length: int) -> None:
        """Unmap [addr, addr+length) for good."""
        self.munmap(addr, length)
        self._set(addr, length, UNMAPPED)


def build(name: str, strategy_name: str = "mprotect", *, seed: int = 1,
          size: str | None = None, **params: Any) -> list[Op]:
    """The op script of workload ``name`` under strategy ``strategy_name``."""
    wl = get_workload(name)
    strat = get_strategy(strategy_name)
    a = Alloc(wl, strat)
    wl.generate(a, random.Random(seed), wl.params(size, **params))
    return a.ops


def _lookup(table: dict[str, Any], name: str, what: str) -> Any:
    from . import catalog, strategies  # noqa: F401  (they register themselves)

    try:
        return table[name]
    except KeyError:
        raise UsageError(f"unknown {what} {name!r} (expected one of "
                         f"{', '.join(table)})") from None


def get_workload(name: str) -> Workload:
    return _lookup(WORKLOADS, name, "workload")  # type: ignore[no-any-return]


def get_strategy(name: str) -> Strategy:
    return _lookup(STRATEGIES, name, "strategy")  # type: ignore[no-any-return]


def names() -> tuple[list[str], list[str]]:
    """The registered workloads and strategies, in registration order."""
    from . import catalog, strategies  # noqa: F401

    return list(WORKLOADS), list(STRATEGIES)
