"""The host reading: map counts equal to wc -l of maps, exited processes left out, and
what a user without root cannot see."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

from conftest import drop_to, forked, need_root
from monitor_util import mappers, wc_l

from vmascope.monitor.reading import read_host
from vmascope.procfs.count import count_lines, read_count


def test_map_counts_of_test_processes_equal_wc_l() -> None:
    with mappers(3000, 1200) as procs:
        pids = [p.pid for p in procs]
        reading = read_host()
        seen = {p.pid: p for p in reading.processes}
        for pid in pids:
            assert seen[pid].map_count == wc_l(pid)
            assert seen[pid].comm.startswith("python")
            assert seen[pid].rss_bytes > 1 << 20
        assert 2990 <= seen[pids[0]].map_count <= 3010
        assert reading.limit == int(open("/proc/sys/vm/max_map_count").read())
        assert reading.processes and reading.duration > 0


def test_count_lines_reads_past_its_buffer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "lines"
    f.write_bytes(b"x" * 100 + b"\n" + b"abc\n" * 300_000)
    assert count_lines(str(f), bytearray(1 << 13)) == 300_001


def test_an_exited_process_is_left_out_not_an_error() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(timeout=30)
    assert read_count(p.pid) is None
    assert read_host(pids=[p.pid]).processes == []


def test_a_zombie_is_left_out() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(200):
            with open(f"/proc/{p.pid}/stat", "rb") as fh:
                if b") Z" in fh.read():
                    break
            import time
            time.sleep(0.01)
        assert read_count(p.pid) is None
    finally:
        p.wait(timeout=30)


def test_kernel_threads_are_left_out() -> None:
    reading = read_host(pids=[2])  # kthreadd
    assert reading.processes == []


def test_without_root_the_reading_says_what_it_cannot_see() -> None:
    need_root()

    def as_nobody() -> bytes:
        drop_to(65534)
        ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: own /proc files
        reading = read_host()
        return json.dumps([reading.unreadable, reading.note(), os.getpid(),
                           sorted({p.uid for p in reading.processes}),
                           [p.pid for p in reading.processes]]).encode()

    data = forked(as_nobody)
    unreadable, note, me, uids, pids = json.loads(data)
    assert unreadable >= 1  # root's processes at least (this test's own)
    assert os.getpid() not in pids and me in pids
    assert "not shown" in note and "root" in note
    assert uids == [65534]  # only its own
