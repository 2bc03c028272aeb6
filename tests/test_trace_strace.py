"""The strace side of recording: strace logs of every form into Events, the inferred
faults, a command started stopped after its exec, and strace run on it for real.

The numbers the parsed Events must hold are written here from the uapi headers, not
taken from the parser's table.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import PROGRAMS, need

from vmascope.errors import ParseError
from vmascope.model import Snapshot, Vma
from vmascope.trace.events import Event, FileRef
from vmascope.trace.faults import infer_faults
from vmascope.trace.strace import ParseStats, parse_strace

# include/uapi/asm-generic/mman-common.h, include/uapi/linux/mman.h
PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_GROWSDOWN, MAP_DENYWRITE, MAP_NORESERVE, MAP_POPULATE = 0x100, 0x800, 0x4000, 0x8000
MAP_STACK, MAP_HUGETLB, MAP_FIXED_NOREPLACE = 0x20000, 0x40000, 0x100000
MAP_HUGE_SHIFT = 26
MADV_DONTNEED, MADV_HUGEPAGE = 4, 14
MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP = 1, 2, 4
MLOCK_ONFAULT = 1
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
PKEY_DISABLE_WRITE = 2
# include/uapi/linux/prctl.h
PR_SET_VMA, PR_SET_VMA_ANON_NAME = 0x53564D41, 0
# include/uapi/linux/mempolicy.h
MPOL_DEFAULT, MPOL_BIND, MPOL_F_STATIC_NODES = 0, 2, 1 << 15
MPOL_MF_STRICT, MPOL_MF_MOVE = 1, 2
# include/uapi/linux/memfd.h, include/uapi/linux/shm.h
MFD_CLOEXEC, MFD_ALLOW_SEALING = 1, 2
SHM_RDONLY = 0o10000
# include/uapi/linux/sched.h; SIGCHLD from arch/x86/include/uapi/asm/signal.h
CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND = 0x100, 0x200, 0x400, 0x800
CLONE_THREAD, CLONE_SYSVSEM, CLONE_SETTLS = 0x10000, 0x40000, 0x80000
CLONE_PARENT_SETTID, CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID = 0x100000, 0x200000, 0x1000000
SIGCHLD = 17
# include/uapi/asm-generic/errno-base.h
ENOMEM, EINVAL = 12, 22
FD_NONE = 0xFFFFFFFF  # fd -1 as the kernel reads an int
FAULT_WRITE = 2  # arch/x86/include/asm/trap_pf.h X86_PF_WRITE

LD_SO = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"


def parse(text: str, source: str = "log", **kw) -> list[Event]:
    lines = textwrap.dedent(text).lstrip("\n").splitlines(keepends=True)
    events = list(parse_strace(lines, source, **kw))
    for ev in events:
        ev.t = round(ev.t, 6)
    return events


# -- the forms of strace's output -----------------------------------------------------------

LOG_F_O = """
100   1700000000.000100 execve("./prog", ["./prog"], 0x7ffc0000aa00 /* 3 vars */) = 0
100   1700000000.000200 brk(NULL)       = 0x555555559000
 > /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2(__brk+0xb) [0x1fc4b]
100   1700000000.000300 openat(AT_FDCWD, "/usr/lib/libfoo.so", O_RDONLY|O_CLOEXEC) = 3</usr/lib/libfoo.so>
 > /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2(__open64_nocancel+0x1f) [0x20b1f]
100   1700000000.000400 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
100   1700000000.000500 mmap(0x7f0000100000, 1400832, PROT_READ|PROT_EXEC, MAP_PRIVATE|MAP_FIXED|MAP_DENYWRITE, 3</usr/lib/libfoo.so>, 0x26000) = 0x7f0000100000
 > /usr/lib/libfoo.so(foo_init+0x10) [0x26100]
 > /usr/lib/libfoo.so() [0x26200]
 > /usr/lib/libfoo.so(+0x26300) [0x26300]
 > unexpected_backtracing_error [0x7f00deadbeef]
100   1700000000.000650 munmap(0x7f0000000000, 8192) = 0
 > /usr/lib/libfoo.so(foo_free+0x8) [0x26400]
 > /usr/lib/libfoo.so() [0x26500]
100   1700000000.000700 mmap(NULL, 70368744177664, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_POPULATE, -1, 0) = -1 ENOMEM (Cannot allocate memory)
100   1700000000.000750 --- SIGSEGV {si_signo=SIGSEGV, si_code=SEGV_MAPERR, si_addr=0x10} ---
100   1700000000.000800 exit_group(0)   = ?
100   1700000000.000900 +++ exited with 0 +++
"""


def test_pid_column_unix_times_frames_and_fd_paths() -> None:
    stats = ParseStats()
    events = parse(LOG_F_O, stats=stats)
    anon = MAP_PRIVATE | MAP_ANONYMOUS
    assert events == [
        Event(t=0.0, pid=100, tid=100, call="execve", args=(0, 0, 0x7FFC0000AA00), ret=0,
              text="./prog"),
        Event(t=0.0001, pid=100, tid=100, call="brk", args=(0,), ret=0x555555559000,
              frames=("ld-linux-x86-64.so.2:__brk+0xb",)),
        Event(t=0.0003, pid=100, tid=100, call="mmap",
              args=(0, 8192, PROT_READ | PROT_WRITE, anon, FD_NONE, 0), ret=0x7F0000000000),
        Event(t=0.0004, pid=100, tid=100, call="mmap",
              args=(0x7F0000100000, 1400832, PROT_READ | PROT_EXEC,
                    MAP_PRIVATE | MAP_FIXED | MAP_DENYWRITE, 3, 0x26000),
              ret=0x7F0000100000, file=FileRef(path="/usr/lib/libfoo.so"),
              # a frame that cannot be placed (the unwinder's error): no stack
              frames=("libfoo.so:foo_init+0x10", "libfoo.so:+0x26200",
                      "libfoo.so:+0x26300", "?")),
        # every frame in libfoo, whose offset 0x26000 the trace mapped at 0x7f0000100000
        Event(t=0.00055, pid=100, tid=100, call="munmap", args=(0x7F0000000000, 8192), ret=0,
              frames=("libfoo.so:foo_free+0x8", "libfoo.so:+0x26500"),
              stack=(0x7F0000100400, 0x7F0000100500)),
        Event(t=0.0006, pid=100, tid=100, call="mmap",
              args=(0, 1 << 46, PROT_READ | PROT_WRITE, anon | MAP_POPULATE, FD_NONE, 0),
              ret=-ENOMEM),
        Event(t=0.0007, pid=100, tid=100, call="exit_group", args=(0,), ret=None),
    ]
    # openat, the signal, the exit notice after exit_group
    assert (stats.skipped, stats.unknown, stats.events) == (3, 0, 7)
    assert stats.timestamps == "unix" and stats.t0 == pytest.approx(1700000000.0001)


def test_frames_become_addresses_with_the_maps_given() -> None:
    log = """
    7  brk(NULL) = 0x555555559000
     > /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2(__brk+0xb) [0x1fc4b]
     > /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2(_dl_start+0x20) [0x1000]
    """
    by_base = parse(log, maps={LD_SO: 0x7F1000000000})
    assert by_base[0].stack == (0x7F100001FC4B, 0x7F1000001000)
    snap = Snapshot.from_vmas([
        Vma(0x7F2000000000, 0x7F2000001000, "r--p", 0, 0xFE00000, 5, LD_SO),
        Vma(0x7F2000001000, 0x7F2000027000, "r-xp", 0x1000, 0xFE00000, 5, LD_SO),
    ])
    assert parse(log, maps=snap)[0].stack == (0x7F200001FC4B, 0x7F2000001000)
    assert parse(log)[0].stack == ()


LOG_STDERR_F = """
10:00:00.000000 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS|MAP_STACK|MAP_GROWSDOWN, -1, 0) = 0x7f0000200000
10:00:00.100000 clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM|CLONE_SETTLS|CLONE_PARENT_SETTID|CLONE_CHILD_CLEARTID, child_tid=0x7f0000300990, parent_tid=0x7f0000300990, exit_signal=0, stack=0x7f0000400000, stack_size=0x7fff80, tls=0x7f00003006c0} => {parent_tid=[201]}, 88) = 201
strace: Process 201 attached
[pid   201] 10:00:00.200000 mmap(NULL, 12288, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000500000
[pid   201] 10:00:00.210000 mprotect(0x7f0000500000, 4096, PROT_READ <unfinished ...>
[pid   200] 10:00:00.250000 munmap(0x7f0000200000, 4096 <unfinished ...>
[pid   201] 10:00:00.300000 <... mprotect resumed>) = 0
[pid   200] 10:00:00.350000 <... munmap resumed>) = 0
[pid   201] 10:00:00.400000 exit(0)     = ?
[pid   201] 10:00:00.450000 +++ exited with 0 +++
10:00:00.500000 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f0000600a10) = 202
strace: Process 202 attached
[pid   202] 10:00:00.600000 mremap(0x7f0000500000, 4096, 8192, MREMAP_MAYMOVE) = 0x7f0000700000
[pid   202] 10:00:00.700000 +++ killed by SIGKILL +++
10:00:00.800000 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_KILLED, si_pid=202, si_uid=0, si_status=SIGKILL, si_utime=0, si_stime=0} ---
10:00:00.900000 +++ exited with 3 +++
"""


def test_pid_prefixes_threads_forks_unfinished_calls_and_exits() -> None:
    stats = ParseStats()
    events = parse(LOG_STDERR_F, stats=stats)
    thread_flags = (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD
                    | CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID
                    | CLONE_CHILD_CLEARTID)
    anon = MAP_PRIVATE | MAP_ANONYMOUS
    assert events == [
        # the lines before the first [pid N] belong to the process that was not cloned
        Event(t=0.0, pid=200, tid=200, call="mmap",
              args=(0, 4096, PROT_READ, anon | MAP_STACK | MAP_GROWSDOWN, FD_NONE, 0),
              ret=0x7F0000200000),
        Event(t=0.1, pid=200, tid=200, call="clone3", args=(thread_flags, 88), ret=201),
        # a thread: its process is the caller's
        Event(t=0.2, pid=200, tid=201, call="mmap",
              args=(0, 12288, PROT_READ | PROT_WRITE, anon, FD_NONE, 0), ret=0x7F0000500000),
        # an unfinished call is one Event where and when it ended
        Event(t=0.3, pid=200, tid=201, call="mprotect", args=(0x7F0000500000, 4096, PROT_READ),
              ret=0),
        Event(t=0.35, pid=200, tid=200, call="munmap", args=(0x7F0000200000, 4096), ret=0),
        Event(t=0.4, pid=200, tid=201, call="exit", args=(0,), ret=None),
        Event(t=0.5, pid=200, tid=200, call="clone",
              args=(CLONE_CHILD_CLEARTID | CLONE_CHILD_SETTID | SIGCHLD, 0, 0,
                    0x7F0000600A10, 0), ret=202),
        # a fork: a process of its own
        Event(t=0.6, pid=202, tid=202, call="mremap",
              args=(0x7F0000500000, 4096, 8192, MREMAP_MAYMOVE), ret=0x7F0000700000),
        Event(t=0.7, pid=202, tid=202, call="exit_group", inferred=True, text="SIGKILL"),
        Event(t=0.9, pid=200, tid=200, call="exit_group", args=(3,), inferred=True),
    ]
    assert stats.timestamps == "clock"
    # two attach messages, thread 201's exit notice, the signal
    assert stats.skipped == 4


LOG_FF = """
mmap(0x10000, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x10000 <0.000011>
mmap(NULL, 2097152, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE|MAP_HUGETLB|21<<MAP_HUGE_SHIFT, -1, 0) = -1 ENOMEM (Cannot allocate memory) <0.000020>
mprotect(0x7f0000000000, 0x2000, PROT_NONE) = 0 <0.000005>
pkey_mprotect(0x7f0000000000, 8192, PROT_READ, 1) = 0
pkey_alloc(0, PKEY_DISABLE_WRITE) = 1
madvise(0x7f0000000000, 8192, MADV_DONTNEED) = 0
madvise(0x7f0000000000, 8192, MADV_HUGEPAGE) = 0
mremap(0x7f0000000000, 8192, 16384, MREMAP_MAYMOVE|MREMAP_FIXED|MREMAP_DONTUNMAP, 0x7f0000100000) = 0x7f0000100000
mlock2(0x7f0000100000, 4096, MLOCK_ONFAULT) = 0
mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT) = 0
munlockall()                            = 0
prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, 0x7f0000100000, 16384, "my \\"heap\\"\\n") = -1 EINVAL (Invalid argument)
prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, 0x7f0000100000, 16384, NULL) = 0
mbind(0x7f0000100000, 16384, MPOL_BIND|MPOL_F_STATIC_NODES, [0x0000000000000001], 2, MPOL_MF_STRICT|MPOL_MF_MOVE) = 0
set_mempolicy(MPOL_DEFAULT, NULL, 0)    = 0
memfd_create("pool", MFD_CLOEXEC|MFD_ALLOW_SEALING) = 3
mmap(NULL, 65536, PROT_READ|PROT_WRITE, MAP_SHARED, 3</memfd:pool (deleted)>, 0) = 0x7f0000200000
shmat(5, NULL, SHM_RDONLY)              = 0x7f0000300000
brk(0x555555600000)                     = 0x555555600000
mmap(0, 0x2000, 0x3, 0x22, 0xffffffff, 0) = 0x7f0000400000
mmap(0, 0x1000, 0x1, 0x2, 0x3, 0x1000)  = 0x7f0000401000
mseal(0x7f0000400000, 8192, 0)          = 0
munmap(0x7f0000400000, 010000)          = 0
exit_group(1)                           = ?
"""


def test_one_file_of_ff_without_times_symbols_numbers_and_strings() -> None:
    stats = ParseStats()
    events = parse(LOG_FF, source="trace.4242", stats=stats)
    anon = MAP_PRIVATE | MAP_ANONYMOUS
    R, RW = PROT_READ, PROT_READ | PROT_WRITE
    A, B = 0x7F0000000000, 0x7F0000100000
    want = [
        ("mmap", (0x10000, 4096, R, anon | MAP_FIXED_NOREPLACE, FD_NONE, 0), 0x10000, None),
        ("mmap", (0, 2 << 20, RW, anon | MAP_NORESERVE | MAP_HUGETLB | 21 << MAP_HUGE_SHIFT,
                  FD_NONE, 0), -ENOMEM, None),
        ("mprotect", (A, 0x2000, PROT_NONE), 0, None),
        ("pkey_mprotect", (A, 8192, R, 1), 0, None),
        ("pkey_alloc", (0, PKEY_DISABLE_WRITE), 1, None),
        ("madvise", (A, 8192, MADV_DONTNEED), 0, None),
        ("madvise", (A, 8192, MADV_HUGEPAGE), 0, None),
        ("mremap", (A, 8192, 16384, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, B), B,
         None),
        ("mlock2", (B, 4096, MLOCK_ONFAULT), 0, None),
        ("mlockall", (MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT,), 0, None),
        ("munlockall", (), 0, None),
        # a string's address is not in the log: 0, and the text in Event.text
        ("prctl", (PR_SET_VMA, PR_SET_VMA_ANON_NAME, B, 16384, 0), -EINVAL, 'my "heap"\n'),
        ("prctl", (PR_SET_VMA, PR_SET_VMA_ANON_NAME, B, 16384, 0), 0, None),
        ("mbind", (B, 16384, MPOL_BIND | MPOL_F_STATIC_NODES, 0, 2,
                   MPOL_MF_STRICT | MPOL_MF_MOVE), 0, None),
        ("set_mempolicy", (MPOL_DEFAULT, 0, 0), 0, None),
        ("memfd_create", (0, MFD_CLOEXEC | MFD_ALLOW_SEALING), 3, "pool"),
        ("mmap", (0, 65536, RW, MAP_SHARED, 3, 0), 0x7F0000200000, None),
        ("shmat", (5, 0, SHM_RDONLY), 0x7F0000300000, None),
        ("brk", (0x555555600000,), 0x555555600000, None),
        # -e raw=all
        ("mmap", (0, 0x2000, RW, anon, FD_NONE, 0), 0x7F0000400000, None),
        ("mmap", (0, 0x1000, R, MAP_PRIVATE, 3, 0x1000), 0x7F0000401000, None),
        ("mseal", (0x7F0000400000, 8192, 0), 0, None),
        ("munmap", (0x7F0000400000, 4096), 0, None),  # octal 010000
        ("exit_group", (1,), None, None),
    ]
    assert [(e.call, e.args, e.ret, e.text) for e in events] == want
    # -ff: the pid is the file name's suffix; no timestamps: every t is 0
    assert {(e.pid, e.tid, e.t) for e in events} == {(4242, 4242, 0.0)}
    assert events[16].file == FileRef(path="/memfd:pool (deleted)")
    assert stats.timestamps == "none" and stats.skipped == 0


def test_clock_times_cross_midnight_and_relative_times_add_up() -> None:
    clock = """
    23:59:59 munmap(0x7f0000000000, 4096) = 0
    00:00:01 munmap(0x7f0000001000, 4096) = 0
    """
    assert [e.t for e in parse(clock, pid=5)] == [0.0, 2.0]
    relative = """
         0.000000 munmap(0x7f0000000000, 4096) = 0
         0.000250 --- SIGALRM {si_signo=SIGALRM, si_code=SI_KERNEL} ---
         0.001000 munmap(0x7f0000001000, 4096) = 0
    """
    stats = ParseStats()
    assert [e.t for e in parse(relative, pid=5, stats=stats)] == [0.0, 0.00125]
    assert stats.timestamps == "relative"


def test_threads_that_existed_before_the_trace() -> None:
    log = """
    300   munmap(0x7f0000000000, 4096) = 0
    301   munmap(0x7f0000001000, 4096) = 0
    """
    # taken as processes of their own, unless told
    assert [(e.pid, e.tid) for e in parse(log)] == [(300, 300), (301, 301)]
    assert [(e.pid, e.tid) for e in parse(log, tgids={300: 300, 301: 300})] == \
        [(300, 300), (300, 301)]


def test_a_thread_seen_before_its_clone_returns_is_that_clone_s_child() -> None:
    log = """
    400   clone3({flags=CLONE_VM|CLONE_THREAD|CLONE_SIGHAND, exit_signal=0, stack=0x7f0000000000, stack_size=0x8000, tls=0x7f0000007000} <unfinished ...>
    401   munmap(0x7f0000001000, 4096) = 0
    400   <... clone3 resumed> => {parent_tid=[401]}, 88) = 401
    """
    events = parse(log)
    assert [(e.call, e.pid, e.tid) for e in events] == [("munmap", 400, 401),
                                                       ("clone3", 400, 400)]
    assert events[1].args == (CLONE_VM | CLONE_THREAD | CLONE_SIGHAND, 88)


@pytest.mark.parametrize(("log", "line", "expected"), [
    ("1 munmap(0x1000, 4096) = 0\nhello world\n", 2, "a system call"),
    ("1 munmap(0x1000, 4096\n", 1, "the ')' that closes munmap's arguments"),
    ("1 munmap(0x1000, 4096) = banana\n", 1, "the result of munmap"),
    ("1 munmap(0x1000, 4k) = 0\n", 1, "an argument"),
    ('1 prctl(PR_SET_NAME, "abc) = 0\n', 1, "a closing quote"),
    ("1 +++ exited sideways +++\n", 1, "exited with N"),
])
def test_malformed_lines_name_their_line(log: str, line: int, expected: str) -> None:
    with pytest.raises(ParseError) as info:
        list(parse_strace(log.splitlines(keepends=True), "bad.log"))
    assert info.value.line == line and info.value.source == "bad.log"
    assert expected in info.value.expected


def test_strace_s_other_lines_are_skipped_and_unknown_constants_counted() -> None:
    log = """
    strace: Process 9 attached
    9     openat(AT_FDCWD, "/etc/passwd", O_RDONLY) = 3
     > /usr/lib/libc.so.6(open+0x10) [0x1000]
    9     restart_syscall(<... resuming interrupted clock_nanosleep ...>) = 0
    9     mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_BOGUS, -1, 0) = 0x7f0000000000
    9     <... read resumed>"abc", 3) = 3
    9     munmap(0x7f0000000000, 4096) = 0
    """
    stats = ParseStats()
    events = parse(log, stats=stats)
    assert [(e.call, e.frames) for e in events] == [("munmap", ())]
    assert stats.unknown == 1 and stats.unknown_symbols == {"MAP_BOGUS": 1}
    assert stats.skipped == 4


# -- inferred faults --------------------------------------------------------------------------

K = 1 << 10


def _ev(call: str, args: tuple[int, ...], ret: int, t: float = 0.0) -> Event:
    return Event(t=t, pid=50, tid=50, call=call, args=args, ret=ret)


def test_faults_are_inferred_where_the_final_snapshot_holds_anonymous_pages() -> None:
    anon, rw = MAP_PRIVATE | MAP_ANONYMOUS, PROT_READ | PROT_WRITE
    A, B, C, D, E, F, H = (0x7F0000000000 + i * 0x1000000 for i in range(7))
    events = [
        _ev("mmap", (0, 64 * K, rw, anon, FD_NONE, 0), A),  # 0: touched
        _ev("mmap", (0, 1024 * K, PROT_NONE, anon | MAP_NORESERVE, FD_NONE, 0), B),  # 1
        _ev("mprotect", (B + 256 * K, 64 * K, rw), 0),  # 2: the committed part, touched
        _ev("mmap", (0, 64 * K, rw, MAP_PRIVATE, 3, 0), C),  # 3: a file: never
        _ev("mmap", (0, 64 * K, rw, anon, FD_NONE, 0), D),  # 4: never touched
        _ev("mmap", (0, 128 * K, rw, anon, FD_NONE, 0), E),  # 5: split later, both touched
        _ev("mmap", (0, 64 * K, rw, MAP_SHARED | MAP_ANONYMOUS, FD_NONE, 0), F),  # 6: shared
        _ev("mmap", (0, 1 << 40, rw, anon, FD_NONE, 0), -ENOMEM),  # 7: failed
        _ev("brk", (0,), H),  # 8
        _ev("brk", (H + 132 * K,), H + 132 * K),  # 9: the heap grew and was touched
        _ev("munmap", (A, 64 * K), 0),  # 10
        _ev("mmap", (A, 64 * K, rw, anon | MAP_FIXED, FD_NONE, 0), A),  # 11: A again
    ]
    with_pages = {"Anonymous": 8 * K, "Rss": 8 * K}
    no_pages = {"Anonymous": 0, "Rss": 0}
    snap = Snapshot.from_vmas([
        Vma(A, A + 64 * K, "rw-p", smaps=with_pages),
        Vma(B, B + 256 * K, "---p", smaps=no_pages),
        Vma(B + 256 * K, B + 320 * K, "rw-p", smaps=with_pages),
        Vma(B + 320 * K, B + 1024 * K, "---p", smaps=no_pages),
        Vma(C, C + 64 * K, "rw-p", 0, 0xFE00001, 77, "/data/file", smaps=with_pages),
        Vma(D, D + 64 * K, "rw-p", smaps=no_pages),
        Vma(E, E + 64 * K, "rw-p", smaps=with_pages),
        Vma(E + 64 * K, E + 128 * K, "r--p", smaps=with_pages),
        Vma(F, F + 64 * K, "rw-s", 0, 1, 9, "/dev/zero (deleted)", smaps=with_pages),
        Vma(H, H + 132 * K, "rw-p", name="[heap]", smaps=with_pages),
    ])
    out = infer_faults(events, snap)
    faults = []
    for e in out:
        if e.call != "fault":
            after = e
        else:
            faults.append((after.call, after.args[:1], e.args))
    assert faults == [
        ("mprotect", (B + 256 * K,), (B + 256 * K, FAULT_WRITE)),
        ("mmap", (0,), (E, FAULT_WRITE)),
        ("mmap", (0,), (E + 64 * K, FAULT_WRITE)),
        ("brk", (H + 132 * K,), (H, FAULT_WRITE)),
        # A's pages were mapped twice: they come from the second mapping
        ("mmap", (A,), (A, FAULT_WRITE)),
    ]
    assert all(e.inferred and e.pid == 50 for e in out if e.call == "fault")
    assert [e for e in out if e.call != "fault"] == events


def test_a_maps_only_snapshot_takes_writable_anonymous_memory_as_written() -> None:
    anon = MAP_PRIVATE | MAP_ANONYMOUS
    A, B = 0x7F0000000000, 0x7F0000100000
    events = [_ev("mmap", (0, 4096, PROT_READ | PROT_WRITE, anon, FD_NONE, 0), A),
              _ev("mmap", (0, 4096, PROT_READ, anon, FD_NONE, 0), B)]
    snap = Snapshot.from_vmas([Vma(A, A + 4096, "rw-p"), Vma(B, B + 4096, "r--p")])
    out = infer_faults(events, snap)
    assert [(e.call, e.args) for e in out] == [
        ("mmap", events[0].args), ("fault", (A, FAULT_WRITE)), ("mmap", events[1].args)]


# -- a command started stopped ------------------------------------------------------------------

SRC = Path(__file__).parent.parent / "src"


@pytest.fixture(scope="module")
def mapcalls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = need("cc")
    out = tmp_path_factory.mktemp("programs") / "mapcalls"
    subprocess.run([cc, "-O0", "-fno-inline", "-g", "-pthread", "-Wall", "-o", str(out),
                    str(PROGRAMS / "mapcalls.c")], check=True, timeout=120)
    return out


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _tracer(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(next(line for line in fh if line.startswith("TracerPid:")).split()[1])


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """Dead: no such process any more, or a zombie nobody reaped yet."""
    deadline = time.monotonic() + timeout
    while _state(pid) not in (None, "Z", "X"):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def test_a_command_starts_stopped_right_after_its_exec(mapcalls: Path, tmp_path: Path) -> None:
    from vmascope.trace.launch import Tracee

    out = tmp_path / "out"
    with open(out, "wb") as fh, Tracee.start([str(mapcalls)], stdout=fh) as t:
        assert _state(t.pid) == "t"  # the exec's trace stop
        with open(f"/proc/{t.pid}/maps") as maps:
            names = {line.split(None, 5)[5].strip() if len(line.split()) > 5 else None
                     for line in maps}
        # the executable, ld.so and the kernel's own: ld.so has mapped nothing yet
        assert str(mapcalls) in names
        assert any(n and "/ld-linux" in n for n in names)
        assert {n for n in names if n and n.startswith("/")} == \
            {str(mapcalls)} | {n for n in names if n and "/ld-linux" in n}
        assert names - {str(mapcalls), None} <= {
            n for n in names if n and "/ld-linux" in n} | {
            "[stack]", "[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[heap]"}
        t.detach_stopped()
        assert _state(t.pid) == "T" and _tracer(t.pid) == 0
        time.sleep(0.2)
        assert _state(t.pid) == "T"  # it stays stopped for a recorder to attach
        t.resume()
        assert t.wait(30) == 0
    assert out.read_text().startswith("DONE ")


def test_the_child_and_its_group_die_when_the_context_ends(tmp_path: Path) -> None:
    from vmascope.trace.launch import Tracee

    bgfile = tmp_path / "bg"
    with Tracee.start(["sh", "-c", f"sleep 100 & echo $! > {bgfile}; wait"]) as t:
        t.detach_stopped()
        t.resume()
        deadline = time.monotonic() + 30
        while not bgfile.exists() or not bgfile.read_text().strip():
            assert time.monotonic() < deadline, "the shell did not start its job"
            time.sleep(0.02)
        bg = int(bgfile.read_text())
        assert _state(bg) not in (None, "Z")
    assert t.returncode == -signal.SIGKILL
    assert _gone(t.pid) and _gone(bg)


def test_the_child_dies_on_an_exception() -> None:
    from vmascope.trace.launch import Tracee

    with pytest.raises(RuntimeError), Tracee.start(["sleep", "100"]) as t:
        pid = t.pid
        raise RuntimeError("boom")
    assert _gone(pid)


PARENT = """
import sys, time
from vmascope.trace.launch import Tracee
with Tracee.start(["sleep", "100"]) as t:
    t.detach_stopped()
    t.resume()
    print(t.pid, flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_the_child_dies_when_its_parent_is_signalled(sig: int) -> None:
    from conftest import kill_group, wait_line

    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True, env=_env())
    child = None
    try:
        line, _ = wait_line(parent, "", 60)
        child = int(line)
        assert _state(child) not in (None, "Z")
        os.kill(parent.pid, sig)
        parent.wait(timeout=30)
        # SIGTERM and SIGINT: the context manager kills it; SIGKILL: PR_SET_PDEATHSIG
        assert _gone(child), f"pid {child} outlived its parent ({signal.Signals(sig).name})"
    finally:
        kill_group(parent, timeout=30)
        if child is not None and not _gone(child, 0):
            os.kill(child, signal.SIGKILL)


# -- strace for real ------------------------------------------------------------------------------


def _recording(pids: list[int], **kw):  # type: ignore[no-untyped-def]
    from vmascope.trace.strace_record import StraceNotPermitted, StraceRecorder

    need("strace")
    rec = StraceRecorder(pids, **kw)
    try:
        rec.start()
    except StraceNotPermitted as e:
        pytest.skip(str(e))
    return rec


def test_strace_records_a_command_from_its_first_call(mapcalls: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import vmascope
    from vmascope.trace.launch import Tracee

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    out = tmp_path / "out"
    with open(out, "wb") as fh, Tracee.start([str(mapcalls)], stdout=fh) as t:
        start = vmascope.load(t.pid)
        t.detach_stopped()
        # strace -p on a stopped process, which runs once it is attached
        with _recording([t.pid], duration=60, maps=start) as rec:
            t.resume()
            events = list(rec.events())
        assert t.wait(30) == 0
    assert rec.proc is not None and rec.proc.returncode is not None
    region = int(out.read_text().split()[1], 16)
    main = t.pid

    # ld.so's first calls are there, and its mapping of libc
    assert events[0].frames[0].startswith("ld-linux-x86-64.so.2:")
    assert events[0].call in ("brk", "mmap", "arch_prctl", "access")
    assert any(e.call == "mmap" and e.file is not None and e.file.path is not None
               and "/libc.so" in e.file.path for e in events)

    def one(pred) -> Event:  # type: ignore[no-untyped-def]
        hits = [e for e in events if pred(e)]
        assert len(hits) == 1, hits
        return hits[0]

    def named(e: Event, function: str) -> None:
        assert any(f.startswith(f"mapcalls:{function}+0x") for f in e.frames), e.frames
        # every frame placed: by the snapshot at the exec stop and the libraries' mmaps
        assert len(e.stack) == len(e.frames)

    anon = MAP_PRIVATE | MAP_ANONYMOUS
    reserve = one(lambda e: e.call == "mmap" and e.ret == region)
    assert reserve.args == (0, 1 << 20, PROT_NONE, anon | MAP_NORESERVE, FD_NONE, 0)
    assert (reserve.pid, reserve.tid) == (main, main)
    named(reserve, "reserve_region")
    commit = one(lambda e: e.call == "mprotect" and e.args[0] == region)
    assert (commit.args, commit.ret) == ((region, 64 * K, PROT_READ | PROT_WRITE), 0)
    named(commit, "commit_region")
    name = one(lambda e: e.call == "prctl" and e.args[:1] == (PR_SET_VMA,))
    assert name.args == (PR_SET_VMA, PR_SET_VMA_ANON_NAME, region, 64 * K, 0)
    assert name.text == "mapcalls" and name.ret in (0, -EINVAL)
    named(name, "name_region")
    trim = one(lambda e: e.call == "munmap" and e.args == (region + 960 * K, 64 * K))
    named(trim, "trim_region")
    thread = one(lambda e: e.call == "mmap" and e.args[1] == 7 * 4096)
    assert thread.pid == main and thread.tid != main
    assert thread.args == (0, 7 * 4096, PROT_READ | PROT_WRITE, anon, FD_NONE, 0)
    named(thread, "thread_main")
    child = one(lambda e: e.call == "munmap" and e.args == (region + 64 * K, 64 * K))
    assert child.pid == child.tid != main
    named(child, "child_main")
    assert one(lambda e: e.call == "exit_group" and e.pid == child.pid).args == (7,)
    assert rec.stats.unknown == 0
    assert not list(tmp_path.glob("vmascope/strace-*.pid"))


def test_the_recording_ends_after_its_duration_and_the_target_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    target = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        t0 = time.monotonic()
        with _recording([target.pid], duration=1.0) as rec:
            assert _tracer(target.pid) == rec.proc.pid
            events = list(rec.events())
        assert time.monotonic() - t0 < 20
        assert events == []
        assert rec.proc.returncode is not None
        assert target.poll() is None and _state(target.pid) == "S"
        assert _tracer(target.pid) == 0
    finally:
        target.kill()
        target.wait(timeout=10)


RECORDER = """
import sys, time
from vmascope.trace.strace_record import StraceNotPermitted, StraceRecorder
rec = StraceRecorder([int(sys.argv[1])], duration=60)
try:
    rec.start()
except StraceNotPermitted as e:
    print("SKIP", e, flush=True)
    sys.exit(0)
print(rec.proc.pid, flush=True)
time.sleep(60)
"""


def test_strace_dies_with_its_recorder_and_a_stale_one_is_killed_at_the_next_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import kill_group, wait_line

    from vmascope.trace import strace_record

    exe = need("strace")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    target = subprocess.Popen(["sleep", "60"], start_new_session=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # SIGKILL of the recorder: its strace gets PR_SET_PDEATHSIG and detaches
        parent = subprocess.Popen([sys.executable, "-c", RECORDER, str(target.pid)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  start_new_session=True,
                                  env=_env(XDG_RUNTIME_DIR=str(tmp_path)))
        procs.append(parent)
        line, _ = wait_line(parent, "", 60)
        if line.startswith("SKIP"):
            pytest.skip(line)
        tracer = int(line)
        assert _tracer(target.pid) == tracer
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        assert _gone(tracer)
        assert target.poll() is None
        # its pid file and log are left; the next start finds its strace gone and
        # removes them
        (pidfile,) = tmp_path.glob("vmascope/strace-*.pid")
        logdir = Path(pidfile.read_text().split(" ", 4)[4].strip())
        assert logdir.name.startswith(strace_record.TMP_PREFIX) and logdir.is_dir()
        assert strace_record.reap_stale() == []
        assert not pidfile.exists() and not logdir.exists()

        # a strace nothing killed (as if PR_SET_PDEATHSIG had failed): killed at the next start
        gone_owner = subprocess.Popen(["true"])
        gone_owner.wait(timeout=10)
        stale = subprocess.Popen([exe, "-qq", "-o", os.devnull, "-p", str(target.pid)],
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(stale)
        deadline = time.monotonic() + 30
        while _tracer(target.pid) != stale.pid:
            assert time.monotonic() < deadline, "strace did not attach"
            time.sleep(0.02)
        pidfile = strace_record.runtime_dir() / f"strace-{stale.pid}.pid"
        pidfile.write_text(f"{gone_owner.pid} 1 {stale.pid} "
                           f"{strace_record._start_time(stale.pid)}\n")
        assert strace_record.reap_stale() == [stale.pid]
        assert stale.wait(timeout=10) == -signal.SIGKILL
        assert not pidfile.exists()
        deadline = time.monotonic() + 10
        while _tracer(target.pid) != 0:
            assert time.monotonic() < deadline, "still traced"
            time.sleep(0.02)
        assert target.poll() is None
    finally:
        for p in procs:
            kill_group(p, timeout=30)
        target.kill()
        target.wait(timeout=10)


def test_no_strace_is_a_one_line_error() -> None:
    from vmascope.trace.strace_record import StraceRecorder, StraceUnavailable

    with pytest.raises(StraceUnavailable) as info:
        StraceRecorder([os.getpid()], strace="/nonexistent/strace").start()
    assert "\n" not in str(info.value)


RECORDER_WITH = """
import sys, time
from vmascope.trace.strace_record import StraceNotPermitted, StraceRecorder
try:
    with StraceRecorder([int(sys.argv[1])], duration=60) as rec:
        print(rec.proc.pid, flush=True)
        time.sleep(60)
except StraceNotPermitted as e:
    print("SKIP", e, flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_recorder_stops_its_strace_and_cleans_up(
        sig: int, tmp_path: Path) -> None:
    from conftest import kill_group, wait_line

    need("strace")
    target = subprocess.Popen(["sleep", "60"], start_new_session=True)
    parent = subprocess.Popen([sys.executable, "-c", RECORDER_WITH, str(target.pid)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True, env=_env(XDG_RUNTIME_DIR=str(tmp_path)))
    try:
        line, _ = wait_line(parent, "", 60)
        if line.startswith("SKIP"):
            pytest.skip(line)
        tracer = int(line)
        (pidfile,) = tmp_path.glob("vmascope/strace-*.pid")
        logdir = Path(pidfile.read_text().split(" ", 4)[4].strip())
        os.kill(parent.pid, sig)
        assert parent.wait(timeout=30) != 0
        assert _gone(tracer) and _tracer(target.pid) == 0 and target.poll() is None
        assert not pidfile.exists() and not logdir.exists()
    finally:
        kill_group(parent, timeout=30)
        target.kill()
        target.wait(timeout=10)


def test_the_uapi_table_agrees_with_the_system_s_headers(tmp_path: Path) -> None:
    """Every constant the installed kernel headers define has the table's value (newer
    ones the headers lack are skipped one by one)."""
    from vmascope.trace import uapi

    cc = need("cc")
    names = [n for n in uapi.SYMBOLS
             if not n.startswith("SIG") and n not in ("CSIGNAL", "PR_SET_PTRACER_ANY",
                                                      "AT_FDCWD")]
    body = "".join(f'#ifdef {n}\n    printf("{n} %llu\\n", (unsigned long long)({n}));\n'
                   f"#endif\n" for n in names)
    src = tmp_path / "consts.c"
    src.write_text("#define _GNU_SOURCE\n#include <stdio.h>\n#include <fcntl.h>\n"
                   "#include <sys/mman.h>\n#include <sys/shm.h>\n#include <linux/mman.h>\n"
                   "#include <linux/prctl.h>\n#include <linux/sched.h>\n"
                   "#include <linux/memfd.h>\n#include <linux/mempolicy.h>\n"
                   f"int main(void)\n{{\n{body}    return 0;\n}}\n")
    exe = tmp_path / "consts"
    subprocess.run([cc, "-o", str(exe), str(src)], check=True, timeout=120)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True, timeout=30)
    seen = dict(line.split() for line in out.stdout.splitlines())
    assert len(seen) > 100
    assert {n: int(v) for n, v in seen.items()} == {n: uapi.SYMBOLS[n] for n in seen}


def test_strace_refused_by_ptrace_is_a_one_line_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What strace prints when ptrace is refused (Yama's ptrace_scope, no CAP_SYS_PTRACE)
    becomes StraceNotPermitted, naming the pid and ptrace_scope."""
    from vmascope.trace.strace_record import StraceNotPermitted, StraceRecorder

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))

    fake = tmp_path / "strace"
    fake.write_text("#!/bin/sh\necho 'strace: attach: ptrace(PTRACE_SEIZE, 4321): "
                    "Operation not permitted' >&2\nexit 1\n")
    fake.chmod(0o755)
    target = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        with pytest.raises(StraceNotPermitted) as info:
            StraceRecorder([target.pid], strace=str(fake)).start()
    finally:
        target.kill()
        target.wait(timeout=10)
    assert "pid 4321" in str(info.value) and "ptrace_scope" in str(info.value)
    assert "\n" not in str(info.value)
    assert not list(tmp_path.glob("vmascope/strace-*.pid"))


def test_a_command_that_cannot_start_is_a_one_line_error() -> None:
    from vmascope.trace.launch import LaunchError, Tracee

    with pytest.raises(LaunchError) as info:
        Tracee.start(["/nonexistent/program"])
    assert "/nonexistent/program" in str(info.value) and "\n" not in str(info.value)


def test_strace_s_notices_are_skipped() -> None:
    log = """
    [ Process PID=77 runs in 32 bit mode. ]
    77    munmap(0x1000, 4096) = 0
    """
    assert [e.call for e in parse(log)] == ["munmap"]


def test_mutated_logs_are_events_or_a_parse_error() -> None:
    """A user's mistake is a ParseError; anything else would be a bug."""
    import random

    rng = random.Random(7)
    logs = [textwrap.dedent(x).lstrip("\n") for x in (LOG_F_O, LOG_STDERR_F, LOG_FF)]
    alphabet = '()[]{}<>,"\\=|+-.0123456789xabcdefABCDEF_ ?/:>\n\t'
    for _ in range(3000):
        b = list(rng.choice(logs))
        for _ in range(rng.randint(1, 8)):
            op, p = rng.random(), rng.randrange(len(b))
            if op < 0.4:
                del b[p]
            elif op < 0.8:
                b.insert(p, rng.choice(alphabet))
            else:
                q = rng.randrange(len(b))
                b[p:p] = b[q:q + rng.randint(1, 20)]
        try:
            for ev in parse_strace("".join(b).splitlines(True), "fuzz"):
                assert all(0 <= a < 1 << 64 for a in ev.args), ev
        except ParseError:
            pass


@pytest.mark.parametrize("options", [
    ["-f"], ["-f", "-tt", "-T", "-yy"], ["-f", "-r"], ["-f", "-e", "raw=all"],
    ["-f", "-X", "verbose"], ["-f", "-t", "-k"], ["-ff", "-ttt"], ["-f", "--stderr"],
])
def test_logs_of_the_installed_strace_in_every_form(mapcalls: Path, tmp_path: Path,
                                                    options: list[str]) -> None:
    """strace run on mapcalls the way users run it: the same calls come out of each log."""
    exe = need("strace")
    log = tmp_path / "log"
    stderr = "--stderr" in options
    opts = [o for o in options if o != "--stderr"]
    with open(log if stderr else os.devnull, "wb") as err:
        proc = subprocess.run([exe, *opts, *([] if stderr else ["-o", str(log)]),
                               str(mapcalls)], stdout=subprocess.DEVNULL, stderr=err,
                              timeout=60, check=False)
    if proc.returncode != 0 and "ptrace" in log.read_text(errors="replace"):
        pytest.skip("strace may not trace here")
    assert proc.returncode == 0
    files = sorted(tmp_path.glob("log.*")) if "-ff" in opts else [log]
    events: list[Event] = []
    for f in files:
        stats = ParseStats()
        with open(f) as fh:
            events += parse_strace(fh, str(f), stats=stats)
        assert stats.unknown == 0 and stats.unfinished == 0, stats
    anon = MAP_PRIVATE | MAP_ANONYMOUS
    (reserve,) = [e for e in events if e.call == "mmap" and e.args[1] == 1 << 20]
    assert reserve.args == (0, 1 << 20, PROT_NONE, anon | MAP_NORESERVE, FD_NONE, 0)
    main = reserve.pid
    # on stderr, strace names the first process only when it prints a line while another
    # one runs: a log may never name it (0, unknown)
    assert reserve.tid == main and (main > 0 or stderr)
    (thread,) = [e for e in events if e.call == "mmap" and e.args[1] == 7 * 4096]
    assert thread.tid != main
    if "-ff" not in opts:  # one file per thread: the log does not say whose thread it is
        assert thread.pid == main
    (child,) = [e for e in events if e.call == "munmap" and e.args == (reserve.ret + 64 * K,
                                                                         64 * K)]
    assert child.pid == child.tid != main
    if "-k" in opts:
        assert any(f.startswith("mapcalls:reserve_region+0x") for f in reserve.frames)
    times = [e.t for e in events if e.pid == main]
    if any(o.startswith(("-t", "-r")) for o in opts):
        assert times == sorted(times)
        assert times[-1] > 0 or opts[-2:] == ["-t", "-k"]  # -t: whole seconds
    else:
        assert set(times) == {0.0}


def test_a_notice_of_strace_inside_a_call_s_line() -> None:
    """On stderr, strace's attach notice can cut a line; the rest follows on the next."""
    log = """
    clone3({flags=CLONE_VM|CLONE_THREAD, exit_signal=0, stack=0x7f0000000000, stack_size=0x8000, tls=0x7f0000007000}/usr/bin/strace: Process 501 attached
     => {parent_tid=[501]}, 88) = 501
    [pid   501] munmap(0x7f0000001000, 4096) = 0
    [pid   500] munmap(0x7f0000002000, 4096) = 0
    """
    events = parse(log)
    assert [(e.call, e.pid, e.tid, e.args) for e in events] == [
        ("clone3", 500, 500, (CLONE_VM | CLONE_THREAD, 88)),
        ("munmap", 500, 501, (0x7F0000001000, 4096)),
        ("munmap", 500, 500, (0x7F0000002000, 4096)),
    ]


def test_a_notice_of_strace_after_a_space_of_the_cut_line() -> None:
    """The cut can come after a space ("wait4(17218, strace: ..."): the space is the
    call's, and the line goes on where it stopped (strace 6.x on stderr, seen on mapcalls)."""
    log = """
    rt_sigprocmask(SIG_SETMASK, [], strace: Process 18402 attached
    NULL, 8) = 0
    [pid 18402] munmap(0x7f0000001000, 4096) = 0
    [pid 18401] munmap(0x7f0000002000, 4096) = 0
    [pid 18401] wait4(18403, strace: Process 18403 attached
     <unfinished ...>
    [pid 18403] munmap(0x7f0000003000, 4096) = 0
    [pid 18401] clone(child_stack=NULL, flags=SIGCHLD <unfinished ...>
    /usr/bin/strace: Process 18404 attached
    [pid 18404] munmap(0x7f0000004000, 4096) = 0
    [pid 18401] <... clone resumed>, child_tidptr=0x7f0000000010) = 18404
    """
    stats = ParseStats()
    events = parse(log, stats=stats)
    assert [(e.call, e.tid, e.args) for e in events] == [
        ("munmap", 18402, (0x7F0000001000, 4096)),
        ("munmap", 18401, (0x7F0000002000, 4096)),
        ("munmap", 18403, (0x7F0000003000, 4096)),
        ("munmap", 18404, (0x7F0000004000, 4096)),
        ("clone", 18401, (17, 0, 0, 0x7F0000000010, 0)),  # flags: SIGCHLD
    ]
    assert stats.skipped == 5 and stats.unknown == 0  # 3 notices, rt_sigprocmask, wait4


def test_an_exit_cut_by_another_thread_s_line_ends_with_the_thread() -> None:
    """strace prints "exit(0 <unfinished ...>" when another tracee's line comes before the
    thread is gone, and no resumed line after: the notice ends the call."""
    log = """
    [pid   701] munmap(0x7f0000001000, 4096) = 0
    [pid   701] exit(0 <unfinished ...>
    [pid   700] munmap(0x7f0000002000, 4096) = 0
    [pid   701] +++ exited with 0 +++
    [pid   702] exit_group(7 <unfinished ...>
    [pid   700] wait4(702,  <unfinished ...>
    [pid   702] +++ exited with 7 +++
    <... wait4 resumed>NULL, 0, NULL) = 702
    exit_group(0)                           = ?
    +++ exited with 0 +++
    """
    stats = ParseStats()
    events = parse(log, stats=stats, tgids={700: 700, 701: 700, 702: 702})
    assert [(e.call, e.pid, e.tid, e.args, e.ret, e.inferred) for e in events] == [
        ("munmap", 700, 701, (0x7F0000001000, 4096), 0, False),
        ("munmap", 700, 700, (0x7F0000002000, 4096), 0, False),
        ("exit", 700, 701, (0,), None, False),  # where the call ended
        ("exit_group", 702, 702, (7,), None, False),
        ("exit_group", 700, 700, (0,), None, False),
    ]
    assert stats.unfinished == 0


def test_the_unprefixed_thread_resumes_its_clone_after_the_child_s_first_line() -> None:
    log = """
    clone3({flags=CLONE_VM|CLONE_THREAD, exit_signal=0, stack=0x7f0000000000, stack_size=0x8000, tls=0x7f0000007000}strace: Process 601 attached
     <unfinished ...>
    [pid   601] munmap(0x7f0000001000, 4096 <unfinished ...>
    [pid   600] <... clone3 resumed> => {parent_tid=[601]}, 88) = 601
    [pid   601] <... munmap resumed>) = 0
    [pid   600] munmap(0x7f0000002000, 4096) = 0
    """
    events = parse(log)
    assert [(e.call, e.pid, e.tid) for e in events] == [
        ("clone3", 600, 600), ("munmap", 600, 601), ("munmap", 600, 600)]


@pytest.mark.parametrize("before", [True, False])
def test_the_new_thread_maps_before_the_unprefixed_thread_resumes_its_clone(
        before: bool) -> None:
    """The child's calls that the log keeps do not make it the thread of the lines before
    (seen under load: the whole thread ran before its parent's clone3 returned), with or
    without an earlier call of the parent to hold."""
    log = """
    munmap(0x7f0000009000, 4096) = 0""" * before + """
    clone3({flags=CLONE_VM|CLONE_THREAD, exit_signal=0, stack=0x7f0000000000, stack_size=0x8000, tls=0x7f0000007000}strace: Process 801 attached
     <unfinished ...>
    [pid   801] mmap(NULL, 28672, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000010000
    [pid   801] munmap(0x7f0000010000, 28672) = 0
    [pid   801] exit(0)                     = ?
    [pid   800] <... clone3 resumed> => {parent_tid=[0]}, 88) = 801
    [pid   801] +++ exited with 0 +++
    munmap(0x7f0000002000, 4096) = 0
    """
    stats = ParseStats()
    events = parse(log, stats=stats)
    assert [(e.call, e.pid, e.tid) for e in events] == [("munmap", 800, 800)] * before + [
        ("mmap", 800, 801), ("munmap", 800, 801), ("exit", 800, 801),
        ("clone3", 800, 800), ("munmap", 800, 800)]
    assert stats.unfinished == 0


def test_a_target_killed_while_recorded_leaves_its_exit(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    target = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        t0 = time.monotonic()
        with _recording([target.pid], duration=30) as rec:
            target.kill()
            events = list(rec.events())  # strace ends with its last tracee
        assert time.monotonic() - t0 < 20
        assert [(e.call, e.pid, e.inferred, e.text) for e in events] == [
            ("exit_group", target.pid, True, "SIGKILL")]
    finally:
        target.kill()
        target.wait(timeout=10)


def test_a_deleted_files_decoration() -> None:
    # strace -yy on a JVM with ZGC: the heap is a memfd, a file with no name in a folder
    log = textwrap.dedent("""\
        7 1796203958.428151 memfd_create("java_heap", MFD_CLOEXEC) = 4</memfd:java_heap>(deleted)
        7 1796203958.428200 mmap(0x7f0000000000, 2097152, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_FIXED, 4</memfd:java_heap>(deleted), 0) = 0x7f0000000000
        """).splitlines()
    evs = list(parse_strace(log, "zgc.log"))
    assert [e.call for e in evs] == ["memfd_create", "mmap"]
    assert evs[0].ret == 4 and evs[0].text == "java_heap"
    assert evs[1].args == (0x7F0000000000, 2097152, 0x3, 0x01 | 0x10, 4, 0)
    assert evs[1].file == FileRef(path="/memfd:java_heap")
