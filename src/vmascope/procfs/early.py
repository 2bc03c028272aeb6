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


# Threads whose CPUs an early read holds: it gives them back when it ends.
_holding: set[int] = set()


def keep_off_one_cpu(hold: bool = False) -> frozenset[int] | None:
    """Keep the calling thread, and the threads it starts from now on, off one of the
    CPUs it may run on, so that the thread reading the longest chain's file (smaps, or
    maps) has a CPU where no other thread of the command runs: on two cores the parse,
    numa_maps and the imports otherwise take a third of its core while the read lasts
    (``analyze`` at 2M VMAs: its read of smaps ended at 2.0 s instead of 1.85 s).

    Returns the CPUs the thread had, for the reading thread (``feed_fd(fd, cpus)``) and
    :func:`restore_cpus`; None with fewer than two, where they cannot be read or set, or
    while an early read holds them (it gives them back itself). ``hold``: an early read
    takes them, and gives them back with :func:`_give_back`. The reading thread moves to
    the CPU left free (the highest: ``move_to_free_cpu`` in the C parser finds it so),
    then may run on all of them: on a busy host it goes wherever the scheduler finds
    room."""
    tid = threading.get_native_id()
    with _lock:
        if tid in _holding:
            return None
        try:
            cpus = frozenset(os.sched_getaffinity(0))
            if len(cpus) < 2:
                return None
            os.sched_setaffinity(0, cpus - {max(cpus)})
        except (AttributeError, OSError):
            return None
        if hold:
            _holding.add(tid)
        return cpus


def restore_cpus(tid: int, cpus: frozenset[int] | None) -> None:
    """Give thread ``tid`` back the CPUs :func:`keep_off_one_cpu` returned (a thread
    that has ended, or a host that refuses: nothing to do)."""
    if cpus is None:
        return
    try:
        os.sched_setaffinity(tid, cpus)
    except OSError:
        pass


def _give_back(tid: int, cpus: frozenset[int]) -> None:
    """The end of an early read's hold on thread ``tid``'s CPUs."""
    with _lock:
        restore_cpus(tid, cpus)
        _holding.discard(tid)


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
                 fields: tuple[str, ...] | None = None,
                 cpus: tuple[int, frozenset[int]] | None = None) -> None:
        """``cpus``: (thread id, CPUs) from :func:`keep_off_one_cpu`: the read runs on
        those CPUs, and that thread gets them back when it ends."""
        self.parser = Parser(KNOWN_VMFLAGS, numa=(name == "numa_maps"), keep=keep,
                             fields=fields)
        self.error: BaseException | None = None  # the read's (a parse error: the parser's)
        self._fd = os.open(f"/proc/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
        self._beside = name == "numa_maps"
        self._cpus = cpus
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"vmascope-early-{name}")
        self._thread.start()

    def _run(self) -> None:
        if self._beside:
            yield_to_main_read()
        try:
            self.parser.feed_fd(self._fd, None if self._cpus is None else self._cpus[1])
        except OSError as exc:
            self.error = exc
        except BaseException:  # noqa: BLE001 - a parse error: the parser raises it again
            pass
        finally:
            os.close(self._fd)
            if self._cpus is not None:
                _give_back(*self._cpus)

    def wait(self) -> Parser:
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
    a file that cannot be opened is left to the command's own read. The first name's read
    has a CPU to itself while it lasts (:func:`keep_off_one_cpu`)."""
    kept = keep_off_one_cpu(hold=True)
    cpus = None if kept is None else (threading.get_native_id(), kept)
    for name in names:
        only = fields if name == "smaps" else None
        try:
            early = EarlyRead(pid, name, keep, only, cpus)
        except OSError:
            if cpus is not None:
                _give_back(*cpus)  # no read to give them back at its end
            continue
        finally:
            cpus = None  # only the first
        with _lock:
            _started[(pid, name, keep, only)] = early


def take(pid: int, name: str, keep: bool = True,
         fields: tuple[str, ...] | None = None) -> EarlyRead | None:
    """The read started for /proc/PID/NAME by a parser of the same kind (keeping the
    VMAs or not, the same smaps fields), handed over once (None: there is none)."""
    with _lock:
        return _started.pop((pid, name, keep, fields), None)
