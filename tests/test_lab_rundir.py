"""Stale lab run directories (vmascope-vm-*) are removed at the next start, but only
when their owner process is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from vmascope.lab import rundir

CHILD = """
import sys, time
from vmascope.lab.rundir import run_dir
with run_dir() as d:
    print(d, flush=True)
    time.sleep(60)
"""


def _start(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout is not None
    d = Path(proc.stdout.readline().strip())
    assert d.parent == tmp_path and d.name.startswith("vmascope-vm-")
    return proc, d


def test_a_killed_run_s_directory_is_removed_at_the_next_start(tmp_path):
    proc, d = _start(tmp_path)
    (d / "initrd").write_bytes(b"x" * 1000)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert d.exists()  # SIGKILL: nothing could clean up
    assert rundir.clean_stale(tmp_path) == [d]
    assert not d.exists()


def test_a_live_run_s_directory_is_kept(tmp_path):
    proc, d = _start(tmp_path)
    try:
        assert rundir.clean_stale(tmp_path) == []
        assert d.exists()
    finally:
        proc.kill()
        proc.wait()


def test_a_reused_pid_does_not_keep_a_directory(tmp_path):
    d = tmp_path / "vmascope-vm-old"
    d.mkdir()
    # our own pid, but another start time: the owner was a process that has gone
    (d / "owner").write_text(f"{os.getpid()} 1\n")
    assert rundir.clean_stale(tmp_path) == [d]


def test_directories_without_an_owner_wait_for_the_grace_period(tmp_path):
    young = tmp_path / "vmascope-vm-young"
    old = tmp_path / "vmascope-vm-old"
    young.mkdir()
    old.mkdir()
    past = time.time() - rundir.NO_OWNER_GRACE - 10
    os.utime(old, (past, past))
    other = tmp_path / "not-ours"
    other.mkdir()
    assert rundir.clean_stale(tmp_path) == [old]
    assert young.exists() and other.exists()


def test_run_dir_removes_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    with rundir.run_dir() as d:
        assert (d / "owner").read_text().split()[0] == str(os.getpid())
    assert not d.exists()
    monkeypatch.setattr(tempfile, "tempdir", None)
