"""Long work shows a rich progress display on a terminal (what it does, per kernel) and
stays quiet under --json or when standard output is not a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vmascope.cli import main

VMASCOPE = str(Path(sys.executable).parent / "vmascope")


def on_terminal(*args: str, cwd: Path | None = None) -> str:
    """Run vmascope with stdout and stderr on a pseudo-terminal; what the terminal got."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen([VMASCOPE, *args], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env=env, cwd=cwd)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0
    return b"".join(chunks).decode(errors="replace")


def piped(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VMASCOPE, *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


ERASE = "\x1b[2K"  # rich erases and redraws its live display


def test_lab_run_shows_each_kernel_on_a_terminal() -> None:
    out = on_terminal("lab", "run", "seed", "--kernel", "host")
    assert "host: seed" in out and ERASE in out
    assert "done" in out  # the state of the kernel, as it went
    assert "seed: 10 ops" in out  # and then the report itself


def test_lab_run_to_a_file_still_shows_progress(tmp_path: Path) -> None:
    out = on_terminal("lab", "run", "seed", "--kernel", "host", "-o", "run.txt", cwd=tmp_path)
    assert "host: seed" in out and ERASE in out
    assert "seed: 10 ops" in (tmp_path / "run.txt").read_text()  # the report: in the file
    assert "seed: 10 ops" not in out and "vmascope: wrote run.txt" in out


def test_lab_run_is_quiet_under_json_and_in_a_pipe() -> None:
    out = on_terminal("lab", "run", "seed", "--kernel", "host", "--json")
    assert "host: seed" not in out and ERASE not in out
    assert json.loads(out)["script"] == "seed"
    proc = piped("lab", "run", "seed", "--kernel", "host")
    assert proc.stderr == "" and "host: seed" not in proc.stdout


def test_lab_verify_shows_a_bar_per_kernel() -> None:
    out = on_terminal("lab", "verify", "--kernel", "host", "--cases", "20")
    assert "host: random scripts vs the simulator" in out and "/20" in out
    proc = piped("lab", "verify", "--kernel", "host", "--cases", "20")
    assert proc.stderr == ""


def test_capture_shows_what_it_does(tmp_path: Path) -> None:
    out = on_terminal("snapshot", str(os.getpid()), "-o", "c.vmasnap", cwd=tmp_path)
    assert f"pid {os.getpid()}: capturing /proc into c.vmasnap" in out and ERASE in out
    proc = piped("snapshot", str(os.getpid()), "-o", "d.vmasnap", cwd=tmp_path)
    assert "capturing" not in proc.stderr and proc.stderr.startswith("vmascope: wrote")


def test_analyze_shows_what_it_does() -> None:
    out = on_terminal("analyze", str(os.getpid()))
    assert f"pid {os.getpid()}: reading /proc/{os.getpid()}/smaps" in out and ERASE in out
    assert "Map count" in out or "mappings" in out  # and then the report itself
    proc = piped("analyze", str(os.getpid()))
    assert proc.returncode == 0 and "reading /proc" not in proc.stderr + proc.stdout
    proc = piped("analyze", str(os.getpid()), "--json")
    assert proc.stderr == "" and json.loads(proc.stdout)


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, **kw: Any) -> str:
        self.events.append(("add", description, kw.get("state")))
        return description

    def update(self, task: str, **kw: Any) -> None:
        self.events.append(("update", task, kw.get("state")))


def test_kernels_fetch_reports_each_kernel(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from vmascope.lab import kernels
    from vmascope.report import progress

    rec = _Recorder()
    monkeypatch.setattr(progress, "display", lambda *a, **k: rec)
    fetched = []

    def fake_fetch(alias: str, force: bool = False) -> dict[str, str]:
        # the display says what is being fetched while it is
        assert rec.events[-1] == ("update", f"{alias} ({kernels.SUITES[alias]})",
                                  "fetching with apt (index, package, vmlinuz)")
        fetched.append(alias)
        return {"package": "linux-image-x", "version": "1", "file": f"{alias}.vmlinuz"}

    monkeypatch.setattr(kernels, "fetch", fake_fetch)
    assert main(["kernels", "fetch", "6.1", "6.12"]) == 0
    assert fetched == ["6.1", "6.12"]
    assert [e for e in rec.events if e[0] == "add"] == [
        ("add", "6.1 (bookworm)", "waiting"), ("add", "6.12 (trixie)", "waiting")]
    assert ("update", "6.12 (trixie)", "done") in rec.events
    assert capsys.readouterr().out.count("linux-image-x 1 -> ") == 2


def test_no_display_when_stdout_is_not_a_terminal() -> None:
    from vmascope.report import progress

    # under pytest, stdout is captured: never a terminal
    assert not progress.wanted()
    with progress.display() as bar:
        bar.update(bar.add_task("x", state="y"), state="z")  # all no-ops
