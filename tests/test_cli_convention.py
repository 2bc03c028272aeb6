"""One convention for every verb: --format/--json, -o FILE, --pid, --max-map-count,
the analyse alias, "did you mean", one "vmascope: error:" and one exit code per kind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vmascope.cli import build_parser, main

VMASCOPE = str(Path(sys.executable).parent / "vmascope")
MAPS = ("00400000-00401000 r--p 00000000 00:00 0 \n"
        "00401000-00402000 rw-p 00000000 00:00 0 \n"
        "00403000-00404000 rw-p 00000000 00:00 0 \n")
SCRIPT = "mmap 0 4p ---\nmprotect 1p 1p rw-\ntouch 1p\n"


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "dump.txt").write_text(MAPS)
    (tmp_path / "s.ops").write_text(SCRIPT)
    return tmp_path


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VMASCOPE, *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


# verb arguments (without the format options): {d} is the input folder, {pid} this test
VERBS = [
    "snapshot {d}/dump.txt",
    "snapshot {pid}",
    "analyze {d}/dump.txt",
    "check {d}/dump.txt --max-used 90 --max-map-count 1000",
    "simulate {d}/s.ops --kernel 6.12",
    "lab run seed",
    "kernels list",
]


def _drop_times(doc: object) -> object:
    """JSON without the fields that differ between two runs (times, durations)."""
    if isinstance(doc, dict):
        return {k: _drop_times(v) for k, v in doc.items()
                if k not in ("time", "seconds", "process_map_count", "meta", "vmas",
                             "total_size", "map_count", "mappings_left", "percent_used",
                             "top_backings", "real")}
    if isinstance(doc, list):
        return [_drop_times(v) for v in doc]
    return doc


@pytest.mark.parametrize("verb", VERBS)
def test_json_and_format_json_are_the_same(files: Path, verb: str) -> None:
    args = verb.format(d=files, pid=os.getpid()).split()
    a = _cli(*args, "--json")
    b = _cli(*args, "--format", "json")
    assert a.returncode == b.returncode == 0, (a.stderr, b.stderr)
    assert _drop_times(json.loads(a.stdout)) == _drop_times(json.loads(b.stdout))
    t = _cli(*args, "--format", "text")
    assert t.returncode == 0 and not t.stdout.lstrip().startswith(("{", "[")), t.stdout


@pytest.mark.parametrize("verb", [v for v in VERBS if not v.startswith("snapshot")])
def test_output_file_is_written_and_named_on_stderr(files: Path, verb: str) -> None:
    args = verb.format(d=files, pid=os.getpid()).split()
    out = files / "out.json"
    proc = _cli(*args, "--json", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    size = out.stat().st_size
    assert proc.stderr == f"vmascope: wrote {out} ({size:,} bytes)\n"
    assert json.loads(out.read_text())  # a whole document, not an empty file


def test_snapshot_capture_names_its_file_on_stderr(files: Path) -> None:
    out = files / "me.vmasnap"
    proc = _cli("snapshot", str(os.getpid()), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"vmascope: wrote {out} ({out.stat().st_size:,} bytes)")
    assert proc.stderr.count("\n") == 1
    proc = _cli("snapshot", str(os.getpid()), "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["path"] == str(out)
    assert proc.stderr == f"vmascope: wrote {out} ({out.stat().st_size:,} bytes)\n"


def test_lab_verify_takes_the_same_options() -> None:
    args = build_parser().parse_args(["lab", "verify", "--json", "-o", "v.json"])
    assert (args.format, args.output) == ("json", "v.json")
    args = build_parser().parse_args(["lab", "verify", "--format", "json"])
    assert args.format == "json"


@pytest.mark.parametrize("verb", ["snapshot", "analyze", "check --max-used 99"])
def test_pid_option_is_the_same_as_the_target(verb: str) -> None:
    pid = str(os.getpid())
    a = _cli(*verb.split(), pid, "--json")
    b = _cli(*verb.split(), "--pid", pid, "--json")
    assert a.returncode == b.returncode == 0, (a.stderr, b.stderr)
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    pid_of = (lambda j: j.get("meta", {}).get("pid") or j.get("process", {}).get("pid")
              or j.get("target"))
    assert str(pid_of(ja)) == str(pid_of(jb)) == pid


def test_pid_and_target_together_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["snapshot", "1", "--pid", "1"]) == 2
    assert main(["snapshot", "--pid", "x1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["vmascope: error: give TARGET or --pid PID, not both",
                   "vmascope: error: --pid: not a pid: 'x1'"]


def test_analyse_is_analyze(files: Path) -> None:
    a = _cli("analyse", str(files / "dump.txt"), "--json")
    b = _cli("analyze", str(files / "dump.txt"), "--json")
    assert a.returncode == b.returncode == 0
    assert json.loads(a.stdout)["headroom"] == json.loads(b.stdout)["headroom"]


@pytest.mark.parametrize("typed, meant", [("snapsot", "snapshot"), ("analize", "analyze"),
                                          ("kernel", "kernels")])
def test_misspelled_verb_gets_did_you_mean(typed: str, meant: str) -> None:
    proc = _cli(typed, "1")
    assert proc.returncode == 2
    assert proc.stderr == (f"vmascope: error: invalid choice: {typed!r} "
                           f"(did you mean {meant}?)\n")


def test_misspelled_command_of_a_group() -> None:
    proc = _cli("kernels", "lst")
    assert proc.returncode == 2
    assert proc.stderr == "vmascope: error: kernels: invalid choice: 'lst' (did you mean list?)\n"


def test_error_prefix_once() -> None:
    proc = _cli("snapshot", "--top", "x", "1")
    assert proc.returncode == 2 and proc.stderr.count("vmascope") == 1, proc.stderr


def test_unknown_kernel_is_the_same_exit_code_everywhere() -> None:
    codes = {" ".join(a): _cli(*a).returncode for a in (
        ["kernels", "path", "5.4"], ["lab", "run", "seed", "--kernel", "5.4"],
        ["kernels", "fetch", "5.4"])}
    assert set(codes.values()) == {6}, codes


@pytest.mark.parametrize("verb", ["snapshot", "analyze", "check --max-used 99"])
def test_max_map_count_sets_the_headroom_of_a_dump(files: Path, verb: str) -> None:
    proc = _cli(*verb.split(), str(files / "dump.txt"), "--max-map-count", "12", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    mmc = doc.get("headroom", doc).get("max_map_count")
    assert mmc == 12
    pct = doc.get("headroom", doc).get("percent_used")
    assert pct == pytest.approx(25.0)  # 3 mappings of 12


def test_max_map_count_must_be_positive(files: Path) -> None:
    proc = _cli("analyze", str(files / "dump.txt"), "--max-map-count", "0")
    assert proc.returncode == 2
    assert proc.stderr == "vmascope: error: --max-map-count must be at least 1\n"


def test_watch_takes_pid_beside_its_targets(tmp_path: Path) -> None:
    """watch's targets are several: --pid adds one (repeatable) beside them."""
    import sqlite3

    pid = str(os.getpid())
    db = tmp_path / "w.db"
    a = _cli("watch", "--pid", pid, "--count", "1", "--interval", "0.1", "--db", str(db))
    b = _cli("watch", pid, "--pid", str(os.getppid()), "--count", "1", "--interval", "0.1",
             "--db", str(db))
    assert a.returncode == b.returncode == 0, (a.stderr, b.stderr)
    # a line per target and sample, its pid among its words (a comm may have spaces)
    assert [pid in line.split() for line in a.stdout.splitlines()] == [True]
    assert [(pid in w, str(os.getppid()) in w) for w in map(str.split, b.stdout.splitlines())
            ] == [(True, False), (False, True)]
    with sqlite3.connect(db) as con:
        pids = [r[0] for r in con.execute("SELECT pid FROM samples ORDER BY rowid")]
    assert pids == [int(pid), int(pid), os.getppid()]
