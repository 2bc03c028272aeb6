"""The op scripts under tests/scripts/ on the running kernel, against the simulator.

Each script runs through the lab's native executor (a fresh child process per script, in
an arena of its own) and the simulator is asked for the same release (its build options
read from /proc/config.gz). Every difference (VMAs with their flags, errors, faults) is a
failure. Scripts that need a lower vm.max_map_count (never lowered on the host), that
place mappings where the kernel chooses, or that use ``heap`` without CAP_SYS_RESOURCE
are left out; the microVM kernels are covered by ``vmascope lab verify``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vmascope import host
from vmascope.ops.language import load_script
from vmascope.outcome import Outcome

SCRIPTS = Path(__file__).parent / "scripts"


def _runnable() -> list[Path]:
    from vmascope.host import can_set_brk as host_can_set_brk

    out = []
    for p in sorted(SCRIPTS.glob("*.ops")):
        text = p.read_text()
        if "#! max_map_count" in text or p.name.startswith("e07"):
            continue
        if "\nheap " in text and not host_can_set_brk():
            continue
        out.append(p)
    return out


@pytest.fixture(scope="module")
def host_results() -> dict[str, tuple[Outcome, Outcome]]:
    if not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler for the lab executor")
    from vmascope.lab import executor
    from vmascope.lab.backends import SimulatorBackend

    paths = _runnable()
    scripts = [load_script(p.read_text(), p.name) for p in paths]
    real = executor.run_on_host(scripts, timeout=120)
    sim = SimulatorBackend(host.release()).run(scripts, like=real)
    return {p.name: (r, s) for p, r, s in zip(paths, real, sim)}


def test_enough_scripts_run_on_the_host() -> None:
    assert len(_runnable()) >= 40


@pytest.mark.kernel
@pytest.mark.parametrize("name", [p.name for p in _runnable()])
def test_script_on_running_kernel(name: str,
                                  host_results: dict[str, tuple[Outcome, Outcome]]) -> None:
    from vmascope.lab import compare

    real, sim = host_results[name]
    assert real.crash is None, f"the script's process died: {real.crash}"
    assert compare.differences(real, sim) == []
