"""What a new user meets in the first hour: cut or compressed dumps, advice that names
the process, a plain line for a healthy process, the demo, a quiet pip install."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

import vmascope
from vmascope.analysis import _named, analyze
from vmascope.model import SnapshotMeta

VMASCOPE = str(Path(sys.executable).parent / "vmascope")
ROOT = Path(__file__).resolve().parent.parent
LINES = [f"{0x400000 + 0x2000 * i:08x}-{0x401000 + 0x2000 * i:08x} rw-p 00000000 00:00 0 \n"
         for i in range(30)]
MAPS = "".join(LINES).encode()


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VMASCOPE, *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_maps_dump_cut_mid_line_is_refused_at_its_last_line(tmp_path: Path, cut: int) -> None:
    f = tmp_path / "cut.txt"
    f.write_bytes(MAPS[:-cut])
    proc = _cli("snapshot", str(f))
    assert proc.returncode == 5
    assert proc.stderr == (f"vmascope: error: {f}:30: the last line ends without a newline: "
                           "the dump is cut short (truncated while copied?)\n")


def test_smaps_dump_cut_mid_line_is_refused(tmp_path: Path) -> None:
    text = Path(f"/proc/{os.getpid()}/smaps").read_bytes()
    f = tmp_path / "smaps.txt"
    f.write_bytes(text[:-3])
    proc = _cli("analyze", str(f))
    assert proc.returncode == 5
    last = text.count(b"\n")  # the cut line is the last one: its newline went
    assert f"{f}:{last}: the last line ends without a newline" in proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_compressed_dumps_are_read(tmp_path: Path, kind: str) -> None:
    f = tmp_path / "maps.z"
    f.write_bytes(gzip.compress(MAPS) if kind == "gzip"
                  else zstandard.ZstdCompressor().compress(MAPS))
    assert vmascope.load(str(f)).map_count == 30
    proc = _cli("snapshot", str(f), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["map_count"] == 30


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_broken_compressed_dumps_are_named_as_compressed(tmp_path: Path, kind: str) -> None:
    data = (gzip.compress(MAPS) if kind == "gzip"
            else zstandard.ZstdCompressor().compress(MAPS))
    f = tmp_path / "maps.z"
    f.write_bytes(data[: len(data) // 2])
    proc = _cli("analyze", str(f))
    assert proc.returncode == 5
    assert proc.stderr.startswith(f"vmascope: error: {f} ({kind}-compressed): ")
    assert proc.stderr.count("\n") == 1


def test_advice_names_the_real_pid() -> None:
    pid = os.getpid()
    a = analyze(vmascope.load(pid))
    commands = [x.test_command for x in a.advice] + [f.command for f in a.fixes]
    assert commands, "this process should get at least one suggestion"
    for c in commands:
        assert "PID" not in c and "TARGET" not in c, c
    assert any(f"/proc/{pid}/" in c for c in commands), commands


def test_named_puts_the_pid_or_the_file_in_commands() -> None:
    live = vmascope.load(os.getpid())
    assert _named("vmascope analyze PID before and after", live) == (
        f"vmascope analyze {os.getpid()} before and after")
    meta = SnapshotMeta(source="maps-dump")
    meta.extra["path"] = "my dump.txt"
    live.meta = meta
    assert _named("`vmascope analyze TARGET --kernel 6.1`", live) == (
        "`vmascope analyze 'my dump.txt' --kernel 6.1`")
    assert "/proc/PID/" in _named("grep /proc/PID/smaps", live)  # no pid in a bare dump


def test_healthy_process_gets_one_plain_advice_line() -> None:
    proc = _cli("analyze", str(os.getpid()))
    assert proc.returncode == 0
    doc = json.loads(_cli("analyze", str(os.getpid()), "--json").stdout)
    assert doc["nothing_to_fix"], "the test process itself should be healthy"
    assert "Hypothesis" not in proc.stdout
    advice = [line for line in proc.stdout.splitlines() if line.startswith("Advice")]
    assert advice == ["Advice: none; nothing here is worth fixing."]


def test_demo_explains_rates_writes_and_points_on(tmp_path: Path) -> None:
    proc = _cli("demo", "--report", "demo.html", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("VMA: ") and "Reservation: " in lines[0]
    assert lines[1].startswith("anon_vma: ")
    assert all(len(line) <= 80 for line in lines)
    headroom = next(line for line in lines if line.startswith("Headroom:"))
    assert not headroom.endswith("OK") and "FRAGMENTED" in headroom
    report = tmp_path / "demo.html"
    assert report.read_text().lstrip().lower().startswith("<!doctype html")
    assert proc.stderr == f"vmascope: wrote demo.html ({report.stat().st_size:,} bytes)\n"
    assert lines[-1].strip().startswith("vmascope analyze --pid ")


def test_pip_install_prints_no_license_deprecation() -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps",
                           str(ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "project.license" not in out and "deprecated" not in out.lower(), out


def test_version_is_quick_and_imports_nothing_heavy() -> None:
    code = ("import sys; sys.argv = ['vmascope', '--version']\n"
            "from vmascope import _start\n"
            "try:\n    _start.entry()\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "heavy = {'numpy', 'rich', 'argparse', 'vmascope.cli'} & set(sys.modules)\n"
            "print(sorted(heavy), file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.stdout == f"vmascope {vmascope.__version__}\n"
    assert proc.stderr == "[]\n"


def test_version_to_a_full_disk_is_one_line() -> None:
    proc = subprocess.run(f"{VMASCOPE} --version > /dev/full", shell=True,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 8
    assert proc.stderr == "vmascope: error: standard output: cannot write: No space left on device\n"
