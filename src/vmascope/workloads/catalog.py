"""The workloads: how real allocators and runtimes use their address space.

Each is scaled to run in seconds on a microVM; the parameters say what is scaled
(``vmascope lab compare --list`` prints them). Sizes are bytes unless the name says
otherwise. The descriptions follow what the projects document about themselves.
"""

from __future__ import annotations

import random

from ..kconst import PAGE_SIZE
from ..ops.language import PROT_EXEC, PROT_READ
from . import COMMITTED, RW, Alloc, Params, align_up, workload

RX = PROT_READ | PROT_EXEC

KiB, MiB = 1 << 10, 1 << 20


@workload("dotnet-regions",
          ".NET regions GC: one PROT_NONE reservation of 4 MiB regions; 5 x cores "
          "interleaved allocation streams, each growing to the right in its own extent of a "
          "region, new streams started as old ones end; commit = mprotect RW + "
          "MADV_DODUMP, decommit = mmap(MAP_FIXED, PROT_NONE) + MADV_DONTDUMP",
          decommit="map-fixed", dump_toggle=True,
          sizes={"0.01": {"live_mb": 10}, "0.1": {"live_mb": 100}, "1": {"live_mb": 1000},
                 "verify": {"cores": 1, "region_kb": 64, "extent_kb": 16, "commit_kb": 4,
                            "touch_kb": 8, "alloc_factor": 6, "live_mb": 1,
                            "scale": 0.0625}},
          live_mb=10, scale=0.25, cores=2, alloc_factor=8, region_kb=4096, extent_kb=192,
          commit_kb=16, touch_kb=32, decommit_share=0.5)
def dotnet_regions(a: Alloc, rng: random.Random, p: Params) -> None:
    region, extent = p.region_kb * KiB, p.extent_kb * KiB
    chunk = p.commit_kb * KiB
    live = max(int(p.live_mb * p.scale * MiB), region)
    streams = 5 * p.cores
    nregions = max(3 * live // region, streams + 8)
    base = a.reserve(nregions * region, align=region)
    free = list(range(nregions))  # region numbers, the lowest address first
    frontier: dict[int, int] = {}  # region -> where the next extent starts
    users = dict.fromkeys(range(nregions), 0)  # streams still allocating in a region
    committed = dict.fromkeys(range(nregions), 0)  # bytes from the start up to the last commit
    used: list[int] = []  # regions given up by their streams, holding objects
    current = [-1]

    def new_stream() -> list[int]:
        r = current[0]
        if r < 0 or frontier[r] + extent > region:
            if r >= 0 and users[r] == 0:
                used.append(r)
            free.sort()
            r = current[0] = free.pop(0)
            frontier[r] = 0
        start = frontier[r]
        frontier[r] += extent
        users[r] += 1
        stop = start + rng.randrange(extent * 3 // 5, extent + 1)
        return [r, start, start, stop]  # region, position, committed to, where it stops

    active = [new_stream() for _ in range(streams)]
    budget = int(p.alloc_factor * live)
    since_gc = 0
    while budget > 0:
        k = rng.randrange(streams)
        r, pos, top, stop = active[k]
        q = align_up(rng.randrange(extent // 24, extent // 6 + 1), PAGE_SIZE)
        if pos + q > stop:
            users[r] -= 1
            if users[r] == 0 and r != current[0]:
                used.append(r)
            active[k] = new_stream()
            continue
        at = base + r * region
        if pos + q > top:
            to = align_up(pos + q, chunk)
            a.commit(at + top, to - top)
            active[k][2] = top = to
            committed[r] = max(committed[r], to)
        a.touch(at + pos, q, p.touch_kb * KiB)
        active[k][1] = pos + q
        budget -= q
        since_gc += q
        if since_gc >= live // 2 and len(used) > live // region:
            since_gc = 0
            rng.shuffle(used)
            keep = live // region
            dead, used[:] = used[keep:], used[:keep]
            for d in dead:
                if rng.random() < p.decommit_share and committed[d]:
                    a.decommit(base + d * region, committed[d])
                    committed[d] = 0
                free.append(d)


@workload("seed-threads",
          "the seed's reproducer repeated over one reservation: per 6-page group, a "
          "pre-step commits, touches and decommits (mprotect PROT_NONE) the last page, "
          "then three workers commit and touch pages 0-1, 4-5 and 2-3, in that order",
          decommit="mprotect", sizes={"verify": {"groups": 3}}, groups=64)
def seed_threads(a: Alloc, rng: random.Random, p: Params) -> None:
    g = 6 * PAGE_SIZE
    base = a.reserve(p.groups * g)
    for k in range(p.groups):
        last = base + k * g + 5 * PAGE_SIZE
        a.commit(last, PAGE_SIZE)
        a.touch(last)
        a.decommit(last, PAGE_SIZE)
    for first in (0, 4, 2):  # the workers sleep 10, 20 and 30 s
        for k in range(p.groups):
            at = base + k * g + first * PAGE_SIZE
            a.commit(at, 2 * PAGE_SIZE)
            a.touch(at)


@workload("glibc-arenas",
          "glibc malloc arenas: 64 MiB heaps (HEAP_MAX_SIZE) reserved PROT_NONE, grown by "
          "mprotect RW from the bottom, trimmed from the top with MADV_DONTNEED",
          decommit="dontneed", sizes={"verify": {"arenas": 2, "steps": 25}}, arenas=4, steps=400,
          touch_kb=16)
def glibc_arenas(a: Alloc, rng: random.Random, p: Params) -> None:
    heap = 64 * MiB
    heaps = [a.reserve(heap, align=heap) for _ in range(p.arenas)]
    top = dict.fromkeys(heaps, 0)
    for h in heaps:
        a.commit(h, 132 * KiB)
        a.touch(h, 132 * KiB, p.touch_kb * KiB)
        top[h] = 132 * KiB
    for _ in range(p.steps):
        h = rng.choice(heaps)
        if rng.random() < 0.7 or top[h] <= 256 * KiB:
            grow = align_up(rng.randrange(4, 257) * KiB, PAGE_SIZE)
            if top[h] + grow > heap:
                continue
            a.commit(h + top[h], grow)
            a.touch(h + top[h], grow, p.touch_kb * KiB)
            top[h] += grow
        else:
            cut = align_up(rng.randrange(1, top[h] // KiB // 2) * KiB, PAGE_SIZE)
            top[h] -= cut
            a.decommit(h + top[h], cut)


@workload("mimalloc-lazy",
          "mimalloc with lazy commit: a reserved arena of 32 MiB segments, 64 KiB slices "
          "committed with mprotect RW on first use by several threads, purged after a "
          "delay with MADV_DONTNEED",
          decommit="dontneed", sizes={"verify": {"threads": 2, "segments": 2, "steps": 40,
                                                 "purge_every": 10}},
          threads=4, segments=8, steps=800, purge_every=50)
def mimalloc_lazy(a: Alloc, rng: random.Random, p: Params) -> None:
    seg, slice_ = 32 * MiB, 64 * KiB
    arena = a.reserve(p.segments * seg, align=seg)
    owner = [t % p.threads for t in range(p.segments)]
    spans: dict[int, list[tuple[int, int]]] = {t: [] for t in range(p.threads)}
    nxt = [0] * p.segments
    freed: list[tuple[int, int]] = []
    for step in range(p.steps):
        t = rng.randrange(p.threads)
        if spans[t] and rng.random() < 0.4:
            freed.append(spans[t].pop(rng.randrange(len(spans[t]))))
        else:
            mine = [s for s in range(p.segments) if owner[s] == t]
            s = rng.choice(mine)
            n = rng.choice((1, 1, 1, 2, 4, 8)) * slice_
            if nxt[s] + n > seg:
                continue
            addr = arena + s * seg + nxt[s]
            nxt[s] += n
            a.commit(addr, n)
            a.touch(addr, n, 16 * KiB)
            spans[t].append((addr, n))
        if step % p.purge_every == p.purge_every - 1:
            for addr, n in freed:
                a.decommit(addr, n)
            freed = []


@workload("jemalloc-purge",
          "jemalloc with retain: read-write extents mapped in growing sizes and never "
          "unmapped; decay purging with MADV_FREE (muzzy) then MADV_DONTNEED",
          decommit="free", sizes={"verify": {"steps": 40, "purge_every": 10, "touch_kb": 512}},
          steps=600, purge_every=60, touch_kb=16)
def jemalloc_purge(a: Alloc, rng: random.Random, p: Params) -> None:
    grow = 2 * MiB
    extents: list[tuple[int, int]] = []  # free (addr, len) in mapped chunks
    live: list[tuple[int, int]] = []
    muzzy: list[tuple[int, int]] = []
    dirty: list[tuple[int, int]] = []
    for step in range(p.steps):
        if live and rng.random() < 0.45:
            dirty.append(live.pop(rng.randrange(len(live))))
        else:
            n = rng.choice((16, 32, 64, 128, 256, 512, 2048)) * KiB
            fit = next((e for e in extents if e[1] >= n), None)
            if fit is None:
                addr = a.reserve(grow, committed=True)
                fit = (addr, grow)
                extents.append(fit)
                grow = min(grow * 2, 64 * MiB)
            extents.remove(fit)
            if fit[1] > n:
                extents.append((fit[0] + n, fit[1] - n))
            live.append((fit[0], n))
            a.touch(fit[0], n, p.touch_kb * KiB)
        if step % p.purge_every == p.purge_every - 1:
            for addr, n in muzzy:
                a.madvise(addr, n, "dontneed")
            for addr, n in dirty:
                a.decommit(addr, n)
            muzzy, dirty = dirty, []
            extents.extend(muzzy)


@workload("go-hugepage",
          "Go 1.21.0 heap: 64 MiB arenas reserved PROT_NONE, made RW and MADV_HUGEPAGE in "
          "4 MiB chunks (Go maps them with mmap(MAP_FIXED): the map-fixed strategy); the "
          "scavenger returns 64 KiB pieces with MADV_DONTNEED + MADV_NOHUGEPAGE, reuse marks "
          "them MADV_HUGEPAGE again",
          decommit="nohugepage", sizes={"verify": {"steps": 30}}, arenas=1,
          steps=600)
def go_hugepage(a: Alloc, rng: random.Random, p: Params) -> None:
    chunk, piece = 4 * MiB, 64 * KiB
    arena_len = 64 * MiB
    arenas = [a.reserve(arena_len, align=arena_len) for _ in range(p.arenas)]
    mapped: list[int] = []
    scavenged: set[int] = set()
    for _ in range(p.steps):
        roll = rng.random()
        if roll < 0.1 or not mapped:
            ar = rng.choice(arenas)
            k = sum(1 for c in mapped if ar <= c < ar + arena_len)
            if k * chunk >= arena_len:
                continue
            c = ar + k * chunk
            a.commit(c, chunk)
            a.madvise(c, chunk, "hugepage")
            a.touch(c, chunk, 256 * KiB)
            mapped.append(c)
        elif roll < 0.6:
            c = rng.choice(mapped)
            at = c + rng.randrange(chunk // piece) * piece
            if at not in scavenged:
                a.decommit(at, piece)
                scavenged.add(at)
        elif scavenged:
            at = rng.choice(sorted(scavenged))
            scavenged.discard(at)
            a.commit(at, piece)
            a.madvise(at, piece, "hugepage")
            a.touch(at, piece, 16 * KiB)


@workload("bdwgc-unmap",
          "Boehm GC with USE_MUNMAP: heap chunks mapped read-write; blocks free for a few "
          "collections are unmapped with mmap(MAP_FIXED, PROT_NONE) and remapped with "
          "mprotect RW when reused; incremental=1 adds the mprotect dirty-bit tracking",
          decommit="map-fixed", sizes={"verify": {"steps": 80, "incremental": 1}}, steps=600,
          incremental=0, unmap_after=2)
def bdwgc_unmap(a: Alloc, rng: random.Random, p: Params) -> None:
    blk = PAGE_SIZE
    heap: list[tuple[int, int]] = []
    free: dict[int, int] = {}  # block address -> collections it has been free
    unmapped: set[int] = set()
    used: list[int] = []
    for step in range(p.steps):
        if not free or rng.random() < 0.05:
            size = (1 << min(len(heap), 4)) * MiB
            h = a.reserve(size, committed=True)
            heap.append((h, size))
            for k in range(0, size, 16 * blk):
                free[h + k] = 0
        if rng.random() < 0.6 and free:
            b = rng.choice(list(free))
            del free[b]
            if b in unmapped:
                unmapped.discard(b)
                a.commit(b, 16 * blk)
            a.touch(b, 16 * blk, 4 * blk)
            used.append(b)
        elif used:
            free[used.pop(rng.randrange(len(used)))] = 0
        if step % 40 == 39:  # a collection
            for b in list(free):
                free[b] += 1
                if free[b] == p.unmap_after and b not in unmapped:
                    a.decommit(b, 16 * blk)
                    unmapped.add(b)
            if p.incremental:
                for h, size in heap:
                    for s, n in a.runs(h, size, COMMITTED):
                        a.mprotect(s, n, PROT_READ)  # the dirty bits
                for b in used[-8:]:
                    a.mprotect(b, blk, RW)  # the write fault handler
                    a.write(b)


@workload("guard-pages",
          "a guarded allocator (page heap, sandboxes): each object committed inside a "
          "reservation with a PROT_NONE guard page on each side, freed by decommit",
          decommit="map-fixed", sizes={"verify": {"objects": 10, "steps": 30}}, objects=300,
          steps=600)
def guard_pages(a: Alloc, rng: random.Random, p: Params) -> None:
    slot = 16 * PAGE_SIZE
    base = a.reserve(p.objects * slot)
    live: set[int] = set()
    for _ in range(p.steps):
        k = rng.randrange(p.objects)
        addr = base + k * slot + PAGE_SIZE
        if k in live:
            a.decommit(addr, slot - 2 * PAGE_SIZE)
            live.discard(k)
        else:
            n = rng.randrange(1, 15) * PAGE_SIZE
            a.commit(addr, n, exact=True)
            a.touch(addr, n, 4 * PAGE_SIZE)
            live.add(k)


@workload("thread-stacks",
          "glibc thread stacks: each mapped PROT_NONE with the usable part mprotect RW "
          "above a guard page; exited threads' stacks cached, their unused part "
          "MADV_DONTNEED, the oldest unmapped when the cache is full",
          decommit="dontneed", sizes={"verify": {"threads": 4, "cache": 2, "steps": 30,
                                                 "stack_kb": 64}},
          threads=64, cache=16, steps=500, stack_kb=256)
def thread_stacks(a: Alloc, rng: random.Random, p: Params) -> None:
    size = p.stack_kb * KiB
    running: list[int] = []
    cached: list[int] = []
    for _ in range(p.steps):
        if running and (len(running) >= p.threads or rng.random() < 0.45):
            st = running.pop(rng.randrange(len(running)))
            a.decommit(st + PAGE_SIZE, size - 32 * KiB - PAGE_SIZE)
            cached.append(st)
            if len(cached) > p.cache:
                a.release(cached.pop(0), size)
        else:
            if cached:
                st = cached.pop()
            else:
                st = a.reserve(size, gap=rng.choice((0, 0, PAGE_SIZE)))
                a.commit(st + PAGE_SIZE, size - PAGE_SIZE, exact=True)
            a.touch(st + size - 32 * KiB, 32 * KiB, 8 * KiB)
            running.append(st)


@workload("jit-wx",
          "a JIT code heap with W^X: functions committed read-write, written, then made "
          "read-execute; patching flips one page back to RW and to RX again; freed code "
          "is decommitted with mprotect PROT_NONE",
          decommit="mprotect", sizes={"verify": {"steps": 30}}, steps=500, patch_share=0.3)
def jit_wx(a: Alloc, rng: random.Random, p: Params) -> None:
    heap = a.reserve(64 * MiB)
    top = heap
    code: list[tuple[int, int]] = []
    for _ in range(p.steps):
        roll = rng.random()
        if roll < p.patch_share and code:
            at, n = rng.choice(code)
            page = at + rng.randrange(n // PAGE_SIZE) * PAGE_SIZE
            a.mprotect(page, PAGE_SIZE, RW)
            a.write(page)
            a.mprotect(page, PAGE_SIZE, RX)
        elif roll < p.patch_share + 0.15 and code:
            at, n = code.pop(rng.randrange(len(code)))
            a.decommit(at, n)
        else:
            n = rng.randrange(1, 9) * PAGE_SIZE
            a.commit(top, n)
            a.touch(top, n)
            a.mprotect(top, n, RX)
            code.append((top, n))
            top += n
