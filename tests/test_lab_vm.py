"""Debian kernels booted in qemu: the seed's counts, the selftests, exhaust, agreement.

Each kernel boots twice for the whole module (scenarios plus a random sample in one
boot, the exhaust workload at vm.max_map_count=600 in another), all kernels in parallel.
The expected counts are DESIGN.md's measurements on these kernels.
"""

from __future__ import annotations

import shutil

import pytest

from vmascope.kernel.epochs import parse_release
from vmascope.lab import kernels, runner, scenarios, verify
from vmascope.lab.runner import KernelRun

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

P = 4096
NAMES = ["seed", "seed-hack", *scenarios.MERGE, "heap"]
HEAP = "heap 100p\nbrk 103p\ntouch 101p\n"
SAMPLE = 150  # random scripts per kernel for the agreement check
SEED_COUNTS = {"5.10": (3, 1), "6.1": (3, 1), "6.12": (3, 1), "stable": (2, 1),
               "newest": (2, 1), "next": (2, 1)}  # DESIGN.md, and 5.10.223, 7.3.4, 7.3-rc7


@pytest.fixture(scope="module")
def booted() -> dict[str, tuple[KernelRun, KernelRun]]:
    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("needs qemu-system-x86_64 (Debian package qemu-system-x86)")
    if not shutil.which("apt-get"):
        pytest.skip("needs apt-get to fetch the Debian kernels")
    ks = [kernels.resolve(alias) for alias in SEED_COUNTS]
    from vmascope.ops.language import parse_script

    scripts = [scenarios.get(n) for n in NAMES[:-1]] + [parse_script(HEAP)]
    scripts += verify.random_scripts(SAMPLE, seed=7)
    main = runner.run_many(ks, scripts)
    low = runner.run_many(ks, [scenarios.exhaust(600)], max_map_count=600)
    return {k.name: (m, x) for k, m, x in zip(ks, main, low)}


def _result(run: KernelRun, name: str):  # type: ignore[no-untyped-def]
    return run.results[NAMES.index(name)]


@pytest.mark.parametrize("alias", list(SEED_COUNTS))
def test_seed_counts(booted, alias: str) -> None:  # type: ignore[no-untyped-def]
    run = booted[alias][0]
    plain, hack = _result(run, "seed"), _result(run, "seed-hack")
    assert (len(plain.vmas), len(hack.vmas)) == SEED_COUNTS[alias]
    assert not plain.errors and not hack.errors
    assert run.release == run.kernel.release  # the VM ran the kernel we asked for


@pytest.mark.parametrize("alias", list(SEED_COUNTS))
def test_merge_selftests(booted, alias: str) -> None:  # type: ignore[no-untyped-def]
    run = booted[alias][0]
    fixed = parse_release(run.kernel.version)[:2] >= (6, 16)
    for name in scenarios.MERGE:
        res = _result(run, name)
        assert not res.errors and not res.faults, name
        got = [(v.start // P, v.end // P) for v in res.vmas if v.perms != "---p"]
        if fixed:
            assert got == scenarios.MERGE_EXPECT_616[name], name
        elif name.startswith("merge-mprotect-"):
            # before 879bca0a2c4f (6.16) a faulted VMA never merges into an unfaulted
            # neighbour, so the range the selftest expects as one VMA stays split
            assert len(got) > len(scenarios.MERGE_EXPECT_616[name]), name


@pytest.mark.parametrize("alias", list(SEED_COUNTS))
def test_heap_in_the_microvm(booted, alias: str) -> None:  # type: ignore[no-untyped-def]
    res = _result(booted[alias][0], "heap")
    # /init has CAP_SYS_RESOURCE, so PR_SET_MM works and brk grows [heap] in the arena
    assert not res.errors and not res.faults
    assert [(v.start // P, v.end // P, v.name) for v in res.vmas] == [(100, 103, "[heap]")]


def test_exhaust_hits_the_limit_earlier_on_older_kernels(booted) -> None:  # type: ignore[no-untyped-def]
    ops = scenarios.exhaust(600)
    first = {}
    for alias, (_, low) in booted.items():
        res = low.results[0]
        assert res.errors, alias
        i, err = res.errors[0].op, res.errors[0].errno
        assert ops[i].kind == "mprotect" and err == "ENOMEM", alias
        assert res.process_map_count == 600, alias  # split_vma: map_count >= max fails
        first[alias] = i
    # 3 VMAs a seed block before 6.16, 2 after: the newest kernel goes further
    assert first["6.1"] == first["6.12"] < first["newest"]
    assert first["5.10"] < first["stable"] and first["next"] > first["6.12"]


@pytest.mark.parametrize("alias", list(SEED_COUNTS))
def test_simulator_agrees_on_scenarios(booted, alias: str) -> None:  # type: ignore[no-untyped-def]
    run = booted[alias][0]
    checker = verify.Checker(run.kernel)
    for name in NAMES[:-1]:
        d = checker.judge(scenarios.get(name), _result(run, name))
        assert d is None, (name, d.differences)


@pytest.mark.parametrize("alias", list(SEED_COUNTS))
def test_simulator_agrees_on_a_random_sample(booted, alias: str) -> None:  # type: ignore[no-untyped-def]
    run = booted[alias][0]
    checker = verify.Checker(run.kernel)
    scripts = verify.random_scripts(SAMPLE, seed=7)
    bad = []
    for ops, res in zip(scripts, run.results[len(NAMES):]):
        d = checker.judge(ops, res)
        if d is not None:
            bad.append((verify.script_lines(ops), d.differences))
    assert not bad, f"{len(bad)} of {SAMPLE} disagree; first: {bad[0]}"


def test_kvm_probe_is_remembered(booted, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import json
    import os

    from vmascope.lab import microvm

    monkeypatch.setenv("VMASCOPE_KVM", "0")
    assert microvm.kvm_usable() is False
    monkeypatch.delenv("VMASCOPE_KVM")
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        # the boots above probed KVM once and wrote down the answer
        state = json.loads(microvm._kvm_state_file().read_text())
        assert isinstance(state["ok"], bool)
        assert microvm.kvm_usable() is state["ok"]
    else:
        assert microvm.kvm_usable() is False
