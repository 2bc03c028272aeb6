"""Unit tests of vmascope.analysis on Snapshots built by hand.

Every expected value is worked out in the test from the VMAs it builds (or from the
kernel rules quoted beside it), never copied from the implementation's output.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

import vmascope.analysis.explain as explain_mod
from vmascope.analysis import analyze
from vmascope.analysis.attribution import backing_classes, find_reservations
from vmascope.analysis.explain import group_kinds, pair_kinds
from vmascope.analysis.fragmentation import lookalike_pairs
from vmascope.analysis.headroom import level_for
from vmascope.kernel.epochs import epoch_for
from vmascope.kernel.pairs import explain_pair
from vmascope.model import Snapshot, SnapshotMeta, Vma

P = 4096
BASE = 0x7F00_0000_0000
LIB = "/usr/lib/x86_64-linux-gnu/libc.so.6"
RW_FLAGS = frozenset({"rd", "wr", "mr", "mw", "me", "ac", "sd"})
NONE_FLAGS = frozenset({"mr", "mw", "me", "sd"})


def anon(start: int, pages: int, perms: str = "rw-p", **kw: object) -> Vma:
    return Vma(start, start + pages * P, perms, **kw)  # type: ignore[arg-type]


def snap_of(vmas: list[Vma], **meta: object) -> Snapshot:
    meta.setdefault("kernel_release", "6.18.44")
    return Snapshot.from_vmas(vmas, SnapshotMeta(**meta))  # type: ignore[arg-type]


# -- headroom -----------------------------------------------------------------------------


def test_headroom_counts_and_level() -> None:
    vmas = [anon(BASE + 2 * i * P, 1) for i in range(6)]  # 6 separate VMAs (gaps between)
    a = analyze(snap_of(vmas, max_map_count=10))
    assert a.headroom.map_count == 6
    assert a.headroom.max_map_count == 10
    assert a.headroom.percent_used == pytest.approx(60.0)
    assert a.headroom.left == 4
    assert a.headroom.level == "elevated"  # 50% <= 60% < 80%


def test_headroom_levels_and_unknown_limit() -> None:
    assert level_for(10.0) == "ok"
    assert level_for(50.0) == "elevated"
    assert level_for(80.0) == "warning"
    assert level_for(95.0) == "critical"
    assert level_for(101.0) == "critical"  # mmap's `>` check lets map_count reach max + 1
    a = analyze(snap_of([anon(BASE, 1)], source="maps-dump"))
    assert a.headroom.max_map_count is None and a.headroom.level == "unknown"


# -- attribution --------------------------------------------------------------------------


def test_backing_classes() -> None:
    vmas = [
        Vma(0x400000, 0x401000, "r--p", 0, 0x801, 5, "/usr/bin/app"),
        Vma(0x500000, 0x521000, "rw-p", name="[heap]"),
        anon(BASE, 1),
        anon(BASE + 2 * P, 1, name="[anon:GC heap]"),
        Vma(0x7FFF_0000_0000, 0x7FFF_0002_1000, "rw-p", name="[stack]"),
        Vma(0x7FFF_1000_0000, 0x7FFF_1000_2000, "r-xp", name="[vdso]"),
    ]
    a = analyze(snap_of(vmas))
    got = {r.backing: (r.vma_count, r.bytes) for r in a.attribution.by_backing}
    assert got == {
        "file": (1, P),
        "[heap]": (1, 0x21000),
        "[stack]": (1, 0x21000),
        "named anon": (1, P),
        "plain anon": (1, P),
        "special": (1, 2 * P),
    }


def test_reservation_of_a_gc_heap() -> None:
    # A 16-page PROT_NONE reservation committed in three places:
    #   [0,2) rw  [2,5) none  [5,6) rw  [6,10) none  [10,12) rw  [12,16) none
    # then a gap, then an unrelated rw anon VMA and a file mapping.
    layout = [(0, 2, "rw-p"), (2, 5, "---p"), (5, 6, "rw-p"), (6, 10, "---p"),
              (10, 12, "rw-p"), (12, 16, "---p")]
    vmas = [Vma(BASE + s * P, BASE + e * P, p) for s, e, p in layout]
    vmas.append(anon(BASE + 100 * P, 3))
    vmas.append(Vma(BASE + 200 * P, BASE + 201 * P, "r--p", 0, 0x801, 9, LIB))
    a = analyze(snap_of(vmas))
    res = a.attribution.reservations
    # The lone rw anon VMA holds no PROT_NONE space and is no reservation.
    assert len(res) == 1 and a.attribution.reservation_count == 1
    r = res[0]
    assert (r.start, r.end) == (BASE, BASE + 16 * P)
    assert r.vma_count == 6
    assert r.committed == (2 + 1 + 2) * P
    assert r.reserved == (3 + 4 + 4) * P
    assert r.writable_vmas == 3 and r.none_vmas == 3
    assert r.average_vma_size == pytest.approx(16 * P / 6)


def test_reservations_break_at_gaps_shared_and_files() -> None:
    vmas = [
        anon(BASE, 1, "---p"), anon(BASE + P, 1),          # run A: 2 VMAs
        anon(BASE + 3 * P, 1, "---p"),                     # gap before: single PROT_NONE
        anon(BASE + 4 * P, 1, "rw-s"),                     # shared: not private anon
        anon(BASE + 5 * P, 2, "---p"), anon(BASE + 7 * P, 1, name="[anon:x]"),  # run B
        Vma(BASE + 8 * P, BASE + 9 * P, "---p", 0, 0x801, 3, LIB),  # file ends it
    ]
    s = snap_of(vmas)
    res, total, in_res = find_reservations(s, backing_classes(s), limit=None)
    spans = sorted((r.start - BASE) // P for r in res)
    # run A at page 0, the lone PROT_NONE at page 3, run B at page 5 (3 pages, 2 VMAs)
    assert spans == [0, 3, 5]
    assert total == 3 and in_res == 2 + 1 + 2
    b = next(r for r in res if r.start == BASE + 5 * P)
    assert b.vma_count == 2 and b.span == 3 * P and b.reserved == 2 * P and b.committed == P


def test_seed_gc_total_table() -> None:
    # The seed's tlgb=1 row: 35106 GC mappings out of 35825. Build a GC reservation of
    # 35106 adjacent private anonymous VMAs (alternating 1- and 2-page rw-p pieces that the
    # kernel did not merge, with PROT_NONE pieces between every 50th) plus 719 others.
    vmas = []
    addr = BASE
    for i in range(35106):
        pages = 1 + (i % 2)
        perms = "---p" if i % 50 == 49 else "rw-p"
        vmas.append(Vma(addr, addr + pages * P, perms))
        addr += pages * P
    other = 0x5555_0000_0000
    for i in range(719):
        vmas.append(Vma(other + 2 * i * P, other + (2 * i + 1) * P, "r--p", 0, 0x801, 77, LIB))
    vmas.sort(key=lambda v: v.start)
    a = analyze(snap_of(vmas, max_map_count=65530))
    top = a.attribution.largest
    assert top is not None
    assert (top.vma_count, a.headroom.map_count) == (35106, 35825)
    assert top.start == BASE and top.end == addr
    from vmascope.report import render

    assert "35,106/35,825" in render(a, "text")


# -- fragmentation ------------------------------------------------------------------------


def test_lookalike_rules() -> None:
    vmas = [
        anon(BASE, 1), anon(BASE + P, 1),                       # 0-1: alike (anon, 0/0 offsets)
        anon(BASE + 2 * P, 1, "r--p"),                          # 1-2: perms differ
        anon(BASE + 4 * P, 1, "r--p"),                          # 2-3: gap
        anon(BASE + 5 * P, 1, "r--p", name="[anon:a]"),         # 3-4: alike (names may differ)
        Vma(BASE + 6 * P, BASE + 7 * P, "r--p", 0, 0x801, 9, LIB),   # 4-5: anon vs file
        Vma(BASE + 7 * P, BASE + 8 * P, "r--p", P, 0x801, 9, LIB),   # 5-6: alike (offset +P)
        Vma(BASE + 8 * P, BASE + 9 * P, "r--p", 5 * P, 0x801, 9, LIB),  # 6-7: offset jump
        Vma(BASE + 9 * P, BASE + 10 * P, "r--p", 6 * P, 0x801, 10, LIB),  # 7-8: other inode
        Vma(BASE + 10 * P, BASE + 11 * P, "rw-p", name="[heap]"),  # 8-9: file vs heap
        anon(BASE + 11 * P, 1),                                 # 9-10: heap vs anon
        anon(BASE + 12 * P, 1, offset=0x1234000),               # 10-11: anon, offset jump
    ]
    got = lookalike_pairs(snap_of(vmas)).tolist()
    assert got == [True, False, False, True, False, True, False, False, False, False, False]


def test_fragmentation_runs_ideal_and_histogram() -> None:
    # Run 1: 4 adjacent rw-p VMAs of 1, 2, 1, 4 pages; run 2: 2 r--p VMAs of 1 page;
    # one lone VMA of 16 pages far away.
    vmas = []
    addr = BASE
    for pages in (1, 2, 1, 4):
        vmas.append(anon(addr, pages))
        addr += pages * P
    vmas.append(anon(addr, 1, "r--p"))
    vmas.append(anon(addr + P, 1, "r--p"))
    vmas.append(anon(BASE + 1000 * P, 16))
    a = analyze(snap_of(vmas))
    f = a.fragmentation
    # Pairs: 3 inside run 1, 1 inside run 2 (rw -> r-- is not alike).
    assert f.lookalike_pairs == 4
    assert f.run_count == 2
    assert f.vmas_in_runs == 6
    assert f.ideal_count == 7 - 4 and f.saved == 4
    assert f.run_length_counts == {4: 1, 2: 1}
    first = f.runs[0]
    assert (first.start, first.end, first.vma_count) == (BASE, BASE + 8 * P, 4)
    assert (first.smallest, first.largest) == (P, 4 * P)
    # Histogram by power-of-two buckets of pages: 1 page: 4 VMAs (3 rw run + r-- x2 -> 2 of
    # run 1, 2 of run 2), 2 pages: 1, 4 pages: 1, 16 pages: 1 (not in a run).
    hist = {b.low // P: (b.all_vmas, b.in_runs) for b in f.histogram}
    assert hist[1] == (4, 4)
    assert hist[2] == (1, 1)
    assert hist[4] == (1, 1)
    assert hist[8] == (0, 0)
    assert hist[16] == (1, 0)
    assert max(hist) == 16


def _lookalike_by_rule(a: Vma, b: Vma) -> bool:
    # The rule of fragmentation.py's docstring, pair by pair.
    def is_anon(v: Vma) -> bool:
        return v.inode == 0 and (v.name is None or v.name.startswith("[anon:"))

    continuous = b.offset == a.offset + a.size
    if is_anon(a) and is_anon(b):
        backing = continuous or a.offset == b.offset == 0
    else:
        backing = (a.name, a.dev, a.inode) == (b.name, b.dev, b.inode) and continuous
    return a.end == b.start and a.perms == b.perms and backing


def _mixed_snapshot(rng: random.Random, n: int, perms: tuple[str, ...]) -> Snapshot:
    # anon (named or not), a file in pieces, [heap]; gaps, offset jumps, other inodes
    vmas, addr, off = [], BASE, 0
    for _ in range(n):
        pages = rng.choice((1, 1, 2))
        if rng.random() < 0.05:
            addr += P
        kind = rng.random()
        if kind < 0.5:
            v = Vma(addr, addr + pages * P, rng.choice(perms),
                    offset=rng.choice((0, 0, 0, P)),
                    name=rng.choice((None, None, "[anon:a]")))
        elif kind < 0.9:
            off = rng.choice((off, off, 0, off + P))
            v = Vma(addr, addr + pages * P, rng.choice(perms), off, 0x801,
                    rng.choice((9, 9, 10)), LIB)
            off += pages * P
        else:
            v = Vma(addr, addr + pages * P, rng.choice(perms), name="[heap]")
        vmas.append(v)
        addr += pages * P
    return snap_of(vmas)


@pytest.mark.parametrize("perms", [("rw-p",), ("rw-p", "r--p"), ("rw-p", "---p", "r--p", "rw-s")])
def test_lookalike_pairs_on_every_pair_and_on_candidates_only(
        monkeypatch: pytest.MonkeyPatch, perms: tuple[str, ...]) -> None:
    # The test of every pair and the test of the contiguous same-permission pairs only
    # (taken when those are few) give the pairs the rule gives.
    import importlib

    frag_mod = importlib.import_module("vmascope.analysis.fragmentation")  # not the function

    for seed in range(8):
        s = _mixed_snapshot(random.Random(seed), 600, perms)
        expect = [_lookalike_by_rule(s.vma(k), s.vma(k + 1)) for k in range(len(s) - 1)]
        assert 20 < sum(expect) < len(expect) - 20
        for share in (0.0, 2.0):  # never / always the candidates only
            monkeypatch.setattr(frag_mod, "FEW_CANDIDATES", share)
            assert lookalike_pairs(s).tolist() == expect, (seed, share)


def test_size_buckets_are_floor_log2_of_pages() -> None:
    from vmascope.analysis.fragmentation import HIST_BUCKETS, size_buckets

    rng = random.Random(5)
    sizes = [0, 1, P - 1, P, P + 1, 2 * P - 1, 2 * P, 3 * P, (1 << 47) - P, 1 << 47]
    sizes += [(1 << k) + d for k in range(12, 48) for d in (-P, -1, 0, 1, P) if (1 << k) + d >= 0]
    sizes += [rng.randrange(1 << 47) for _ in range(2000)]
    got = size_buckets(np.array(sizes, dtype=np.int64)).tolist()
    expect = [min(max((x // P).bit_length() - 1, 0), HIST_BUCKETS - 1) for x in sizes]
    assert got == expect


def test_in_pairs_are_the_vmas_of_the_runs() -> None:
    from vmascope.analysis.attribution import in_pairs, run_bounds

    rng = np.random.default_rng(11)
    for _ in range(200):
        n = int(rng.integers(0, 60))
        pairs = rng.random(max(n - 1, 0)) < rng.random()
        expect = np.zeros(n, dtype=bool)
        for first, end in zip(*run_bounds(pairs)):
            expect[first:end + 1] = True  # pairs first..end-1: VMAs first..end
        assert in_pairs(pairs, n).tolist() == expect.tolist()


def test_empty_and_single_snapshot() -> None:
    a = analyze(snap_of([]))
    assert a.headroom.map_count == 0 and a.fragmentation.ideal_count == 0
    assert a.attribution.reservations == [] and a.why.pairs == 0
    b = analyze(snap_of([anon(BASE, 1, "---p")]))
    assert b.fragmentation.lookalike_pairs == 0 and len(b.attribution.reservations) == 1


# -- why not merged -----------------------------------------------------------------------


def _codes(a: object, kernel: str | None = None) -> dict[str, tuple[int, str]]:
    return {r.reason: (r.count, r.confidence) for r in a.why.reasons}  # type: ignore[attr-defined]


def test_reason_vmflags_dontdump_certain() -> None:
    # Same rw-p in maps, VmFlags differ only by dd (MADV_DONTDUMP): is_mergeable_vma
    # compares every flag but soft-dirty, and the difference is visible in smaps.
    vmas = [anon(BASE, 1, flags=RW_FLAGS, smaps={"Anonymous": 0}),
            anon(BASE + P, 1, flags=RW_FLAGS | {"dd"}, smaps={"Anonymous": 0})]
    a = analyze(snap_of(vmas))
    assert _codes(a) == {"vmflags": (1, "certain")}
    assert "dd" in a.why.reasons[0].detail
    assert a.why.reasons[0].flags == {"dd": 1}
    assert "MADV_DONTDUMP" in a.advice[0].hypothesis


def test_reason_soft_dirty_is_no_reason() -> None:
    # VM_SOFTDIRTY is ignored by is_mergeable_vma: these two would merge.
    vmas = [anon(BASE, 1, flags=RW_FLAGS - {"sd"}, smaps={"Anonymous": 0}),
            anon(BASE + P, 1, flags=RW_FLAGS, smaps={"Anonymous": 0})]
    a = analyze(snap_of(vmas))
    assert a.why.reasons == [] and a.why.unexplained == 1


def test_reason_anon_name_and_mempolicy() -> None:
    named = [anon(BASE, 1, name="[anon:left]", flags=RW_FLAGS, smaps={"Anonymous": 0}),
             anon(BASE + P, 1, name="[anon:right]", flags=RW_FLAGS, smaps={"Anonymous": 0})]
    assert _codes(analyze(snap_of(named))) == {"anon_name": (1, "certain")}
    pol = [anon(BASE, 1, flags=RW_FLAGS, policy="bind:0", smaps={"Anonymous": 0}),
           anon(BASE + P, 1, flags=RW_FLAGS, policy="prefer:0", smaps={"Anonymous": 0})]
    assert _codes(analyze(snap_of(pol))) == {"mempolicy": (1, "certain")}


def test_reason_two_faulted_halves_inferred() -> None:
    # Both sides hold anonymous pages: each has an anon_vma, most likely distinct (the
    # kernel would have merged them had they shared one). Refused on every kernel.
    vmas = [anon(BASE, 1, flags=RW_FLAGS, smaps={"Anonymous": P}),
            anon(BASE + P, 1, flags=RW_FLAGS, smaps={"Anonymous": P})]
    for kernel in ("6.1", "6.12", "6.18"):
        a = analyze(snap_of(vmas), kernel=kernel)
        assert _codes(a) == {"anon_vma": (1, "inferred")}, kernel
        assert a.why.kernel == kernel and a.why.kernel_source == "option"


def test_reason_faulted_next_to_unfaulted_depends_on_kernel() -> None:
    # Pre-6.16 is_mergeable_anon_vma refuses to merge a faulted VMA into an unfaulted
    # neighbour (its anon_vma_chain is empty, not singular); 879bca0a2c4f (6.16) allows it.
    vmas = [anon(BASE, 1, flags=RW_FLAGS, smaps={"Anonymous": 0}),
            anon(BASE + P, 1, flags=RW_FLAGS, smaps={"Anonymous": P})]
    old = analyze(snap_of(vmas), kernel="6.12.117")
    assert _codes(old) == {"anon_vma_unfaulted": (1, "inferred")}
    assert "879bca0a2c4f" in old.why.reasons[0].citation
    new = analyze(snap_of(vmas), kernel="6.18.44")
    assert new.why.reasons == [] and new.why.unexplained == 1


def test_kernel_defaults_to_snapshot_release() -> None:
    vmas = [anon(BASE, 1, smaps={"Anonymous": 0}), anon(BASE + P, 1, smaps={"Anonymous": P})]
    a = analyze(snap_of(vmas, kernel_release="6.1.170"))
    assert a.why.kernel == "6.1.170" and a.why.kernel_source == "snapshot"
    assert _codes(a) == {"anon_vma_unfaulted": (1, "inferred")}


def test_simulated_anon_vma_ids_are_certain() -> None:
    vmas = [anon(BASE, 1, flags=RW_FLAGS, anon_vma=1), anon(BASE + P, 1, flags=RW_FLAGS, anon_vma=2),
            anon(BASE + 2 * P, 1, flags=RW_FLAGS, anon_vma=2)]
    a = analyze(snap_of(vmas))
    # Pair 0-1: ids 1 vs 2 -> distinct anon_vmas, certain. Pair 1-2: same id -> no reason.
    assert _codes(a) == {"anon_vma": (1, "certain")}
    assert a.why.unexplained == 1


def test_summary_line_format() -> None:
    vmas = [anon(BASE + i * P, 1, smaps={"Anonymous": P}) for i in range(5)]
    a = analyze(snap_of(vmas))
    assert a.why.summary_lines() == ["4 of 4: distinct anon_vmas, inferred"]
    assert a.advice and a.advice[0].reason == "anon_vma"
    assert "vmascope" in a.advice[0].test_command


def _random_snapshot(rng: random.Random, n: int) -> Snapshot:
    vmas = []
    addr = BASE
    for _ in range(n):
        pages = rng.choice((1, 1, 2, 3))
        if rng.random() < 0.05:
            addr += P  # a gap now and then
        flags = set(RW_FLAGS)
        if rng.random() < 0.2:
            flags.add(rng.choice(("dd", "hg", "nh", "dc", "lo")))
        vmas.append(Vma(
            addr, addr + pages * P, rng.choice(("rw-p", "rw-p", "rw-p", "r--p")),
            name=rng.choice((None, None, None, "[anon:a]", "[anon:b]")),
            flags=frozenset(flags),
            policy=rng.choice((None, None, "default", "bind:0")) if rng.random() < 0.3 else None,
            smaps={"Anonymous": rng.choice((0, 0, P)), "Swap": 0},
        ))
        addr += pages * P
    return snap_of(vmas)


@pytest.mark.parametrize("kernel", ["6.12", "6.18"])
def test_grouped_verdicts_equal_pairwise_verdicts(kernel: str) -> None:
    # The grouping by signature must never change a verdict: every pair's reasons equal
    # explain_pair on that pair alone, and the summary counts equal a brute-force count.
    s = _random_snapshot(random.Random(7), 3000)
    a = analyze(s, kernel=kernel)
    epoch = epoch_for(kernel)
    pairs = np.flatnonzero(lookalike_pairs(s))
    assert len(pairs) > 500
    brute: dict[tuple[str, str], int] = {}
    unexplained = 0
    for i in pairs:
        expect = explain_pair(s.vma(int(i)), s.vma(int(i) + 1), epoch)
        got = a.why.reasons_after(int(i))
        assert [(r.code, r.confidence) for r in got] == [(r.code, r.confidence) for r in expect]
        if not expect:
            unexplained += 1
        for key in {(r.code, r.confidence) for r in expect}:
            brute[key] = brute.get(key, 0) + 1
    assert {(r.reason, r.confidence): r.count for r in a.why.reasons} == brute
    assert a.why.unexplained == unexplained


def test_explain_pair_called_once_per_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = explain_mod.explain_pair

    def counting(prev: Vma, nxt: Vma, epoch: object) -> list[object]:
        calls.append(prev.start)
        return real(prev, nxt, epoch)  # type: ignore[arg-type]

    monkeypatch.setattr(explain_mod, "explain_pair", counting)
    # 10,000 identical faulted rw-p pages in a row, then 1,000 pairs differing by dd.
    vmas = [anon(BASE + i * P, 1, flags=RW_FLAGS, smaps={"Anonymous": P}) for i in range(10_001)]
    start = BASE + 20_000 * P
    for i in range(2_000):
        flags = RW_FLAGS | ({"dd"} if i % 2 else set())
        vmas.append(anon(start + i * P, 1, flags=frozenset(flags), smaps={"Anonymous": 0}))
    a = analyze(snap_of(vmas))
    # Kinds: (faulted, faulted), (plain, dd), (dd, plain).
    assert len(calls) == 3
    assert _codes(a) == {"anon_vma": (10_000, "inferred"), "vmflags": (1_999, "certain")}


def test_group_kinds_survives_hash_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    # With the mixing constants at zero every row hashes alike; the column check must
    # notice and fall back to the exact row sort.
    monkeypatch.setattr(explain_mod, "_MIX", np.uint64(0))
    monkeypatch.setattr(explain_mod, "_MIX2", np.uint64(0))
    cols = [np.array([1, 2, 1, 3, 2], dtype=np.uint64), np.array([5, 5, 5, 5, 6], dtype=np.uint64)]
    rep, kind = group_kinds(cols)
    rows = list(zip(*(c.tolist() for c in cols)))
    # Rows 0 and 2 are equal; all others distinct.
    assert kind[0] == kind[2]
    assert len({int(k) for k in kind}) == 4
    for r, k in zip(rows, kind):
        assert rows[int(rep[k])] == r


def test_group_kinds_of_some_rows_keep_their_order_among_all() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(1, 400))
        cols = [rng.integers(0, 4, n).astype(np.uint64), rng.integers(0, 3, n).astype(np.int32),
                np.full(n, 7, np.uint8), rng.integers(0, 2, n).astype(bool)]
        rows = np.unique(rng.integers(0, n, int(rng.integers(1, n + 1))))
        # a column alike on those rows only: it still orders the kinds as among all rows
        alike = rng.integers(0, 5, n).astype(np.uint64)
        alike[rows] = 1
        cols.append(alike)
        _, every = group_kinds(cols)
        rep, some = group_kinds(cols, rows)
        # the same grouping of those rows, numbered in the same order
        assert some.tolist() == np.unique(every[rows], return_inverse=True)[1].tolist()
        assert every[rows[rep]].tolist() == sorted(set(every[rows].tolist()))


def test_few_pairs_are_explained_as_from_all_vmas(monkeypatch: pytest.MonkeyPatch) -> None:
    # With few look-alike pairs only their VMAs are grouped: the explanation (kinds,
    # their numbering, counts, examples) is the one of grouping every VMA.
    from vmascope.analysis.explain import why_not_merged

    for seed in range(6):
        s = _random_snapshot(random.Random(seed), 2000)
        mask = lookalike_pairs(s)
        keep = np.zeros_like(mask)
        keep[np.flatnonzero(mask)[::9]] = True  # a ninth of them: few
        assert 0 < 4 * keep.sum() < len(s)
        some = why_not_merged(s, keep, kernel="6.18")
        monkeypatch.setattr(explain_mod, "FEW_PAIRS", 0)
        every = why_not_merged(s, keep, kernel="6.18")
        monkeypatch.undo()
        assert some.pair_kind.tolist() == every.pair_kind.tolist()
        assert some.pair_index.tolist() == every.pair_index.tolist()
        assert some.kind_reasons == every.kind_reasons
        assert [vars(r) for r in some.reasons] == [vars(r) for r in every.reasons]


@pytest.mark.parametrize("seed", range(4))
def test_pair_kinds_are_the_pairs_alike_in_all_explain_pair_reads(seed: int) -> None:
    # Two look-alike pairs are one kind exactly when their two VMAs' columns, their
    # offsets' continuity (the left VMA's offset plus its size) and both-zero offsets
    # are the same: a partition checked against one built pair by pair.
    rng = random.Random(seed)
    s = _mixed_snapshot(rng, 1500, ("rw-p", "r--p"))
    pairs = lookalike_pairs(s)
    prev, _, kind = pair_kinds(s, pairs)
    cols = explain_mod.vma_columns(s)

    def signature(k: int) -> tuple[object, ...]:
        a, b = s.vma(k), s.vma(k + 1)
        return (tuple(int(c[k]) for c in cols), tuple(int(c[k + 1]) for c in cols),
                b.offset == a.offset + a.size, a.offset == b.offset == 0)

    by_signature: dict[tuple[object, ...], set[int]] = {}
    by_kind: dict[int, set[int]] = {}
    for k, kd in zip(prev.tolist(), kind.tolist()):
        by_signature.setdefault(signature(k), set()).add(k)
        by_kind.setdefault(kd, set()).add(k)
    assert len(by_kind) > 3
    assert sorted(map(sorted, by_kind.values())) == sorted(map(sorted, by_signature.values()))


def test_signature_ignores_addresses_only() -> None:
    # Two pairs that differ only in address (and size) are one kind; a pair differing in
    # the Anonymous state of one side is another.
    vmas = [anon(BASE, 1, smaps={"Anonymous": P}), anon(BASE + P, 1, smaps={"Anonymous": P}),
            anon(BASE + 10 * P, 3, smaps={"Anonymous": P}),
            anon(BASE + 13 * P, 2, smaps={"Anonymous": P}),
            anon(BASE + 20 * P, 1, smaps={"Anonymous": P}),
            anon(BASE + 21 * P, 1, smaps={"Anonymous": 0})]
    s = snap_of(vmas)
    mask = np.array([True, False, True, False, True])  # pairs (0,1), (2,3), (4,5)
    prev, rep, kind = pair_kinds(s, mask)
    assert prev.tolist() == [0, 2, 4]
    assert kind[0] == kind[1] != kind[2] and len(rep) == 2


def test_maps_only_snapshot_says_what_it_cannot_see() -> None:
    # A maps dump has neither VmFlags nor smaps: pairs that look alike cannot be
    # explained, and the analysis says why instead of inventing a reason.
    vmas = [anon(BASE, 1), anon(BASE + P, 1)]
    a = analyze(snap_of(vmas))
    assert a.why.pairs == 1 and a.why.reasons == [] and a.why.unexplained == 1
    assert a.why.note is not None and "VmFlags" in a.why.note and "Anonymous" in a.why.note
    from vmascope.report import render

    assert "capture smaps" in render(a, "text").replace("\n", " ")


def test_run_reasons_and_json_runs() -> None:
    # Run 1: three faulted rw-p pages (distinct anon_vmas); run 2: two pages, dd differs.
    vmas = [anon(BASE + i * P, 1, flags=RW_FLAGS, smaps={"Anonymous": P}) for i in range(3)]
    vmas += [anon(BASE + 10 * P, 1, flags=RW_FLAGS, smaps={"Anonymous": 0}),
             anon(BASE + 11 * P, 1, flags=RW_FLAGS | {"dd"}, smaps={"Anonymous": 0})]
    a = analyze(snap_of(vmas))
    assert a.why.run_reasons(0, 3) == ["anon_vma"]
    assert a.why.run_reasons(3, 2) == ["vmflags"]
    runs = a.to_json()["fragmentation"]["runs"]
    assert [(r["vma_count"], r["reasons"]) for r in runs] == [(3, ["anon_vma"]), (2, ["vmflags"])]


@pytest.mark.parametrize("anon_share", [0.0, 0.5, 0.97, 1.0])
def test_by_backing_counts_every_class_on_either_path(monkeypatch: pytest.MonkeyPatch,
                                                       anon_share: float) -> None:
    # VMAs and bytes per backing class, counted on every VMA or on those outside the
    # commonest class only (taken when those are few), are the plain per-class sums.
    import importlib

    from vmascope.analysis.attribution import BACKING_LABELS, backing_classes, by_backing

    attr_mod = importlib.import_module("vmascope.analysis.attribution")
    for seed in range(6):
        rng = random.Random(seed)
        vmas, addr = [], 0x10000000
        for _ in range(3000):
            pages = rng.choice((1, 1, 2, 7, 300))
            name = (None if rng.random() < anon_share else
                    rng.choice(("[heap]", "[stack]", "[anon:x]", "/lib/a.so", "[vdso]", None)))
            vmas.append(Vma(addr, addr + pages * P, "rw-p", name=name))
            addr += (pages + 1) * P
        s = snap_of(vmas)
        classes = backing_classes(s)
        expect = {}
        for c, v in zip(classes.tolist(), vmas):
            n, b = expect.get(BACKING_LABELS[c], (0, 0))
            expect[BACKING_LABELS[c]] = (n + 1, b + v.end - v.start)
        for share in (0.0, 2.0):  # never / always the VMAs outside the commonest only
            monkeypatch.setattr(attr_mod, "FEW_CANDIDATES", share)
            got = {r.backing: (r.vma_count, r.bytes) for r in by_backing(s, classes)}
            assert got == expect, (seed, share)


def test_distinct_reservations_of_sorted_ids() -> None:
    from vmascope.analysis.patterns import _distinct

    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 50, 5000):
        for high in (1, 3, 1000):
            ids = np.sort(rng.integers(0, high, n))
            assert _distinct(ids) == len(np.unique(ids)), (n, high)
