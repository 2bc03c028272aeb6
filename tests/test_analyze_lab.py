"""Explanations checked against the simulator and against real Debian kernels in a microVM.

Checked here: "a faulted VMA next to an unfaulted one", which kernels before 6.16 refuse
to merge (879bca0a2c4f) and the host's 6.18 merges, on a real Debian 6.12 kernel and on
the host; and every reason on simulated snapshots (the simulator uses the same rule
module). Anon names cannot be made on these machines' kernels (the host's and Debian's
cloud kernels answer PR_SET_VMA_ANON_NAME with EINVAL), so that reason is checked on the
simulator here and on text a kernel with names prints in test_analysis_dump.py.
"""

from __future__ import annotations

import shutil

import pytest

import vmascope
from vmascope.analysis import Analysis, analyze
from vmascope.model import Snapshot
from vmascope.ops.language import parse_script

P = 4096

# Two pages at 16p..18p inside a PROT_NONE fence (the lab's arena is fenced already; the
# fence mapping keeps the simulator's address space the same shape). MAP_NORESERVE keeps
# VM_ACCOUNT out of the picture. While the right page carries VM_DONTDUMP the two are not
# anon_vma_compatible, so a write fault gives each side its own anon_vma.
FENCE = "mmap 0 64p --- private,anonymous,noreserve,fixed\n"
PAIR = "mmap 16p 2p rw- private,anonymous,noreserve,fixed\n"
SCRIPTS = {
    # only the right page written, then the flags made equal again
    "unfaulted": PAIR + "madvise 17p 1p dontdump\ntouch 17p write\nmadvise 17p 1p dodump\n",
    # both written while the flags differed
    "faulted": PAIR + "madvise 17p 1p dontdump\ntouch 16p write\ntouch 17p write\n"
               "madvise 17p 1p dodump\n",
    # different anon names, nothing written
    "anon_name": PAIR + "name 16p 1p left\nname 17p 1p right\n",
    "dontdump": PAIR + "madvise 17p 1p dontdump\n",
}
BOUNDARY = 17 * P


def _reasons_at(a: Analysis, boundary: int) -> list[tuple[str, str]]:
    snap = a.snapshot
    for i in range(len(snap) - 1):
        if int(snap.end[i]) == boundary and int(snap.start[i + 1]) == boundary:
            return [(r.code, r.confidence) for r in a.why.reasons_after(i)]
    raise AssertionError(f"no pair at {boundary:#x}:\n{snap.maps_text()}")


def _count_in_pair(snap: Snapshot) -> int:
    return sum(1 for i in range(len(snap)) if 16 * P <= int(snap.start[i]) < 18 * P)


# -- simulated snapshots (the simulator shares kernel.rules with the explainer) -----------


def _simulate(name: str, kernel: str) -> Snapshot:
    from vmascope.kernel.epochs import epoch_for

    base = 0x1000_0000
    ops = parse_script(FENCE + SCRIPTS[name])
    shifted = "".join(f"{vmascope.ops.language.format_op(op.shifted(base))}\n" for op in ops)
    # A kernel built with CONFIG_ANON_VMA_NAME (the simulator's default follows Debian's
    # kernels, which are built without it).
    result = vmascope.simulate(shifted, kernel=epoch_for(kernel, anon_vma_name=True))
    assert not result.errors, result.errors
    return result.to_snapshot()


@pytest.mark.parametrize("kernel", ["6.1", "6.12"])
def test_simulated_unfaulted_before_616(kernel: str) -> None:
    snap = _simulate("unfaulted", kernel)
    base = 0x1000_0000
    a = analyze(snap)  # the simulated snapshot names its own kernel
    assert a.why.kernel_source == "snapshot"
    assert _reasons_at(a, base + BOUNDARY) == [("anon_vma_unfaulted", "certain")]


def test_simulated_unfaulted_merges_from_616() -> None:
    snap = _simulate("unfaulted", "6.18")
    base = 0x1000_0000
    assert [(int(s), int(e)) for s, e in zip(snap.start, snap.end)
            if base + 16 * P <= int(s) < base + 18 * P] == [(base + 16 * P, base + 18 * P)]


@pytest.mark.parametrize(("name", "code"), [("faulted", "anon_vma"),
                                            ("anon_name", "anon_name"),
                                            ("dontdump", "vmflags")])
def test_simulated_reasons(name: str, code: str) -> None:
    a = analyze(_simulate(name, "6.18"))
    assert _reasons_at(a, 0x1000_0000 + BOUNDARY) == [(code, "certain")]


# -- real Debian kernels in a microVM -----------------------------------------------------


@pytest.fixture(scope="module")
def kernel_612():  # type: ignore[no-untyped-def]
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    from vmascope.lab.kernels import resolve

    return resolve("6.12")


@pytest.mark.slow
@pytest.mark.kernel
def test_real_612_kernel_reasons(kernel_612) -> None:  # type: ignore[no-untyped-def]
    from vmascope.lab.runner import run_scripts

    names = ["unfaulted", "faulted", "dontdump"]
    run = run_scripts(kernel_612, [parse_script(SCRIPTS[n]) for n in names])
    assert run.release.startswith("6.12")
    got = {}
    for name, result in zip(names, run.results):
        assert not result.errors and not result.faults, (name, result.errors, result.faults)
        snap = result.snapshot
        # 6.12 keeps all three pairs apart.
        assert _count_in_pair(snap) == 2, (name, snap.maps_text())
        got[name] = _reasons_at(analyze(snap), BOUNDARY)
    # From smaps alone: one side with anonymous pages next to one without is the
    # pre-6.16 refusal; both sides with pages are distinct anon_vmas; dd is visible.
    assert got == {
        "unfaulted": [("anon_vma_unfaulted", "inferred")],
        "faulted": [("anon_vma", "inferred")],
        "dontdump": [("vmflags", "certain")],
    }


def test_real_host_kernel_merges_unfaulted_from_616() -> None:
    import re

    from vmascope.lab.kernels import host_kernel
    from vmascope.lab.runner import run_scripts

    kernel = host_kernel()
    m = re.match(r"(\d+)\.(\d+)", kernel.release)
    assert m
    (result,) = run_scripts(kernel, [parse_script(SCRIPTS["unfaulted"])]).results
    snap = result.snapshot
    if (int(m.group(1)), int(m.group(2))) >= (6, 16):
        assert _count_in_pair(snap) == 1, snap.maps_text()
    else:
        assert _reasons_at(analyze(snap), BOUNDARY) == [("anon_vma_unfaulted", "inferred")]


@pytest.mark.parametrize(("kernel", "vmas", "reasons", "unexplained"), [
    # DESIGN.md's table: the seed's program leaves 3 VMAs up to 6.15 and 2 from 6.16.
    # Up to 6.15: [0,4p) A | [4p,5p) B | [5p,6p) B. A|B hold distinct anon_vmas; the two
    # B pieces share one (page 4 reused page 5's at its fault) and were split while page 4
    # was unfaulted, so nothing refuses a merge now: no visible reason.
    ("6.12", 3, {("anon_vma", "certain"): 1}, 1),
    # From 6.16: [0,4p) A | [4p,6p) B.
    ("6.18", 2, {("anon_vma", "certain"): 1}, 0),
])
def test_simulated_seed_program(kernel: str, vmas: int, reasons: dict[tuple[str, str], int],
                                unexplained: int) -> None:
    from pathlib import Path

    script = (Path(__file__).parent / "scripts" / "seed.ops").read_text()
    snap = vmascope.simulate(script, kernel=kernel).to_snapshot()
    assert snap.map_count == vmas
    a = analyze(snap)
    assert {(r.reason, r.confidence): r.count for r in a.why.reasons} == reasons
    assert a.why.unexplained == unexplained
    assert a.attribution.largest is not None and a.attribution.largest.vma_count == vmas
