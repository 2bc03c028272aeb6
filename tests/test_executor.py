"""The native executor on the host kernel: scenario results, errno, SIGSEGV, fork, heap.

Expected values are the kernel's documented behaviour (man pages, mm/ sources) or the
upstream selftests' own assertions, never this code's output.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import shutil
import subprocess

import pytest

from vmascope.lab import executor, scenarios
from vmascope.host import can_set_brk as host_can_set_brk
from vmascope.ops.language import parse_script
from vmascope.outcome import Outcome

P = 4096


def _host_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", platform.release())
    assert m
    return int(m.group(1)), int(m.group(2))


def run(text: str) -> Outcome:
    return executor.run_on_host([parse_script(text)])[0]


def spans(res: Outcome) -> list[tuple[int, int, str]]:
    return [(v.start // P, v.end // P, v.perms) for v in res.vmas]


@pytest.fixture(scope="module", autouse=True)
def _compiler() -> None:
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler (build-essential)")
    executor.executor_path()


def test_executor_is_cached_by_source_hash() -> None:
    first = executor.executor_path()
    assert first.exists() and os.access(first, os.X_OK)
    assert executor.executor_path() == first
    # static: it must run as /init of a microVM with no libraries at all
    out = subprocess.run(["file", str(first)], capture_output=True, text=True)
    if out.returncode == 0:
        assert "statically linked" in out.stdout or "static-pie" in out.stdout


def test_seed_counts_on_the_host() -> None:
    plain, hack = executor.run_on_host([scenarios.get("seed"), scenarios.get("seed-hack")])
    # 879bca0a2c4f (6.16) lets the unfaulted middle merge with a faulted prev; before it
    # the seed's three RW ranges stay separate (DESIGN.md's table: 6.1/6.12 3, 6.18 2).
    assert len(plain.vmas) == (2 if _host_version() >= (6, 16) else 3)
    assert len(hack.vmas) == 1
    assert [v.perms for v in plain.vmas] == ["rw-p"] * len(plain.vmas)
    assert plain.vmas[0].start == 0 and plain.vmas[-1].end == 6 * P
    assert not plain.errors and not plain.faults
    # pages 5, 0, 4 and 2 are written (page 0 twice in the hack): 4 anonymous pages
    assert sum(v.smaps["Anonymous"] for v in plain.vmas) == 4 * P
    assert sum(v.smaps["Anonymous"] for v in hack.vmas) == 4 * P


def test_merge_selftests_on_the_host() -> None:
    if _host_version() < (6, 16):
        pytest.skip("the selftests' expectations are for kernels with the 6.16 fix")
    names = list(scenarios.MERGE)
    results = executor.run_on_host([scenarios.get(n) for n in names])
    for name, res in zip(names, results):
        got = [(s, e) for s, e, perms in spans(res) if perms != "---p"]
        assert got == scenarios.MERGE_EXPECT_616[name], name
        assert not res.errors and not res.faults, name


def test_errno_of_failed_ops() -> None:
    res = run("""
munmap 1 1p
mprotect 0 1p rw-
mremap 0 1p 2p
madvise 0 1p dontneed
mmap 3 1p rw- private,fixed
mmap 0 1p rw- private,fixed
mmap 0 1p rw- private,fixed
madvise 0 1p dontneed
""")
    # munmap: EINVAL for an unaligned start; mprotect/madvise over a hole: ENOMEM;
    # mremap of an unmapped address: EFAULT; MAP_FIXED at an unaligned address: EINVAL.
    assert [(e.op, e.errno) for e in res.errors] == [
        (0, "EINVAL"), (1, "ENOMEM"), (2, "EFAULT"), (3, "ENOMEM"), (4, "EINVAL")]
    # MAP_FIXED over an existing mapping replaces it: still one VMA
    assert spans(res) == [(0, 1, "rw-p")]


def test_faults_are_recorded_and_the_script_goes_on() -> None:
    res = run("""
touch 3p
mmap 0 2p r-- private,fixed
touch 0 read
touch 1p write
mmap 4p 1p --- private,fixed
touch 4p read
mprotect 1p 1p rw-
touch 1p write
""")
    assert [(f.op, f.addr, f.signal) for f in res.faults] == [
        (0, 3 * P, "SIGSEGV"), (3, P, "SIGSEGV"), (5, 4 * P, "SIGSEGV")]
    assert not res.errors
    assert spans(res) == [(0, 1, "r--p"), (1, 2, "rw-p"), (4, 5, "---p")]
    data = res.to_json()
    assert data["faults"][0]["signal"] == "SIGSEGV" and data["faults"][0]["addr"] == hex(3 * P)


def _executor_children() -> set[int]:
    """Executor processes whose parent is this test process (orphans come here too,
    because the test makes itself a child subreaper)."""
    exe = str(executor.executor_path())
    me = os.getpid()
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                if ppid == me and os.readlink(f"/proc/{pid}/exe") == exe:
                    out.add(int(pid))
            except (OSError, ValueError, IndexError):
                pass
    return out


def test_fork_keeps_a_child_until_the_script_ends() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        res = run("""
mmap 0 4p rw-
touch 0
fork
mmap 4p 4p rw- private,fixed
touch 4p
fork
mprotect 2p 1p r--
""")
        # the forked children were killed and reaped with the script: none was left
        # orphaned (an orphan would have been re-parented to this process)
        assert _executor_children() == set()
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    assert not res.errors and not res.faults
    # the parent goes on after each fork; a new range next to a faulted VMA merges
    # with it in the parent (only the child's copy is refused, notes S7)
    assert spans(res) == [(0, 2, "rw-p"), (2, 3, "r--p"), (3, 8, "rw-p")]


def test_heap_sets_the_program_break_in_the_arena() -> None:
    res = run("heap 100p\nbrk 103p\ntouch 101p\n")
    if host_can_set_brk():
        assert not res.errors
        assert [(v.start // P, v.end // P, v.name) for v in res.vmas] == [(100, 103, "[heap]")]
    else:
        # prctl(PR_SET_MM) needs CAP_SYS_RESOURCE: EPERM (kernel/sys.c prctl_set_mm), then
        # brk() leaves the break where it was (reported as ENOMEM) and the touch faults
        assert [(e.op, e.errno) for e in res.errors] == [
            (0, "EPERM"), (1, "ENOMEM")]
        assert [(f.op, f.addr, f.signal) for f in res.faults] == [(2, 101 * P, "SIGSEGV")]


def test_arena_is_fenced_and_empty() -> None:
    res = run("mmap 0 1p --- private\nmmap 1p 1p --- shared\n"
              f"mmap {executor.ARENA_SIZE - P} 1p --- private\n")
    # nothing merged with the fences: the arena's first and last pages stay separate VMAs
    assert spans(res) == [(0, 1, "---p"), (1, 2, "---s"),
                          (executor.ARENA_SIZE // P - 1, executor.ARENA_SIZE // P, "---p")]
    # a non-fixed mmap at a free hint lands where written
    assert res.vmas[0].start == 0


def test_exhaust_reaches_the_limit_with_a_failed_mprotect() -> None:
    with open("/proc/sys/vm/max_map_count") as fh:
        limit = int(fh.read())
    if limit > 262144:
        # the default is 65530 (about 3 s); someone raised it for a benchmark
        pytest.skip(f"vm.max_map_count is {limit}: too far to reach in a quick test")
    ops = scenarios.exhaust(limit)
    res = executor.run_on_host([ops], timeout=600)[0]
    with open("/proc/sys/vm/max_map_count") as fh:
        if int(fh.read()) != limit:
            pytest.skip("vm.max_map_count was changed by someone else during the test")
    assert res.errors, "the workload never hit vm.max_map_count"
    first = res.errors[0]
    assert ops[first.op].kind == "mprotect" and first.errno == "ENOMEM"
    # split_vma refuses once map_count >= max (mm/vma.c), so the process ends at max
    assert res.process_map_count == limit


def test_bad_executor_input_is_one_line() -> None:
    proc = subprocess.run([str(executor.executor_path())], input="X 1\n", text=True,
                          capture_output=True, timeout=10)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "unknown record" in proc.stderr


def test_incomplete_executor_output_is_a_lab_error() -> None:
    from vmascope.errors import LabError

    good = "V 0 1000 rw-p 0 4 rd wr\t\nR 0 12\nZ 0\n"
    one, two = [parse_script("touch 0\n")], [parse_script("touch 0\n")] * 2
    (res,) = executor.parse_output(good, one, "host")
    assert res.process_map_count == 12 and res.vmas[0].end == P and res.vmas[0].name is None
    with pytest.raises(LabError, match="no result for script 1 of 2"):
        executor.parse_output(good, two, "6.1")
    with pytest.raises(LabError, match="unreadable executor output"):
        executor.parse_output("V zz\n", one, "6.1")


def test_ops_encode_as_the_kernel_numbers() -> None:
    ops = parse_script("mmap 1p 2p rw- shared,fixed\nmremap 0 1p 2p 5p maymove,fixed\n"
                       "madvise 0 1p dontdump\nmbind 0 1p bind:0-1\nname 0 1p a b\n")
    # MAP_SHARED|MAP_FIXED|MAP_ANONYMOUS = 0x31; MREMAP_MAYMOVE|MREMAP_FIXED = 3;
    # MADV_DONTDUMP = 16; MPOL_BIND = 2 with nodes 0 and 1 = mask 3
    assert [executor.encode_op(o) for o in ops] == [
        f"M {P} {2 * P} 3 49", f"R 0 {P} {2 * P} {5 * P} 3 1", f"D 0 {P} 16",
        f"B 0 {P} 2 3", f"N 0 {P} a b"]


def test_a_failing_compiler_is_one_lab_error(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from vmascope.errors import LabError

    monkeypatch.setenv("VMASCOPE_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "/bin/false")
    with pytest.raises(LabError, match="compiling executor.c with /bin/false -static failed"):
        executor.executor_path()
    # nothing half-built is left in the cache
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_new_ops_encode_as_executor_records() -> None:
    ops = parse_script("memfd dm 6p\nmmap 1p 2p r-x shared,fixed fd=dm off=2p\nfork\nexit 0\n"
                       "mseal 0 1p\npkey_alloc\npkey_mprotect 0 1p r-- -1\n"
                       "madvise 0 1p collapse\nfork\nfork 1\nuffd 0 2p missing,wp\n"
                       "uffd 0 2p off\n")
    lines = executor.encode_input([ops]).splitlines()[2:-1]
    # MAP_SHARED|MAP_FIXED = 0x11, the first memfd of the script is number 1;
    # MADV_COLLAPSE = 25
    # fork: F 0 is the script's process, F K+1 its fork child K; uffd: MISSING 1, WP 2
    assert lines[-4:] == ["F 0", "F 2", f"u 0 {2 * P} 3", f"u 0 {2 * P} 0"]
    lines = lines[:-4]
    assert lines == [f"O {6 * P} dm", f"M {P} {2 * P} 5 17 1 {2 * P}", "F 0", "e 0",
                     f"I 0 {P}", "a", f"p 0 {P} 1 -1", f"D 0 {P} 25"]


def test_exit_reaps_a_child_once_and_an_unknown_child_is_esrch() -> None:
    from vmascope.ops.language import Op

    ops = parse_script("mmap 0 4p rw-\ntouch 0\nfork\nfork\nexit 1\n")
    (res,) = executor.run_on_host([ops + [Op("exit", index=1), Op("exit", index=5)]],
                                  timeout=60)
    assert res.crash is None
    # the same child twice, and a child never forked: the executor says ESRCH
    assert [(e.op, e.errno) for e in res.errors] == [(5, "ESRCH"), (6, "ESRCH")]
    assert _executor_children() == set()
