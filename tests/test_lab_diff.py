"""`vmascope lab diff-kernels`: differences between two real kernels, minimised and named
by the kernel change behind them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from vmascope.kernel.epochs import parse_release
from vmascope.lab import scenarios
from vmascope.lab.backends import SimulatorBackend
from vmascope.lab.diffkernels import explain
from vmascope.ops.language import parse_script


def test_the_seed_difference_is_the_616_anon_vma_rule_in_the_model() -> None:
    ops = scenarios.get("seed")
    a, = SimulatorBackend("6.12.117").run([ops])
    b, = SimulatorBackend("6.18.44").run([ops])
    e = explain(ops, a, b, "6.12.117", "6.18.44")
    assert e.verdict == "one switch" and e.switches == ["anon_rule"]
    assert e.citations[0].startswith("879bca0a2c4f (6.16)")


def test_a_difference_no_switch_makes_alone_is_not_pinned_on_one() -> None:
    # MREMAP_FIXED over two VMAs: EFAULT before 6.17, a move from 6.17 (mremap_multi_vma)
    ops = parse_script("mmap 0 4p rw- private,fixed\nmmap 4p 4p r-- private,fixed\n"
                       "mremap 0 8p 8p 100p maymove,fixed\n")
    a, = SimulatorBackend("6.12.117").run([ops])
    b, = SimulatorBackend("7.2.13").run([ops])
    e = explain(ops, a, b, "6.12.117", "7.2.13")
    assert e.switches == ["mremap_multi_vma"] and "d23cb648e365" in e.citations[0]
    # a "kernel B" outcome that the model cannot produce is said to be so
    fake, = SimulatorBackend("6.12.117").run([parse_script("mmap 0 1p rw- private,fixed\n")])
    assert explain(ops, a, fake, "6.12.117", "7.2.13").verdict == (
        "not reproduced by the model")


@pytest.mark.kernel
def test_diff_kernels_names_the_616_rule_from_the_seed_on_real_kernels() -> None:
    if not shutil.which("qemu-system-x86_64") or not shutil.which("apt-get"):
        pytest.skip("needs qemu-system-x86_64 and apt-get")
    if parse_release(os.uname().release)[:2] < (6, 16):
        pytest.skip("the host kernel has no 6.16 rule to compare with")
    out = subprocess.run([sys.executable, "-m", "vmascope", "lab", "diff-kernels",
                          "--kernel", "6.12,host", "seed", "--cases", "0", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["differing"] == 1
    (d,) = data["differences"]
    assert d["explained_by"] == ["anon_rule"] and "879bca0a2c4f" in d["citations"][0]
    # minimised: fewer ops than the seed's 10, and the last op is the commit that merges
    # on the host but not on 6.12
    assert len(d["script"]) < len(scenarios.get("seed"))
    assert d["script"][-1].startswith("mprotect")
    assert any(line.startswith("VMA count: 6.12 3, host 2") for line in d["differences"])
