"""The Prometheus exporter: the host read in the background, served from memory.

A thread reads the host every ``interval`` seconds and renders the exposition text once;
a scrape returns the latest complete rendering (plus the exporter's own metrics) and never
touches /proc, so its latency does not depend on the number of processes.

Labels stay bounded: per-process series only for the ``top`` processes by map count
(labels ``pid`` and ``comm``; ``cmdline`` only when asked), totals per comm for all.
"""

from __future__ import annotations

import collections
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..errors import OutputError, VmascopeError
from ..output import safe_write
from .causes import Causes, causes_of
from .reading import Reading, read_host

TEXTFILE_NAME = "vmascope.prom"
CMDLINE_MAX = 200


class _ReadingCollector:
    """Metric families of one reading (the collector of a throw-away registry)."""

    def __init__(self, reading: Reading, top: int, causes: dict[int, Causes],
                 cmdline: bool) -> None:
        self.reading, self.top, self.causes, self.cmdline = reading, top, causes, cmdline

    def collect(self) -> Iterator[GaugeMetricFamily]:
        r = self.reading
        g = GaugeMetricFamily("vmascope_max_map_count",
                              "vm.max_map_count: the most VMAs a process may have")
        if r.limit is not None:
            g.add_metric([], r.limit)
        yield g
        labels = ["pid", "comm"] + (["cmdline"] if self.cmdline else [])
        count = GaugeMetricFamily("vmascope_process_map_count",
                                  "VMAs of the process (lines of /proc/PID/maps)",
                                  labels=labels)
        ratio = GaugeMetricFamily("vmascope_process_map_ratio",
                                  "VMAs of the process / vm.max_map_count", labels=labels)
        rss = GaugeMetricFamily("vmascope_process_rss_bytes", "resident set size",
                                labels=labels)
        for p in r.by_count()[:self.top]:
            values = [str(p.pid), p.comm]
            if self.cmdline:
                values.append((p.cmdline or "")[:CMDLINE_MAX])
            count.add_metric(values, p.map_count)
            if r.limit:
                ratio.add_metric(values, p.map_count / r.limit)
            rss.add_metric(values, p.rss_bytes)
        yield count
        yield ratio
        yield rss
        per_comm: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
        for p in r.processes:
            t = per_comm[p.comm]
            t[0] += p.map_count
            t[1] += 1
            t[2] = max(t[2], p.map_count)
        total = GaugeMetricFamily("vmascope_comm_map_count",
                                  "VMAs of all processes with this comm", labels=["comm"])
        procs = GaugeMetricFamily("vmascope_comm_processes",
                                  "processes with this comm", labels=["comm"])
        most = GaugeMetricFamily("vmascope_comm_map_count_max",
                                 "the most VMAs of one process with this comm",
                                 labels=["comm"])
        for comm, (n, k, m) in sorted(per_comm.items()):
            total.add_metric([comm], n)
            procs.add_metric([comm], k)
            most.add_metric([comm], m)
        yield total
        yield procs
        yield most
        excess = GaugeMetricFamily(
            "vmascope_process_budget_excess",
            "VMAs beyond one per reservation, by cause (the VMA budget), top processes",
            labels=["pid", "comm", "cause"])
        comms = {p.pid: p.comm for p in r.processes}
        for pid, c in sorted(self.causes.items()):
            for cause, n in c.counts.items():
                excess.add_metric([str(pid), comms.get(pid, ""), cause], n)
        yield excess
        seen = GaugeMetricFamily("vmascope_processes", "processes in the last reading",
                                 labels=["state"])
        seen.add_metric(["read"], len(r.processes))
        seen.add_metric(["unreadable"], r.unreadable)
        yield seen
        yield GaugeMetricFamily("vmascope_reading_duration_seconds",
                                "how long the last reading of the host took",
                                value=r.duration)
        yield GaugeMetricFamily("vmascope_reading_timestamp_seconds",
                                "when the last reading started", value=r.time)


def render(reading: Reading, *, top: int = 20, causes: dict[int, Causes] | None = None,
           cmdline: bool = False) -> bytes:
    """The exposition text of one reading."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_ReadingCollector(reading, top, causes or {}, cmdline))  # type: ignore[arg-type]
    return generate_latest(reg)


class Exporter:
    """Reads the host every ``interval`` seconds in a thread; ``body()`` is the latest."""

    def __init__(self, *, top: int = 20, interval: float = 15.0, causes: int = 3,
                 cmdline: bool = False, textfile: str | os.PathLike[str] | None = None) -> None:
        self.top, self.interval, self.n_causes, self.cmdline = top, interval, causes, cmdline
        self.textfile = Path(textfile) / TEXTFILE_NAME if textfile else None
        self.registry = CollectorRegistry(auto_describe=True)
        self.scrape_seconds = Histogram(
            "vmascope_scrape_duration_seconds", "time to answer a scrape",
            registry=self.registry,
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, 1.0))
        self.scrape_errors = Counter("vmascope_scrape_errors", "scrapes that failed",
                                     registry=self.registry)
        self.reading_errors = Counter("vmascope_reading_errors",
                                      "readings of the host that failed",
                                      registry=self.registry)
        self.readings = Counter("vmascope_readings", "readings of the host done",
                                registry=self.registry)
        self.ready = Gauge("vmascope_up", "1 once the host has been read",
                           registry=self.registry)
        self._body = b""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    def read_once(self) -> bytes:
        """Read the host, render, keep it (and write the textfile); returns the text."""
        reading = read_host(cmdline=self.cmdline)
        top = reading.by_count()[:self.n_causes]
        causes = {p.pid: c for p in top if (c := causes_of(p.pid)) is not None}
        body = render(reading, top=self.top, causes=causes, cmdline=self.cmdline)
        self._publish(body)
        return body

    def _publish(self, body: bytes) -> None:
        with self._lock:
            self._body = body
        self.readings.inc()
        self.ready.set(1)
        if self.textfile is not None:
            with safe_write(self.textfile, "wb") as fh:
                os.fchmod(fh.fileno(), 0o644)  # node_exporter runs as another user
                fh.write(body)

    def run_forever(self) -> None:
        """Read every ``interval`` seconds in this thread until ``stop``."""
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.read_once()
                self.last_error = None
            except (OSError, VmascopeError) as exc:
                self.reading_errors.inc()
                self.last_error = str(exc)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))

    def start(self, *, process: bool = False) -> None:
        """Read in a thread, or (``process``) in a child process at the lowest priority, so
        that a reading never holds this process's interpreter while a scrape waits."""
        target = self._from_child if process else self.run_forever
        self._thread = threading.Thread(target=target, name="vmascope-reader", daemon=True)
        self._thread.start()

    def _from_child(self) -> None:
        args = [sys.executable, "-m", "vmascope.monitor.exporter", "--child",
                json.dumps({"top": self.top, "interval": self.interval,
                            "causes": self.n_causes, "cmdline": self.cmdline})]
        child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._child = child
        assert child.stdout is not None
        try:
            while not self._stop.is_set():
                head = child.stdout.readline()
                if not head:
                    self.reading_errors.inc()
                    self.last_error = "the reading process ended"
                    return
                meta = json.loads(head)
                body = child.stdout.read(meta["n"])
                if meta.get("error"):
                    self.reading_errors.inc()
                    self.last_error = meta["error"]
                    continue
                self._publish(body)
                self.last_error = None
        finally:
            if child.stdin is not None:
                child.stdin.close()  # the child ends when its stdin closes
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=10)
            child.stdout.close()

    def stop(self) -> None:
        self._stop.set()
        child = getattr(self, "_child", None)
        if child is not None and child.stdin is not None and not child.stdin.closed:
            child.stdin.close()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def body(self) -> bytes:
        """What a scrape returns: the latest reading and the exporter's own metrics."""
        with self._lock:
            body = self._body
        return body + generate_latest(self.registry)


def _handler(exporter: Exporter) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "vmascope"
        protocol_version = "HTTP/1.1"  # keep-alive, as Prometheus scrapes
        timeout = 120  # an idle kept-alive connection is closed

        def do_GET(self) -> None:  # noqa: N802
            t0 = time.perf_counter()
            path = self.path.split("?", 1)[0]
            if path not in ("/metrics", "/"):
                self.send_error(404)
                return
            try:
                body = (exporter.body() if path == "/metrics" else
                        b"<html><body><a href=\"/metrics\">metrics</a></body></html>\n")
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST if path == "/metrics"
                                 else "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                exporter.scrape_errors.inc()
            finally:
                if path == "/metrics":
                    exporter.scrape_seconds.observe(time.perf_counter() - t0)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(text)
    return host.strip("[]") or "127.0.0.1", int(port)


def serve(exporter: Exporter, address: tuple[str, int]) -> http.server.ThreadingHTTPServer:
    """A server (not yet serving: call ``serve_forever``) for ``exporter`` on ``address``."""
    try:
        return _Server(address, _handler(exporter))
    except OSError as exc:
        raise VmascopeError(f"cannot listen on {address[0]}:{address[1]}: "
                            f"{exc.strerror or exc}") from None


def check_textfile_dir(path: str) -> None:
    if not os.path.isdir(path):
        raise OutputError(f"{path}: not a directory (--textfile takes the directory of "
                          "node_exporter's textfile collector)")


def _child_main(config: str) -> None:
    """The reading process: read, render, write a line ``{"n": len}`` and the text,
    wait the interval; end when stdin closes (the exporter stopped or died)."""
    import select

    os.nice(19)  # scrapes first: the reading takes what CPU is left
    cfg = json.loads(config)
    exp = Exporter(top=cfg["top"], interval=cfg["interval"], causes=cfg["causes"],
                   cmdline=cfg["cmdline"])
    out = sys.stdout.buffer
    while True:
        t0 = time.monotonic()
        try:
            body, error = exp.read_once(), None
        except (OSError, VmascopeError) as exc:
            body, error = b"", str(exc)
        try:
            out.write(json.dumps({"n": len(body), "error": error}).encode() + b"\n" + body)
            out.flush()
        except BrokenPipeError:
            return
        wait = max(0.0, cfg["interval"] - (time.monotonic() - t0))
        r, _, _ = select.select([sys.stdin], [], [], wait)
        if r and not os.read(sys.stdin.fileno(), 4096):
            return


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    _child_main(sys.argv[2])


__all__ = ["Exporter", "TEXTFILE_NAME", "check_textfile_dir", "parse_listen", "render",
           "serve"]
