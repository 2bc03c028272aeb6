"""The kernel view in the lab: the executor runs the BPF reader on its arena, on the host
and as part of the initramfs of the Debian 6.1, 6.12 and newest microVMs, and the
simulator's anon_vma grouping (which VMAs share one) is compared with the real one.

Needs root, a kernel with BTF on the host, qemu and the Debian kernels (skipped
otherwise; under CI as root a skip fails). Prints the grouping agreement per kernel on a
random sample (pytest -s shows it); it found that mprotect populates a locked VMA that
becomes writable (the simulator now does too). Each VMA's vm_pgoff, anon_vma chain
length and anon_vma counters are compared with the model's as well.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from vmascope import host
from vmascope.lab import compare, kernels, runner, scenarios, verify
from vmascope.lab.backends import SimulatorBackend
from vmascope.ops.language import parse_script

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

KERNELS = ["host", "6.1", "6.12", "newest"]
SAMPLE = 150  # random scripts per kernel (the reader is loaded once per microVM boot)
# A fork child's chain, a split anon_vma shared by two pieces, moved anonymous memory.
FIXED = """mmap 0 24p --- private,anonymous,fixed
mprotect 2p 4p rw-
touch 2p write
touch 4p write
mprotect 3p 1p r--
mprotect 3p 1p rw-
fork
mremap 2p 1p 1p 10p maymove,fixed
touch 11p write
"""


# A fork of a fork: the child exits, the grandchild keeps the child's anon_vma linked,
# so the parent's anon_vma still counts it among its num_children; and the same without
# the grandchild.
GRANDCHILD = """mmap 0 8p rw- private,anonymous,fixed
touch 0 write
fork
fork 0
exit 0
"""
NO_GRANDCHILD = """mmap 0 8p rw- private,anonymous,fixed
touch 0 write
fork
exit 0
"""


# Write faults and populate that end in SIGBUS past a memfd's end: the anon_vma is
# prepared before (do_cow_fault), which only the kernel view shows (found by lab verify
# --kernel-view on 6.1, 6.12, 6.18 and 7.2).
PAST_EOF = ["memfd dm 8p\nmmap 17p 3p rw- private,fixed fd=dm off=17p\ntouch 19p write\n",
            "mlockall current,future\nmemfd dm 4p\nmmap 22p 1p rw- private,fixed fd=dm "
            "off=22p\n",
            "memfd dm 4p\nmmap 22p 2p rw- private,fixed fd=dm off=22p\n"
            "madvise 22p 1p populate_write\n"]


@pytest.fixture(scope="module")
def runs():  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("the kernel view needs root")
    problem = host.kernel_view_problem() or host.bpf_build_problem()
    if problem:
        pytest.skip(problem)
    if not shutil.which("qemu-system-x86_64") or not shutil.which("apt-get"):
        pytest.skip("needs qemu-system-x86_64 and apt-get (Debian kernels)")
    scripts = [scenarios.get(n) for n in ("seed", *scenarios.MERGE)]
    scripts += [parse_script(text, f"past-eof-{k}") for k, text in enumerate(PAST_EOF)]
    scripts.append(parse_script(GRANDCHILD, "grandchild"))
    scripts.append(parse_script(NO_GRANDCHILD, "no-grandchild"))
    scripts.append(parse_script(FIXED, "fixed"))
    fixed = len(scripts)
    scripts += verify.random_scripts(SAMPLE, seed=11)
    mp = pytest.MonkeyPatch()
    mp.setenv("VMASCOPE_KERNEL_VIEW", "1")
    try:
        ks = [kernels.resolve(k) for k in KERNELS]
        done = runner.run_many(ks, scripts)
    finally:
        mp.undo()
    return {k: (run, scripts, fixed) for k, run in zip(KERNELS, done)}


@pytest.mark.parametrize("alias", KERNELS)
def test_every_arena_has_the_kernel_view(runs, alias: str) -> None:  # type: ignore[no-untyped-def]
    run, scripts, _ = runs[alias]
    # The executor's reader lines are aligned with its smaps V lines (same VMAs, same
    # ranges, same permissions) or the run fails; here every script has them.
    for out in run.results:
        assert out.snapshot.kview is not None
        assert out.snapshot.anon_vma is not None


@pytest.mark.parametrize("alias", KERNELS)
def test_the_simulator_groups_anon_vmas_as_the_kernel(runs, alias: str) -> None:  # type: ignore[no-untyped-def]
    run, scripts, fixed = runs[alias]
    sim = SimulatorBackend(verify.sim_release(run.kernel))
    predicted = sim.run(scripts, like=run.results)
    same = [compare.grouping(r) == compare.grouping(p)
            for r, p in zip(run.results, predicted) if r.layout() == p.layout()]
    # The scenarios and the fixed script: exactly.
    for i in range(fixed):
        r, p = run.results[i], predicted[i]
        assert r.layout() == p.layout(), (alias, i)
        assert compare.grouping(r) == compare.grouping(p), (
            alias, i, compare.fmt_grouping(compare.grouping(r)),
            compare.fmt_grouping(compare.grouping(p)))
    print(f"\n{alias} ({run.release}): anon_vma grouping agrees on {sum(same)} of "
          f"{len(same)} scripts with the same layout")
    assert sum(same) == len(same)


@pytest.mark.parametrize("alias", KERNELS)
def test_the_simulator_has_the_kernels_chains_offsets_and_counters(runs, alias: str) -> None:  # type: ignore[no-untyped-def]
    run, scripts, fixed = runs[alias]
    sim = SimulatorBackend(verify.sim_release(run.kernel))
    predicted = sim.run(scripts, like=run.results)
    same = [(i, compare.kernel_view_diff(r, p))
            for i, (r, p) in enumerate(zip(run.results, predicted))
            if r.layout() == p.layout()]
    assert all(p.snapshot.kview is not None for p in predicted)
    # the fork child's anon_vma: the fixed script's parent has a chain and counters to show
    kv = run.results[fixed - 1].snapshot.kview
    assert kv is not None and int(kv["children"].max()) >= 2
    # a fork of a fork: the grandchild keeps the exited child's anon_vma linked, which the
    # parent's num_children shows (5.10-6.1: the degree) and the model has too
    with_g, without_g = (run.results[fixed - k].snapshot.kview for k in (3, 2))
    assert with_g is not None and without_g is not None
    assert int(with_g["children"][0]) == int(without_g["children"][0]) + 1
    for k in (3, 2):
        assert compare.kernel_view_diff(run.results[fixed - k], predicted[fixed - k]) is None
    bad = [(i, d) for i, d in same if d is not None]
    print(f"\n{alias} ({run.release}): chains, offsets and anon_vma counters agree on "
          f"{len(same) - len(bad)} of {len(same)} scripts with the same layout")
    assert not bad, bad[:3]


# -- the blind spots of /proc, inside the microVMs ----------------------------------------

BLIND = {"moved": "anon_pgoff", "emptied": "anon_vma_emptied", "twice": "file_twice",
         "fork": "fork_child"}


@pytest.fixture(scope="module")
def blindspots_static(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from conftest import PROGRAMS, need

    out = tmp_path_factory.mktemp("bs") / "blindspots"
    subprocess.run([need("cc"), "-static", "-O1", "-Wall", "-Werror", "-o", str(out),
                    str(PROGRAMS / "blindspots.c")], check=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def probes(runs, blindspots_static):  # type: ignore[no-untyped-def]
    """The blind-spot program probed in each microVM, the boots side by side."""
    from concurrent.futures import ThreadPoolExecutor

    from vmascope.lab import microvm
    from vmascope.procfs import kview

    reader = kview.reader_path()
    aliases = [k for k in KERNELS if k != "host"]
    with ThreadPoolExecutor(len(aliases)) as pool:
        done = pool.map(lambda a: microvm.probe(runs[a][0].kernel.vmlinuz,
                                                blindspots_static, "/", kview=reader),
                        aliases)
        return dict(zip(aliases, done))


@pytest.mark.parametrize("alias", [k for k in KERNELS if k != "host"])
def test_every_blind_spot_gets_its_certain_reason_in_the_microvm(
        runs, probes, alias: str) -> None:  # type: ignore[no-untyped-def]
    """The crafted program of tests/programs/blindspots.c (one pair per blind spot of
    /proc) runs inside the microVM; each pair, read there with the kernel view, gets its
    certain reason from the explainer, with the epoch of that kernel."""
    import numpy as np

    from vmascope.kernel.epochs import epoch_for
    from vmascope.kernel.pairs import explain_pair

    run, _, _ = runs[alias]
    lines, snaps = probes[alias]
    pairs = {}
    for line in lines:
        if line.startswith("PAIR"):
            _, name, addr, pid = line.split()
            pairs[name] = (int(addr, 16), int(pid))
    assert set(pairs) == set(BLIND), lines
    epoch = epoch_for(run.release)
    for name, (addr, pid) in pairs.items():
        snap = snaps[pid]
        assert snap.kview is not None, (alias, name)
        (i,) = np.flatnonzero(snap.start == addr)
        reasons = explain_pair(snap.vma(i - 1), snap.vma(i), epoch)
        assert BLIND[name] in {str(r.code) for r in reasons}, (alias, name, reasons)
        assert all(r.confidence == "certain" for r in reasons), (alias, name, reasons)
