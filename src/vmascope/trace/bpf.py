"""The BPF recorder: the mapping calls and page faults of running processes, as Events.

The recorder is a CO-RE BPF program (``native/record.bpf.c``) and its libbpf loader
(``native/record.c``), built on first use like the kernel view (``native.build_bpf_tool``).
It needs root, a kernel with BTF (5.11+) and x86_64: the system call numbers it watches
are x86_64's. :func:`problem` says why it cannot run, or None.

What is recorded, for the target processes (and, with ``follow``, every process they
fork from the moment the recorder is attached on; a fork is seen in the kernel, so no
child escapes; children forked before the start are not followed):

* The system calls in :data:`NAMES`, one Event each, sent when the call returns, with its
  result (``ret``, -errno on failure), timestamped at the return. ``exit`` and
  ``exit_group`` are sent when they are entered, with ``ret`` None. ``prctl`` is kept
  only for PR_SET_VMA (0x53564d41); the name of PR_SET_VMA_ANON_NAME (at most 79 bytes)
  is ``text``, so is memfd_create's name and execve's path (at most 95 bytes). ``args``
  are the call's own arguments (as many as it takes), unsigned; those that are C ints
  (:data:`INT_ARGS`) are sign-extended from their low 32 bits, as the kernel reads them
  (an mmap's fd -1 is 2**64 - 1).
* ``mmap`` of a file descriptor: ``file`` is the open file's identity when the call was
  entered: ``FileRef(dev, inode, basename)``, ``dev`` encoded like ``st_dev``
  (new_encode_dev of the super block's s_dev: the major:minor /proc/PID/maps shows, and
  what stat() gives on ordinary file systems; btrfs subvolumes and overlayfs may differ),
  ``basename`` the dentry's name (at most 95 bytes).
* User page faults (``call="fault"``, ``args=(address, error_code)``, from the
  page_fault_user tracepoint), only those that can change the VMAs:
  :data:`FAULT_FILTER`. The VMA at the address is looked up in the cheapest way the
  kernel allows (the stats' ``fault_filter``): ``maple``, a walk of the process's maple
  tree (6.1+) in the BPF program; else ``find_vma``, the bpf_find_vma helper (5.17+;
  several times dearer: in the tracepoint interrupts are off, so it unlocks the
  mmap_lock through an irq_work); else ``page``: :data:`FAULT_FILTER_FALLBACK`.

``stack``: the kernel's user stack walk (bpf_get_stack with BPF_F_USER_STACK, up to 16
frames): the instruction pointer (after the ``syscall`` instruction, or the faulting
instruction), then the return addresses found by following frame pointers. libc's
system call wrappers are leaf functions that set up no frame, so that walk skips the
function that called the wrapper; its return address is the word at the user stack
pointer. For a system call the recorder therefore inserts the word at [sp] as the
second frame, unless it equals the walk's second frame already or cannot be a return
address: below 64 KiB (a counter, a flag: wrappers that reserve stack, like glibc's
variadic prctl, leave such things there) or inside the stack itself (64 KiB below to
8 MiB above the stack pointer: a saved frame pointer). Faults get the walk as it is.
:meth:`BpfRecorder.records` gives the raw records, with the first four words at [sp].

Lost events are counted, never dropped silently: a record that finds the ring buffer
full (the reader does not keep up), a call that finds the per-thread table of calls in
flight full, a child that finds the table of targets full; :meth:`BpfRecorder.stop`
returns the counts.

Record layout (``struct rec`` of record.bpf.c, 368 bytes, little-endian): see
:data:`RECORD`. ``kind`` 0 a call, 1 a fault, 2 the loader's READY record (first;
``ktime`` is CLOCK_MONOTONIC at the attach, args[0] the fault filter (1 find_vma, 2
page, 3 maple),
args[1] the ring size, args[2] follow), 3 its TRAILER (last; ``nr`` why it ended (0 the
targets exited, 1 a signal, 2 the parent died), args[0..5] the counts lost_ring,
lost_inflight, lost_targets, faults_seen, faults_kept, faults_busy, sp[0] the records
sent).
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np

from .. import host
from ..errors import ProcessNotFound, RecordingUnavailable
from ..native import build_bpf_tool
from .events import Event, FileRef

NATIVE = Path(__file__).with_name("native")
BPF_SOURCE = NATIVE / "record.bpf.c"
LOADER_SOURCE = NATIVE / "record.c"

NSTACK, NSP, NTEXT = 16, 4, 96
RECORD = np.dtype([
    ("ktime", "<u8"), ("tgid", "<u4"), ("tid", "<u4"), ("kind", "<u4"), ("nr", "<u4"),
    ("flags", "<u4"), ("nstack", "<u4"), ("args", "<u8", (6,)), ("ret", "<i8"),
    ("dev", "<u8"), ("ino", "<u8"), ("usp", "<u8"), ("sp", "<u8", (NSP,)),
    ("stack", "<u8", (NSTACK,)), ("text", f"S{NTEXT}")])
assert RECORD.itemsize == 368

K_CALL, K_FAULT, K_READY, K_TRAILER = 0, 1, 2, 3
F_FILE, F_TEXT, F_RET, F_SP = 1, 2, 4, 8

# x86_64 system call numbers -> (name, number of arguments).
NAMES: dict[int, tuple[str, int]] = {
    9: ("mmap", 6), 10: ("mprotect", 3), 11: ("munmap", 2), 12: ("brk", 1),
    25: ("mremap", 5), 28: ("madvise", 3), 30: ("shmat", 3), 56: ("clone", 5),
    57: ("fork", 0), 58: ("vfork", 0), 59: ("execve", 3), 60: ("exit", 1),
    67: ("shmdt", 1), 149: ("mlock", 2), 150: ("munlock", 2), 151: ("mlockall", 1),
    152: ("munlockall", 0), 157: ("prctl", 5), 231: ("exit_group", 1), 237: ("mbind", 6),
    238: ("set_mempolicy", 3), 319: ("memfd_create", 2), 322: ("execveat", 5),
    325: ("mlock2", 3), 329: ("pkey_mprotect", 4), 330: ("pkey_alloc", 2),
    331: ("pkey_free", 1), 435: ("clone3", 2), 440: ("process_madvise", 5),
    462: ("mseal", 3),
}

# The arguments that are C ints (include/linux/syscalls.h): their upper 32 bits are
# whatever the caller left in the register, so they are sign-extended from the low 32.
INT_ARGS: dict[str, tuple[int, ...]] = {
    "mmap": (2, 3, 4), "mprotect": (2,), "pkey_mprotect": (2, 3), "madvise": (2,),
    "process_madvise": (0, 3), "mlockall": (0,), "mlock2": (2,), "prctl": (0,),
    "set_mempolicy": (0,), "pkey_free": (0,), "shmat": (0, 2), "exit": (0,),
    "exit_group": (0,), "execveat": (0, 4), "memfd_create": (1,),
}

FAULT_FILTER = ("a user page fault is kept when, looking at the VMA at the address when "
                "the fault is entered, there is no VMA (stack growth or a crash), or the "
                "VMA is private (no VM_SHARED) and has no anon_vma yet (the fault that "
                "makes anon_vma_prepare run); with bpf_find_vma, a fault whose VMA cannot "
                "be looked at (its mmap_lock is taken) is kept too")
FAULT_FILTER_FALLBACK = ("the first user page fault on each page of each process (an LRU "
                         "table of 65536 pages; kernels without bpf_find_vma)")

LOST_KEYS = ("lost_ring", "lost_inflight", "lost_targets")
FAULT_KEYS = ("faults_seen", "faults_kept", "faults_busy")
FILTERS = {1: "find_vma", 2: "page", 3: "maple"}
ENDS = {0: "targets exited", 1: "signal", 2: "parent gone"}

# The loader's exit statuses (record.c).
_USAGE, _NOT_PERMITTED, _NO_BTF, _NO_PROCESS, _NOT_X86 = 2, 3, 4, 6, 7
START_TIMEOUT = 120.0  # the first start builds the loader and loads the programs
STOP_TIMEOUT = 30.0
CHUNK = 1 << 20

# Where a word at [sp] cannot be a return address (see the module's docstring).
_LOW = 0x10000
_USER_END = 1 << 47
_BELOW_SP, _ABOVE_SP = 0x10000, 0x800000


def problem() -> str | None:
    """Why BPF recording is unavailable here (one line), or None."""
    return host.bpf_record_problem() or host.bpf_build_problem()


def loader_path() -> Path:
    """The compiled loader, built on first use."""
    return build_bpf_tool("record", BPF_SOURCE, LOADER_SOURCE,
                          lambda why: RecordingUnavailable(f"no BPF recording: {why}"))


def _first_line(data: bytes) -> str:
    text = data.decode(errors="replace").strip()
    return (text.splitlines() or ["(no output)"])[0].removeprefix("record: ")


def call_stack(frames: list[int], word0: int | None, usp: int) -> tuple[int, ...]:
    """A call's stack: the frame-pointer walk with the word at [sp] inserted second when
    it can be the return address the walk skips (see the module's docstring)."""
    if word0 is not None and frames and _LOW <= word0 < _USER_END \
            and not usp - _BELOW_SP <= word0 < usp + _ABOVE_SP \
            and (len(frames) < 2 or frames[1] != word0):
        frames.insert(1, word0)
    return tuple(frames)


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def _int_arg(v: int) -> int:
    """A C int argument as the kernel reads it (the low 32 bits), sign-extended to 64
    bits and made unsigned again: fd -1 is 2**64 - 1 whatever the upper bits were."""
    v &= 0xFFFFFFFF
    return v | 0xFFFFFFFF00000000 if v & 0x80000000 else v


def decode(recs: np.ndarray, t0: int) -> Iterator[Event]:
    """The Events of the CALL and FAULT records ``recs`` (``t`` from ``t0``, in ns)."""
    if not len(recs):
        return
    # Only what is used, as Python lists in one go: the stacks up to the deepest one,
    # the first word at [sp], the text of the records that have one.
    deepest = int(recs["nstack"].max())
    cols = [recs[name].tolist() for name in
            ("ktime", "tgid", "tid", "kind", "nr", "flags", "nstack", "args", "ret", "dev",
             "ino", "usp")]
    cols.append(recs["sp"][:, 0].tolist())
    cols.append(recs["stack"][:, :deepest].tolist())
    has_text = np.flatnonzero(recs["flags"] & np.uint32(F_FILE | F_TEXT))
    texts = dict(zip(has_text.tolist(), recs["text"][has_text].tolist()))
    for i, (ktime, tgid, tid, kind, nr, flags, nstack, args, ret, dev, ino, usp, sp0,
            stack) in enumerate(zip(*cols)):
        t = (ktime - t0) / 1e9
        frames = stack[:nstack]
        if kind == K_FAULT:
            yield Event(t=t, pid=tgid, tid=tid, call="fault", args=(args[0], args[1]),
                        stack=tuple(frames))
            continue
        if kind != K_CALL:
            continue
        name, nargs = NAMES.get(nr, (f"syscall_{nr}", 6))
        for j in INT_ARGS.get(name, ()):
            args[j] = _int_arg(args[j])
        ev = Event(t=t, pid=tgid, tid=tid, call=name, args=tuple(args[:nargs]),
                   ret=ret if flags & F_RET else None,
                   stack=call_stack(frames, sp0 if flags & F_SP else None, usp))
        if flags & F_FILE:
            ev.file = FileRef(dev=dev, inode=ino, basename=_text(texts[i]) or None)
        elif flags & F_TEXT:
            ev.text = _text(texts[i])
        yield ev


class BpfRecorder:
    """Record processes ``pids`` (and, with ``follow``, their new children) with BPF.

    ``start()`` returns once the programs are attached; ``events()`` yields the Events
    as they come (until the recording ends: ``stop()``, or every target exited);
    ``stop()`` ends it and returns the stats. As a context manager it starts and always
    stops (the loader is killed if it does not end by itself).

    ``ring_size`` (bytes, a power of two) and ``faults`` (a fault filter: the default
    ``auto``, ``maple``, ``find_vma`` or ``page``) are for tests and
    benchmarks.
    """

    def __init__(self, pids: Iterable[int], *, follow: bool = True,
                 ring_size: int | None = None, faults: str = "auto") -> None:
        self.pids = [int(p) for p in pids]
        if not self.pids:
            raise ValueError("no process to record")
        self.follow = follow
        self.ring_size = ring_size
        self.faults = faults
        self._proc: subprocess.Popen[bytes] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._eof = False
        self._thread: threading.Thread | None = None
        self._tail = b""
        self._t0 = 0
        self._ready: dict[str, Any] = {}
        self._stats: dict[str, Any] | None = None
        self._stderr = b""
        self._stopped = False
        self.events_seen = 0

    # -- starting ---------------------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [str(loader_path())]
        if self.follow:
            cmd.append("--follow")
        if self.ring_size is not None:
            cmd += ["--ring-size", str(int(self.ring_size))]
        if self.faults != "auto":
            cmd += ["--faults", self.faults]
        return cmd + [str(p) for p in self.pids]

    def start(self) -> Self:
        why = problem()
        if why:
            raise RecordingUnavailable(f"no BPF recording: {why}")
        cmd = self.command()
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL)
        try:
            first = self._read_exact(RECORD.itemsize, START_TIMEOUT)
        except BaseException:
            self._kill()
            raise
        if first is None:
            self._fail()
        rec = np.frombuffer(first, dtype=RECORD)[0]
        if int(rec["kind"]) != K_READY:
            self._kill()
            raise RecordingUnavailable("no BPF recording: the loader's output is garbled")
        self._t0 = int(rec["ktime"])
        self._ready = {"fault_filter": FILTERS.get(int(rec["args"][0]), "?"),
                       "ring_size": int(rec["args"][1]), "follow": bool(rec["args"][2])}
        self._thread = threading.Thread(target=self._reader, name="bpf-record-reader",
                                        daemon=True)
        self._thread.start()
        return self

    def _read_exact(self, n: int, timeout: float) -> bytes | None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RecordingUnavailable(
                    f"no BPF recording: the loader was not ready in {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _fail(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        try:
            code = self._proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill()
            code = -1
        err = _first_line(self._proc.stderr.read())
        self._close()
        if code == _NO_PROCESS:
            m = re.search(r"no process (\d+)", err)
            raise ProcessNotFound(int(m.group(1)) if m else self.pids[0])
        if code == _USAGE:
            raise ValueError(f"the BPF loader refused its arguments: {err}")
        raise RecordingUnavailable(f"no BPF recording: {err}")

    # -- reading ----------------------------------------------------------------------

    def _reader(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        tail = b""
        while True:
            try:
                chunk = os.read(fd, CHUNK)
            except OSError:
                chunk = b""
            if not chunk:
                break
            tail = (tail + chunk)[-RECORD.itemsize * 2:]
            with self._cond:
                self._chunks.append(chunk)
                self._cond.notify_all()
        with self._cond:
            self._tail = tail
            self._eof = True
            self._cond.notify_all()

    def _next_chunk(self, timeout: float | None) -> bytes | None:
        """The next chunk of output; b"" when none came in ``timeout``; None at the end."""
        with self._cond:
            if not self._chunks and not self._eof:
                self._cond.wait(timeout)
            if self._chunks:
                return self._chunks.popleft()
            return None if self._eof else b""

    @property
    def t0(self) -> int:
        """CLOCK_MONOTONIC ns of the loader's first record (Event.t counts from it)."""
        return self._t0

    @property
    def finished(self) -> bool:
        """The loader has ended and every record was read."""
        with self._cond:
            return self._eof and not self._chunks

    def records(self, timeout: float | None = None) -> Iterator[np.ndarray]:
        """The raw records (arrays of :data:`RECORD`) as they come, the TRAILER
        included, until the end of the recording (or, with ``timeout``, until no
        output came for that long)."""
        if self._proc is None:
            raise RuntimeError("the recorder is not started")
        rest = b""
        while True:
            chunk = self._next_chunk(timeout)
            if chunk is None or (chunk == b"" and timeout is not None):
                return
            if not chunk:
                continue
            data = rest + chunk
            whole = len(data) - len(data) % RECORD.itemsize
            rest = data[whole:]
            if whole:
                recs = np.frombuffer(data[:whole], dtype=RECORD)
                tr = recs[recs["kind"] == K_TRAILER]
                if len(tr):
                    self._stats = self._trailer(tr[-1])
                yield recs

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """The Events as they come, until the recording ends (see :meth:`records`)."""
        for recs in self.records(timeout):
            for ev in decode(recs, self._t0):
                self.events_seen += 1
                yield ev

    # -- stopping ---------------------------------------------------------------------

    def _trailer(self, rec: np.ndarray) -> dict[str, Any]:
        args = [int(a) for a in rec["args"]]
        stats: dict[str, Any] = {"events": int(rec["sp"][0])}
        stats.update(zip(LOST_KEYS + FAULT_KEYS, args))
        stats["lost"] = sum(args[:3])
        stats["end"] = ENDS.get(int(rec["nr"]), str(int(rec["nr"])))
        stats.update(self._ready)
        stats["complete"] = True
        return stats

    def stop(self) -> dict[str, Any]:
        """End the recording (SIGINT to the loader, then SIGKILL if it lingers) and
        return its stats: events (records sent), lost (and lost_ring, lost_inflight,
        lost_targets), faults_seen, faults_kept, faults_busy, fault_filter, end.
        Events not read yet stay readable with :meth:`events`."""
        proc = self._proc
        if proc is None:
            return self._stats or {}
        if self._stopped:
            return self._stats or {}
        self._stopped = True
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT)
        if self._stats is None:
            tail = self._tail
            if len(tail) >= RECORD.itemsize:
                rec = np.frombuffer(tail[-RECORD.itemsize:], dtype=RECORD)[0]
                if int(rec["kind"]) == K_TRAILER:
                    self._stats = self._trailer(rec)
        if self._stats is None:
            self._stats = {**self._ready, "complete": False, "lost": None}
        with contextlib.suppress(OSError):
            if proc.stderr is not None:
                self._stderr = proc.stderr.read()
        self._close()
        return self._stats

    def _kill(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=STOP_TIMEOUT)

    def _close(self) -> None:
        proc = self._proc
        if proc is None:
            return
        streams = [proc.stderr]
        if self._thread is None or not self._thread.is_alive():
            streams.append(proc.stdout)
        for stream in streams:
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    @property
    def pid(self) -> int | None:
        """The loader's pid while it runs."""
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.stop()
        finally:
            self._kill()


__all__ = ["FAULT_FILTER", "FAULT_FILTER_FALLBACK", "INT_ARGS", "NAMES", "RECORD", "BpfRecorder",
           "call_stack", "decode", "loader_path", "problem"]
