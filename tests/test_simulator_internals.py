"""The simulator's shortcuts give what the plain way gives: the lookups that start at the
VMA found last, the column-wise snapshot, and the replay that frees its model at once."""

from __future__ import annotations

import gc
import random
from pathlib import Path

import numpy as np

from vmascope.kconst import PAGE_SIZE
from vmascope.kernel.epochs import epoch_for
from vmascope.kernel.sim import MM, run_ops, snapshot_of
from vmascope.kernel.sim.mempolicy import policy_text
from vmascope.kernel.sim.mm import AnonVma, SVma
from vmascope.model import SnapshotMeta
from vmascope.ops.language import parse_line

BASE = 0x7F0000000000
PAGES = 64


def _random_ops(rnd: random.Random, n: int) -> list[str]:
    """Calls that split, merge, unmap, fault, name and bind pages of a small area."""
    ops = [f"mmap {BASE:#x} {PAGES}p --- private,anonymous,fixed,noreserve",
           "heap 0x555500000000", "brk 0x555500004000"]
    for _ in range(n):
        a = BASE + rnd.randrange(PAGES) * PAGE_SIZE
        k = rnd.randrange(1, 4)
        what = rnd.randrange(8)
        if what < 3:
            ops.append(f"mprotect {a:#x} {k}p {rnd.choice(['---', 'r--', 'rw-'])}")
        elif what == 3:
            ops.append(f"touch {a:#x} {rnd.choice(['read', 'write'])}")
        elif what == 4:
            ops.append(f"munmap {a:#x} {k}p")
        elif what == 5:
            ops.append(f"mmap {a:#x} {k}p rw- private,anonymous,fixed")
        elif what == 6:
            ops.append(f"name {a:#x} {k}p {rnd.choice(['a', 'b'])}")
        else:
            ops.append(f"mbind {a:#x} {k}p {rnd.choice(['bind:0', 'interleave:0', 'default'])}")
    return ops


def _run(ops: list[str]) -> MM:
    mm = MM(epoch_for("6.12"))
    run_ops(mm, [parse_line(o) for o in ops])
    return mm


def test_lookups_agree_with_a_scan_of_the_list() -> None:
    rnd = random.Random(5)
    for _ in range(30):
        mm = MM(epoch_for("6.12"))
        for text in _random_ops(rnd, 60):
            run_ops(mm, [parse_line(text)])
            vmas = list(mm)
            for _ in range(6):
                addr = BASE + rnd.randrange(-2, PAGES + 2) * PAGE_SIZE + rnd.randrange(PAGE_SIZE)
                after = next((v for v in vmas if v.end > addr), None)
                inside = after if after is not None and after.start <= addr else None
                assert mm.find_vma(addr) is after, (text, hex(addr))
                assert mm.vma_lookup(addr) is inside, (text, hex(addr))


def _reference(mm: MM, lo: int = 0, hi: int | None = None, shift: int = 0) -> dict:
    """The snapshot's columns VMA by VMA, names and policies numbered as they come."""
    vs = [v for v in mm if v.end > lo and (hi is None or v.start < hi)]
    names: list[str] = []
    policies: list[str] = []
    name_id, policy_id = [], []
    for v in vs:
        name = mm.vma_name(v)
        if name is not None and name not in names:
            names.append(name)
        name_id.append(-1 if name is None else names.index(name))
        text = policy_text(v.policy)
        if text not in policies:
            policies.append(text)
        policy_id.append(policies.index(text))
    perm = [(1 if v.flags & 1 else 0) for v in vs]  # VM_READ is bit 0
    return {"start": [v.start - shift for v in vs], "end": [v.end - shift for v in vs],
            "offset": [v.pgoff * PAGE_SIZE for v in vs],
            "anon_vma": [-1 if v.anon_vma is None else v.anon_vma.id for v in vs],
            "inode": [getattr(v.file, "inode", 0) for v in vs], "names": names,
            "name_id": name_id, "policies": policies, "policy_id": policy_id, "read": perm}


def test_snapshot_of_gives_each_vma_its_columns() -> None:
    rnd = random.Random(8)
    for _ in range(40):
        mm = _run(_random_ops(rnd, 80) + ["memfd f 8p", f"mmap {BASE - 0x10000:#x} 2p rw- shared,fixed fd=f"])
        for lo, hi, shift in ((0, None, 0), (BASE + 8 * PAGE_SIZE, BASE + 40 * PAGE_SIZE, 0x1000)):
            snap = snapshot_of(mm, SnapshotMeta(), lo=lo, hi=hi, shift=shift)
            want = _reference(mm, lo, hi, shift)
            assert snap.start.tolist() == want["start"] and snap.end.tolist() == want["end"]
            assert snap.offset.tolist() == want["offset"]
            assert snap.anon_vma.tolist() == want["anon_vma"]
            assert snap.inode.tolist() == want["inode"]
            assert snap.names == want["names"] and snap.name_id.tolist() == want["name_id"]
            assert snap.policies == want["policies"]
            assert snap.policy_id.tolist() == want["policy_id"]
            assert ((snap.perms & 1) != 0).astype(int).tolist() == want["read"]
            assert snap.start.dtype == np.uint64 and snap.name_id.dtype == np.int32


def test_an_anon_vma_is_its_own_root_without_a_cycle() -> None:
    root = AnonVma(1)
    child = AnonVma(2, root)
    grandchild = AnonVma(3, child)
    assert root.root is root and root.parent is root
    assert child.parent is root and grandchild.parent is child and grandchild.root is root
    assert gc.get_referents(root).count(root) == 0


def _alive(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is kind)


def test_a_replay_leaves_no_model_to_the_garbage_collector(tmp_path: Path) -> None:
    """The model's VMAs link to each other and were freed only by a collection (tens of
    thousands of them after a real trace): the replay unlinks them, and the ops the C
    reader makes are not tracked at all."""
    from vmascope.trace.format import Annotation, TraceWriter
    from vmascope.trace.parse import read_trace
    from vmascope.trace.replay import replay

    maps = (f"{BASE:x}-{BASE + 0x1000:x} rw-p 00000000 00:00 0 \n").encode()
    with TraceWriter(tmp_path / "t", {"recorder": "test", "pid": 1, "kernel": "6.18"}) as w:
        w.snapshot("first", maps)
        w.op(f"mmap {BASE + 0x10000:#x} 0x100000 --- private,anonymous,fixed,noreserve",
             Annotation(t=0.0))
        for i in range(100):
            w.op(f"mprotect {BASE + 0x10000 + 0x2000 * i:#x} 0x1000 rw-", Annotation(t=0.1))
            w.op(f"touch {BASE + 0x10000 + 0x2000 * i:#x} write", Annotation(t=0.1))
        w.snapshot("last", maps)
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        before = _alive(SVma), _alive(AnonVma)
        tr = read_trace(tmp_path / "t")
        made = [op for op in tr.ops if op.kind in ("mprotect", "touch")]
        assert len(made) == 200 and not any(gc.is_tracked(op) for op in made)
        rep = replay(tr)
        assert len(rep.snapshot) == 1 + 200  # the page at the start, and 100 pairs
        assert (_alive(SVma), _alive(AnonVma)) == before
    finally:
        if was:
            gc.enable()
