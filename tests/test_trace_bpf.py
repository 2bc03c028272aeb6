"""The BPF recorder (trace/bpf.py): the exact calls of a known program, its thread and
its forked child, the fault filter, the file identity of a file mapping, the stacks, the
lost-event count, and that no BPF program or link outlives the recorder.

Needs root, a kernel with BTF and a C compiler (skipped otherwise; under CI as root a
skip fails).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PROGRAMS, need

from vmascope.errors import ProcessNotFound
from vmascope.trace import bpf
from vmascope.trace.events import CALLS, FAULT_WRITE, Event

BASE = 0x300000000000
PAGE = 4096
MAP_PRIVATE, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE = 0x02, 0x20, 0x100000
PR_SET_VMA = 0x53564D41
BENCH = Path(__file__).parent.parent / "bench"


@pytest.fixture(autouse=True)
def _need_bpf(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("unprivileged"):
        return
    if os.geteuid() != 0:
        pytest.skip("the BPF recorder needs root")
    why = bpf.problem()
    if why:
        pytest.skip(why)


@pytest.fixture(scope="module")
def recordme(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recordme") / "recordme"
    subprocess.run([need("cc"), "-O0", "-fno-omit-frame-pointer", "-fno-inline",
                    "-pthread", "-Wall", "-o", str(out), str(PROGRAMS / "recordme.c")],
                   check=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("churn") / "churn"
    subprocess.run([need("cc"), "-O2", "-Wall", "-o", str(out), str(BENCH / "churn.c")],
                   check=True, timeout=120)
    return out


def read_line(popen: subprocess.Popen[bytes], prefix: str, timeout: float = 30) -> str:
    assert popen.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(popen.stdout, selectors.EVENT_READ)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sel.select(timeout=deadline - time.monotonic()):
                line = popen.stdout.readline().decode()
                if not line:
                    break
                if line.startswith(prefix):
                    return line.strip()
    finally:
        sel.close()
    raise AssertionError(f"no {prefix!r} line from {popen.args}")


@contextlib.contextmanager
def target(cmd: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """A program that prints READY and waits for a byte on stdin before it works."""
    popen = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             start_new_session=True)
    try:
        read_line(popen, "READY")
        yield popen
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=30)
        for stream in (popen.stdin, popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def go(popen: subprocess.Popen[bytes]) -> None:
    assert popen.stdin is not None
    popen.stdin.write(b"g")
    popen.stdin.flush()


class Symbols:
    """The text symbols of a PIE program loaded at ``base``."""

    def __init__(self, exe: Path, pid: int) -> None:
        out = subprocess.run(["nm", "-n", "--defined-only", str(exe)], check=True,
                             capture_output=True, text=True, timeout=60).stdout
        self.syms = [(int(a, 16), n) for a, t, n in
                     (line.split()[:3] for line in out.splitlines() if len(line.split()) == 3)
                     if t in "tT"]
        real = os.path.realpath(exe)
        with open(f"/proc/{pid}/maps") as fh:
            starts = [int(line.split("-")[0], 16) for line in fh
                      if line.split()[-1] == real and int(line.split()[2], 16) == 0]
        self.base = min(starts)
        self.end = self.base + 0x100000

    def name(self, address: int) -> str | None:
        if not self.base <= address < self.end:
            return None
        rel = address - self.base
        best = None
        for a, n in self.syms:
            if a <= rel:
                best = n
            else:
                break
        return best


def record_recordme(recordme: Path, data: Path, **options: object) -> tuple[
        list[Event], dict[str, object], dict[str, int], Symbols]:
    with target([str(recordme), str(data)]) as popen:
        syms = Symbols(recordme, popen.pid)
        with bpf.BpfRecorder([popen.pid], **options) as rec:  # type: ignore[arg-type]
            go(popen)
            ids = {"pid": popen.pid,
                   "thread": int(read_line(popen, "THREAD").split()[1]),
                   "child": int(read_line(popen, "CHILD").split()[1])}
            read_line(popen, "DONE")
            events = list(rec.events(timeout=30))
            stats = rec.stop()
        assert popen.wait(timeout=30) == 0
    return events, stats, ids, syms


def in_base(ev: Event, size: int = 4 << 20) -> bool:
    return bool(ev.args) and BASE <= ev.args[0] < BASE + size


@pytest.mark.parametrize("faults", ["auto", "find_vma"])
def test_calls_faults_files_and_stacks(recordme: Path, tmp_path: Path, faults: str) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * PAGE)
    events, stats, ids, syms = record_recordme(recordme, data, faults=faults)
    pid, tid, child = ids["pid"], ids["thread"], ids["child"]

    assert stats["complete"] and stats["end"] == "targets exited", stats
    assert stats["lost"] == 0
    assert stats["fault_filter"] == ("maple" if faults == "auto" else faults)
    assert stats["events"] == len(events)
    assert {ev.call for ev in events} <= CALLS
    assert all(ev.t >= 0 for ev in events)
    assert {ev.pid for ev in events} == {pid, child}

    main = [ev for ev in events if ev.tid == pid and ev.call != "fault"]
    first = next(i for i, ev in enumerate(main) if ev.call == "mmap" and ev.args[0] == BASE)
    got = [(ev.call, ev.args, ev.ret) for ev in main[first:first + 6]]
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
    prctl = main[first + 3]
    assert got == [
        ("mmap", (BASE, 4 * PAGE, 3, flags, 2**64 - 1, 0), BASE),
        ("mprotect", (BASE + PAGE, PAGE, 1), 0),
        ("madvise", (BASE + 2 * PAGE, PAGE, 4), 0),
        ("prctl", (PR_SET_VMA, 0, BASE, 4 * PAGE, prctl.args[4]), prctl.ret),
        ("munmap", (BASE + 3 * PAGE, PAGE), 0),
        ("munmap", (BASE + 1, PAGE), -errno.EINVAL),
    ]
    assert prctl.ret in (0, -errno.EINVAL)  # EINVAL: CONFIG_ANON_VMA_NAME is off
    assert prctl.text == "recordme"

    # The file mapping: the file's identity as stat() gives it.
    fmap = main[first + 6]
    assert fmap.call == "mmap" and fmap.args[:4] == (0, PAGE, 1, MAP_PRIVATE)
    assert fmap.ret is not None and fmap.ret > 0
    st = os.stat(data)
    assert fmap.file is not None
    assert (fmap.file.dev, fmap.file.inode, fmap.file.basename) == (
        st.st_dev, st.st_ino, "data.bin")

    # The thread (clone3's result) and the forked child (clone's), which is followed.
    assert any(ev.call == "clone3" and ev.ret == tid for ev in main)
    assert any(ev.call == "clone" and ev.ret == child for ev in main)
    assert main[-1].call == "exit_group" and main[-1].args == (0,) and main[-1].ret is None
    thread = [(ev.call, ev.args[:2], ev.ret) for ev in events
              if ev.tid == tid and in_base(ev)]
    assert thread == [("mmap", (BASE + (1 << 20), PAGE), BASE + (1 << 20)),
                      ("munmap", (BASE + (1 << 20), PAGE), 0)]
    assert all(ev.pid == pid for ev in events if ev.tid == tid)
    kid = [(ev.call, ev.args[:2], ev.ret) for ev in events if ev.pid == child]
    assert [k for k in kid if k[0] != "fault"] == [
        ("mmap", (BASE + (2 << 20), PAGE), BASE + (2 << 20)),
        ("munmap", (BASE + (2 << 20), PAGE), 0),
        ("exit_group", (0,), None)]

    # Faults: the first write to a page of a new private VMA is kept; the second touch
    # of that page does not fault; the first touch of the next page does, but its VMA
    # has an anon_vma already, so it is not kept.
    faults = [ev for ev in events if ev.call == "fault" and in_base(ev)]
    assert [(ev.pid, ev.args[0]) for ev in faults] == [(pid, BASE), (child, BASE + (2 << 20))]
    assert all(ev.args[1] & FAULT_WRITE and ev.ret is None for ev in faults)
    assert stats["faults_seen"] > stats["faults_kept"] > 0  # type: ignore[operator]

    # Stacks: the wrapper in libc, then the word at [sp] (the caller the frame-pointer
    # walk skips), then the walk; a fault's stack starts at the faulting instruction.
    def names(ev: Event, n: int) -> list[str | None]:
        return [syms.name(a) for a in ev.stack[:n]]

    assert syms.name(main[first].stack[0]) is None  # in libc
    assert names(main[first], 3)[1:] == ["do_mmap", "work"]
    assert names(main[first + 1], 3)[1:] == ["do_mprotect", "work"]
    assert names(main[first + 5], 3)[1:] == ["do_munmap", "work"]
    assert names(faults[0], 2) == ["touch", "work"]
    assert names(faults[1], 2) == ["touch", "child_work"]
    tmap = next(ev for ev in events if ev.tid == tid and ev.call == "mmap" and in_base(ev))
    assert names(tmap, 3)[1:] == ["do_mmap", "thread_work"]


def test_fallback_keeps_the_first_fault_per_page(recordme: Path, tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * PAGE)
    events, stats, ids, _ = record_recordme(recordme, data, faults="page", follow=False)
    assert stats["fault_filter"] == "page" and stats["lost"] == 0
    faults = [ev.args[0] for ev in events if ev.call == "fault" and in_base(ev)]
    assert faults == [BASE, BASE + PAGE]  # twice page 0 is once; the child is not followed
    assert {ev.pid for ev in events} == {ids["pid"]}


def prog_ids(loader: int) -> tuple[set[int], set[int]]:
    """The ids of the BPF programs and links whose file descriptors process ``loader``
    holds (from /proc/PID/fdinfo)."""
    progs: set[int] = set()
    links: set[int] = set()
    for fd in os.listdir(f"/proc/{loader}/fdinfo"):
        with contextlib.suppress(OSError), open(f"/proc/{loader}/fdinfo/{fd}") as fh:
            info = dict(line.split(":", 1) for line in fh.read().splitlines() if ":" in line)
        if "link_id" in info:
            links.add(int(info["link_id"]))
        elif "prog_id" in info:
            progs.add(int(info["prog_id"]))
    return progs, links


def all_ids() -> tuple[set[int], set[int]]:
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], check=True,
                                      capture_output=True, text=True, timeout=60).stdout)
    links = json.loads(subprocess.run(["bpftool", "-j", "link", "show"], check=True,
                                      capture_output=True, text=True, timeout=60).stdout)
    return {p["id"] for p in progs}, {lk["id"] for lk in links}


def assert_released(progs: set[int], links: set[int], timeout: float = 20) -> None:
    """The kernel frees programs and links a moment after their last holder is gone
    (RCU); they must be gone within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left_progs, left_links = all_ids()
        if not progs & left_progs and not links & left_links:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"still there: programs {progs & left_progs}, "
                                 f"links {links & left_links}")
        time.sleep(0.2)


def wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} is still there")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_leaves_no_program_or_link(sig: signal.Signals) -> None:
    need("bpftool")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        rec = bpf.BpfRecorder([sleeper.pid]).start()
        try:
            assert rec.pid is not None
            progs, links = prog_ids(rec.pid)
            # sys_enter, sys_exit, the user's and the kernel's faults, fork, exit, exec
            assert len(progs) == len(links) == 7
            assert rec._proc is not None
            rec._proc.send_signal(sig)
            assert rec._proc.wait(timeout=30) == 0  # it ends by itself, with a trailer
            stats = rec.stop()
            assert stats["complete"] and stats["end"] == "signal"
        finally:
            rec.stop()
        assert_released(progs, links)
    finally:
        sleeper.kill()
        sleeper.wait(timeout=30)


def test_sigkill_of_python_takes_the_loader_along(tmp_path: Path) -> None:
    need("bpftool")
    code = textwrap.dedent("""
        import os, sys, time
        from vmascope.trace.bpf import BpfRecorder
        rec = BpfRecorder([int(sys.argv[1])]).start()
        print(rec.pid, flush=True)
        time.sleep(120)
    """)
    sleeper = subprocess.Popen(["sleep", "60"])
    py = subprocess.Popen([sys.executable, "-c", code, str(sleeper.pid)],
                          stdout=subprocess.PIPE)
    try:
        assert py.stdout is not None
        loader = int(py.stdout.readline())
        progs, links = prog_ids(loader)
        assert progs and links
        py.kill()
        py.wait(timeout=30)
        wait_gone(loader)
        assert_released(progs, links)
    finally:
        for p in (py, sleeper):
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait(timeout=30)
        if py.stdout is not None:
            py.stdout.close()


def test_lost_events_are_counted(churn: Path) -> None:
    """A tiny ring buffer and a reader that does not read: the records that did not fit
    are counted, and sent + lost is every call and kept fault."""
    cycles = 2000
    with target([str(churn), str(cycles)]) as popen:
        with bpf.BpfRecorder([popen.pid], ring_size=4096) as rec:
            assert rec._proc is not None
            os.kill(rec._proc.pid, signal.SIGSTOP)  # the reader falls behind
            try:
                go(popen)
                read_line(popen, "DONE", timeout=60)
            finally:
                os.kill(rec._proc.pid, signal.SIGCONT)
            events = list(rec.events(timeout=30))
            stats = rec.stop()
        popen.wait(timeout=30)
    assert stats["complete"] and stats["lost_ring"] > 0, stats
    assert stats["events"] == len(events) < 4 * cycles
    # every cycle: mmap, mprotect, munmap and one kept fault; then exit_group
    assert stats["events"] + stats["lost_ring"] >= 4 * cycles + 1


def test_missing_target() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait(timeout=30)
    with pytest.raises(ProcessNotFound):
        bpf.BpfRecorder([proc.pid]).start()


@pytest.mark.unprivileged
def test_stack_insertion_rule() -> None:
    sp = 0x7FFC_0000_0000
    assert bpf.call_stack([1, 2], 0x5555_0000_1234, sp) == (1, 0x5555_0000_1234, 2)
    assert bpf.call_stack([1, 0x5555_0000_1234], 0x5555_0000_1234, sp) == (1, 0x5555_0000_1234)
    assert bpf.call_stack([1, 2], 0x18, sp) == (1, 2)  # not an address
    assert bpf.call_stack([1, 2], sp + 0x40, sp) == (1, 2)  # a saved frame pointer
    assert bpf.call_stack([1, 2], None, sp) == (1, 2)
