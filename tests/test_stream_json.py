"""`snapshot PID --json --vmas` streams its VMA array: valid JSON (read back by a streaming
parser), the same document as the whole-object encoder, and memory that stays flat."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import ijson
import pytest

import vmascope
from vmascope.cli.demo import CHILD
from vmascope.report.snapshot import (
    stream_json_with_vmas,
    summary_json,
    write_json_with_vmas,
)

VMASCOPE = str(Path(sys.executable).parent / "vmascope")


@pytest.fixture(scope="module")
def fragmented():
    """A child with about 22,000 VMAs (a reservation committed every other page first:
    one VMA per two pages)."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, "44000"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline()
        yield child.pid
    finally:
        child.kill()
        child.wait(timeout=10)


def _whole(snap) -> dict:
    """The document as the in-memory encoder builds it (every VMA a dict)."""
    top = snap.backing_counts()[:10]
    return json.loads(json.dumps(summary_json(snap, top, vmas=True)))


@pytest.mark.parametrize("chunk", [1, 7, 1 << 15])
def test_stream_is_the_same_document(tmp_path: Path, chunk: int) -> None:
    smaps = Path(f"/proc/{os.getpid()}/smaps").read_bytes()
    dump = tmp_path / "smaps.txt"
    dump.write_bytes(smaps)
    maps = tmp_path / "maps.txt"
    maps.write_bytes(Path(f"/proc/{os.getpid()}/maps").read_bytes())
    for target in (str(dump), str(maps), os.getpid()):
        snap = vmascope.load(target)
        buf = io.StringIO()
        write_json_with_vmas(snap, snap.backing_counts()[:10], buf, chunk=chunk)
        assert json.loads(buf.getvalue()) == _whole(snap)


def test_stream_with_a_field_missing_from_one_vma(tmp_path: Path) -> None:
    text = Path(f"/proc/{os.getpid()}/smaps").read_bytes()
    cut = text.index(b"\nSwap:")  # the first VMA's Swap line is gone
    dump = tmp_path / "smaps.txt"
    dump.write_bytes(text[:cut] + text[text.index(b"\n", cut + 1):])
    snap = vmascope.load(str(dump))
    assert "Swap" not in snap.vma(0).smaps and "Swap" in snap.vma(1).smaps
    for chunk in (1, 3, 1 << 15):
        buf = io.StringIO()
        write_json_with_vmas(snap, snap.backing_counts()[:10], buf, chunk=chunk)
        assert json.loads(buf.getvalue()) == _whole(snap)


def test_cli_output_read_by_a_streaming_parser(fragmented: int) -> None:
    proc = subprocess.Popen([VMASCOPE, "snapshot", str(fragmented), "--json", "--vmas"],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    n = 0
    last_end = 0
    for vma in ijson.items(proc.stdout, "vmas.item"):
        start, end = int(vma["start"], 16), int(vma["end"], 16)
        assert start >= last_end and end > start and vma["size"] == end - start
        assert "Rss" in vma["smaps"] and "flags" in vma
        assert "policy" not in vma  # numa_maps is read only with --numa
        last_end = end
        n += 1
    assert proc.wait(timeout=60) == 0
    assert n >= 20000  # the committed pages, one VMA each, and the rest of the process
    doc = json.loads(subprocess.run([VMASCOPE, "snapshot", str(fragmented), "--json"],
                                    capture_output=True, text=True, check=True).stdout)
    assert doc["map_count"] == n  # the process did not change meanwhile


@pytest.mark.parametrize("smaps", [True, False])
def test_live_stream_is_the_document_of_a_whole_read(fragmented: int, smaps: bool) -> None:
    """The live form writes each piece of VMAs as it is parsed, "vmas" first: the same
    document as the whole read's (the process stopped meanwhile), time apart."""
    from conftest import stopped

    from vmascope.procfs.live import read_process

    with stopped(fragmented):
        buf = io.StringIO()
        stream_json_with_vmas(fragmented, buf, top=10, smaps=smaps, max_map_count=99999)
        snap = read_process(fragmented, smaps=smaps, numa=False)
    snap.meta.max_map_count = 99999
    doc, whole = json.loads(buf.getvalue()), _whole(snap)
    assert next(iter(doc)) == "vmas"
    for d in (doc, whole):
        del d["meta"]["time"]
    assert doc["map_count"] > 20000 and doc["mappings_left"] == 99999 - doc["map_count"]
    assert doc == whole
    assert ("smaps" in doc["vmas"][0]) == smaps


def test_counted_summary_is_the_summary_of_a_whole_read(fragmented: int) -> None:
    """`snapshot PID` counts while maps is parsed and keeps no VMA: its JSON is the
    summary of the whole snapshot (the process stopped meanwhile), time apart, and its
    text shows the same figures."""
    from conftest import stopped

    from vmascope.procfs.live import read_process

    with stopped(fragmented):
        doc = json.loads(subprocess.run(
            [VMASCOPE, "snapshot", str(fragmented), "--json", "--max-map-count", "99999"],
            capture_output=True, text=True, check=True).stdout)
        text = subprocess.run([VMASCOPE, "snapshot", str(fragmented), "--top", "3"],
                              capture_output=True, text=True, check=True).stdout
        snap = read_process(fragmented, smaps=False, numa=False)
    snap.meta.max_map_count = 99999
    whole = json.loads(json.dumps(summary_json(snap, snap.backing_counts()[:10],
                                               vmas=False)))
    for d in (doc, whole):
        del d["meta"]["time"]
    assert doc["map_count"] > 20000 and doc == whole
    top = whole["top_backings"]
    assert top[0]["backing"] == "[anon]" and len(top) == 10
    assert f"mappings {whole['map_count']} of max_map_count" in text
    rows = [m.groups() for m in re.finditer(r"^ *(\d+) +\d+\.\d +(\S+)", text, re.M)]
    assert [int(c) for c, _ in rows] == [b["vmas"] for b in top[:3]]
    assert rows[0][1] == "[anon]"


def _loaded_by(args: list[str]) -> tuple[str, list[str]]:
    """(stdout, the heavy modules loaded) of ``vmascope ARGS`` run as the console script."""
    probe = ("import atexit, sys\n"
             "atexit.register(lambda: sys.stderr.write('\\nloaded:' + ''.join(' ' + m for m in "
             "('numpy', 'vmascope.model', 'vmascope.analysis') if m in sys.modules)))\n"
             f"sys.argv = ['vmascope', *{args!r}]\n"
             "from vmascope._start import entry\n"
             "entry()\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr.strip().splitlines()[-1].split()[1:]


def test_the_summary_loads_no_numpy() -> None:
    """`snapshot PID` only counts, and its imports run beside the kernel's text
    generation: it loads neither numpy nor the Snapshot model (a read that keeps the
    VMAs, here with their policies, does)."""
    pid = str(os.getpid())
    text, loaded = _loaded_by(["snapshot", pid])
    assert "mappings" in text and loaded == []
    text, loaded = _loaded_by(["snapshot", pid, "--json"])
    assert json.loads(text)["map_count"] > 0 and loaded == []
    text, loaded = _loaded_by(["snapshot", pid, "--json", "--numa"])
    assert json.loads(text)["map_count"] > 0 and "numpy" in loaded


def _ends(args: list[str], extra: str = "") -> subprocess.CompletedProcess:
    """``vmascope ARGS`` as the console script, with an object whose finaliser writes
    "teardown" to stderr when the interpreter tears its modules down; ``extra`` runs
    first."""
    probe = ("import os, sys\n"
             "class Marker:\n"
             "    def __del__(self):\n"
             "        os.write(2, b'teardown')\n"
             "sys.modules['vmascope'] = __import__('vmascope')\n"
             "sys.modules['vmascope'].marker = Marker()\n"
             f"{extra}"
             f"sys.argv = ['vmascope', *{args!r}]\n"
             "from vmascope._start import entry\n"
             "entry()\n")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60)


def test_a_report_leaves_without_the_interpreters_teardown() -> None:
    """After a snapshot or an analysis, with nothing registered to run at exit and no
    thread to wait for, the process ends once its output is flushed: the interpreter's
    teardown (30 ms after analyze at 2M VMAs) is skipped, and the output is whole."""
    pid = str(os.getpid())
    proc = _ends(["snapshot", pid, "--json"])
    assert proc.returncode == 0 and json.loads(proc.stdout)["map_count"] > 0
    assert "teardown" not in proc.stderr
    proc = _ends(["analyze", pid, "--format", "json"])
    assert proc.returncode == 0 and json.loads(proc.stdout)["map_count"] > 0
    assert "teardown" not in proc.stderr
    # the usual exit: another verb, an atexit callback, a thread to wait for, an error
    proc = _ends(["kernels", "list", "--json"])
    assert proc.returncode == 0 and proc.stderr.endswith("teardown")
    proc = _ends(["snapshot", pid, "--json"],
                 "import atexit\natexit.register(lambda: os.write(2, b'callback '))\n")
    assert proc.returncode == 0 and json.loads(proc.stdout)["map_count"] > 0
    assert proc.stderr.endswith("callback teardown")
    proc = _ends(["snapshot", pid, "--json"],
                 "import threading, time\n"
                 "threading.Thread(target=lambda: (time.sleep(1), os.write(2, b'joined '))"
                 ").start()\n")
    assert proc.returncode == 0 and proc.stderr.endswith("joined teardown")
    proc = _ends(["snapshot", "0"])
    assert proc.returncode != 0 and "vmascope: error:" in proc.stderr


def test_analyze_keeps_two_smaps_fields_and_says_the_same(fragmented: int) -> None:
    """`analyze PID` keeps of smaps only the fields the explanations read: its report is
    the one of a read that keeps them all (the process stopped meanwhile), time apart."""
    from conftest import stopped

    from vmascope import host
    from vmascope.analysis import analyze
    from vmascope.procfs.live import read_process
    from vmascope.report import render

    with stopped(fragmented):
        doc = json.loads(subprocess.run([VMASCOPE, "analyze", str(fragmented), "--json"],
                                        capture_output=True, text=True, check=True).stdout)
        snap = read_process(fragmented)
    assert "Rss" in snap.smaps and len(snap.smaps) > 10
    whole = json.loads(render(analyze(snap, epoch=host.epoch_for(snap.meta.kernel_release)),
                              "json", width=80))
    for d in (doc, whole):
        del d["process"]["time"]
    assert doc["map_count"] > 20000 and doc == whole


def test_live_stream_keeps_a_pieces_worth_of_columns(fragmented: int, monkeypatch) -> None:
    """The parser hands its rows over as the text comes: no piece holds the process."""
    from vmascope.procfs import parse

    sizes: list[int] = []
    sink = _Sink()
    real = parse.snapshot_from_result

    def counting(res, *a, **kw):
        snap = real(res, *a, **kw)
        sizes.append(len(snap))
        return snap

    monkeypatch.setattr(parse, "snapshot_from_result", counting)
    stream_json_with_vmas(fragmented, sink, top=10)
    assert sum(sizes) > 20000 and len(sizes) > 5
    assert max(sizes) < sum(sizes) / 4


def test_live_stream_of_a_kernel_thread_is_an_error() -> None:
    proc = subprocess.run([VMASCOPE, "snapshot", "2", "--json", "--vmas"],
                          capture_output=True, text=True)
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "kernel thread" in proc.stderr


class _Sink:
    def __init__(self) -> None:
        self.size = 0

    def write(self, text: str) -> None:
        self.size += len(text)


def test_memory_stays_flat(fragmented: int) -> None:
    snap = vmascope.load(fragmented)
    sink = _Sink()
    tracemalloc.start()
    try:
        write_json_with_vmas(snap, snap.backing_counts()[:10], sink, chunk=512)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the whole document as Python objects takes several times its text; streamed, the
    # peak is a chunk's worth (512 of 20,000+ VMAs)
    assert sink.size > 10_000_000
    assert peak < sink.size / 8, (peak, sink.size)


@pytest.mark.skipif(not Path("/proc/self/numa_maps").exists(), reason="kernel without NUMA")
def test_numa_adds_each_vmas_policy() -> None:
    proc = subprocess.run([VMASCOPE, "snapshot", str(os.getpid()), "--json", "--vmas",
                           "--numa"], capture_output=True, text=True, check=True)
    vmas = json.loads(proc.stdout)["vmas"]
    assert all("policy" in v for v in vmas)
    assert any(v["policy"] == "default" for v in vmas)


@pytest.mark.parametrize("chunk", [1, 2, 1 << 15])
def test_stream_of_a_model_state_with_every_column(chunk: int) -> None:
    """The simulator's snapshot has the columns /proc has not: anon_vma, policies, the
    kernel view. Each row is still the whole-object encoder's."""
    from vmascope.kernel.epochs import epoch_for
    from vmascope.kernel.sim import MM, run_ops
    from vmascope.kernel.sim.result import snapshot_of
    from vmascope.model import SnapshotMeta
    from vmascope.ops.language import load_script

    script = ("mmap 0x100000 0x10000 rw- private,anonymous\n"
              "touch 0x100000 write\nmprotect 0x102000 0x1000 r--\n"
              "mbind 0x104000 0x2000 bind:1\nmadvise 0x108000 0x1000 dontfork\n"
              "mmap 0x200000 0x3000 r-- private,anonymous\n")
    mm = MM(epoch_for("6.12"), numa_nodes=2)
    errors, faults = run_ops(mm, load_script(script))
    assert not errors and not faults
    for view in (False, True):
        snap = snapshot_of(mm, SnapshotMeta(source="simulated"), kernel_view=view)
        assert snap.anon_vma is not None and (snap.kview is not None) == view
        assert snap.policy_id is not None and len(snap.policies) > 1
        buf = io.StringIO()
        write_json_with_vmas(snap, snap.backing_counts()[:10], buf, chunk=chunk)
        doc = json.loads(buf.getvalue())
        assert doc == _whole(snap)
        assert any(v["anon_vma"] is None for v in doc["vmas"])
        assert any(v["anon_vma"] is not None for v in doc["vmas"])
