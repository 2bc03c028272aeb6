"""vmascope exporter: metrics over HTTP and in a textfile, and users' mistakes."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from monitor_util import free_port, mappers, wc_l
from prometheus_client.parser import text_string_to_metric_families

VMASCOPE = [sys.executable, "-m", "vmascope"]


def _samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VMASCOPE, *args], capture_output=True, text=True,
                          timeout=timeout)


def test_once_prints_the_map_counts_and_budget_causes() -> None:
    with mappers(6000) as (p,):
        out = _run("exporter", "--once", "--top", "100000", "--causes", "100000")
        want = wc_l(p.pid)
    assert out.returncode == 0, out.stderr
    s = _samples(out.stdout)
    mine = [x for x in s["vmascope_process_map_count"] if x.labels["pid"] == str(p.pid)]
    assert [x.value for x in mine] == [want]
    limit = int(Path("/proc/sys/vm/max_map_count").read_text())
    assert s["vmascope_max_map_count"][0].value == limit
    causes = {x.labels["cause"]: x.value for x in s["vmascope_process_budget_excess"]
              if x.labels["pid"] == str(p.pid)}
    # the mapper's readable pages in its PROT_NONE region: each boundary is protection
    assert causes["protection"] >= want - 200  # python itself has ~100 VMAs
    assert causes["protection"] == max(causes.values())
    comm = mine[0].labels["comm"]
    total = [x.value for x in s["vmascope_comm_map_count"] if x.labels["comm"] == comm]
    assert total[0] >= want


def test_top_bounds_the_per_process_series() -> None:
    out = _run("exporter", "--once", "--top", "3")
    assert out.returncode == 0, out.stderr
    s = _samples(out.stdout)
    assert len(s["vmascope_process_map_count"]) == 3
    assert "cmdline" not in s["vmascope_process_map_count"][0].labels


def test_textfile_is_written_whole(tmp_path: Path) -> None:
    out = _run("exporter", "--once", "--textfile", str(tmp_path), "--cmdline")
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    assert [f.name for f in tmp_path.iterdir()] == ["vmascope.prom"]
    assert (tmp_path / "vmascope.prom").stat().st_mode & 0o777 == 0o644  # for node_exporter
    s = _samples((tmp_path / "vmascope.prom").read_text())
    assert "cmdline" in s["vmascope_process_map_count"][0].labels


def test_served_metrics_come_from_the_background_reading() -> None:
    port = free_port()
    with mappers(3000) as (p,):
        want = wc_l(p.pid)
        srv = subprocess.Popen([*VMASCOPE, "exporter", "--listen", f"127.0.0.1:{port}",
                                "--interval", "0.5", "--top", "100000"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            got = None
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                timeout=5) as r:
                        s = _samples(r.read().decode())
                except OSError:
                    s = {}
                got = [x.value for x in s.get("vmascope_process_map_count", [])
                       if x.labels["pid"] == str(p.pid)]
                if got and s["vmascope_scrape_duration_seconds_count"][0].value >= 1:
                    break
                time.sleep(0.2)
            assert got == [want]
            assert s["vmascope_up"][0].value == 1
            assert s["vmascope_readings_total"][0].value >= 1
        finally:
            srv.terminate()
            srv.wait(timeout=30)
            assert srv.stderr is not None
            srv.stderr.close()


@pytest.mark.parametrize("args, code, words", [
    (["--listen", "nowhere"], 2, "expected HOST:PORT"),
    (["--interval", "0"], 2, "--interval"),
    (["--textfile", "/nonexistent/dir"], 8, "not a directory"),
    (["--no-listen"], 2, "--textfile"),
])
def test_mistakes_are_one_line(args: list[str], code: int, words: str) -> None:
    out = _run("exporter", *args)
    assert out.returncode == code
    assert out.stderr.count("\n") == 1 and words in out.stderr
    assert "Traceback" not in out.stderr


def test_a_port_in_use_is_one_line() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = _run("exporter", "--listen", f"127.0.0.1:{port}")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "cannot listen" in out.stderr


def test_a_scrape_does_not_wait_for_a_reading_in_progress(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import threading

    from vmascope.monitor import exporter as mod

    exp = mod.Exporter(top=5, interval=0.1, causes=0)
    first = exp.read_once()
    gate, entered = threading.Event(), threading.Event()
    real = mod.read_host

    def slow_read_host(**kw):  # type: ignore[no-untyped-def]
        entered.set()
        gate.wait(30)  # a /proc that hangs
        return real(**kw)

    monkeypatch.setattr(mod, "read_host", slow_read_host)
    exp.start()
    try:
        assert entered.wait(30)
        t0 = time.perf_counter()
        body = exp.body()
        assert time.perf_counter() - t0 < 0.05
        assert body.startswith(first)  # the last complete reading
    finally:
        gate.set()
        exp.stop()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True,
                         timeout=30).stdout
    return [int(x) for x in out.split()]


def _gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                if b") Z" in fh.read():
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", ["TERM", "KILL"])
def test_the_reading_process_ends_with_the_exporter(sig: str) -> None:
    import signal

    port = free_port()
    srv = subprocess.Popen([*VMASCOPE, "exporter", "--listen", f"127.0.0.1:{port}",
                            "--interval", "1"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        kids: list[int] = []
        while not kids and time.monotonic() < deadline:
            time.sleep(0.2)
            kids = _children(srv.pid)
        assert len(kids) == 1
        with open(f"/proc/{kids[0]}/cmdline", "rb") as fh:
            assert b"vmascope.monitor.exporter" in fh.read()
        srv.send_signal(getattr(signal, f"SIG{sig}"))
        assert srv.wait(timeout=30) == (143 if sig == "TERM" else -9)
        assert _gone(kids[0])
    finally:
        srv.kill()
        srv.wait(timeout=30)
