"""Reading and parsing a /proc file before the command knows it needs it.

``vmascope snapshot PID`` spends its first tenth of a second importing numpy and building
its argument parser, while the kernel could already be printing /proc/PID/maps. At
start-up :func:`start` begins that read and its parse (the C parser's ``feed_fd``, which
runs without the GIL), so the kernel's text generation, the parse and the imports
overlap; ``reader.parse_proc`` takes the parser over (:func:`take`) instead of reading
the file again.

The read is only a head start: a file that cannot be opened is left to the command's
own read, which reports the error as usual; a read or parse error is handed to the
command to report. This module imports nothing heavy, so it runs before the CLI's
modules load.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ..kconst import KNOWN_VMFLAGS
from ._fastparse import Parser

_lock = threading.Lock()
_started: dict[tuple[int, str, bool, tuple[str, ...] | None], EarlyRead] = {}


# numa_maps is read beside smaps, whose read is the longest chain of `analyze`. At this
# nice value the numa_maps thread (and the C reader it starts) leaves the second core to
# the smaps parse first: `analyze` at 2M VMAs on 2 cores went from 3.15 s to 2.95 s. On
# a busy machine it is slowed, never starved (SCHED_IDLE gained as much, but could
# starve, and an unprivileged process cannot undo it).
BESIDE_NICE = 5


def yield_to_main_read() -> None:
    """Lower the calling thread's priority by BESIDE_NICE (on Linux nice is per thread,
    and the threads it starts inherit it)."""
    try:
        nice = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, min(19, nice + BESIDE_NICE))
    except OSError:
        pass


class EarlyRead:
    """/proc/PID/NAME read and parsed by the C parser's ``feed_fd`` in a thread (the GIL
    released throughout)."""

    def __init__(self, pid: int, name: str, keep: bool = True,
                 fields: tuple[str, ...] | None = None) -> None:
        self.parser = Parser(KNOWN_VMFLAGS, numa=(name == "numa_maps"), keep=keep,
                             fields=fields)
        self.error: BaseException | None = None  # the read's (a parse error: the parser's)
        self._fd = os.open(f"/proc/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
        self._beside = name == "numa_maps"
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"vmascope-early-{name}")
        self._thread.start()

    def _run(self) -> None:
        if self._beside:
            yield_to_main_read()
        try:
            self.parser.feed_fd(self._fd)
        except OSError as exc:
            self.error = exc
        except BaseException:  # noqa: BLE001 - a parse error: the parser raises it again
            pass
        finally:
            os.close(self._fd)

    def wait(self) -> Any:
        """The parser, fed with the whole file (its ``finish`` raises a parse error);
        OSError if the read failed."""
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.parser


def start(pid: int, names: tuple[str, ...], keep: bool = True,
          fields: tuple[str, ...] | None = None) -> None:
    """Begin reading and parsing /proc/PID/NAME for each name, keeping the VMAs or (keep
    False, for a summary) only counting them, and of smaps only ``fields`` (None: all);
    a file that cannot be opened is left to the command's own read."""
    for name in names:
        only = fields if name == "smaps" else None
        try:
            early = EarlyRead(pid, name, keep, only)
        except OSError:
            continue
        with _lock:
            _started[(pid, name, keep, only)] = early


def take(pid: int, name: str, keep: bool = True,
         fields: tuple[str, ...] | None = None) -> EarlyRead | None:
    """The read started for /proc/PID/NAME by a parser of the same kind (keeping the
    VMAs or not, the same smaps fields), handed over once (None: there is none)."""
    with _lock:
        return _started.pop((pid, name, keep, fields), None)
