"""Helpers for the monitoring tests: processes with a known number of VMAs, all bounded
in time and killed when the test ends."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

MAPPER = str(Path(__file__).parent / "mapper.py")


def wc_l(pid: int) -> int:
    """What `wc -l /proc/PID/maps` says."""
    out = subprocess.run(["wc", "-l", f"/proc/{pid}/maps"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return int(out.split()[0])


@contextlib.contextmanager
def mappers(*counts: int, grow: float = 0.0,
            comm: str | None = None) -> Iterator[list[subprocess.Popen[str]]]:
    """Processes with (about) these many VMAs each; killed on exit."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for n in counts:
            args = [sys.executable, MAPPER, str(n)] + ([str(grow)] if grow else [])
            env = {**os.environ, "MAPPER_COMM": comm or ""}
            p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, env=env)
            procs.append(p)
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()  # the mapper exits by itself within 300 s
            assert line.strip().isdigit(), f"mapper did not start: {line!r}"
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=30)
            for f in (p.stdin, p.stdout):
                if f is not None:
                    f.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
