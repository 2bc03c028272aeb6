"""A process that exits while it is read: never a snapshot of 0 mappings, never a
traceback (fuzz/trials.py vanishing runs the long version)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from vmascope.errors import ProcessNotFound
from vmascope.procfs import capture as capture_mod
from vmascope.procfs import live
from vmascope.procfs import reader as reader_mod
from vmascope.procfs.parse import TextParser

ROOT = Path(__file__).resolve().parent.parent


def test_empty_maps_text_of_a_live_pid_is_a_process_that_exited(monkeypatch, tmp_path):
    # An exiting process has released its mm before it is a zombie: the kernel then
    # prints empty maps/smaps text while /proc/PID/stat still says it runs.
    monkeypatch.setattr(reader_mod, "stream_proc", lambda pid, name, sinks: 0)
    monkeypatch.setattr(capture_mod, "stream_proc", lambda pid, name, sinks: 0)
    monkeypatch.setattr(live, "stream_proc", lambda pid, name, sinks: 0)
    monkeypatch.setattr(TextParser, "feed_fd", lambda self, fd, cpus=None: 0)
    with pytest.raises(ProcessNotFound, match="exited while being read"):
        live.read_process(os.getpid())
    with pytest.raises(ProcessNotFound, match="exited while being read"):
        live.stream_process(os.getpid(), lambda piece: None)
    with pytest.raises(ProcessNotFound, match="exited while being read"):
        capture_mod.capture(os.getpid(), tmp_path / "c.vmasnap")
    assert os.listdir(tmp_path) == []


def test_a_short_vanishing_trial():
    sys.path.insert(0, str(ROOT))
    from fuzz import trials

    res = trials.vanishing(150, seed=3)
    assert res["failed"] == 0, res["failures"]
    assert sum(res["outcomes"].values()) == 150
