"""Benchmark: a full reading of the host, and the exporter under concurrent scrapers.

    flock /work/bench.lock .venv/bin/python bench/bench_monitor.py [--procs 2000]
        [--scrapers 10] [--seconds 60] [--pause 0.1]

1. Spawns --procs processes (``sleep``, each killed at the end and bounded to 600 s
   anyway), then times ``read_host()`` (the best and the median of 5). Target: at most
   1 s of wall time per 1,000 processes on the host.
2. Starts ``vmascope exporter`` (reading every second, so readings of all those
   processes run during the scrapes) and --scrapers processes that each GET /metrics
   on a kept-alive connection (as Prometheus does), wait --pause seconds and go again,
   for --seconds. Targets: p99
   scrape latency (measured by the scrapers) under 50 ms, and the exporter's RSS flat:
   its growth between the first and the last quarter of the run under 5 MiB.

Exit 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import subprocess
import sys
import time

# One scraper: a process of its own (as separate Prometheus servers would be).
SCRAPER = r"""
import http.client, json, sys, time
port, seconds, pause = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
lat, errors = [], 0
end = time.monotonic() + seconds
c = None
while time.monotonic() < end:
    t0 = time.perf_counter()
    try:
        if c is None:  # one connection kept alive, as Prometheus does
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/metrics")
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise OSError(r.status)
        lat.append(time.perf_counter() - t0)
    except (OSError, http.client.HTTPException):
        errors += 1
        c = None
    time.sleep(pause)
print(json.dumps({"lat": lat, "errors": errors}))
"""


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def spawn(n: int) -> list[subprocess.Popen[bytes]]:
    procs = []
    for _ in range(n):
        procs.append(subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL,
                                      start_new_session=True))
    return procs


def reading_bench(n: int) -> tuple[float, float, int]:
    from vmascope.monitor.reading import read_host

    times, seen = [], 0
    for _ in range(5):
        r = read_host()
        times.append(r.duration)
        seen = len(r.processes) + r.unreadable
    return min(times), statistics.median(times), seen


def scrape_bench(scrapers: int, seconds: float, pause: float) -> dict[str, float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exp = subprocess.Popen([sys.executable, "-m", "vmascope", "exporter", "--listen",
                            f"127.0.0.1:{port}", "--interval", "1"],
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        time.sleep(3)  # a first reading done
        clients = [subprocess.Popen([sys.executable, "-c", SCRAPER, str(port), str(seconds),
                                     str(pause)], stdout=subprocess.PIPE,
                                    start_new_session=True) for _ in range(scrapers)]
        rss = []
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            rss.append(rss_kb(exp.pid))
            time.sleep(1)
        res = {"lat": [], "errors": 0}
        for c in clients:
            try:
                out, _ = c.communicate(timeout=seconds + 60)
            except subprocess.TimeoutExpired:
                c.kill()
                out, _ = c.communicate(timeout=30)
                res["errors"] += 1
            part = json.loads(out or b'{"lat": [], "errors": 1}')
            res["lat"] += part["lat"]
            res["errors"] += part["errors"]
        server_p99 = _server_p99(port)
    finally:
        exp.send_signal(signal.SIGTERM)
        try:
            exp.wait(timeout=30)
        except subprocess.TimeoutExpired:
            exp.kill()
            exp.wait(timeout=30)
    lat = sorted(res["lat"])
    q = max(1, len(rss) // 4)
    return {"scrapes": len(lat), "errors": res["errors"],
            "p50_ms": 1000 * lat[len(lat) // 2],
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "max_ms": 1000 * lat[-1],
            "rss_first_kb": statistics.mean(rss[:q]), "rss_last_kb": statistics.mean(rss[-q:]),
            "server_p99_le_ms": server_p99}


def _server_p99(port: int) -> float:
    """The exporter's own histogram: the bucket that holds its 99th percentile (ms)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    buckets = []
    for line in text.splitlines():
        if line.startswith("vmascope_scrape_duration_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float(le), float(line.split()[-1])))
    total = buckets[-1][1]
    return next(1000 * le for le, n in buckets if n >= 0.99 * total)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=2000)
    ap.add_argument("--scrapers", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--pause", type=float, default=0.1)
    args = ap.parse_args()
    ok = True
    procs = spawn(args.procs)
    try:
        best_s, median_s, seen = reading_bench(args.procs)
        per_k = median_s / (seen / 1000)
        print(f"reading: {seen} processes on the host, best {best_s:.3f} s, median "
              f"{median_s:.3f} s = {per_k:.3f} s per 1,000 (target <= 1)")
        ok &= per_k <= 1.0
        r = scrape_bench(args.scrapers, args.seconds, args.pause)
        growth = (r["rss_last_kb"] - r["rss_first_kb"]) / 1024
        print(f"scrapes: {args.scrapers} scrapers x {args.seconds:.0f} s (pause "
              f"{args.pause} s): {r['scrapes']} scrapes, {r['errors']} errors, p50 "
              f"{r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms (target < 50), max "
              f"{r['max_ms']:.1f} ms; in the exporter's own histogram p99 <= "
              f"{r['server_p99_le_ms']:g} ms")
        print(f"exporter RSS: first quarter {r['rss_first_kb'] / 1024:.1f} MiB, last "
              f"quarter {r['rss_last_kb'] / 1024:.1f} MiB, growth {growth:+.2f} MiB "
              "(target < 5)")
        ok &= r["p99_ms"] < 50 and growth < 5 and r["errors"] == 0
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=30)
    print("ok" if ok else "MISSED a target")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
