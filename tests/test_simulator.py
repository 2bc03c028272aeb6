"""The simulator's model beyond the scripts: anon_vma objects, fork children, the decision
log, the result shapes (JSON, Snapshot) and the CLI."""

from __future__ import annotations

import json

import pytest

import vmascope
from vmascope.kernel.pairs import explain_pair
from vmascope.cli import main
from vmascope.errors import ParseError
from vmascope.kernel import rules as R
from vmascope.kernel import vmflags as F
from vmascope.kernel.epochs import epoch_for
from vmascope.kernel.sim import MM, simulate, simulate_ops
from vmascope.kernel.sim.mm import OpFailed
from vmascope.kernel.sim.vma import split_vma, vma_merge_existing_range, vma_merge_new_range
from vmascope.ops.language import parse_script

SEED = "tests/scripts/seed.ops"


def run_on(mm: MM, text: str) -> None:
    from vmascope.kernel.sim import run_ops

    errors, faults = run_ops(mm, parse_script(text))
    assert not errors and not faults


def test_split_shares_anon_vma_and_counts_active_vmas() -> None:
    mm = MM(epoch_for("6.12"))
    run_on(mm, "mmap 0x100000 4p rw- private,anonymous,fixed\ntouch 0x100000\n"
               "mprotect 0x101000 1p r--\n")
    vmas = list(mm)
    assert len(vmas) == 3
    av = vmas[0].anon_vma
    assert av is not None and all(v.anon_vma is av for v in vmas)
    assert av.num_active_vmas == 3 and av.num_children == 1  # self-parent link
    assert all(len(v.chain) == 1 for v in vmas)


def test_fork_child_state_and_child_refuses_merge() -> None:
    for release in ("6.12", "6.18"):
        mm = MM(epoch_for(release))
        run_on(mm, "mmap 0x100000 5p rw- private,anonymous,fixed,noreserve\n"
                   "touch 0x100000\nmmap 0x200000 1p rw- private,anonymous,fixed\n"
                   "madvise 0x200000 1p dontfork\nfork\n")
        parent_av = next(iter(mm)).anon_vma
        assert parent_av is not None and parent_av.num_children == 2
        (child,) = mm.children
        cv = list(child)
        assert len(cv) == 1  # the DONTFORK VMA is not copied
        c = cv[0]
        assert c.anon_vma is not parent_av and c.anon_vma.parent is parent_av
        assert c.anon_vma.root is parent_av.root
        assert len(c.chain) == 2 and R.fork_child(c)
        # selftests/mm/merge.c forked_target_vma: a new mapping next to the child's
        # faulted VMA does not merge, in every version.
        run_on(child, "mmap 0x105000 5p rw- private,anonymous,fixed,noreserve\n")
        assert [(v.start, v.end) for v in child] == [(0x100000, 0x105000),
                                                     (0x105000, 0x10A000)]
        # The parent still merges (its chains stay singular).
        run_on(mm, "mmap 0x105000 5p rw- private,anonymous,fixed,noreserve\n")
        assert [(v.start, v.end) for v in mm][0] == (0x100000, 0x10A000)


def test_forked_source_vma_refused_on_616() -> None:
    # selftests/mm/merge.c forked_source_vma: in the child, mprotect a faulted fork-child
    # VMA next to an unfaulted VMA with the same flags: 6.16 refuses (fork_child(src)),
    # legacy refuses too (unfaulted target's empty chain).
    for release in ("6.12", "6.18"):
        mm = MM(epoch_for(release))
        run_on(mm, "mmap 0x100000 5p rw- private,anonymous,fixed,noreserve\ntouch 0x100000\n"
                   "fork\n")
        child = mm.children[0]
        run_on(child, "mmap 0x105000 5p rwx private,anonymous,fixed,noreserve\n"
                      "mprotect 0x100000 5p rwx\n")
        assert len(list(child)) == 2


def test_wipeonfork_child_is_unfaulted() -> None:
    mm = MM(epoch_for("6.18"))
    run_on(mm, "mmap 0x100000 2p rw- private,anonymous,fixed\ntouch 0x100000\n"
               "madvise 0x100000 2p wipeonfork\nfork\n")
    (c,) = list(mm.children[0])
    assert c.anon_vma is None and len(c.chain) == 0 and "wf" in F.flag_names(c.flags)


def test_trace_reads_like_the_seed_printk() -> None:
    result = simulate(open(SEED).read(), kernel="6.1", trace=True)
    log = "\n".join(result.trace)
    # The last worker's mprotect: both neighbours mergeable, prev wins.
    assert "merge_prev=1 merge_next=0 prev->anon_vma=av2 next->anon_vma=av1" in log
    assert "prev and next have different anon_vmas" in log
    assert "anon_vma_prepare [0x10004000,0x10005000): reuse av1 from next" in log
    assert "anon_vma_unfaulted (is_mergeable_anon_vma)" in log
    assert "split at 0x10005000" in log
    log18 = "\n".join(simulate(open(SEED).read(), kernel="6.18", trace=True).trace)
    assert "anon_vma_unfaulted" not in log18


NAMES = epoch_for("6.12.117", anon_vma_name=True)


def test_anon_names_with_config_on() -> None:
    text = open("tests/scripts/n01_anon_names.ops").read()
    r = simulate(text, kernel=NAMES)
    assert not r.errors
    assert [(hex(v.start), hex(v.end), v.name) for v in r.vmas] == [
        ("0x100000", "0x103000", "[anon:foo]"), ("0x110000", "0x111000", None),
        ("0x111000", "0x112000", "[anon:bar]")]
    # Name split at the limit: EAGAIN (madvise_vma_anon_name converts ENOMEM).
    r = simulate("mmap 0x100000 4p rw- private,anonymous,fixed\n"
                 "mmap 0x110000 1p rw- private,anonymous,fixed\nname 0x101000 1p x\n"
                 "name 0x100000 1p bad$name\n", kernel=NAMES, max_map_count=2)
    assert [(e.op, e.errno) for e in r.errors] == [(2, "EAGAIN"), (3, "EINVAL")]


def test_json_shape() -> None:
    result = simulate("mmap 0x100000 2p rw- private,anonymous,fixed\ntouch 0x100000\n"
                      "name 0x100000 1p gc\ntouch 0x900000\nmunmap 0x100001 1p\n",
                      kernel=NAMES, source="x.ops")
    data = json.loads(json.dumps(result.to_json()))
    assert data["script"] == "x.ops" and data["kernel"] == "6.12.117"
    assert data["epoch"] == "6.12-6.15" and data["map_count"] == 2
    v0, v1 = data["vmas"]
    assert v0 == {"start": "0x100000", "end": "0x101000", "perms": "rw-p",
                  "flags": ["rd", "wr", "mr", "mw", "me", "ac", "sd"], "pgoff": 0x100,
                  "anon_vma": 1, "name": "[anon:gc]"}
    assert v1["name"] is None and v1["anon_vma"] == 1
    assert data["errors"] == [{"op": 4, "line": 5, "errno": "EINVAL"}]
    assert data["faults"] == [{"op": 3, "line": 4, "addr": "0x900000", "signal": "SIGSEGV"}]


def test_to_snapshot() -> None:
    result = vmascope.simulate(open(SEED).read(), kernel="6.12")
    snap = result.to_snapshot()
    assert snap.meta.source == "simulated" and snap.meta.kernel_release == "6.12"
    assert len(snap) == 3 and snap.anon_vma is not None
    assert list(snap.anon_vma) == [2, 1, 1]
    v = snap.vma(1)
    assert v.flags is not None and {"rd", "wr", "ac"} <= v.flags
    assert v.offset == 0x10004000  # pgoff in bytes
    # The explainer's verdict on the simulated pair [4p,5p) [5p,6p): same anon_vma, same
    # flags; they stayed apart because the merge was refused at mprotect time, when the
    # left one was unfaulted. Now both are faulted with av1: nothing would refuse.
    assert explain_pair(snap.vma(1), snap.vma(2), epoch_for("6.12")) == []
    reasons = explain_pair(snap.vma(0), snap.vma(1), epoch_for("6.12"))
    assert [r.code for r in reasons] == ["anon_vma"]


def test_shared_anonymous_never_merges() -> None:
    r = simulate("mmap 0x100000 1p rw- shared,anonymous,fixed\n"
                 "mmap 0x101000 1p rw- shared,anonymous,fixed\n", kernel="6.18")
    assert [v.name for v in r.vmas] == ["/dev/zero (deleted)"] * 2
    assert [v.perms for v in r.vmas] == ["rw-s", "rw-s"]
    assert "sh" in r.vmas[0].flags and "ms" in r.vmas[0].flags


def test_populate_and_thp_read_fault() -> None:
    r = simulate("mmap 0x100000 1p rw- private,anonymous,fixed,populate\n", kernel="6.18")
    assert r.vmas[0].anon_vma is not None
    text = "mmap 0x200000 2M rw- private,anonymous,fixed\nmadvise 0x200000 2M hugepage\n" \
           "touch 0x200000 read\n"
    assert simulate(text, kernel="6.18", thp="madvise").vmas[0].anon_vma is not None
    assert simulate(text, kernel="6.18", thp="never").vmas[0].anon_vma is None


def test_large_script_map_count_and_lookup() -> None:
    # 5000 separate VMAs, then every other one merged away by mprotect.
    lines = ["mmap 0x10000000 10000p --- private,anonymous,fixed"]
    lines += [f"mprotect {0x10000000 + 2 * i * 4096:#x} 1p rw-" for i in range(5000)]
    r = simulate("\n".join(lines), kernel="6.18")
    assert r.map_count == 10000
    lines += [f"mprotect {0x10000000 + 2 * i * 4096:#x} 1p ---" for i in range(5000)]
    r = simulate("\n".join(lines), kernel="6.18")
    # Going back to PROT_NONE: unfaulted, 6.7 drops VM_ACCOUNT, so all merge again.
    assert r.map_count == 1


def test_cli_json_and_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", SEED, "tests/scripts/seed-prefault.ops", "--kernel", "6.1",
                 "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x)["map_count"] for x in lines] == [3, 1]
    assert main(["simulate", SEED, "--kernel", "7.2.13", "--trace"]) == 0
    out = capsys.readouterr().out
    assert "merge_prev=" in out and "map_count 2" in out


def test_cli_bad_script_names_file_and_line(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.ops"
    bad.write_text("mmap 0 1p rw-\nmprotect 0 1p rwz\n")
    assert main(["simulate", str(bad)]) == 5
    err = capsys.readouterr().err
    assert f"{bad}:2:" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert main(["simulate", SEED, "--kernel", "4.9"]) == 2
    assert "5.15" in capsys.readouterr().err


def test_cli_stdin(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("mmap 0x1000000 1p rw- private,anonymous\n"))
    assert main(["simulate", "-", "--json", "--kernel", "6.18"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["script"] == "<stdin>" and data["map_count"] == 1


def test_simulate_ops_api() -> None:
    ops = parse_script("mmap 0x100000 1p rw- private,anonymous,fixed\n")
    r = simulate_ops(ops, kernel="6.18", max_map_count=10)
    assert r.max_map_count == 10 and r.map_count == 1
    with pytest.raises(ParseError):
        simulate("bogus 1 2 3", "6.18")


def test_special_vmas_never_merge_in_the_simulator() -> None:
    # test_vma_merge_special_flags: VM_IO/VM_DONTEXPAND/VM_PFNMAP/VM_MIXEDMAP on both
    # sides: neither a new range nor a modified one merges. The op language cannot make
    # such VMAs (drivers do), so the flag is set on the model directly.
    for flag in (F.VM_IO, F.VM_DONTEXPAND, F.VM_PFNMAP, F.VM_MIXEDMAP):
        mm = MM(epoch_for("6.18"))
        run_on(mm, "mmap 0x100000 3p rw- private,anonymous,fixed,noreserve\n")
        (v,) = list(mm)
        v.flags |= flag
        # Split it, then make the pieces alike again: a normal VMA would merge back.
        split_vma(mm, v, 0x101000)
        vmg = R.Vmg.from_vma(list(mm)[1])
        assert vma_merge_existing_range(mm, vmg) is None
        assert R.special_reason(mm.epoch, vmg.flags) is not None
        new = R.Vmg(0x103000, 0x104000, 0x103, v.flags)
        assert vma_merge_new_range(mm, new, list(mm)[1], None, "merge_new_range") is None
        assert len(list(mm)) == 2


@pytest.mark.parametrize("kernel", ["5.10", "6.12", "7.2.13"])
def test_exit_gives_back_the_anon_vma_counters(kernel: str) -> None:
    """mm/rmap.c: a fork child's VMA links the parent's anon_vma and a child anon_vma
    (parent's num_children + 1, one more active VMA on the child's); when the child
    exits, unlink_anon_vmas takes both back: the parent's anon_vma is as before."""
    from vmascope.kernel.sim import SYSCALLS
    from vmascope.kernel.sim.memory import handle_mm_fault

    mm = MM(epoch_for(kernel))
    for line in ("mmap 0x100000 4p rw- private,fixed", "touch 0x100000"):
        (op,) = parse_script(line)
        (handle_mm_fault if op.kind == "touch" else SYSCALLS[op.kind])(mm, op)
    av = mm.head.anon_vma
    before = (av.num_children, av.num_active_vmas)
    SYSCALLS["fork"](mm, parse_script("fork")[0])
    child_av = mm.children[0].head.anon_vma
    assert child_av is not av and child_av.parent is av
    assert (av.num_children, av.num_active_vmas) == (before[0] + 1, before[1])
    SYSCALLS["exit"](mm, parse_script("fork\nexit 0")[1])
    assert (av.num_children, av.num_active_vmas) == before
    assert child_av.num_active_vmas == 0
    assert simulate("mmap 0x100000 4p rw- private,fixed\ntouch 0x100000\nfork\nexit 0\n",
                    kernel=kernel).children == []


@pytest.mark.parametrize("kernel", ["5.10", "6.12", "7.2.13"])
def test_a_fork_of_a_fork_keeps_the_exited_childs_anon_vma_linked(kernel: str) -> None:
    """fork CHILD: the grandchild's VMA is linked to the parent's, the child's and its own
    anon_vma (a chain of 3); when the child exits, its anon_vma still has the grandchild's
    VMA, so the parent's anon_vma keeps counting it (unlink_anon_vmas decrements the
    parent's num_children only for an anon_vma left without VMAs)."""
    from vmascope.kernel.sim import SYSCALLS
    from vmascope.kernel.sim.memory import handle_mm_fault

    def run(text: str) -> MM:
        mm = MM(epoch_for(kernel))
        for op in parse_script(text):
            (handle_mm_fault if op.kind == "touch" else SYSCALLS[op.kind])(mm, op)
        return mm

    base = "mmap 0x100000 4p rw- private,fixed\ntouch 0x100000\nfork\n"
    mm = run(base + "fork 0\n")
    grand = mm.children[1].head
    assert len(grand.chain) == 3 and grand.anon_vma.parent is mm.children[0].head.anon_vma
    av = mm.head.anon_vma
    SYSCALLS["exit"](mm, parse_script(base + "exit 0")[-1])
    assert av.num_children == 2  # its self-link and the exited child's anon_vma
    assert run(base + "exit 0\n").head.anon_vma.num_children == 1
    with pytest.raises(OpFailed):
        SYSCALLS["fork"](mm, parse_script(base + "fork 0")[-1])  # child 0 has exited


def test_a_locked_vma_made_writable_is_populated_and_gets_its_anon_vma() -> None:
    """mprotect_fixup faults a private VM_LOCKED VMA in for write when it becomes
    writable (found by lab verify --kernel-view: the kernel's anon_vma grouping)."""
    script = ("mmap 0 24p --- private,anonymous,fixed\nmlock 9p 3p\n"
              "mprotect 10p 1p rw-\n")
    for kernel in ("6.1", "6.12", "6.18"):
        out = vmascope.simulate(script, kernel=kernel)
        s = out.snapshot
        rw = [i for i in range(len(s)) if s.perms_text(i) == "rw-p"]
        assert len(rw) == 1 and s.anon_vma is not None and s.anon_vma[rw[0]] >= 0
    onfault = script.replace("mlock 9p 3p", "mlock 9p 3p onfault")
    s = vmascope.simulate(onfault, kernel="6.18").snapshot
    assert all(a < 0 for a in s.anon_vma.tolist())
