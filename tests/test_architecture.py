"""The architecture holds: pure kernel model and analysis, layering, module sizes, the
CLI registry, and the simulator starting from a Snapshot (MM.from_snapshot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import python_child

from vmascope.kernel.epochs import epoch_for
from vmascope.kernel.sim import MM, run_ops, simulate, snapshot_of
from vmascope.model import SnapshotMeta
from vmascope.ops.language import parse_script

SRC = Path(__file__).parent.parent / "src" / "vmascope"

# What each layer may import from vmascope (besides itself): the model and the kernel
# model below everything; analysis on top of the kernel; lab and procfs beside them.
PURE = {"kernel", "analysis", "workloads"}
FORBIDDEN_FOR_PURE = {"host", "procfs", "lab", "cli", "report", "util"}


def _gen():  # type: ignore[no-untyped-def]
    """docs/gen_architecture.py, which reads the imports (and draws the picture)."""
    docs = str(Path(__file__).parent.parent / "docs")
    sys.path.insert(0, docs)
    try:
        import gen_architecture
    finally:
        sys.path.remove(docs)
    return gen_architecture


def test_kernel_and_analysis_import_no_host_layer() -> None:
    bad = []
    for pkg in PURE:
        for path in (SRC / pkg).rglob("*.py"):
            hit = _gen().imports_in(path) & FORBIDDEN_FOR_PURE
            if hit:
                bad.append(f"{path.relative_to(SRC)} imports {sorted(hit)}")
    assert not bad, "\n".join(bad)


def test_importing_and_using_the_model_reads_nothing_under_proc(tmp_path: Path) -> None:
    # A fake proc root that holds nothing: if anything asked the host, it would read here
    # (or under the real /proc); the audit hook sees every open.
    fake = tmp_path / "proc"
    fake.mkdir()
    code = f"""
import sys, json
import numpy, rich  # third-party libraries may look at the machine; ours may not
seen = []
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)):
        p = args[0].decode() if isinstance(args[0], bytes) else args[0]
        if p.startswith(("/proc", "/sys", {str(fake)!r})):
            seen.append(p)
sys.addaudithook(hook)
import vmascope.analysis, vmascope.kernel, vmascope.kernel.sim
from vmascope.analysis import analyze
from vmascope.kernel.sim import simulate
from vmascope.procfs.parse import parse_text
out = simulate("mmap 0x100000 3p rw- private,fixed\\ntouch 0x100000\\n"
               "mprotect 0x101000 1p r--\\n", "6.12")
a = analyze(out.snapshot)
dump = parse_text(b"00400000-00401000 rw-p 00000000 00:00 0\\n"
                  b"00401000-00402000 rw-p 00000000 00:00 0\\n", "<dump>")
analyze(dump, kernel="6.1")
print(json.dumps(seen))
"""
    env = {**os.environ, "VMASCOPE_PROC_ROOT": str(fake), "VMASCOPE_SYS_ROOT": str(fake)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_no_module_is_over_500_lines() -> None:
    long = [f"{p.relative_to(SRC)}: {n}" for p in SRC.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500]
    assert not long, long


def test_every_syscall_handler_is_named_after_its_kernel_function() -> None:
    from vmascope.kernel.sim import SYSCALLS

    where = {kind: f"{fn.__module__.rsplit('.', 1)[1]}.{fn.__name__}"
             for kind, fn in SYSCALLS.items()}
    assert where == {
        "mmap": "mmap.do_mmap", "munmap": "mmap.vm_munmap",
        "mprotect": "mprotect.do_mprotect_pkey", "madvise": "madvise.do_madvise",
        "mremap": "mremap.do_mremap", "fork": "fork.dup_mmap",
        "name": "madvise.madvise_set_anon_name", "mbind": "mempolicy.do_mbind",
        "heap": "mmap.prctl_set_mm_brk", "brk": "mmap.sys_brk", "mlock": "mlock.do_mlock",
        "munlock": "mlock.sys_munlock", "mlockall": "mlock.sys_mlockall",
        "uffd": "userfaultfd.userfaultfd_ioctl",
        "munlockall": "mlock.sys_munlockall", "mseal": "mseal.do_mseal",
        "exit": "fork.mmput", "memfd": "memfd.sys_memfd_create",
        "pkey_alloc": "mprotect.sys_pkey_alloc",
        "pkey_mprotect": "mprotect.do_mprotect_pkey"}


def test_cli_lists_exactly_the_registered_commands() -> None:
    import argparse

    from vmascope.cli import COMMANDS, build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    # an alias (analyse) is the same parser as its verb, under another name
    verbs = [name for name, p in sub.choices.items()
             if next(n for n, q in sub.choices.items() if q is p) == name]
    assert verbs == [verb for verb, _ in COMMANDS]
    assert sub.choices["analyse"] is sub.choices["analyze"]
    proc = subprocess.run([sys.executable, "-m", "vmascope", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    for verb, _ in COMMANDS:
        assert f"\n    {verb} " in proc.stdout, verb
    for _, module in COMMANDS:
        assert (SRC / "cli" / f"{module}.py").exists()


# -- MM.from_snapshot -------------------------------------------------------------------

SCRIPT = """\
mmap 0x100000 8p --- private,fixed,noreserve
mprotect 0x100000 2p rw-
touch 0x100000
mprotect 0x104000 2p rw-
touch 0x105000
mmap 0x200000 2p rw- shared,fixed
mbind 0x200000 1p bind:0
"""

MORE = """\
mprotect 0x102000 2p rw-
touch 0x103000
mprotect 0x106000 1p rw-
munmap 0x201000 1p
"""


@pytest.mark.parametrize("release", ["6.1", "6.12", "6.18"])
def test_from_a_simulated_snapshot_the_model_goes_on_as_if_never_stopped(release: str) -> None:
    epoch = epoch_for(release)
    whole = simulate(SCRIPT + MORE, epoch)
    first = simulate(SCRIPT, epoch)
    mm = MM.from_snapshot(first.snapshot, epoch)
    assert mm.inferred_anon_vmas == 0  # the simulated snapshot knows its anon_vmas
    again = snapshot_of(mm, SnapshotMeta())
    assert again.maps_text() == first.snapshot.maps_text()
    assert list(again.anon_vma) == list(first.snapshot.anon_vma)
    errors, faults = run_ops(mm, parse_script(MORE))
    assert not errors and not faults
    resumed = snapshot_of(mm, SnapshotMeta())
    assert resumed.maps_text() == whole.snapshot.maps_text()
    # same grouping of VMAs by anon_vma (the numbers themselves may differ)
    def groups(col) -> list[int]:  # type: ignore[no-untyped-def]
        first_seen: dict[int, int] = {}
        return [-1 if a < 0 else first_seen.setdefault(int(a), len(first_seen)) for a in col]
    assert groups(resumed.anon_vma) == groups(whole.snapshot.anon_vma)


def test_from_a_live_process_snapshot() -> None:
    # A child reserves 6 pages, commits pages 0-1 and 4-5 and writes one page of each:
    # two faulted rw pieces around an unfaulted PROT_NONE middle.
    code = r"""
import ctypes, mmap, os, signal, sys
signal.alarm(60)
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
P = mmap.PAGESIZE
g = libc.mmap(None, 8 * P, 0, 0x22, -1, 0)
a = g + P
for off in (0, 4):
    libc.mprotect(a + off * P, 2 * P, 3)
    ctypes.c_char.from_address(a + off * P).value = b"x"
print(a, flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
"""
    from vmascope.procfs.live import read_process

    with python_child(code) as (pid, line):
        base = int(line)
        snap = read_process(pid)
    mm = MM.from_snapshot(snap, epoch_for("6.12"))
    assert mm.map_count == len(snap)
    assert [(v.start, v.end) for v in mm] == list(zip(map(int, snap.start), map(int, snap.end)))
    ours = [v for v in mm if base <= v.start < base + 6 * 4096]
    assert [((v.start - base) // 4096, (v.end - base) // 4096) for v in ours] == [
        (0, 2), (2, 4), (4, 6)]
    # the written pieces get an anon_vma each (inferred from smaps), the middle none
    assert [v.anon_vma is not None for v in ours] == [True, False, True]
    assert ours[0].anon_vma is not ours[2].anon_vma
    assert mm.inferred_anon_vmas >= 2
    # and the model goes on from there: committing the middle on 6.12 (legacy rule)
    # merges it with the left piece only; the right one keeps its own anon_vma
    errors, _ = run_ops(mm, parse_script(f"mprotect {base + 2 * 4096:#x} 2p rw-\n"))
    assert not errors
    ours = [v for v in mm if base <= v.start < base + 6 * 4096]
    assert [((v.start - base) // 4096, (v.end - base) // 4096) for v in ours] == [
        (0, 4), (4, 6)]


def test_the_architecture_picture_is_current_and_the_layers_have_no_circles() -> None:
    docs = Path(__file__).parent.parent / "docs"
    proc = subprocess.run([sys.executable, str(docs / "gen_architecture.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, "run python docs/gen_architecture.py"
    g = _gen()
    names = g.units()
    graph = {u: g.imports_of(u, set(names)) for u in names}

    def reaches(a: str, b: str) -> bool:
        todo, seen = list(graph[a]), set()
        while todo:
            w = todo.pop()
            if w == b:
                return True
            if w not in seen:
                seen.add(w)
                todo.extend(graph[w])
        return False

    circles = [(u, v) for u in names for v in graph[u] if reaches(v, u)]
    assert not circles, circles
