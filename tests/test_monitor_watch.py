"""vmascope watch and history: samples in SQLite, the forecast, alerts, restarts, and a
database that survives SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from monitor_util import mappers, wc_l

from vmascope.monitor.forecast import forecast
from vmascope.monitor.store import SCHEMA_VERSION, Store

VMASCOPE = [sys.executable, "-m", "vmascope"]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VMASCOPE, *args], capture_output=True, text=True,
                          timeout=timeout)


# -- the forecast -------------------------------------------------------------------------


def test_a_straight_line_is_forecast_exactly() -> None:
    t = np.arange(30.0)
    f = forecast(t, 1000 + 10 * t, 65530)
    assert f is not None
    assert f.per_minute == pytest.approx(600)
    assert f.eta == pytest.approx((65530 - 1290) / 10, rel=1e-6)
    assert f.eta_early == pytest.approx(f.eta, rel=1e-3)  # no noise: no band


def test_the_band_holds_the_truth_when_the_samples_are_noisy() -> None:
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(200):
        t = np.arange(60.0)
        y = np.round(1000 + 10 * t + rng.normal(0, 30, 60))
        f = forecast(t, y, 65530)
        assert f is not None and f.eta is not None
        truth = (65530 - 1000) / 10 - 59  # seconds after the last sample
        assert abs(f.eta - truth) / truth < 0.15  # 100 times the fitted span ahead
        hits += f.eta_early <= truth <= f.eta_late  # type: ignore[operator]
    assert hits >= 190  # the 95 % band, give or take


def test_no_growth_no_forecast() -> None:
    assert forecast([0, 1, 2, 3], [500, 500, 500, 500], 65530).eta is None  # type: ignore[union-attr]
    assert forecast([0, 1, 2, 3], [500, 400, 300, 200], 65530).eta is None  # type: ignore[union-attr]
    assert forecast([0, 1], [500, 600], 65530) is None
    assert forecast([0, 1, 2], [65530, 65530, 65530], 65530).eta == 0  # type: ignore[union-attr]


# -- the database -------------------------------------------------------------------------


def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE samples (time REAL NOT NULL, pid INTEGER NOT NULL, comm TEXT NOT NULL,
            map_count INTEGER NOT NULL, max_map_count INTEGER, rss_bytes INTEGER);
        INSERT INTO samples VALUES (100.0, 42, 'old', 1234, 65530, 4096);
        PRAGMA user_version = 1;""")
    db.close()
    store = Store(path)
    assert store.version() == SCHEMA_VERSION == 2
    (old,) = store.samples(pid=42)
    assert (old.comm, old.map_count, old.causes, old.start_ticks) == ("old", 1234, None, None)
    store.close()
    out = _run("history", "--db", str(path), "--pid", "42")
    assert out.returncode == 0, out.stderr
    assert "last 1234" in out.stdout


def test_a_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    before = path.read_bytes()
    out = _run("history", "--db", str(path))
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "newer" in out.stderr and "Traceback" not in out.stderr
    assert path.read_bytes() == before


# -- watch --------------------------------------------------------------------------------


def test_watch_records_samples_and_forecasts_the_growth(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    with mappers(2000, grow=1000) as (p,):
        out = _run("watch", str(p.pid), "--interval", "0.3", "--count", "10", "--db",
                   str(db), "--causes-every", "5")
        last = wc_l(p.pid)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 10 and all(len(line) <= 80 for line in lines)
    store = Store(db)
    rows = store.samples(pid=p.pid)
    store.close()
    counts = [r.map_count for r in rows]
    assert len(rows) == 10 and counts == sorted(counts) and counts[-1] <= last
    assert counts[0] >= 2000
    assert rows[0].causes is not None and rows[0].causes["protection"] >= 1800
    assert rows[1].causes is None and rows[5].causes is not None
    # 1,000 VMAs a second is 60,000 a minute
    rate = float(lines[-1].split("/min")[0].split()[-1])
    assert 40_000 < rate < 66_000
    hist = _run("history", "--db", str(db), "--pid", str(p.pid))
    assert hist.returncode == 0, hist.stderr
    assert f"last {counts[-1]}" in hist.stdout and "limit reached in" in hist.stdout


def test_watch_exits_9_past_the_alert(tmp_path: Path) -> None:
    with mappers(6000) as (p,):
        limit = int(Path("/proc/sys/vm/max_map_count").read_text())
        pct = 100 * (wc_l(p.pid) - 100) / limit
        out = _run("watch", str(p.pid), "--alert", f"{pct:.4f}", "--interval", "0.2",
                   "--count", "5", "--db", str(tmp_path / "w.db"))
        assert out.returncode == 9
        assert out.stderr.count("\n") == 1 and "crossed" in out.stderr
        below = _run("watch", str(p.pid), "--alert", f"{pct + 1:.4f}", "--interval",
                     "0.2", "--count", "3", "--db", str(tmp_path / "w.db"))
        assert below.returncode == 0, below.stderr


def test_watch_runs_the_command_with_the_figures(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    with mappers(6000) as (p,):
        want = wc_l(p.pid)
        limit = int(Path("/proc/sys/vm/max_map_count").read_text())
        pct = 100 * (want - 100) / limit  # crossed from the first sample on
        out = _run("watch", str(p.pid), "--alert", f"{pct:.4f}", "--interval", "0.2",
                   "--count", "3", "--db", str(tmp_path / "w.db"),
                   "--exec", f"env | grep ^VMASCOPE_ | sort >> {env_file}")
    assert out.returncode == 0, out.stderr
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert env_file.read_text().count("VMASCOPE_PID=") == 1  # once per crossing
    assert env["VMASCOPE_PID"] == str(p.pid)
    assert int(env["VMASCOPE_MAP_COUNT"]) == want
    assert env["VMASCOPE_MAX_MAP_COUNT"] == str(limit)
    assert float(env["VMASCOPE_PERCENT"]) == pytest.approx(100 * want / limit, abs=0.01)


@pytest.mark.parametrize("mode", ["comm", "cmdline"])
def test_watch_follows_a_restarted_process(tmp_path: Path, mode: str) -> None:
    db = tmp_path / "w.db"
    comm = f"vmw-{mode}"
    with mappers(1500, comm=comm) as (first,):
        w = subprocess.Popen([*VMASCOPE, "watch", str(first.pid), "--follow", mode,
                              "--interval", "0.2", "--count", "200", "--db", str(db)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert w.stdout is not None
            assert str(first.pid) in w.stdout.readline()
            first.kill()
            first.wait(timeout=30)
            # the restart has the same command line; a decoy has the same comm only
            with mappers(1500, comm=comm) as (second,), \
                    mappers(2500 if mode == "cmdline" else 1000, comm=comm) as (decoy,):
                # cmdline: the decoy is bigger but runs another command line;
                # comm: the biggest of that comm is followed, and the decoy is smaller
                want = second
                deadline = time.monotonic() + 60
                line = ""
                while time.monotonic() < deadline:
                    line = w.stdout.readline()
                    if "following" in line or not line:
                        break
                assert f"pid {want.pid}" in line
        finally:
            w.kill()
            w.communicate(timeout=30)
    store = Store(db)
    pids = {r.pid for r in store.samples(comm=comm)}
    store.close()
    assert pids == {first.pid, want.pid}


def test_a_comm_target_is_the_biggest_process_of_that_comm(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    with mappers(1200, comm="vmw-target") as (small,), \
            mappers(2400, comm="vmw-target") as (big,):
        out = _run("watch", "comm:vmw-target", "--count", "2", "--interval", "0.2",
                   "--db", str(db))
        want = wc_l(big.pid)
    assert out.returncode == 0, out.stderr
    store = Store(db)
    rows = store.samples(target="comm:vmw-target")
    store.close()
    assert [(r.pid, r.map_count) for r in rows] == [(big.pid, want)] * 2
    assert small.pid not in {r.pid for r in rows}


def test_sigkill_mid_write_leaves_a_readable_database(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    rng = random.Random(3)
    counts = []
    with mappers(20000) as (p,):
        for _ in range(5):
            w = subprocess.Popen([*VMASCOPE, "watch", str(p.pid), "--interval", "0.01",
                                  "--causes-every", "1", "--db", str(db)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.5 + rng.random())
            w.send_signal(signal.SIGKILL)
            w.wait(timeout=30)
            check = subprocess.run(["sqlite3", str(db), "PRAGMA integrity_check;",
                                    "SELECT COUNT(*) FROM samples;"],
                                   capture_output=True, text=True, timeout=60)
            assert check.returncode == 0, check.stderr
            ok, n = check.stdout.split()
            assert ok == "ok"
            counts.append(int(n))
    assert counts == sorted(counts) and counts[0] > 0 and counts[-1] > counts[0]
    out = _run("history", "--db", str(db), "--pid", str(p.pid), "--json")
    assert out.returncode == 0, out.stderr


def test_history_plots(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    with mappers(2000, grow=500) as (p,):
        assert _run("watch", str(p.pid), "--interval", "0.2", "--count", "6", "--db",
                    str(db)).returncode == 0
    png, page = tmp_path / "h.png", tmp_path / "h.html"
    assert _run("history", "--db", str(db), "-o", str(png)).returncode == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert _run("history", "--db", str(db), "-o", str(page)).returncode == 0
    text = page.read_text()
    assert "data:image/png;base64," in text and f"pid {p.pid}" in text


@pytest.mark.parametrize("args, code, words", [
    (["watch", "abc"], 2, "not a target"),
    (["watch"], 2, "expected a TARGET (a pid or comm:NAME) or --pid PID"),
    (["watch", "--pid", "x"], 2, "--pid: not a pid: 'x'"),
    (["watch", "1", "--exec", "true"], 2, "--exec needs --alert"),
    (["watch", "1", "--db", "/nonexistent/dir/w.db"], 2, "directory does not exist"),
    (["history", "--db", "/nonexistent.db"], 2, "no such database"),
    (["history", "-o", "plot.txt"], 2, ".png or .html"),
])
def test_mistakes_are_one_line(args: list[str], code: int, words: str,
                               tmp_path: Path) -> None:
    out = subprocess.run([*VMASCOPE, *args], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert out.returncode == code, out.stderr
    assert out.stderr.count("\n") == 1 and words in out.stderr
    assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_history_of_an_unknown_pid_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    Store(db).close()
    out = _run("history", "--db", str(db), "--pid", str(os.getpid()))
    assert out.returncode == 2 and "no samples" in out.stderr


def test_watch_on_a_terminal_says_what_it_does_and_names_the_columns(tmp_path: Path) -> None:
    """On a terminal: a line saying what is watched and where it goes, and the columns'
    names above the samples (in a pipe, the samples alone: the test above)."""
    import os
    import pty

    db = tmp_path / "w.db"
    with mappers(1500, grow=500) as (p,):
        master, slave = pty.openpty()
        try:
            proc = subprocess.run([*VMASCOPE, "watch", "--pid", str(p.pid), "--interval",
                                   "0.3", "--count", "6", "--db", str(db)],
                                  stdout=slave, stderr=subprocess.PIPE, timeout=120,
                                  env={**os.environ, "COLUMNS": "80"})
            os.close(slave)
            slave = -1
            chunks = []
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other end is closed
                    break
                if not data:
                    break
                chunks.append(data)
        finally:
            if slave >= 0:
                os.close(slave)
            os.close(master)
    assert proc.returncode == 0, proc.stderr
    lines = b"".join(chunks).decode().replace("\r\n", "\n").splitlines()
    # the database's path, whole: after the words when the line fits, else on its own
    one = f"watching 1 target every 0.3 s into {db} (Ctrl-C stops)"
    start = [one] if len(one) <= 80 else ["watching 1 target every 0.3 s (Ctrl-C stops) "
                                          "into", f"  {db}"]
    assert lines[:len(start)] == start
    cols, *samples = lines[len(start):]
    assert cols.split() == ["time", "comm", "pid", "VMAs", "limit", "growth", "full", "in",
                            "(95", "%", "band)"]
    assert len(samples) == 6 and all(len(line) <= 80 for line in [cols, *samples])
    # each column under its name: the pid's right edge, the growth's "/min"
    pid_end = cols.index("pid") + 3
    assert all(s[:pid_end].endswith(str(p.pid)) for s in samples)
    growth_end = cols.index("growth") + len("growth")
    assert samples[-1][:growth_end].endswith("/min"), samples[-1]
