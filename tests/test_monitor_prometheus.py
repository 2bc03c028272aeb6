"""The exporter checked by a real Prometheus (Debian's package) on loopback: its values
equal `wc -l /proc/PID/maps`, the shipped alert rules fire for processes near their
limit or growing to it, and the shipped dashboard's queries return data."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from monitor_util import free_port, mappers, wc_l

DEPLOY = Path(__file__).parent.parent / "deploy"
RULES = DEPLOY / "prometheus-rules.yml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
pytestmark = pytest.mark.slow


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (make test installs Debian's prometheus)")
    return path


def _get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (loopback)
        return r.read()


def _wait(what: str, fn, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except OSError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


@contextlib.contextmanager
def _running(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as fh:
        # bounded: `timeout` ends it even if this test process dies
        p = subprocess.Popen(["timeout", "-s", "KILL", "600", *args], stdout=fh, stderr=fh,
                             start_new_session=True)
    try:
        yield p
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # timeout and what it runs
        p.wait(timeout=30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):  # type: ignore[no-untyped-def]
    """An exporter and a Prometheus scraping it every second with the shipped rules
    (their `for:` shortened to 2 s, the expressions as shipped)."""
    prom = _need("prometheus")
    tmp = tmp_path_factory.mktemp("prom")
    rules = tmp / "rules.yml"
    text = RULES.read_text()
    assert "for: 2m" in text and "for: 5m" in text
    rules.write_text(text.replace("for: 2m", "for: 2s").replace("for: 5m", "for: 2s")
                     .replace("for: 10m", "for: 2s"))
    eport, pport = free_port(), free_port()
    cfg = tmp / "prometheus.yml"
    cfg.write_text(f"""\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{json.dumps(str(rules))}]
scrape_configs:
  - job_name: vmascope
    static_configs:
      - targets: ["127.0.0.1:{eport}"]
""")
    vmascope = [sys.executable, "-m", "vmascope"]
    with contextlib.ExitStack() as stack:
        stack.enter_context(_running(
            [*vmascope, "exporter", "--listen", f"127.0.0.1:{eport}", "--interval", "1",
             "--top", "1000"], tmp / "exporter.log"))
        stack.enter_context(_running(
            [prom, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{pport}", "--log.level=warn"],
            tmp / "prometheus.log"))
        base = f"http://127.0.0.1:{pport}"
        _wait("prometheus to be ready", lambda: _get(f"{base}/-/ready"))
        yield base
    out = subprocess.run(["pgrep", "-f", f"web.listen-address=127.0.0.1:{pport}"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout == ""


def query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    data = json.loads(_get(url))
    assert data["status"] == "success", data
    return data["data"]["result"]


def test_promtool_checks_the_shipped_rules_clean() -> None:
    promtool = _need("promtool")
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 3 rules found" in out.stdout


def test_prometheus_has_the_map_counts_of_wc_l(stack: str) -> None:
    with mappers(4000, 2500) as procs:
        for p in procs:
            want = wc_l(p.pid)
            got = _wait(f"pid {p.pid} in prometheus", lambda p=p, want=want: [
                r for r in query(stack, f'vmascope_process_map_count{{pid="{p.pid}"}}')
                if float(r["value"][1]) == want])
            assert got[0]["metric"]["comm"].startswith("python")
            assert float(got[0]["value"][1]) == wc_l(p.pid)
        limit = int(Path("/proc/sys/vm/max_map_count").read_text())
        assert float(query(stack, "vmascope_max_map_count")[0]["value"][1]) == limit
        ratio = query(stack, f'vmascope_process_map_ratio{{pid="{procs[0].pid}"}}')
        assert abs(float(ratio[0]["value"][1]) - wc_l(procs[0].pid) / limit) < 1e-9


def _alerts(base: str, name: str, pid: int) -> list[dict]:
    data = json.loads(_get(f"{base}/api/v1/alerts"))["data"]["alerts"]
    return [a for a in data if a["labels"]["alertname"] == name
            and a["labels"].get("pid") == str(pid) and a["state"] == "firing"]


def test_the_near_limit_alert_fires_for_a_process_near_its_limit(stack: str) -> None:
    limit = int(Path("/proc/sys/vm/max_map_count").read_text())
    with mappers(int(limit * 0.93), 500) as (near, far):
        assert wc_l(near.pid) / limit > 0.9
        fired = _wait("VmaCountNearLimit", lambda: _alerts(stack, "VmaCountNearLimit",
                                                             near.pid), timeout=90)
        assert fired[0]["labels"]["severity"] == "critical"
        assert not _alerts(stack, "VmaCountNearLimit", far.pid)


def test_the_growth_alert_fires_for_a_process_growing_to_its_limit(stack: str) -> None:
    # 3,000 VMAs a second: at that pace any limit up to 43 million is hit within 4 h.
    with mappers(2000, grow=3000) as (growing,), mappers(2000) as (steady,):
        fired = _wait("VmaCountGrowingToLimit", lambda: _alerts(
            stack, "VmaCountGrowingToLimit", growing.pid), timeout=90)
        assert fired[0]["labels"]["severity"] == "warning"
        assert not _alerts(stack, "VmaCountGrowingToLimit", steady.pid)


def test_every_dashboard_query_returns_data(stack: str) -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dash["panels"] for t in panel["targets"]]
    assert len(exprs) >= 8
    with mappers(1500):
        for expr in exprs:
            e = expr.replace("$instance", ".+")
            _wait(f"data for {e}", lambda e=e: query(stack, e), timeout=60)
