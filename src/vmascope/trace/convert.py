"""Recorded events -> op-language lines: the one place that decides what a call means.

Every recorder hands over :class:`~vmascope.trace.events.Event` objects with raw
arguments; :class:`Converter` turns each into the op the model replays (with absolute
addresses and the real result) or into a skipped line that says why it is not replayed:

* ``failed``: the call failed on the real kernel (the replay still reports how many).
* ``child``: a call of another process (a fork child, something the target started).
  The model replays one address space, the target's; a fork becomes ``fork`` and the
  child's exit or exec ``exit N``, so the parent sees what fork does to its anon_vmas.
* ``thread``, ``query``: calls that change no mapping (a new thread, ``brk(0)``).
* ``unsupported``: what the op language cannot say (MAP_HUGETLB, mbind with a node mask
  the recorder did not read, SysV shm).

Where the model must end up where the real kernel did, the op says so: an mmap or
mremap is written at the address the kernel chose, with ``fixed`` (the range was free:
the kernel just gave it), and a file mapping names a file declared once with
``memfd fN SIZE`` (the model's file object; the comment has the real path).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from ..kconst import PAGE_SIZE
from ..ops.checks import MADV_NUMBERS, MAX_CHILDREN
from .events import FAULT_WRITE, Event, FileRef
from .format import Annotation

# uapi values (x86_64): include/uapi/asm-generic/mman-common.h, mman.h,
# arch/x86/include/uapi/asm/mman.h, include/uapi/linux/mman.h, sched.h, prctl.h.
PROT_RWX = 0x7
MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE = 0x01, 0x02, 0x03
MAP_FIXED, MAP_ANONYMOUS = 0x10, 0x20
MAP_GROWSDOWN, MAP_NORESERVE, MAP_POPULATE = 0x0100, 0x4000, 0x8000
MAP_STACK, MAP_HUGETLB, MAP_FIXED_NOREPLACE = 0x20000, 0x40000, 0x100000
MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP = 1, 2, 4
MLOCK_ONFAULT = 1
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
CLONE_VM, CLONE_VFORK, CLONE_THREAD = 0x100, 0x4000, 0x10000
PR_SET_VMA, PR_SET_VMA_ANON_NAME = 0x53564D41, 0
MPOL_DEFAULT = 0
FILE_SIZE = 1 << 40  # a mapped file's size is not recorded: large, so no touch is past EOF

_ADVICE = {v: k for k, v in MADV_NUMBERS.items()}


def _page_up(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _prot(p: int) -> str:
    return ("r" if p & 1 else "-") + ("w" if p & 2 else "-") + ("x" if p & 4 else "-")


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


@dataclasses.dataclass
class Stats:
    events: int = 0
    ops: int = 0
    faults: int = 0
    inferred: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)


class Converter:
    """Turns one target's events into trace lines; ``lines(events)`` yields
    ``(op_text or None, skip_text, Annotation)``: an op to replay, or a skipped event.

    ``heap_known``: the first snapshot has a ``[heap]`` (else the first ``brk(0)``'s
    answer becomes ``heap ADDR``). ``files``: known (dev, inode) -> path (from the
    snapshots), used when a recorder gave only the inode.
    """

    def __init__(self, pid: int, *, heap_known: bool = False,
                 files: dict[tuple[int, int], str] | None = None) -> None:
        self.pid = pid
        self.heap_known = heap_known
        self.known_files = files or {}
        self.file_names: dict[tuple, str] = {}
        self.children: dict[int, int] = {}  # child tgid -> its fork number
        self.forks = 0
        self.stats = Stats()

    # -- helpers
    def _skip(self, reason: str) -> str:
        self.stats.skipped[reason] = self.stats.skipped.get(reason, 0) + 1
        return reason

    def _note(self, ev: Event, **kw: object) -> Annotation:
        a = Annotation(t=ev.t, tid=ev.tid, ret=ev.ret, stack=ev.stack, frames=ev.frames,
                       inferred=ev.inferred, fault=ev.call == "fault")
        if ev.pid != self.pid:
            a.pid = ev.pid
        for k, v in kw.items():
            setattr(a, k, v)
        return a

    def _file(self, ref: FileRef) -> tuple[tuple[str, str] | None, str]:
        """((the memfd declaration to write first, the path) or None, the name to map)."""
        path = ref.path or self.known_files.get((ref.dev, ref.inode)) or ref.basename or "?"
        key: tuple = (ref.dev, ref.inode) if ref.inode else (0, 0, path)
        name = self.file_names.get(key)
        if name is not None:
            return None, name
        name = self.file_names[key] = f"f{len(self.file_names) + 1}"
        return (f"memfd {name} {FILE_SIZE:#x}", "_".join(path.split())), name

    def skipped(self, ev: Event, reason: str) -> tuple[str, Annotation]:
        """An event kept in the trace but not replayed for a reason the recorder knows
        (``after-end``: it came after the last snapshot)."""
        a = tuple(ev.args) + (0,) * (6 - len(ev.args))
        return self._call_text(ev, a), self._note(ev, skip=self._skip(reason))

    # -- the conversion
    def lines(self, events: Iterable[Event]) -> Iterator[tuple[str | None, str, Annotation]]:
        for ev in events:
            self.stats.events += 1
            yield from self._one(ev)

    def _one(self, ev: Event) -> Iterator[tuple[str | None, str, Annotation]]:
        call, a, ret = ev.call, ev.args, ev.ret
        a = tuple(a) + (0,) * (6 - len(a))
        if ev.pid != self.pid:
            yield from self._child(ev)
            return
        if call == "fault":
            self.stats.faults += 1
            self.stats.inferred += ev.inferred
            mode = "write" if a[1] & FAULT_WRITE else "read"
            yield f"touch {a[0] & ~(PAGE_SIZE - 1):#x} {mode}", "", self._note(ev)
            return
        text = self._call_text(ev, a)
        if call in ("clone", "clone3", "fork", "vfork"):
            yield from self._clone(ev, a)
            return
        if call in ("exit", "exit_group", "execve", "execveat"):
            yield None, text, self._note(ev, skip=self._skip(
                "exec" if call.startswith("exec") else "exit"))
            return
        if ret is not None and ret < 0:
            yield None, text, self._note(ev, skip=self._skip("failed"))
            return
        if ret is None and call not in ("mlockall", "munlockall"):
            yield None, text, self._note(ev, skip=self._skip("unfinished"))
            return
        if call == "mmap":
            yield from self._mmap(ev, a)
            return
        if call == "mremap":
            old, oldlen, newlen, flags = a[0], _page_up(a[1]), _page_up(a[2]), a[3]
            assert ret is not None
            words = [f"mremap {old:#x} {oldlen:#x} {newlen:#x}"]
            fl = [n for bit, n in ((MREMAP_MAYMOVE, "maymove"), (MREMAP_FIXED, "fixed"),
                                   (MREMAP_DONTUNMAP, "dontunmap")) if flags & bit]
            if ret != old or flags & MREMAP_FIXED:
                words.append(f"{ret:#x}")
                fl = sorted(set(fl) | {"maymove", "fixed"})
            if fl:
                words.append(",".join(n for n in ("maymove", "fixed", "dontunmap") if n in fl))
            yield " ".join(words), "", self._note(ev)
            return
        op = self._simple(ev, a)
        if op is None:
            yield None, text, self._note(ev, skip=self._skip("unsupported"))
        elif op == "":
            yield None, text, self._note(ev, skip=self._skip("query"))
        else:
            self.stats.ops += 1
            yield op, "", self._note(ev)

    def _simple(self, ev: Event, a: tuple[int, ...]) -> str | None:
        """The op text of a call with a direct equivalent; "" for no effect; None if the
        language cannot say it."""
        call = ev.call
        ln = _page_up(a[1])
        if call == "munmap":
            return f"munmap {a[0]:#x} {ln:#x}"
        if call == "mprotect":
            return f"mprotect {a[0]:#x} {ln:#x} {_prot(a[2])}"
        if call == "pkey_mprotect":
            return f"pkey_mprotect {a[0]:#x} {ln:#x} {_prot(a[2])} {_signed(a[3])}"
        if call == "pkey_alloc":
            return "pkey_alloc"
        if call == "madvise":
            advice = _ADVICE.get(a[2])
            return None if advice is None else f"madvise {a[0]:#x} {ln:#x} {advice}"
        if call == "brk":
            if a[0] == 0:
                if not self.heap_known and ev.ret:
                    self.heap_known = True
                    return f"heap {ev.ret:#x}"
                return ""
            return f"brk {a[0]:#x}"
        if call in ("mlock", "mlock2"):
            onfault = call == "mlock2" and a[2] & MLOCK_ONFAULT
            return f"mlock {a[0]:#x} {ln:#x}" + (" onfault" if onfault else "")
        if call == "munlock":
            return f"munlock {a[0]:#x} {ln:#x}"
        if call == "mlockall":
            fl = [n for bit, n in ((MCL_CURRENT, "current"), (MCL_FUTURE, "future"),
                                   (MCL_ONFAULT, "onfault")) if a[0] & bit]
            return f"mlockall {','.join(fl)}" if fl else None
        if call == "munlockall":
            return "munlockall"
        if call == "mseal":
            return f"mseal {a[0]:#x} {ln:#x}"
        if call == "prctl":
            if a[0] != PR_SET_VMA or a[1] != PR_SET_VMA_ANON_NAME:
                return ""
            name = ev.text if a[4] else None
            if name is not None and (not name or any(c.isspace() for c in name)):
                return None
            return f"name {a[2]:#x} {_page_up(a[3]):#x} {name if name is not None else '-'}"
        if call == "mbind":
            return f"mbind {a[0]:#x} {ln:#x} default" if a[2] == MPOL_DEFAULT else None
        if call in ("set_mempolicy", "pkey_free", "memfd_create"):
            return ""
        return None

    def _mmap(self, ev: Event, a: tuple[int, ...]) -> Iterator[tuple[str | None, str, Annotation]]:
        flags = a[3]
        ret = ev.ret
        assert ret is not None
        if flags & MAP_HUGETLB:
            yield None, self._call_text(ev, a), self._note(ev, skip=self._skip("unsupported"))
            return
        words = ["shared" if flags & 0x3 in (MAP_SHARED, MAP_SHARED_VALIDATE) else "private"]
        anon = bool(flags & MAP_ANONYMOUS) or (_signed(a[4]) < 0 and ev.file is None)
        if anon:
            words.append("anonymous")
        words.append("fixed")
        for bit, name in ((MAP_NORESERVE, "noreserve"), (MAP_POPULATE, "populate"),
                          (MAP_GROWSDOWN, "growsdown"), (MAP_STACK, "stack")):
            if flags & bit:
                words.append(name)
        text = f"mmap {ret:#x} {_page_up(a[1]):#x} {_prot(a[2])} {','.join(words)}"
        if not anon:
            ref = ev.file or FileRef()
            decl, name = self._file(ref)
            if decl is not None:
                yield decl[0], "", Annotation(file=decl[1])
            text += f" fd={name}" + (f" off={a[5] & ~(PAGE_SIZE - 1):#x}" if a[5] else "")
        self.stats.ops += 1
        yield text, "", self._note(ev)

    def _clone(self, ev: Event, a: tuple[int, ...]) -> Iterator[tuple[str | None, str, Annotation]]:
        ret = ev.ret
        text = self._call_text(ev, a)
        if ret is None or ret <= 0:
            yield None, text, self._note(ev, skip=self._skip("failed" if ret else "query"))
            return
        if ev.call in ("clone", "clone3"):  # clone3: args[0] is clone_args.flags
            thread = bool(a[0] & CLONE_THREAD)
            shares = bool(a[0] & CLONE_VM)
        elif ev.call == "vfork":
            thread, shares = False, True
        else:  # fork
            thread, shares = False, False
        if thread:
            yield None, text, self._note(ev, skip=self._skip("thread"))
            return
        if shares or self.forks >= MAX_CHILDREN:
            yield None, text, self._note(ev, skip=self._skip(
                "vfork" if shares else "fork-limit"))
            return
        self.children[ret] = self.forks
        self.forks += 1
        self.stats.ops += 1
        yield "fork", "", self._note(ev)

    def _child(self, ev: Event) -> Iterator[tuple[str | None, str, Annotation]]:
        text = self._call_text(ev, tuple(ev.args) + (0,) * (6 - len(ev.args)))
        num = self.children.get(ev.pid)
        ends = ev.call in ("exit_group", "execve", "execveat") or (
            ev.call == "exit" and ev.tid == ev.pid)
        if num is not None and ends and (not ev.call.startswith("exec") or ev.ret == 0
                                         or ev.ret is None):
            del self.children[ev.pid]
            self.stats.ops += 1
            yield f"exit {num}", "", self._note(ev)
            return
        yield None, text, self._note(ev, skip=self._skip("child"))

    def _call_text(self, ev: Event, a: tuple[int, ...]) -> str:
        if ev.call == "fault":
            return f"fault {a[0]:#x} {a[1]:#x}"
        n = {"mmap": 6, "mremap": 5, "mbind": 6, "prctl": 5, "clone": 5}.get(ev.call, 3)
        args = ", ".join(f"{x:#x}" for x in a[:n])
        extra = f" {ev.text!r}" if ev.text else ""
        return f"{ev.call}({args}){extra}"
