"""The parser against the live kernel: a child makes known mappings, stops itself, and
the parse must find them exactly; the count must equal ``wc -l /proc/PID/maps``."""

from __future__ import annotations

import contextlib
import io

import json
import os
import select
import subprocess
import sys

import numpy as np
import pytest
from conftest import python_child

from vmascope.errors import AccessDenied, ProcessNotFound, UsageError
from vmascope.procfs.live import read_process
from vmascope.procfs.parse import parse_text, unescape_name

PAGE = os.sysconf("SC_PAGE_SIZE")

# The child: each test region sits between PROT_NONE guard pages so that it cannot
# merge with a neighbour; it prints the addresses and stops itself (SIGSTOP), so the
# address space stays still while it is read.
CHILD = r"""
import ctypes, json, os, signal, sys
signal.alarm(60)  # bounded even if the parent dies
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                       ctypes.c_char_p]
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
libc.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
P = os.sysconf("SC_PAGE_SIZE")
NONE, R, RW = 0, 1, 3
PRIV, SHARED, ANON, FIXED = 0x02, 0x01, 0x20, 0x10

def check(ok, what):
    if not ok:
        raise OSError(ctypes.get_errno(), what)

def region(pages, prot, flags, fd=-1, off=0):
    guard = libc.mmap(None, (pages + 2) * P, NONE, PRIV | ANON, -1, 0)
    check(guard not in (None, 2**64 - 1), "mmap guard")
    a = libc.mmap(guard + P, pages * P, prot, flags | FIXED, fd, off)
    check(a == guard + P, "mmap")
    return a

out = {"page": P}
a = region(3, RW, PRIV | ANON)
ctypes.memset(a, 1, P)                       # one resident page
check(libc.mprotect(a + P, P, NONE) == 0, "mprotect")
out["split"] = a
b = region(2, RW, PRIV | ANON)
PR_SET_VMA, PR_SET_VMA_ANON_NAME = 0x53564D41, 0
# EINVAL when the kernel is built without CONFIG_ANON_VMA_NAME (5.17+)
out["named_ok"] = libc.prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, b, 2 * P, b"vmascope test") == 0
out["named"] = b
c = region(1, RW, PRIV | ANON)
check(libc.madvise(c, P, 16) == 0, "madvise")  # MADV_DONTDUMP
out["dontdump"] = c
out["shared_anon"] = region(1, RW, SHARED | ANON)
e = region(1, RW, SHARED | ANON)
out["shmem_named_ok"] = libc.prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, e, P, b"ring") == 0
out["shmem_named"] = e
fd = os.memfd_create("vmascope-x")
os.ftruncate(fd, P)
out["memfd"] = region(1, RW, SHARED, fd)
out["memfd_ino"] = os.fstat(fd).st_ino
out["memfd_dev"] = os.fstat(fd).st_dev
d = sys.argv[1]
odd = os.path.join(d, "odd name\nx")
with open(odd, "wb") as fh:
    fh.write(b"x" * 2 * P)
fd2 = os.open(odd, os.O_RDONLY)
out["odd"] = region(1, R, PRIV, fd2, P)
out["odd_ino"] = os.fstat(fd2).st_ino
out["odd_dev"] = os.fstat(fd2).st_dev
gone = os.path.join(d, "gone")
with open(gone, "wb") as fh:
    fh.write(b"y" * P)
fd3 = os.open(gone, os.O_RDONLY)
out["gone"] = region(1, R, PRIV, fd3)
os.unlink(gone)
shmid = libc.shmget(0, P, 0o1000 | 0o600)    # IPC_PRIVATE, IPC_CREAT
check(shmid >= 0, "shmget")
s = libc.shmat(shmid, None, 0)
check(s not in (None, 2**64 - 1), "shmat")
libc.shmctl(shmid, 0, None)                  # IPC_RMID: gone when detached
out["sysv"] = s
m = region(1, RW, PRIV | ANON)
out["mbind_ok"] = False
if os.uname().machine == "x86_64":  # mbind is syscall 237 there
    mask = ctypes.c_ulong(1)          # node 0
    libc.syscall.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int,
                             ctypes.c_void_p, ctypes.c_ulong, ctypes.c_uint]
    out["mbind_ok"] = libc.syscall(237, m, P, 2, ctypes.byref(mask), 64, 0) == 0  # MPOL_BIND
out["mbind"] = m
print(json.dumps(out), flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
"""


@pytest.fixture
def stopped_child(tmp_path):
    with python_child(CHILD, str(tmp_path)) as (pid, line):
        yield pid, json.loads(line)


def kernel_at_least(major: int, minor: int) -> bool:
    rel = os.uname().release.split("-")[0].split(".")
    return (int(rel[0]), int(rel[1])) >= (major, minor)


def anon_names_configured() -> bool | None:
    """CONFIG_ANON_VMA_NAME from /proc/config.gz (None when the config is not exposed)."""
    import gzip

    try:
        with gzip.open("/proc/config.gz", "rt") as fh:
            return any(line.strip() == "CONFIG_ANON_VMA_NAME=y" for line in fh)
    except OSError:
        return None


def containing(snap, addr):
    i = int(np.searchsorted(snap.start, addr, side="right")) - 1
    v = snap.vma(i)
    assert v.start <= addr < v.end, hex(addr)
    return v


def find(snap, start):
    idx = np.nonzero(snap.start == start)[0]
    assert len(idx) == 1, hex(start)
    return snap.vma(int(idx[0]))


def test_live_parse_finds_the_mappings_exactly(stopped_child, tmp_path):
    pid, info = stopped_child
    snap = read_process(pid)
    P = info["page"]
    assert snap.meta.pid == pid and snap.meta.comm == "python3" or snap.meta.comm
    assert snap.meta.kernel_release == os.uname().release
    assert snap.meta.page_size == P and snap.meta.max_map_count
    assert snap.meta.status["Pid"] == str(pid)
    assert snap.meta.smaps_rollup["Rss"] > 0

    # mprotect of the middle page splits one VMA into three
    a = info["split"]
    v1, v2, v3 = find(snap, a), find(snap, a + P), find(snap, a + 2 * P)
    assert (v1.end, v1.perms, v1.name) == (a + P, "rw-p", None)
    assert (v2.end, v2.perms, v2.name) == (a + 2 * P, "---p", None)
    assert (v3.end, v3.perms, v3.name) == (a + 3 * P, "rw-p", None)
    # smaps: Size is the VMA size; the page written is resident and anonymous
    assert v1.smaps["Size"] == P and v1.smaps["Rss"] == P and v1.smaps["Anonymous"] == P
    assert v2.smaps["Rss"] == 0
    assert {"rd", "wr", "mr", "mw"} <= v1.flags and "rd" not in v2.flags
    # the guard page below the region is PROT_NONE (it may have merged with the guard of
    # the region mapped just below) and ends where the region starts
    below = containing(snap, a - P)
    assert below.perms == "---p" and below.end == a

    named = find(snap, info["named"])
    # Without CONFIG_ANON_VMA_NAME the prctl fails and the VMA stays unnamed.
    configured = anon_names_configured()
    if configured is not None:
        assert info["named_ok"] == configured
    assert (named.end - named.start, named.name) == (
        2 * P, "[anon:vmascope test]" if info["named_ok"] else None)

    dd = find(snap, info["dontdump"])
    assert "dd" in dd.flags and "dd" not in v1.flags

    shared = find(snap, info["shared_anon"])
    assert shared.perms == "rw-s" and shared.name == "/dev/zero (deleted)"
    assert {"sh", "ms"} <= shared.flags

    shmem = find(snap, info["shmem_named"])
    if kernel_at_least(6, 2) and info["named_ok"]:  # [anon_shmem:NAME]: d09e8ca6cb93, v6.2
        assert info["shmem_named_ok"] and shmem.name == "[anon_shmem:ring]"
    elif not info["shmem_named_ok"]:
        assert shmem.name == "/dev/zero (deleted)"

    memfd = find(snap, info["memfd"])
    assert memfd.perms == "rw-s" and memfd.name == "/memfd:vmascope-x (deleted)"
    assert memfd.inode == info["memfd_ino"]
    assert memfd.dev == os.major(info["memfd_dev"]) << 20 | os.minor(info["memfd_dev"])

    odd = find(snap, info["odd"])
    # the kernel escapes the newline in the path as \012 (seq_file_path(m, file, "\n"))
    assert odd.name == str(tmp_path / "odd name") + "\\012x"
    assert unescape_name(odd.name) == str(tmp_path / "odd name\nx")
    assert (odd.perms, odd.offset, odd.inode) == ("r--p", P, info["odd_ino"])
    assert odd.dev == os.major(info["odd_dev"]) << 20 | os.minor(info["odd_dev"])

    assert find(snap, info["gone"]).name == str(tmp_path / "gone") + " (deleted)"
    sysv = find(snap, info["sysv"])
    assert sysv.name == "/SYSV00000000 (deleted)" and sysv.perms == "rw-s"

    assert snap.name(len(snap) - 1) in ("[vsyscall]", "[vdso]", "[stack]", "[vvar]")
    if os.path.exists("/proc/self/numa_maps"):  # CONFIG_NUMA
        assert v1.policy == "default"
        # mm/mempolicy.c mpol_to_str(): mode name, ':' and the node list
        if os.uname().machine == "x86_64":
            assert info["mbind_ok"]
            assert find(snap, info["mbind"]).policy == "bind:0"


def test_count_equals_wc_l_and_text_round_trips(stopped_child):
    pid, _ = stopped_child
    wc = subprocess.run(["wc", "-l", f"/proc/{pid}/maps"], capture_output=True, text=True,
                        check=True, timeout=30)
    expected = int(wc.stdout.split()[0])
    assert len(read_process(pid)) == expected
    assert len(read_process(pid, smaps=False, numa=False)) == expected
    with open(f"/proc/{pid}/maps", "rb") as fh:
        raw = fh.read()
    snap = parse_text(raw)
    assert len(snap) == expected
    # printing the columns back in the kernel's format gives the kernel's text
    assert snap.maps_text() == os.fsdecode(raw)


def test_smaps_and_maps_agree(stopped_child):
    pid, _ = stopped_child
    a = read_process(pid, smaps=True, numa=False)
    b = read_process(pid, smaps=False, numa=False)
    for col in ("start", "end", "perms", "offset", "dev", "inode"):
        assert np.array_equal(getattr(a, col), getattr(b, col)), col
    assert [a.name(i) for i in range(len(a))] == [b.name(i) for i in range(len(b))]
    assert np.array_equal(a.smaps["Size"], (a.end - a.start).astype(np.int64))
    assert a.vmflags is not None and b.vmflags is None


def test_missing_pid_and_bad_pid():
    with open("/proc/sys/kernel/pid_max") as fh:
        beyond = int(fh.read()) + 1
    with pytest.raises(ProcessNotFound) as info:
        read_process(beyond)
    assert info.value.exit_code == 3 and str(beyond) in str(info.value)
    for bad in ("abc", "-5", "0", "1.5", True):
        with pytest.raises(UsageError):
            read_process(bad)


def test_zombie_is_reported_as_exited():
    # A process that has exited but is not reaped has no mm: the kernel prints empty
    # maps instead of failing, so the reader must notice that it is gone.
    proc = subprocess.Popen(["true"])
    try:
        for _ in range(200):
            with open(f"/proc/{proc.pid}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            select.select([], [], [], 0.01)
        with pytest.raises(ProcessNotFound, match="exited"):
            read_process(proc.pid)
    finally:
        proc.wait(timeout=10)


def _run_as_nobody(fn) -> tuple[int, str]:
    """Run fn() in a forked child that dropped to uid/gid 65534; (exit code, stderr)."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - in the child
        try:
            os.close(r)
            os.dup2(w, 2)
            sys.stderr = open(2, "w", closefd=False)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            code = fn()
            sys.stderr.flush()
        except BaseException:
            code = 99
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        err = fh.read().decode()
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status), err


def test_permission_denied_names_root_or_ptrace():
    from vmascope.cli import main

    if os.geteuid() == 0:
        target = os.getpid()  # a root process, read by uid 65534
        # the command's modules are imported first: uid 65534 may not read the Python
        # installation (a per-user one under /root)
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["snapshot", str(target)]) == 0
        code, err = _run_as_nobody(lambda: main(["snapshot", str(target)]))
        assert code == 4, err
        assert f"pid {target}: permission denied" in err and "root" in err
        assert "ptrace" in err and "Traceback" not in err
    else:
        # As a normal user, a root process (pid 1) is out of reach.
        with pytest.raises(AccessDenied) as info:
            read_process(1)
        assert info.value.exit_code == 4 and "root" in str(info.value)
