"""Snapshot files: capture -> load round trip, damaged files, atomic writes, the CLI."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import python_child
from hypothesis import given, settings
from hypothesis import strategies as st

import vmascope
from vmascope.cli import main
from vmascope.errors import ParseError, SnapshotFormatError
from vmascope.procfs import snapfile
from vmascope.procfs.capture import capture
from vmascope.procfs.live import read_process
from vmascope.procfs.load import load_stream
from vmascope.procfs.parse import maps_text_from_smaps

# A child with a recognisable, fragmented address space: 40 pages alternating RW and
# PROT_NONE (40 VMAs), then it stops itself so that two reads see the same mappings.
CHILD = r"""
import ctypes, mmap, os, signal
signal.alarm(60)
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
P = os.sysconf("SC_PAGE_SIZE")
a = libc.mmap(None, 42 * P, 0, 0x22, -1, 0)
for i in range(1, 41, 2):
    libc.mprotect(a + i * P, P, 3)
print(a, flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
"""


@pytest.fixture
def child():
    with python_child(CHILD) as (pid, line):
        yield pid, int(line)


def same_snapshot(a, b):
    assert len(a) == len(b)
    for col in ("start", "end", "perms", "offset", "dev", "inode", "vmflags", "policy_id"):
        x, y = getattr(a, col), getattr(b, col)
        assert (x is None) == (y is None), col
        if x is not None:
            assert np.array_equal(x, y), col
    assert [a.name(i) for i in range(len(a))] == [b.name(i) for i in range(len(b))]
    assert a.flag_names == b.flag_names and a.policies == b.policies
    assert sorted(a.smaps) == sorted(b.smaps)
    for k in ("Size", "Rss", "Anonymous", "Swap"):
        assert np.array_equal(a.smaps[k], b.smaps[k]), k


def test_capture_then_load_gives_the_same_columns(child, tmp_path):
    pid, base = child
    path = tmp_path / "app.vmasnap"
    live = read_process(pid)
    res = capture(pid, path)
    assert res.map_count == len(live)
    assert path.read_bytes()[:8] == snapfile.MAGIC
    loaded = vmascope.load(path)
    same_snapshot(live, loaded)
    assert loaded.meta.pid == pid and loaded.meta.source == "file"
    assert loaded.meta.comm == live.meta.comm
    assert loaded.meta.max_map_count == live.meta.max_map_count
    assert loaded.meta.status["Pid"] == str(pid)
    # Pss divides shared pages by their mappers: another process starting or ending
    # between the two reads changes it, so only the fields of this process alone compare.
    def own(rollup: dict[str, int]) -> dict[str, int]:
        return {k: v for k, v in rollup.items() if not k.startswith("Pss")}

    assert own(loaded.meta.smaps_rollup) == own(live.meta.smaps_rollup)
    assert set(loaded.meta.smaps_rollup) == set(live.meta.smaps_rollup)
    # the 40 alternating pages are 40 VMAs between two PROT_NONE ends
    P = os.sysconf("SC_PAGE_SIZE")
    i = int(np.searchsorted(loaded.start, base + P))
    perms = [loaded.perms_text(j) for j in range(i, i + 40)]
    assert perms == ["rw-p", "---p"] * 20
    # counts of the capture (count-only parse) agree with the full parse
    assert dict(res.backing_counts) == dict(loaded.backing_counts())
    # the raw text is in the file: maps, smaps, numa_maps, status ...
    with open(path, "rb") as fh:
        sections = snapfile.read_all_sections(fh, str(path))
    assert {"meta.json", "comm", "cmdline", "status", "smaps", "smaps_rollup",
            "end.json"} <= set(sections)
    # maps is not read again when smaps is captured: its text is inside smaps
    assert "maps" not in sections
    with open(f"/proc/{pid}/maps", "rb") as fh:
        assert maps_text_from_smaps(sections["smaps"]) == fh.read()


def test_capture_without_smaps(child, tmp_path):
    pid, _ = child
    path = tmp_path / "m.vmasnap"
    capture(pid, path, smaps=False, numa=False)
    with open(path, "rb") as fh:
        names = list(snapfile.read_all_sections(fh, str(path)))
    assert names == ["meta.json", "comm", "cmdline", "status", "maps", "end.json"]
    loaded = vmascope.load(str(path))
    live = read_process(pid, smaps=False, numa=False)
    assert loaded.smaps == {} and loaded.vmflags is None and loaded.policy_id is None
    assert np.array_equal(loaded.start, live.start)


def _good_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.vmasnap"
    capture(os.getpid(), path)
    return path


def test_truncated_and_corrupt_files_are_named(tmp_path):
    good = _good_file(tmp_path)
    data = good.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 20, 12, 5):
        bad = tmp_path / f"cut{cut}.vmasnap"
        bad.write_bytes(data[:cut])
        with pytest.raises(SnapshotFormatError) as info:
            vmascope.load(bad)
        assert str(bad) in str(info.value) and info.value.exit_code == 5
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x55
    bad = tmp_path / "flip.vmasnap"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(SnapshotFormatError, match="corrupt|truncated"):
        vmascope.load(bad)


def test_newer_version_is_rejected_clearly(tmp_path):
    data = bytearray(_good_file(tmp_path).read_bytes())
    data[8:12] = struct.pack("<I", snapfile.FORMAT_VERSION + 1)
    newer = tmp_path / "newer.vmasnap"
    newer.write_bytes(bytes(data))
    with pytest.raises(SnapshotFormatError, match="newer than this vmascope"):
        vmascope.load(newer)


def test_unknown_sections_are_skipped(tmp_path):
    path = tmp_path / "x.vmasnap"
    maps = b"00400000-00401000 r--p 00000000 00:00 0 \n"
    with open(path, "wb") as fh:
        w = snapfile.SnapshotWriter(fh)
        w.json_section("meta.json", {"meta": {"pid": 7}, "sections": ["maps"]})
        w.section("from-the-future", b"\x00" * 100)
        w.section("maps", maps)
        w.json_section("end.json", {})
        w.close()
    snap = vmascope.load(path)
    assert len(snap) == 1 and snap.meta.pid == 7


def test_cli_capture_and_summary(child, tmp_path, capsys):
    pid, _ = child
    out = tmp_path / "c.vmasnap"
    assert main(["snapshot", str(pid), "-o", str(out)]) == 0
    assert out.exists()
    captured = capsys.readouterr()
    text = captured.err  # what -o wrote is said on stderr, as by every verb
    assert captured.out == ""
    n = len(read_process(pid))
    assert f"{n} mappings" in text and f"vmascope: wrote {out}" in text
    assert main(["snapshot", str(out)]) == 0
    text = capsys.readouterr().out
    mmc = int(Path("/proc/sys/vm/max_map_count").read_text())
    assert f"mappings {n} of max_map_count {mmc}" in text
    assert f"{mmc - n} left" in text
    assert "[anon]" in text  # the 40 anonymous VMAs lead the backings


def test_cli_json(child, capsys):
    pid, base = child
    assert main(["snapshot", str(pid), "--json", "--vmas"]) == 0
    data = json.loads(capsys.readouterr().out)
    n = len(read_process(pid))
    assert data["schema_version"] == 1 and data["map_count"] == n
    assert data["mappings_left"] == data["max_map_count"] - n
    assert data["top_backings"][0] == {"backing": "[anon]", "vmas": data["top_backings"][0]["vmas"]}
    P = os.sysconf("SC_PAGE_SIZE")
    vma = next(v for v in data["vmas"] if v["start"] == hex(base + P))
    assert vma == {**vma, "end": hex(base + 2 * P), "size": P, "perms": "rw-p", "name": None}
    assert "smaps" in vma and vma["smaps"]["Size"] == P
    assert main(["snapshot", str(pid), "--json"]) == 0
    assert "vmas" not in json.loads(capsys.readouterr().out)


def test_cli_errors_one_line_and_exit_codes(tmp_path, capsys):
    with open("/proc/sys/kernel/pid_max") as fh:
        beyond = int(fh.read()) + 1
    out = tmp_path / "never.vmasnap"
    assert main(["snapshot", str(beyond), "-o", str(out)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such process" in err
    assert list(tmp_path.iterdir()) == []  # no partial or temporary file
    dump = tmp_path / "dump.txt"
    dump.write_text("00400000-00401000 r--p 00000000 00:00 0 \nnot a line\n")
    assert main(["snapshot", str(dump)]) == 5
    assert f"{dump}:2: expected" in capsys.readouterr().err
    trunc = tmp_path / "t.vmasnap"
    trunc.write_bytes(_good_file(tmp_path).read_bytes()[:50])
    assert main(["snapshot", str(trunc)]) == 5
    assert f"{trunc}: truncated" in capsys.readouterr().err
    assert main(["snapshot", str(dump), "-o", str(tmp_path / "x")]) == 2
    assert main(["snapshot", "nope-not-here"]) == 2
    assert main(["snapshot", "1", "--vmas"]) == 2


def test_ctrl_c_during_capture_leaves_nothing(tmp_path, monkeypatch, capsys):
    from vmascope.procfs import capture as capture_mod

    real = capture_mod.stream_proc
    calls = []

    def interrupted(pid, name, sinks, *a, **kw):
        calls.append(name)
        if name == "smaps":
            sinks[0](memoryview(b"00400000-00401000 r--p 00000000 00:00 0 \n"))
            raise KeyboardInterrupt
        return real(pid, name, sinks, *a, **kw)

    monkeypatch.setattr(capture_mod, "stream_proc", interrupted)
    assert main(["snapshot", str(os.getpid()), "-o", str(tmp_path / "i.vmasnap")]) == 130
    assert calls == ["smaps"]
    assert list(tmp_path.iterdir()) == []
    assert "interrupted" in capsys.readouterr().err


def test_console_script_in_a_subprocess(tmp_path):
    script = Path(sys.executable).parent / "vmascope"
    with open(f"/proc/{os.getpid()}/maps", "rb") as fh:
        maps = fh.read()
    run = subprocess.run([str(script), "snapshot", "-", "--json"], input=maps,
                         capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["map_count"] == maps.count(b"\n")
    assert data["meta"]["source"] == "maps-dump"
    bad = subprocess.run([str(script), "snapshot", "-"], input=b"\x00\x01garbage\n",
                         capture_output=True, timeout=60)
    assert bad.returncode == 5
    assert bad.stderr.decode().startswith("vmascope: error: <stdin>:1: expected")
    assert b"Traceback" not in bad.stderr


def _small_snapshot_bytes() -> bytes:
    buf = io.BytesIO()
    w = snapfile.SnapshotWriter(buf)
    w.json_section("meta.json", {"meta": {"pid": 1}, "sections": ["smaps"]})
    w.section("smaps", b"00400000-00401000 r--p 00000000 00:00 0 \nSize: 4 kB\n" * 3)
    w.json_section("end.json", {})
    w.close()
    return buf.getvalue()


SMALL = _small_snapshot_bytes()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(SMALL) - 1), st.integers(1, 255), st.booleans())
def test_damaged_files_only_raise_vmascope_errors(pos, xor, cut):
    data = SMALL[:pos] if cut else SMALL[:pos] + bytes([SMALL[pos] ^ xor]) + SMALL[pos + 1 :]
    try:
        snap = load_stream(io.BytesIO(data), "f.vmasnap")
    except (SnapshotFormatError, ParseError) as exc:
        assert str(exc).startswith("f.vmasnap")
        return
    # a file that still loads must be the intact one (only possible if a flip landed in
    # bytes the format does not check, which the checksum and magic leave none of)
    assert len(snap) == 3
