"""vmascope top: --once --json for scripts, and the live table in a real terminal (tmux:
keys sent, the pane captured)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from monitor_util import mappers, wc_l

VMASCOPE = [sys.executable, "-m", "vmascope"]


def test_once_json_lists_the_processes_with_their_counts() -> None:
    with mappers(5000, 3000) as (big, small):
        out = subprocess.run([*VMASCOPE, "top", "--once", "--json", "-d", "0.5", "-n",
                              "1000"], capture_output=True, text=True, timeout=120)
        want = {p.pid: wc_l(p.pid) for p in (big, small)}
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    rows = {r["pid"]: r for r in data["processes"]}
    limit = int(Path("/proc/sys/vm/max_map_count").read_text())
    assert data["max_map_count"] == limit
    for pid, n in want.items():
        assert rows[pid]["map_count"] == n
        assert rows[pid]["percent"] == pytest.approx(100 * n / limit, abs=1e-3)
        assert rows[pid]["growth_per_min"] == 0
    counts = [r["map_count"] for r in data["processes"]]
    assert counts == sorted(counts, reverse=True)
    # the biggest reservation of the mappers is their PROT_NONE region cut by mprotect
    assert rows[big.pid]["cause"] == "protection"
    assert rows[big.pid]["biggest"] == "anonymous"
    assert rows[big.pid]["biggest_count"] > 4900


def test_once_table_fits_80_columns() -> None:
    out = subprocess.run([*VMASCOPE, "top", "--once", "-d", "0.2"], capture_output=True,
                         text=True, timeout=120, env={**__import__("os").environ,
                                                      "COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    assert all(len(line) <= 80 for line in out.stdout.splitlines())
    assert "VMAS" in out.stdout and "%LIM" in out.stdout


@pytest.mark.parametrize("args, words", [
    (["top"], "needs a terminal"),
    (["top", "--json"], "--json needs --once"),
    (["top", "-d", "0"], "--interval"),
])
def test_mistakes_are_one_line(args: list[str], words: str) -> None:
    out = subprocess.run([*VMASCOPE, *args], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and words in out.stderr


class Tmux:
    def __init__(self, sock: Path) -> None:
        self.sock = str(sock)

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.sock, *args], capture_output=True,
                              text=True, timeout=30, check=True).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "top")

    def wait_for(self, fn, timeout: float = 30) -> str:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if fn(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"screen never matched:\n{text}")


@contextlib.contextmanager
def tmux(tmp_path: Path, command: str) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (make test installs it)")
    t = Tmux(tmp_path / "tmux.sock")
    t("-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", "100", "-y", "30",
      command)
    t("set-option", "-t", "top", "remain-on-exit", "on")
    try:
        yield t
    finally:
        subprocess.run(["tmux", "-S", t.sock, "kill-server"], capture_output=True,
                       timeout=30)


def _rows(screen: str) -> list[list[str]]:
    """The table's rows (of the last frame drawn, should the terminal have scrolled)."""
    lines = screen.splitlines()
    starts = [i for i, line in enumerate(lines) if "vmascope top:" in line]
    lines = lines[starts[-1]:] if starts else lines
    # (a comm with a space, "tmux: server", is left out)
    return [w for w in map(str.split, lines) if len(w) > 3 and w[0].isdigit()
            and w[2].isdigit()]


def test_top_in_a_terminal_sorts_and_quits(tmp_path: Path) -> None:
    cmd = " ".join([sys.executable, "-m", "vmascope", "top", "-d", "0.5"])
    with mappers(8000) as (steady,), mappers(2000, grow=300) as (growing,), \
            tmux(tmp_path, f"sh -c '{cmd}; echo EXIT=$?; sleep 60'") as t:  # killed at the end
        # sorted by map count: the 8,000-VMA process first, its count as wc -l says
        mine = {str(steady.pid), str(growing.pid)}
        screen = t.wait_for(lambda s: [r[0] for r in _rows(s) if r[0] in mine]
                            == [str(steady.pid), str(growing.pid)])
        assert "by % of limit" in screen
        counts = [int(r[2]) for r in _rows(screen)]
        assert counts == sorted(counts, reverse=True)
        row = next(r for r in _rows(screen) if r[0] == str(steady.pid))
        assert row[2] == str(wc_l(steady.pid))
        assert all(len(line) <= 100 for line in screen.splitlines())
        t("send-keys", "-t", "top", "R")
        # by growth: the growing process (300 VMAs a second) before the steady one
        screen = t.wait_for(lambda s: "by growth" in s and [
            r[0] for r in _rows(s) if r[0] in mine] == [str(growing.pid), str(steady.pid)])

        def rate(s: str) -> int:
            return int(next(r for r in _rows(s) if r[0] == str(growing.pid))[4])

        # VMAs per minute: 18,000 (once a few seconds of readings are in the window)
        t.wait_for(lambda s: str(growing.pid) in s and 15_000 < rate(s) < 21_000)
        t("send-keys", "-t", "top", "s")
        t.wait_for(lambda s: "change delay" in s)
        t("send-keys", "-t", "top", "1", "Enter")
        t.wait_for(lambda s: "every 1 s" in s)
        t("send-keys", "-t", "top", "P")
        t.wait_for(lambda s: "by % of limit" in s)
        t("send-keys", "-t", "top", "q")
        # q ends it, with status 0
        screen = t.wait_for(lambda s: "EXIT=" in s)
        assert "EXIT=0" in screen, screen


@pytest.mark.parametrize("width", [80, 100, 120, 160])
def test_the_table_cuts_no_header_and_no_cause(width: int) -> None:
    """Every header whole, and every cause a whole label (a short one when narrow), never
    an internal key or a cut word."""
    import io

    from rich.console import Console

    from vmascope.analysis.budget import CAUSE_LABELS, CAUSE_SHORT, CAUSES
    from vmascope.monitor.reading import Reading
    from vmascope.monitor.top import Row
    from vmascope.report.top import table

    rows = [Row(1000 + i, f"proc{i}", 60_000 - i, 91.0, 7 << 30, 1200.0,
                "/usr/lib/x86_64-linux-gnu/libjvm.so" if i % 2 else "anonymous",
                59_000 - i, cause) for i, cause in enumerate(CAUSES)]
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(
        table(Reading(0.0, 0.1, 65530, []), rows, "P", 2.0, width=width))
    lines = buf.getvalue().splitlines()
    assert max(map(len, lines)) <= width
    header = lines[1].split()
    wide = width >= 110
    assert header == ["PID", "COMMAND", "VMAS", "%LIM", "/MIN", "RSS",
                      *(["BIGGEST", "RESERVATION"] if wide else ["RESERVATION"]), "CAUSE"]
    labels = CAUSE_LABELS if wide else CAUSE_SHORT
    for cause, line in zip(CAUSES, lines[2:]):
        assert line.rstrip().endswith(" " + labels[cause]), (cause, line)
        assert "libjvm.so" in line or "anonymous" in line, line
