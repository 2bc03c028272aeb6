"""Reading strace logs into Events (``vmascope import-strace``; the recorder that runs
strace is ``strace_record``, the page faults strace cannot see are ``faults``).

What :func:`parse_strace` reads
-------------------------------
Logs of ``strace`` as users already have them:

* with or without ``-f``: a ``[pid N]`` prefix (output on stderr, shown only while more
  than one process is traced), a leading pid column (``-o FILE -f``), or none (no
  ``-f``; ``-ff`` writes one file per process: one such file is read, its pid taken from
  the ``pid`` argument or the file name's ``.N`` suffix);
* timestamps ``-t``/``-tt`` (clock time: ``t`` counts from the first line, across
  midnight), ``-ttt`` (Unix time: ``t`` from the first line, the first value in
  :attr:`ParseStats.t0`), ``-r`` (relative: the deltas are summed) or none (every ``t``
  is 0.0; the order of the Events is the log's); ``-T`` durations are dropped;
* ``-k`` stack lines (``> /path/libc.so.6(__mmap+0x26) [0x11b616]``, ``> /path()
  [0x1234]``, ``> /path(+0x1234) [0x1234]``, or an unwinder error) become
  ``Event.frames`` as ``"libc.so.6:__mmap+0x26"`` (``"module:+0xoff"`` without a symbol,
  ``"?"`` for an unknown frame). The bracketed number is the offset in the module's file;
  ``Event.stack`` (absolute addresses) is filled only when every frame of the call can be
  placed: by a file mmap seen earlier in the trace, or by the ``maps`` argument (a
  Snapshot of the process, or module path -> load base);
* ``-y``/``-yy`` fd decorations (``3</usr/lib/libfoo.so>``): an mmap's ``Event.file``;
* ``<unfinished ...>`` / ``<... mmap resumed>`` pairs (one Event, where and when the call
  ended: its effect is done then), ``= ?`` (``ret`` None), ``+++ exited with N +++`` and
  ``+++ killed by SIG... +++`` (an inferred ``exit``/``exit_group`` when the log has no
  exit call of that thread), ``--- SIG... ---`` (ignored);
* symbolic arguments (``uapi`` has the numbers and where they come from), hex, decimal and
  octal numbers, ``NULL``, ``-e raw=all`` hex, ``-X verbose`` comments, strings.

Every argument becomes the unsigned integer the kernel saw. The exceptions, because the
log does not hold them: a string, array or struct argument's address is 0 (a string's text
goes to ``Event.text``, the first one of the call); ``clone3``'s first argument is
``clone_args.flags`` (the struct's address is not printed; the flags decide thread or
process), except with ``-e raw=all``, which prints the address and not the flags: such a
clone3's child is taken as a thread (glibc's pthread_create uses clone3, its fork clone).
``int`` arguments (fds, pkeys, statuses) are 32 bits as the kernel reads them: ``-1`` is
0xffffffff, as ``-e raw`` prints it.

Processes: strace prints thread ids. A clone/clone3 with ``CLONE_THREAD`` makes a thread
of the caller's process, any other clone, fork or vfork a new process. A thread the log
never saw created (it existed before the trace started) is taken as a process of its own
(tgid = tid) unless ``tgids`` says otherwise; ``StraceRecorder`` passes the threads
it found in /proc/PID/task. A thread that appears while a clone of its parent is still
unfinished in the log is taken as that clone's child. On stderr (``-f`` without ``-o``)
the first process's lines carry no pid until another process runs: they wait until a
``[pid N]`` line names it (one resuming its unfinished call, or one not cloned in the
log); a log that never names it gives it pid and tid 0 (pass ``pid`` if it is known).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping

from ..errors import ParseError
from ..model import Snapshot
from . import uapi
from .events import CALLS, Event, FileRef
from .strace_syntax import (
    CALL, CLONE_ARG_NAMES, EXIT, LINE, MASK32, MASK64, NOTE_INSIDE, PROCESS_CALLS, RESULT,
    RAW_CLONE3_FLAGS, RESUMED, SIGNATURES, STRACE_NOTE, UNFINISHED, Frame, Malformed, Modules,
    Pending, UnknownSymbol, frame, result_value, split_args, struct_fields, value,
)


@dataclasses.dataclass(slots=True)
class ParseStats:
    """What :func:`parse_strace` read besides the Events it produced."""

    lines: int = 0
    events: int = 0
    # strace's own lines that are not calls we keep: other calls, signals, attach
    # messages, exit notices with an exit call already seen, a resumed call whose start
    # was before the log
    skipped: int = 0
    # calls we keep that name a constant the uapi table does not know: dropped
    unknown: int = 0
    unknown_symbols: dict[str, int] = dataclasses.field(default_factory=dict)
    unfinished: int = 0  # calls still unfinished at the end of the log (dropped)
    timestamps: str = "none"  # none | clock (-t/-tt) | unix (-ttt) | relative (-r)
    t0: float | None = None  # the first timestamp as printed (Unix time with -ttt)


# -- the parser ---------------------------------------------------------------------------


class StraceParser:
    """The state of one log being read; :func:`parse_strace` is the usual entry."""

    def __init__(self, source: str, *, pid: int | None = None,
                 tgids: Mapping[int, int] | None = None,
                 maps: Snapshot | Mapping[str, int] | None = None,
                 stats: ParseStats | None = None) -> None:
        self.source = source
        self.stats = stats if stats is not None else ParseStats()
        if pid is None:
            m = re.search(r"\.(\d+)$", source)
            pid = int(m.group(1)) if m else None
        self.sole: int | None = pid  # the thread of unprefixed lines
        self.tgid: dict[int, int] = dict(tgids or {})
        self.maps = maps
        self.modules: dict[int, Modules] = {}
        self.pending: dict[int | None, Pending] = {}
        self.pending_clone: dict[int | None, int] = {}  # tid -> clone flags, unfinished
        self.live: set[int] = set()
        self.exited_call: set[int] = set()  # tids that made an exit/exit_group call
        self.group_exit: set[int] = set()  # tgids where exit_group was called
        self.held: list[Event] = []  # events of unprefixed lines before the tid is known
        self.orphans: dict[int, int] = {}  # children of that unknown thread -> clone flags
        self.last: Event | None = None  # the event the next -k lines belong to
        self.last_frames: list[Frame] = []
        self.last_kept = False  # whether -k lines after the current call are ours
        self.t_mode: str | None = None
        self.t_first: float | None = None
        self.t_prev_clock: float | None = None
        self.t_day = 0.0
        self.t = 0.0
        self.partial = ""  # the start of a line a notice of strace cut
        self.first_child: int | None = None  # of an unfinished clone of that thread

    # -- time and threads -------------------------------------------------------------

    def _time(self, clock: str | None, num: str | None) -> None:
        if clock is not None:
            h, m, s = clock.split(":")
            v = int(h) * 3600 + int(m) * 60 + float(s)
            if self.t_mode is None:
                self.t_mode, self.t_first = "clock", v
                self.stats.timestamps, self.stats.t0 = "clock", v
            if self.t_prev_clock is not None and v + 43200 < self.t_prev_clock:
                self.t_day += 86400
            self.t_prev_clock = v
            assert self.t_first is not None
            self.t = v + self.t_day - self.t_first
        elif num is not None:
            v = float(num)
            if self.t_mode is None:
                # -ttt prints Unix time; -r a delta since the previous line
                self.t_mode = "unix" if v > 1e8 else "relative"
                self.stats.timestamps, self.stats.t0 = self.t_mode, v
                self.t_first = v
                self.t = 0.0 if self.t_mode == "unix" else v
            elif self.t_mode == "unix":
                assert self.t_first is not None
                self.t = v - self.t_first
            else:
                self.t += v

    def _tgid_of(self, tid: int) -> int:
        g = self.tgid.get(tid)
        if g is None and tid in self.orphans:
            return 0  # a child of the thread not known yet: decided on release
        if g is None:
            # a new thread while a clone of some thread is unfinished: that clone's child
            for parent, flags in self.pending_clone.items():
                if parent is not None and parent != tid:
                    g = self._tgid_of(parent) if flags & uapi.CLONE_THREAD else tid
                    self._inherit(parent, tid, flags)
                    break
            else:
                g = tid
            self.tgid[tid] = g
        return g

    def _inherit(self, parent: int, child: int, flags: int) -> None:
        pm = self.modules.get(self._tgid_of(parent))
        if flags & uapi.CLONE_THREAD or pm is None:
            return
        self.modules[child] = pm if flags & uapi.CLONE_VM else pm.copy()

    def _mods(self, tgid: int) -> Modules:
        mods = self.modules.get(tgid)
        if mods is None:
            mods = self.modules[tgid] = Modules(self.maps)
        return mods

    # -- lines --------------------------------------------------------------------------

    def feed(self, lineno: int, raw: str) -> Iterator[Event]:
        self.stats.lines += 1
        line = self.partial + raw.rstrip("\r\n")
        self.partial = ""
        cut = NOTE_INSIDE.match(line)
        if cut:  # on stderr, strace's notice can land inside a call's line
            self.partial = cut.group(1)
            self.stats.skipped += 1
            return
        if not line.strip():
            return
        stripped = line.lstrip()
        if stripped.startswith(">"):
            if self.last_kept:
                try:
                    self.last_frames.append(frame(stripped))
                except Malformed as e:
                    raise ParseError(self.source, lineno, str(e)) from None
            return
        yield from self._flush_last()
        m = LINE.match(stripped)
        assert m  # the body matches anything
        body = m.group("body")
        prefixed = m.group("bpid") or m.group("cpid")
        tid: int | None = int(prefixed) if prefixed else None
        self._time(m.group("clock"), m.group("num"))
        if tid is not None:
            if m.group("bpid") and self.sole is None and (
                    self.held or self.orphans or None in self.pending):
                # the first [pid N] line of a process that is not a new clone child
                # names the thread of the unprefixed lines before it
                root = self._guess_root(tid, body)
                if root is not None:
                    yield from self._release(root)
            self.live.add(tid)
        else:
            tid = self.sole
        try:
            yield from self._body(lineno, tid, body)
        except Malformed as e:
            raise ParseError(self.source, lineno, str(e)) from None

    def _guess_root(self, tid: int, body: str) -> int | None:
        """The thread of the unprefixed lines, if ``tid`` (first seen with a prefix) can
        be it: one that resumes their unfinished call, or one that is not a child the log
        saw created (nor the first new thread while their clone is unfinished)."""
        if tid in self.orphans:
            return None
        pend = self.pending.get(None)
        m = RESUMED.match(body)
        if pend is not None and m and m.group("name") == pend.name:
            return tid
        if None in self.pending_clone and tid not in self.tgid and self.first_child is None:
            self.first_child = tid  # that clone's child: its process is known on release
            self.orphans[tid] = self.pending_clone[None]
            return None
        return tid

    def _release(self, root: int) -> Iterator[Event]:
        self.sole = root
        self.tgid.setdefault(root, root)
        if None in self.pending:
            self.pending[root] = self.pending.pop(None)
        if None in self.pending_clone:
            self.pending_clone[root] = self.pending_clone.pop(None)
        for child, flags in self.orphans.items():
            self.tgid[child] = self._tgid_of(root) if flags & uapi.CLONE_THREAD else child
        self.orphans.clear()
        for ev in self.held:
            if ev.tid == 0:
                ev.tid = root
            ev.pid = self._tgid_of(ev.tid)
        held, self.held = self.held, []
        self.stats.events += len(held)
        yield from held

    def _body(self, lineno: int, tid: int | None, body: str) -> Iterator[Event]:
        if body.startswith("---"):
            self.stats.skipped += 1
            return
        if body.startswith("+++"):
            yield from self._exit_notice(tid, body)
            return
        m = RESUMED.match(body)
        if m:
            name = m.group("name")
            pend = self.pending.pop(tid, None)
            self.pending_clone.pop(tid, None)
            if pend is None or pend.name != name:
                self.stats.skipped += 1  # started before the log did, or not ours
                self.last_kept = False
                return
            self._call(lineno, tid, name, pend.text + m.group("rest"))
            return
        m = CALL.match(body)
        if m:
            name, rest = m.group("name"), m.group("rest")
            if name not in SIGNATURES:
                self.stats.skipped += 1
                self.last_kept = False
                return
            u = UNFINISHED.search(rest)
            if u:
                self.pending[tid] = Pending(name, rest[:u.start()], lineno)
                if name in PROCESS_CALLS:
                    self.pending_clone[tid] = self._clone_flags(name, rest[:u.start()])
                self.last_kept = False
                return
            self._call(lineno, tid, name, rest)
            return
        if STRACE_NOTE.match(body):
            self.stats.skipped += 1
            return
        raise Malformed("a system call, '<... NAME resumed>', '--- SIGNAL ---' or '+++ ... +++' "
                   "line of strace")

    def _clone_flags(self, name: str, text: str) -> int:
        if name in ("fork", "vfork"):
            return 0  # a new process
        try:
            args, _ = split_args(text)
            if name == "clone3":
                if args and not args[0].lstrip().startswith("{"):
                    return RAW_CLONE3_FLAGS
                return value(struct_fields(args[0]).get("flags", "0"))[0] if args else 0
            for a in args:
                k, eq, v = a.partition("=")
                if eq and k.strip() == "flags":
                    return value(v)[0]
        except (Malformed, UnknownSymbol, IndexError):
            pass
        return 0

    def _exit_notice(self, tid: int | None, body: str) -> Iterator[Event]:
        m = EXIT.match(body)
        if not m:
            raise Malformed("'+++ exited with N +++' or '+++ killed by SIGNAL +++'")
        if tid is not None:
            self.live.discard(tid)
            if self.sole == tid or self.sole is None:
                self.sole = next(iter(self.live)) if len(self.live) == 1 else self.sole
        if m.group("super") is not None:
            self.stats.skipped += 1
            return
        pend = self.pending.get(tid)
        if pend is not None and pend.name in ("exit", "exit_group"):
            # "exit(0 <unfinished ...>" and no resumed line: the thread is gone, its
            # call ended there ("= ?", as strace prints it when not cut)
            del self.pending[tid]
            self._call(pend.lineno, tid, pend.name, pend.text + ") = ?")
            yield from self._flush_last()
        g = None if tid is None else self._tgid_of(tid)
        if tid in self.exited_call or (g is not None and g in self.group_exit):
            self.stats.skipped += 1
            return
        call = "exit_group" if tid is None or tid == g else "exit"
        if m.group("code") is not None:
            ev = Event(t=self.t, pid=g or 0, tid=tid or 0, call=call,
                       args=(int(m.group("code")) & MASK32,), inferred=True)
        else:
            if tid is not None and tid != g:
                # every thread of a killed process gets the notice: one Event, the leader's
                self.stats.skipped += 1
                return
            ev = Event(t=self.t, pid=g or 0, tid=tid or 0, call="exit_group", inferred=True,
                       text=m.group("sig"))
        if g is not None:
            self.group_exit.add(g)
        yield from self._emit(ev, tid)

    def _emit(self, ev: Event, tid: int | None) -> Iterator[Event]:
        if tid is None or self.held or tid in self.orphans:  # keep the order until known
            self.held.append(ev)
            return
        self.stats.events += 1
        yield ev

    def _flush_last(self) -> Iterator[Event]:
        ev, frames = self.last, self.last_frames
        self.last, self.last_frames = None, []
        if ev is None:
            return
        if frames:
            ev.frames = tuple(f.text for f in frames)
            mods = self.modules.get(ev.pid)
            if mods is None and self.maps is not None:
                mods = Modules(self.maps)
            if mods is not None:
                ips = []
                for f in frames:
                    ip = None if f.module is None or f.offset is None else \
                        mods.address(f.module, f.offset)
                    if ip is None:
                        break
                    ips.append(ip)
                else:
                    ev.stack = tuple(ips)
        yield from self._emit(ev, None if ev.tid == 0 and self.sole is None else ev.tid)

    def _call(self, lineno: int, tid: int | None, name: str, text: str) -> None:
        args_text, end = split_args(text)
        if end is None:
            raise Malformed(f"the ')' that closes {name}'s arguments")
        res = RESULT.match(text[end:].strip())
        if not res:
            raise Malformed(f"the result of {name}: '= VALUE', '= -1 ERRNO (text)' or '= ?'")
        if name not in CALLS:
            self.stats.skipped += 1
            self.last_kept = False
            return
        try:
            ret = result_value(res)
            args, text_arg, path = self._args(name, args_text)
        except UnknownSymbol as e:
            self.stats.unknown += 1
            self.stats.unknown_symbols[e.name] = self.stats.unknown_symbols.get(e.name, 0) + 1
            self.last_kept = False
            return
        g = self._tgid_of(tid) if tid is not None else 0
        ev = Event(t=self.t, pid=g, tid=tid or 0, call=name, args=args, ret=ret,
                   text=text_arg)
        if name == "mmap" and path is not None:
            ev.file = FileRef(path=path)
            if ret is not None and ret >= 0 and tid is not None:
                self._mods(g).add(path, ret, args[1], args[5])
        if name in ("exit", "exit_group") and tid is not None:
            self.exited_call.add(tid)
            if name == "exit_group":
                self.group_exit.add(g)
        if name in PROCESS_CALLS and ret is not None and ret > 0:
            flags = args[0] if name in ("clone", "clone3") else 0
            if name == "clone3" and self._raw_clone3(args_text):
                flags = RAW_CLONE3_FLAGS
            self.pending_clone.pop(tid, None)
            child = ret
            if tid is None:
                self.orphans[child] = flags
            else:
                self.tgid[child] = g if flags & uapi.CLONE_THREAD else child
                self._inherit(tid, child, flags)
            self.live.add(child)
        if name in ("execve", "execveat") and ret == 0 and tid is not None:
            self.modules.pop(g, None)
        self.last = ev
        self.last_kept = True

    @staticmethod
    def _raw_clone3(parts: list[str]) -> bool:
        return bool(parts) and not parts[0].lstrip().startswith("{")

    def _args(self, name: str, parts: list[str]) -> tuple[tuple[int, ...], str | None, str | None]:
        sig = SIGNATURES[name]
        text_arg: str | None = None
        path: str | None = None
        values: list[int] = []
        if name == "clone":
            values = [0] * 5
            for i, a in enumerate(parts):
                k, eq, v = a.partition("=")
                if eq and k.strip() in CLONE_ARG_NAMES:
                    values[CLONE_ARG_NAMES[k.strip()]] = value(v)[0]
                elif i < 5:  # -e raw=all: positional
                    values[i] = value(a)[0]
            return tuple(values), None, None
        if name == "clone3":
            if not parts:
                raise Malformed("clone3's arguments")
            size = value(parts[1])[0] if len(parts) > 1 else 0
            if parts[0].lstrip().startswith("{"):
                fields = struct_fields(parts[0])
                return (value(fields.get("flags", "0"))[0], size), None, None
            # -e raw=all: the struct's address, its flags unknown
            return (value(parts[0])[0], size), None, None
        if len(parts) > len(sig) and not (name == "execve" and len(parts) == 3):
            raise Malformed(f"at most {len(sig)} arguments for {name}")
        for kind, tok in zip(sig, parts):
            v, s, fdpath = value(tok)
            if s is not None and text_arg is None:
                text_arg = s
            if fdpath is not None and path is None:
                path = fdpath
            values.append(v & MASK32 if kind == "i" else v & MASK64)
        return tuple(values), text_arg, path


def parse_strace(lines: Iterable[str], source: str, *, pid: int | None = None,
                 tgids: Mapping[int, int] | None = None,
                 maps: Snapshot | Mapping[str, int] | None = None,
                 stats: ParseStats | None = None) -> Iterator[Event]:
    """Events of an strace log (see the module's docstring for the forms it reads).

    ``source`` names the log in errors. ``pid``: the thread of lines without a pid (a
    file of ``-ff``, a log without ``-f``); by default the file name's ``.N`` suffix, else
    the first ``[pid N]`` of a process that was not cloned in the log, else 0 (unknown).
    ``tgids``: tid -> tgid for threads that existed before the trace. ``maps``: the
    address space at the start (a Snapshot, or module path -> load base) to turn ``-k``
    frames into ``Event.stack``. ``stats`` (a :class:`ParseStats`) is filled as the log
    is read. A line strace would not write raises ParseError(source, line, expected).
    """
    parser = StraceParser(source, pid=pid, tgids=tgids, maps=maps, stats=stats)
    lineno = 0
    for lineno, line in enumerate(lines, 1):
        yield from parser.feed(lineno, line)
    yield from parser._flush_last()
    parser.stats.unfinished += len(parser.pending)
    if parser.held:
        yield from parser._release(parser.sole if parser.sole is not None else 0)


