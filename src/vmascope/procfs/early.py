"""Reading and parsing a /proc file before the command knows it needs it.

``vmascope snapshot PID`` spends its first tenth of a second importing numpy and building
its argument parser, while the kernel could already be printing /proc/PID/maps. At
start-up :func:`start` begins that read in one thread and its parse (the C parser, which
runs without the GIL) in another, through a few reused buffers, so the kernel's text
generation, the parse and the imports overlap; ``reader.parse_proc`` takes the parser
over (:func:`take`) instead of reading the file again.

The read is only a head start: a file that cannot be opened is left to the command's
own read, which reports the error as usual; a read or parse error is handed to the
command to report. This module imports nothing heavy, so it runs before the CLI's
modules load.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from typing import Any

from ..kconst import KNOWN_VMFLAGS
from ._fastparse import Parser, fill

CHUNK = 1 << 20
BUFFERS = 4
# While the main thread imports, a thread waiting for the GIL gets it only every switch
# interval (5 ms by default), and these threads need it once per chunk.
SWITCH_INTERVAL = 0.0002

_lock = threading.Lock()
_started: dict[tuple[int, str], EarlyRead] = {}
_switch: float | None = None


class EarlyRead:
    """/proc/PID/NAME read by one thread and fed to a C parser by another."""

    def __init__(self, pid: int, name: str) -> None:
        self.pid, self.name = pid, name
        self.parser = Parser(KNOWN_VMFLAGS, numa=(name == "numa_maps"), keep=True)
        self.error: OSError | None = None  # the read's
        self.parse_error: BaseException | None = None  # kept in the parser as well
        self._fd = os.open(f"/proc/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
        self._free: queue.Queue[bytearray | None] = queue.Queue()
        self._full: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        for _ in range(BUFFERS):
            self._free.put(bytearray(CHUNK))
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"vmascope-read-{name}")
        self._parse_thread = threading.Thread(target=self._parse, daemon=True,
                                              name=f"vmascope-parse-{name}")
        self._reader.start()
        self._parse_thread.start()

    def _read(self) -> None:
        low = CHUNK - (1 << 16)
        try:
            while True:
                buf = self._free.get()
                if buf is None:  # the parse failed: stop reading
                    return
                n, eof = fill(self._fd, buf, low)
                if n:
                    self._full.put((buf, n))
                if eof:
                    return
        except OSError as exc:
            self.error = exc
        finally:
            os.close(self._fd)
            self._full.put(None)

    def _parse(self) -> None:
        while True:
            item = self._full.get()
            if item is None:
                return
            buf, n = item
            if self.parse_error is None:
                try:
                    with memoryview(buf)[:n] as view:
                        self.parser.feed(view)
                except BaseException as exc:  # noqa: BLE001 - the parser keeps it too
                    self.parse_error = exc
                    self._free.put(None)
                    continue
            self._free.put(buf)

    def wait(self) -> Any:
        """The parser, fed with the whole file (its ``finish`` raises a parse error);
        OSError if the read failed."""
        self._parse_thread.join()
        self._reader.join()
        _restore_switch()
        if self.error is not None:
            raise self.error
        return self.parser


def start(pid: int, names: tuple[str, ...]) -> None:
    """Begin reading and parsing /proc/PID/NAME for each name; a file that cannot be
    opened is left to the command's own read."""
    global _switch
    for name in names:
        try:
            early = EarlyRead(pid, name)
        except OSError:
            continue
        with _lock:
            _started[(pid, name)] = early
            if _switch is None:
                _switch = sys.getswitchinterval()
                sys.setswitchinterval(SWITCH_INTERVAL)


def take(pid: int, name: str) -> EarlyRead | None:
    """The read started for /proc/PID/NAME, handed over once (None: there is none)."""
    with _lock:
        return _started.pop((pid, name), None)


def _restore_switch() -> None:
    global _switch
    with _lock:
        if _switch is not None and not _started:
            sys.setswitchinterval(_switch)
            _switch = None
