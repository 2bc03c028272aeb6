"""``vmascope record``: a program's mapping calls and faults, between two snapshots.

The order of things for ``record -- CMD``:

1. the command starts stopped right after its exec (``launch.Tracee``), with the exit
   hook preloaded (``native/exithook.c``: at exit() it waits while the final snapshot
   is taken);
2. the first snapshot (with the kernel view where it can be read);
3. the recorder attaches (BPF as root, else strace; ``--strace`` chooses strace);
4. the command runs; events become op lines as they come (``convert.Converter``);
5. the last snapshot: at the command's exit (the hook), at the end of ``--duration``,
   or at Ctrl-C, while the process is still there; events after it are kept but
   marked ``skip=after-end``;
6. the instruction pointers are named from the target's ELF symbol tables (``#sym``).

``record --pid PID`` skips 1 and ends at 5 with the process still running. The trace
appears only when complete (written to a temporary name, renamed); on an error nothing is
left. Every process started here (the command, strace, the BPF loader) ends with the
recording: on SIGINT and SIGTERM through the handlers below, on SIGKILL of vmascope
through PR_SET_PDEATHSIG in each of them.
"""

from __future__ import annotations

import dataclasses
import os
import select
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import host
from ..errors import UsageError, VmascopeError
from ..model import Snapshot
from .convert import Converter
from .events import Event
from .format import TraceWriter

EXIT_HOOK = Path(__file__).with_name("native") / "exithook.c"
FAULT_RULE_BPF = ("kernel filter: a user page fault is kept when there is no VMA at the "
                  "address or the VMA is private with no anon_vma yet (the fault that "
                  "runs anon_vma_prepare); later faults change no VMA")
FAULT_RULE_STRACE = ("inferred: strace sees no faults; a write fault is assumed at the "
                     "first page of each part of a newly accessible private anonymous "
                     "range that the final snapshot shows with anonymous pages")


TMP_PREFIX = "vmascope-record."  # + the recorder's pid: its private folders


def reap_stale_folders() -> list[str]:
    """Remove the private folders of recordings whose process is gone (one killed with
    SIGKILL cannot remove its own): what the next start cleans. The paths removed."""
    removed = []
    base = Path(tempfile.gettempdir())
    for d in base.glob(f"{TMP_PREFIX}*"):
        pid = d.name[len(TMP_PREFIX):].split(".", 1)[0]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(str(d))
    return removed


class RecordError(VmascopeError):
    exit_code = 11


@dataclasses.dataclass
class RecordResult:
    path: Path
    recorder: str
    events: int
    ops: int
    lost: int
    skipped: dict[str, int]
    final: str  # how the last snapshot was taken ("exit", "duration", "interrupt", "none")
    exit_status: int | None


def exit_hook_path() -> Path:
    from ..native import build_preload

    return build_preload("exithook", EXIT_HOOK, RecordError)


def snapshot_bytes(pid: int, kernel_view: bool | None) -> bytes:
    """A snapshot file of pid, as bytes (a private temporary file, removed)."""
    from ..errors import KernelViewUnavailable
    from ..procfs import kview
    from ..procfs.capture import capture

    d = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}.")
    try:
        path = os.path.join(d, "s.vmasnap")
        # the kernel view where it can be read, unless the user said no
        want = (kernel_view if kernel_view is not None
                else kview.wanted(None) or host.kernel_view_problem() is None)
        try:
            capture(pid, path, kernel_view=want)
        except KernelViewUnavailable:
            capture(pid, path, kernel_view=False)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        shutil.rmtree(d, ignore_errors=True)


class _ExitWatch:
    """The recorder's side of the hook (native/exithook.c): two FIFOs in a private
    folder. A request line ``x PID`` (the target's exit) runs ``on_exit()``, ``e PID``
    (the target exec'd another program) ``on_exec()``; then one byte goes to ``ack``
    and the target goes on."""

    def __init__(self, on_exit: Callable[[], None], on_exec: Callable[[], None]) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}.")
        self.req = os.path.join(self.dir, "req")
        self.ack = os.path.join(self.dir, "ack")
        os.mkfifo(self.req, 0o600)
        os.mkfifo(self.ack, 0o600)
        # both ends held open read-write: the hook never sees a FIFO without a peer
        self._req = os.open(self.req, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._ack = os.open(self.ack, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.on = {b"x": on_exit, b"e": on_exec}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="exit-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = b""
        while not self._stop.is_set():
            r, _, _ = select.select([self._req], [], [], 0.2)
            if not r:
                continue
            try:
                buf += os.read(self._req, 256)
            except BlockingIOError:
                continue
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                what = self.on.get(line[:1])
                try:
                    if what is not None:
                        what()
                finally:
                    os.write(self._ack, b"k")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in (self._req, self._ack):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def choose_recorder(want: str) -> str:
    """"bpf" or "strace" for ``want`` ("auto", "bpf", "strace")."""
    from . import bpf

    if want == "strace":
        return "strace"
    why = bpf.problem()
    if want == "bpf" and why:
        raise RecordError(f"no BPF recording: {why} (--strace records without root)")
    return "strace" if why else "bpf"


def _signals_raise() -> dict[int, Any]:
    """Ctrl-C, SIGTERM and SIGHUP end the recording (KeyboardInterrupt, caught where the
    events are read): the trace is finished with the end state, and the command exits 0.
    These handlers replace the console script's, which would end it as interrupted."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = {}
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            old[s] = signal.signal(s, handler)
        except ValueError:  # not the main thread
            pass
    return old


def record(out: str | os.PathLike[str], *, argv: list[str] | None = None,
           pid: int | None = None, duration: float | None = None, recorder: str = "auto",
           kernel_view: bool | None = None,
           progress: Callable[[str, int], None] | None = None) -> RecordResult:
    """Record ``argv`` (started here) or the running process ``pid`` into ``out``."""
    from . import launch

    if (argv is None) == (pid is None):
        raise UsageError("record: give --pid PID or -- CMD ARGS...")
    if duration is not None and duration <= 0:
        raise UsageError("--duration must be more than 0 seconds")
    kind = choose_recorder(recorder)
    reap_stale_folders()
    out = Path(out)
    old = _signals_raise()
    tracee = None
    watch = None
    final: dict[str, Any] = {"data": None, "how": "none", "wall": None}
    restarts: list[tuple[float, bytes]] = []  # (time, snapshot) of the target's execs
    try:
        if argv is not None:
            env = dict(os.environ)
            hook = exit_hook_path()
            env["LD_PRELOAD"] = " ".join(filter(None, [str(hook), env.get("LD_PRELOAD")]))
            target_pid_box: list[int] = []

            def take_at_exit() -> None:
                final["wall"] = time.time()
                final["data"] = snapshot_bytes(target_pid_box[0], kernel_view)
                final["how"] = "exit"

            def take_at_exec() -> None:
                when = time.time()
                restarts.append((when, snapshot_bytes(target_pid_box[0], kernel_view)))

            watch = _ExitWatch(take_at_exit, take_at_exec)
            env["VMASCOPE_EXIT_DIR"] = watch.dir
            tracee = launch.Tracee.start(argv, env=env)
            pid = tracee.pid
            target_pid_box.append(pid)
        assert pid is not None
        first = snapshot_bytes(pid, kernel_view)
        first_snap = _decode(first, "<first snapshot>")
        header = {"recorder": kind, "pid": pid,
                  "command": " ".join(argv) if argv else None, "comm": first_snap.meta.comm,
                  "kernel": host.release(), "machine": os.uname().machine,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "faults": FAULT_RULE_BPF if kind == "bpf" else FAULT_RULE_STRACE,
                  "max_map_count": host.max_map_count()}
        with TraceWriter(out, header) as writer:
            writer.snapshot("first", first)
            result = _run(writer, kind, pid, tracee, duration, kernel_view, final, restarts,
                          first_snap, progress)
            result.path = out
        return result
    except KeyboardInterrupt:
        raise RecordError("record: interrupted before the recording started") from None
    finally:
        if tracee is not None:
            tracee.kill()
        if watch is not None:
            watch.close()
        for s, h in old.items():
            signal.signal(s, h)


def _decode(data: bytes, source: str) -> Snapshot:
    """A snapshot the recorder took, with what it reads of it: the mappings (the files,
    the symbols) and the resident pages (strace's fault inference); no other smaps
    field and no kernel view (at 2M VMAs that would be some 700 MB a snapshot)."""
    import io

    from ..procfs.load import load_stream
    from .faults import FAULT_FIELDS

    return load_stream(io.BytesIO(data), source, fields=FAULT_FIELDS, kernel_view=False)


def snapshot_facts(snap: Snapshot) -> tuple[bool, dict[tuple[int, int], str]]:
    """What the converter needs of the snapshot a trace starts from: whether it has a
    ``[heap]``, and the mapped files' paths by (dev, inode)."""
    files = {}
    for i in np.flatnonzero(snap.inode != 0).tolist():
        name = snap.name(i)
        if name:
            files[(int(snap.dev[i]), int(snap.inode[i]))] = name
    return "[heap]" in snap.names, files


def _run(writer: TraceWriter, kind: str, pid: int, tracee: Any, duration: float | None,
         kernel_view: bool | None, final: dict[str, Any],
         restarts: list[tuple[float, bytes]], first: Snapshot,
         progress: Callable[[str, int], None] | None) -> RecordResult:
    heap, files = snapshot_facts(first)
    conv = Converter(pid, heap_known=heap, files=files)
    events_before = 0  # events of the program images before the last exec
    events: list[Event] = []  # strace's, kept for the fault inference

    def restart(data: bytes) -> None:
        """The target exec'd: the trace starts again from its new program."""
        nonlocal conv, first, events_before
        writer.snapshot("first", data)
        first = _decode(data, "<snapshot at exec>")
        heap, files = snapshot_facts(first)
        events_before += conv.stats.events
        conv = Converter(pid, heap_known=heap, files=files)
        events.clear()

    deadline = None if duration is None else time.monotonic() + duration
    source = _source(kind, pid, tracee, duration)
    try:
        source.start()
        for ev in source.events(deadline):
            when = source.when(ev)
            while restarts and when >= restarts[0][0]:
                restart(restarts.pop(0)[1])
            if final["wall"] is not None and when > final["wall"]:
                writer.skipped(*conv.skipped(ev, "after-end"))
                continue
            if kind == "strace":
                events.append(ev)
                continue
            _write(writer, conv, [ev])
            if progress is not None and conv.stats.events % 4096 == 0:
                progress("recording", conv.stats.events)
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        source.stop()  # strace and the BPF loader end with the recording, and their files
        raise
    if final["data"] is None and _alive(pid):
        final["data"] = snapshot_bytes(pid, kernel_view)
        final["how"] = "interrupt" if interrupted else "duration"
    stats = source.stop()
    exit_status = tracee.wait(timeout=0) if tracee is not None else None
    while restarts:  # an exec after the last event read
        restart(restarts.pop(0)[1])
    last = _decode(final["data"], "<last snapshot>") if final["data"] is not None else None
    if kind == "strace":
        from .faults import infer_faults

        _write(writer, conv, infer_faults(events, last) if last is not None else events)
    if final["data"] is not None:
        writer.snapshot("last", final["data"])
    else:
        writer.comment("no last snapshot: the process ended without exit() (or was killed)"
                       " before it could be taken")
    lost = int(stats.get("lost", 0) or 0)
    writer.header({"lost": lost, "events": conv.stats.events,
                   "events_before_exec": events_before or None,
                   "skipped": " ".join(f"{k}={v}" for k, v in sorted(conv.stats.skipped.items())),
                   "final": final["how"]})
    writer.symbols(_names(writer, [first] + ([last] if last is not None else [])))
    return RecordResult(path=writer.path, recorder=kind, events=conv.stats.events,
                        ops=conv.stats.ops, lost=lost, skipped=dict(conv.stats.skipped),
                        final=final["how"], exit_status=exit_status)


def _write(writer: TraceWriter, conv: Converter, events: list[Event]) -> None:
    for op, skip, note in conv.lines(events):
        if op is not None:
            writer.op(op, note)
            for ip in note.stack:
                writer.ips.add(ip)
        else:
            writer.skipped(skip, note)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _names(writer: TraceWriter, snaps: list[Snapshot]) -> dict[int, str]:
    """#sym lines: each instruction pointer of the trace, named from the ELF files the
    snapshots show (on this machine, now, while the files are there)."""
    from .symbols import Symbolizer

    ips = sorted(writer.ips)
    if not ips:
        return {}
    return {ip: str(f) for ip, f in zip(ips, Symbolizer(snaps).frames(ips))}


class _Source:
    """What the recording loop needs of a recorder: ``start()`` returns when it records
    (the target still stopped at its exec is let go then); ``events()`` until the end;
    ``when(ev)`` the event's time as time.time(); ``stop()`` its stats."""

    def start(self) -> None:
        raise NotImplementedError

    def events(self, deadline: float | None) -> Iterator[Event]:
        raise NotImplementedError

    def when(self, ev: Event) -> float:
        raise NotImplementedError

    def stop(self) -> dict[str, Any]:
        raise NotImplementedError


def _source(kind: str, pid: int, tracee: Any, duration: float | None) -> _Source:
    if kind == "bpf":
        return _BpfSource(pid, tracee)
    return _StraceSource(pid, tracee, duration)


class _BpfSource(_Source):
    def __init__(self, pid: int, tracee: Any) -> None:
        from .bpf import BpfRecorder

        self.rec = BpfRecorder([pid], follow=True)
        self.tracee = tracee
        self.wall0 = 0.0

    def start(self) -> None:
        self.rec.start()
        # Event.t counts from the loader's first record (CLOCK_MONOTONIC, as Python's)
        self.wall0 = time.time() - (time.monotonic_ns() - self.rec.t0) / 1e9
        if self.tracee is not None:
            self.tracee.detach_stopped()
            self.tracee.resume()

    def events(self, deadline: float | None) -> Iterator[Event]:
        n = 0
        while not self.rec.finished:
            if deadline is not None and time.monotonic() >= deadline:
                return
            for ev in self.rec.events(timeout=0.25):
                yield ev
                n += 1
                if deadline is not None and n % 256 == 0 and time.monotonic() >= deadline:
                    return

    def when(self, ev: Event) -> float:
        return self.wall0 + ev.t

    def stop(self) -> dict[str, Any]:
        return self.rec.stop()


class _StraceSource(_Source):
    def __init__(self, pid: int, tracee: Any, duration: float | None) -> None:
        from .strace_record import StraceRecorder

        self.rec = StraceRecorder([pid], duration=duration)
        self.tracee = tracee

    def start(self) -> None:
        if self.tracee is not None:
            self.tracee.detach_stopped()
        self.rec.start()
        if self.tracee is not None:
            self.tracee.resume()

    def events(self, deadline: float | None) -> Iterator[Event]:
        yield from self.rec.events()

    def when(self, ev: Event) -> float:
        return (self.rec.stats.t0 or 0.0) + ev.t

    def stop(self) -> dict[str, Any]:
        self.rec.stop()
        st = self.rec.stats
        return {"lost": 0, "unfinished": getattr(st, "unfinished", 0)}
