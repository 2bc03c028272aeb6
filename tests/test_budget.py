"""The VMA budget: every VMA beyond one per reservation is put down to exactly one cause.

The property test builds random layouts and compares the budget with a plain per-VMA
reading of the definition in docs/analyze.md (reservations, the fixed order of causes);
the anon_vma verdict comes from the rule module's explain_pair, as documented.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vmascope.analysis import analyze
from vmascope.analysis.budget import CAUSES, budget
from vmascope.kernel.epochs import epoch_for
from vmascope.analysis.explain import explain_pair  # the rule module's, as the analysis uses it
from vmascope.model import Snapshot, SnapshotMeta, Vma

P = 4096
BASE = 0x7F00_0000_0000
KERNEL = "6.18.44"
RW = frozenset({"rd", "wr", "mr", "mw", "me", "ac"})
NONE = frozenset({"mr", "mw", "me"})
RO = frozenset({"rd", "mr", "mw", "me"})
PERM_FLAGS = {"---p": NONE, "rw-p": RW, "r--p": RO}
BACKINGS = ("anon", "named:a", "named:b", "lib", "other-lib", "[heap]")


def _vma(start: int, pages: int, perms: str, backing: str, extra: frozenset[str],
         offset: int, written: bool) -> Vma:
    flags = PERM_FLAGS[perms] | extra
    anon = {"Anonymous": P if written else 0}
    if backing == "anon":
        return Vma(start, start + pages * P, perms, flags=flags, smaps=anon)
    if backing.startswith("named:"):
        return Vma(start, start + pages * P, perms, name=f"[anon:{backing[6:]}]", flags=flags,
                   smaps=anon)
    if backing == "[heap]":
        return Vma(start, start + pages * P, perms, name="[heap]", flags=flags, smaps=anon)
    inode = 11 if backing == "lib" else 12
    return Vma(start, start + pages * P, perms, offset, 0x801, inode,
               f"/usr/lib/{backing}.so.1", flags=flags, smaps=anon)


layouts = st.lists(
    st.tuples(
        st.integers(0, 2),  # gap before, in pages (0 = contiguous)
        st.integers(1, 3),  # pages
        st.sampled_from(tuple(PERM_FLAGS)),
        st.sampled_from(BACKINGS),
        st.sampled_from((frozenset(), frozenset({"dd"}), frozenset({"hg"}))),
        st.booleans(),  # file offset continues the previous one
        st.booleans(),  # written (smaps Anonymous > 0)
    ),
    min_size=0, max_size=40,
)


def build(spec: list[tuple[int, int, str, str, frozenset[str], bool, bool]]) -> Snapshot:
    vmas = []
    addr = BASE
    off = 0
    for gap, pages, perms, backing, extra, cont, written in spec:
        addr += gap * P
        off = off if cont else off + 7 * P
        vmas.append(_vma(addr, pages, perms, backing, extra, off, written))
        off += pages * P
        addr += pages * P
    return Snapshot.from_vmas(vmas, SnapshotMeta(kernel_release=KERNEL, source="file"))


def reference(snap: Snapshot) -> tuple[int, list[str | None]]:
    """(ideal, cause per boundary or None between reservations), VMA by VMA."""
    epoch = epoch_for(KERNEL)
    vmas = list(snap)

    def kind(v: Vma) -> str:
        if v.inode:
            return "file"
        if v.name is None or v.name.startswith("[anon:"):
            return "anon"
        return "special"

    causes: list[str | None] = []
    for a, b in zip(vmas, vmas[1:]):
        ka, kb = kind(a), kind(b)
        linked = ((ka == kb == "anon" and a.end == b.start)
                  or (ka == kb == "file" and (a.dev, a.inode, a.name) == (b.dev, b.inode, b.name))
                  or (ka == kb == "special" and a.name == b.name and a.end == b.start))
        if not linked:
            causes.append(None)
            continue
        assert a.flags is not None and b.flags is not None
        flag_diff = (a.flags ^ b.flags) - {"sd", "rd", "wr", "ex", "sh"}
        codes = {r.code for r in explain_pair(a, b, epoch)}
        anon_zero = a.offset == 0 and b.offset == 0 and a.inode == 0
        continuous = b.offset == a.offset + a.size or anon_zero
        if a.perms != b.perms:
            causes.append("protection")
        elif flag_diff:
            causes.append("vmflags")
        elif (a.end == b.start and (b.offset == a.offset + a.size
                                    or (anon_zero and ka == "anon"))
              and codes & {"anon_vma", "anon_vma_unfaulted", "fork_child"}):
            # Only a pair that otherwise looks alike gets to the anon_vma check (two
            # zero offsets count as continuous for anonymous memory, docs/analyze.md).
            causes.append("anon_vma")
        elif not continuous:
            causes.append("file_offset")
        elif a.name != b.name:
            causes.append("anon_name")
        elif a.end != b.start:
            causes.append("hole")
        else:
            causes.append("unexplained")
    ideal = len(vmas) - sum(c is not None for c in causes) if vmas else 0
    return ideal, causes


@settings(max_examples=150, deadline=None)
@given(layouts)
def test_budget_adds_up_and_matches_the_definition(spec) -> None:  # type: ignore[no-untyped-def]
    snap = build(spec)
    a = analyze(snap, reservation_limit=None)
    b = a.budget
    assert b is not None
    ideal, causes = reference(snap)
    assert b.ideal == ideal
    # The identity: per-cause totals add up exactly to map_count - ideal.
    assert sum(b.totals.counts.values()) == snap.map_count - b.ideal
    # Per reservation too, and the reservations cover every VMA.
    assert sum(r.vma_count for r in b.reservations) == snap.map_count
    for r in b.reservations:
        assert sum(r.causes.counts.values()) == r.vma_count - r.ideal
    want = {c: sum(1 for x in causes if x == c) for c in CAUSES}
    assert b.totals.counts == want
    got = [None if c < 0 else CAUSES[c] for c in b.cause.tolist()]
    assert got == causes


def test_checkerboard_reservation_by_construction() -> None:
    """A PROT_NONE reservation of 2k + 1 pages with every odd page committed rw-p:
    2k + 1 VMAs, ideal 1, 2k boundaries all "protection differs" (rw-p/---p)."""
    k = 500
    vmas = [Vma(BASE + i * P, BASE + (i + 1) * P, "rw-p" if i % 2 else "---p",
                flags=RW if i % 2 else NONE, smaps={"Anonymous": P if i % 2 else 0})
            for i in range(2 * k + 1)]
    snap = Snapshot.from_vmas(vmas, SnapshotMeta(kernel_release=KERNEL))
    a = analyze(snap)
    assert a.budget is not None and a.budget.ideal == 1
    top = a.budget.largest
    assert top is not None and top.vma_count == 2 * k + 1
    assert top.causes.counts["protection"] == 2 * k
    assert top.causes.protections == {"rw-p/---p": 2 * k}
    (cb,) = [p for p in a.patterns if p.code == "checkerboard"]
    assert cb.name == "commit/decommit checkerboard of 1-page pieces"
    assert cb.excess == 2 * k


def test_each_cause_by_construction() -> None:
    """One boundary of each visible cause, in one reservation each, fenced by files."""
    s = BASE
    vmas = [
        # protection: rw-p | ---p
        Vma(s, s + P, "rw-p", flags=RW), Vma(s + P, s + 2 * P, "---p", flags=NONE),
        # vmflags: dd on one side only
        Vma(s + 0x10000, s + 0x11000, "rw-p", flags=RW),
        Vma(s + 0x11000, s + 0x12000, "rw-p", flags=RW | {"dd"}),
        # anon name differs
        Vma(s + 0x20000, s + 0x21000, "rw-p", name="[anon:x]", flags=RW),
        Vma(s + 0x21000, s + 0x22000, "rw-p", name="[anon:y]", flags=RW),
        # a file in two pieces with a hole, offsets continuous
        Vma(s + 0x30000, s + 0x31000, "r--p", 0, 0x801, 5, "/lib/x.so", flags=RO),
        Vma(s + 0x33000, s + 0x34000, "r--p", P, 0x801, 5, "/lib/x.so", flags=RO),
        # a file whose offsets jump
        Vma(s + 0x40000, s + 0x41000, "r--p", 0, 0x801, 6, "/lib/y.so", flags=RO),
        Vma(s + 0x41000, s + 0x42000, "r--p", 9 * P, 0x801, 6, "/lib/y.so", flags=RO),
        # both written, look alike: distinct anon_vmas (inferred)
        Vma(s + 0x50000, s + 0x51000, "rw-p", flags=RW, smaps={"Anonymous": P}),
        Vma(s + 0x51000, s + 0x52000, "rw-p", flags=RW, smaps={"Anonymous": P}),
    ]
    snap = Snapshot.from_vmas(vmas, SnapshotMeta(kernel_release=KERNEL))
    a = analyze(snap)
    b = a.budget
    assert b is not None
    assert b.ideal == 6 and b.excess == 6
    want = dict.fromkeys(CAUSES, 0)
    for c in ("protection", "vmflags", "anon_name", "hole", "file_offset", "anon_vma"):
        want[c] = 1
    assert b.totals.counts == want
    assert b.totals.flags == {"dd": 1}
    assert b.totals.anon_confidence == {"inferred": 1}
    assert b.totals.hole_bytes == 2 * P


def test_budget_without_why_and_empty() -> None:
    assert budget(Snapshot.empty()).ideal == 0
    one = Snapshot.from_vmas([Vma(BASE, BASE + P)])
    b = budget(one)
    assert (b.map_count, b.ideal, b.excess) == (1, 1, 0)
    assert np.array_equal(b.reservation_id, [0])
