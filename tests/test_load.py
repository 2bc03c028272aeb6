"""vmascope.load(): every kind of target."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import vmascope
from vmascope.errors import ParseError, ProcessNotFound, SnapshotFormatError, UsageError
from vmascope.procfs.load import load_stream, load_target

MAPS = (
    b"00400000-00401000 r--p 00000000 08:01 42                                 /bin/app\n"
    b"00401000-00402000 rw-p 00000000 00:00 0 \n"
)
SMAPS = MAPS.split(b"\n")[0] + b"\nSize:                  4 kB\nRss:                   4 kB\n" \
    b"VmFlags: rd mr mw me \n"


def test_pid_as_int_and_as_digits():
    a = load_target(os.getpid())
    b = vmascope.load(str(os.getpid()))
    assert a.meta.pid == b.meta.pid == os.getpid()
    assert a.meta.source == "live" and len(a) > 0


def test_raw_maps_and_smaps_files_are_told_apart(tmp_path):
    m = tmp_path / "pasted-maps.txt"
    m.write_bytes(MAPS)
    s = tmp_path / "pasted-smaps.txt"
    s.write_bytes(SMAPS)
    snap_m = load_target(m)  # a Path
    snap_s = load_target(str(s))
    assert snap_m.meta.source == "maps-dump" and len(snap_m) == 2
    assert snap_m.name(0) == "/bin/app" and snap_m.name(1) is None
    assert snap_s.meta.source == "smaps-dump" and len(snap_s) == 1
    assert int(snap_s.smaps["Rss"][0]) == 4096
    assert snap_s.flags(0) == frozenset({"rd", "mr", "mw", "me"})
    assert snap_m.meta.pid is None and snap_m.meta.max_map_count is None


def test_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(MAPS)))
    snap = vmascope.load("-")
    assert [int(x) for x in snap.start] == [0x400000, 0x401000]


def test_stream_of_a_snapshot_file(tmp_path):
    from vmascope.procfs.capture import capture

    path = tmp_path / "s.vmasnap"
    capture(os.getpid(), path)
    with open(path, "rb") as fh:
        # a non-seekable pipe delivers the same bytes
        snap = load_stream(io.BufferedReader(io.BytesIO(fh.read())), "<stdin>")
    assert snap.meta.source == "file" and snap.meta.pid == os.getpid()


def test_bad_targets(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_target(tmp_path / "missing.txt")
    with pytest.raises(UsageError, match="directory"):
        load_target(tmp_path)
    with pytest.raises(UsageError):
        load_target(3.5)  # type: ignore[arg-type]
    with open("/proc/sys/kernel/pid_max") as fh:
        beyond = int(fh.read()) + 1
    with pytest.raises(ProcessNotFound):
        load_target(beyond)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ParseError, match="empty"):
        load_target(empty)
    blank = tmp_path / "blank.txt"
    blank.write_bytes(b"\n\n")
    with pytest.raises(ParseError, match="no mapping lines"):
        load_target(blank)
    numa = tmp_path / "numa.txt"
    numa.write_bytes(b"00400000 default file=/bin/app mapped=1 N0=1\n")
    with pytest.raises(ParseError) as info:
        load_target(numa)
    assert info.value.line == 1 and str(numa) in str(info.value)
    zst = tmp_path / "maps.zst"
    zst.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 20)
    with pytest.raises(ParseError, match="zstd"):
        load_target(zst)
    head = tmp_path / "head.vmasnap"
    head.write_bytes(b"\x89VMA")
    with pytest.raises(SnapshotFormatError, match="truncated"):
        load_target(head)


def test_a_file_named_like_a_pid_is_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("12345").write_bytes(MAPS)
    snap = load_target("12345")
    assert snap.meta.source == "maps-dump" and len(snap) == 2


def test_columns_are_compact():
    # about 41 bytes a VMA for the maps columns: no Python object per field
    text = b"".join(
        b"%08x-%08x rw-p 00000000 00:00 0 \n" % (0x10000000 + 2 * i * 4096,
                                                 0x10000000 + (2 * i + 1) * 4096)
        for i in range(10000)
    )
    snap = vmascope.procfs.parse.parse_text(text)
    assert len(snap) == 10000
    assert snap.nbytes() == 10000 * (8 + 8 + 1 + 8 + 4 + 8 + 4)
    assert snap.names == []
    assert np.all(snap.end - snap.start == 4096)
