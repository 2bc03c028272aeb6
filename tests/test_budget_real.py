"""The budget, patterns, fixes and headline on real processes whose shapes the test
builds itself (tests/programs/shapes.c), counted independently from /proc/PID/maps."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import PROGRAMS, need, read_stopped, running

import vmascope
from vmascope.analysis import analyze
from vmascope.analysis.budget import CAUSES
from vmascope.analysis.fixes import fixes
from vmascope.report import render

CHECKERBOARD_VMAS = 20_002  # the 200k run is in bench/bench_budget.py


@pytest.fixture(scope="module")
def shapes_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = need("cc")
    out = tmp_path_factory.mktemp("shapes") / "shapes"
    subprocess.run([cc, "-O1", "-Wall", "-pthread", "-o", str(out),
                    str(PROGRAMS / "shapes.c")], check=True, timeout=120)
    return out


def maps_in(pid: int, lo: int, hi: int) -> list[str]:
    with open(f"/proc/{pid}/maps") as fh:
        return [line for line in fh if lo <= int(line.split("-", 1)[0], 16) < hi]


def assert_identity(a) -> None:  # type: ignore[no-untyped-def]
    b = a.budget
    assert b is not None
    assert sum(b.totals.counts.values()) == b.map_count - b.ideal
    for r in b.reservations:
        assert sum(r.causes.counts.values()) == r.vma_count - 1


def test_checkerboard(shapes_exe: Path) -> None:
    v = CHECKERBOARD_VMAS
    with running([str(shapes_exe), "checkerboard", str(v)], "RESERVED") as proc:
        lo, hi = (int(x, 16) for x in proc.first_line.split()[1:3])
        snap, lines = read_stopped(proc.pid)
        inside = maps_in(proc.pid, lo, hi)
    assert snap.map_count == lines
    # The program alternates ---p and rw-p page by page: v VMAs, v - 1 boundaries.
    assert len(inside) == v
    a = analyze(snap)
    assert_identity(a)
    b = a.budget
    assert b is not None
    top = b.largest
    assert top is not None and (top.start, top.end, top.vma_count) == (lo, hi, v)
    want = dict.fromkeys(CAUSES, 0)
    want["protection"] = v - 1
    assert top.causes.counts == want
    assert top.causes.protections == {"rw-p/---p": v - 1}
    cb = [p for p in a.patterns if p.code == "checkerboard"]
    assert len(cb) == 1 and (cb[0].start, cb[0].end) == (lo, hi)
    assert cb[0].name == "commit/decommit checkerboard of 1-page pieces"
    assert cb[0].granularity == {"committed_pages": 1, "decommitted_pages": 1}
    assert a.fixes[0].about == "checkerboard" and a.fixes[0].saves == v - 1
    text = render(a, "text", width=80)
    head = text.split("\n\n")[1].replace("\n", " ")
    assert head.startswith("Budget: ")
    assert f"{v - 1:,} boundaries with protection differs (rw-p/---p) in one reservation" \
        in head
    assert "commit/decommit checkerboard of 1-page pieces" in head
    assert max(len(line) for line in text.splitlines()) <= 80


def test_fix_scripts_show_the_effect() -> None:
    """The before/after op scripts of each fix give the counts the fix promises."""
    from vmascope.analysis.fixes import PIECES
    from vmascope.analysis.headroom import Headroom
    from vmascope.analysis.patterns import Pattern

    pats = [Pattern("checkerboard", "c", 1, 1000, "", granularity={"committed_pages": 1}),
            Pattern("dontdump_stripes", "d", 1, 1000, ""),
            Pattern("hugepage_toggles", "h", 1, 1000, "")]
    h = Headroom(0, None, None, None, "unknown", "unknown")
    from vmascope.analysis.budget import budget

    b = budget(vmascope.Snapshot.empty())
    found = fixes(b, pats, [], h)
    assert {f.about for f in found} == {"checkerboard", "dontdump_stripes",
                                        "hugepage_toggles"}
    for f in found:
        (before_name, before), (after_name, after) = sorted(f.scripts.items(), reverse=True)
        assert before_name.endswith("-before.ops") and f.command.endswith(
            f"{before_name} {after_name}")
        # Each script's range is 2 * PIECES pieces; before: every piece its own VMA.
        assert vmascope.simulate(before, "6.18").map_count == 2 * PIECES
        assert vmascope.simulate(after, "6.18").map_count == 1


def _shape_reservation(exe: Path, shape: str, v: int):  # type: ignore[no-untyped-def]
    """The analysis of a process that prints its reservation's bounds after RESERVED, and
    the budget's record of that reservation."""
    with running([str(exe), shape, str(v)], "RESERVED") as proc:
        lo, hi = (int(x, 16) for x in proc.first_line.split()[1:3])
        snap, _ = read_stopped(proc.pid)
    a = analyze(snap)
    assert_identity(a)
    b = a.budget
    assert b is not None
    (r,) = [r for r in b.reservations if r.start == lo]
    return a, r, hi


def test_dontdump_stripes(shapes_exe: Path) -> None:
    v = 101
    a, r, hi = _shape_reservation(shapes_exe, "dontdump", v)
    assert r.end == hi and r.vma_count == v
    assert r.causes.counts["vmflags"] == v - 1 and r.causes.flags == {"dd": v - 1}
    (p,) = [p for p in a.patterns if p.code == "dontdump_stripes"]
    assert p.excess == v - 1


def test_hugepage_toggles(shapes_exe: Path) -> None:
    v = 9
    a, r, _ = _shape_reservation(shapes_exe, "hugepage", v)
    assert r.vma_count == v and r.causes.counts["vmflags"] == v - 1
    # Every boundary toggles both flags: hg on one side, nh on the other.
    assert r.causes.flags == {"hg": v - 1, "nh": v - 1}
    (p,) = [p for p in a.patterns if p.code == "hugepage_toggles"]
    assert p.excess == v - 1


def test_glibc_arenas_and_stacks(shapes_exe: Path) -> None:
    threads = 6
    with running([str(shapes_exe), "arenas", str(threads)], "RESERVED") as proc:
        snap, lines = read_stopped(proc.pid)
    assert snap.map_count == lines
    a = analyze(snap)
    assert_identity(a)
    codes = {p.code: p for p in a.patterns}
    # Every thread that mallocs gets its own arena while there are fewer than 8 x cores
    # (2 cores here: 16), and every thread has a stack with a guard page.
    assert codes["malloc_arenas"].count == threads
    assert codes["thread_stacks"].count == threads
    assert "glibc malloc" in {f.runtime for f in a.runtimes}
    # Six threads are nothing worth fixing: the report says so in one line.
    assert a.fixes == [] and a.healthy_line is not None
    assert a.healthy_line.startswith("Nothing worth fixing:")
    assert "\n" not in a.healthy_line


def test_gc_like_anon_vma_runs(tmp_path: Path) -> None:
    """tests/programs/reasons.c `gc N`: N two-page rw-p pieces, each written before its
    neighbours (so each has its own anon_vma and they never merge), and a PROT_NONE
    tail, with unmapped pages on both sides. The budget: one reservation of N + 1 VMAs,
    N - 1 boundaries put down to anon_vma (inferred) and 1 to protection."""
    exe = tmp_path / "reasons"
    subprocess.run([need("cc"), "-O1", "-o", str(exe), str(PROGRAMS / "reasons.c")],
                   check=True, timeout=120)
    n = 400
    a, r, hi = _shape_reservation(exe, "gc", n)
    assert (r.end, r.vma_count) == (hi, n + 1)
    want = dict.fromkeys(CAUSES, 0)
    want.update(anon_vma=n - 1, protection=1)
    assert r.causes.counts == want
    assert r.causes.anon_confidence == {"inferred": n - 1}
    assert any(p.code == "lookalike_runs" and p.excess >= n - 1 for p in a.patterns)
    # n - 1 = 399 boundaries are worth the anon_vma fix, which names the lab command.
    (fx,) = [f for f in a.fixes if f.about == "anon_vma"]
    assert fx.saves == n - 1 and fx.command.startswith("vmascope lab run seed")


def test_json_report_carries_the_budget(shapes_exe: Path) -> None:
    import json

    v = 501
    with running([str(shapes_exe), "checkerboard", str(v)], "RESERVED") as proc:
        snap, lines = read_stopped(proc.pid)
    data = json.loads(render(analyze(snap), "json"))
    b = data["budget"]
    assert b["map_count"] == lines
    assert sum(b["totals"]["counts"].values()) == b["map_count"] - b["ideal"] == b["excess"]
    assert b["causes_order"] == list(CAUSES)
    top = b["reservations"][0]
    assert top["vma_count"] == v and top["causes"]["counts"]["protection"] == v - 1
    assert data["patterns"][0]["code"] == "checkerboard"
    assert data["fixes"][0]["scripts"] and data["nothing_to_fix"] is None
    assert data["limit"]["recommended"] >= 65530
