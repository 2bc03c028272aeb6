"""The native executor: build it, feed it op scripts, read its results.

The C source (``native/executor.c``) is compiled with the system C compiler as a static
binary into ``cache_dir("executor", <hash of the source>)`` on first use, so the same binary
runs on the host and as ``/init`` of a microVM. Scripts are sent in a numeric line format
(see the comment at the top of executor.c); every script runs in a fresh child process
with an empty, fenced arena at :data:`ARENA_BASE`.
"""

from __future__ import annotations

import errno as errno_mod
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import LabError
from ..model import Snapshot, SnapshotMeta, Vma
from ..ops.language import MADV_NUMBERS, Op, format_op
from ..outcome import Fault, OpError, Outcome
from ..util import cache_dir
from . import procs

SOURCE = Path(__file__).with_name("native") / "executor.c"

# The arena: 64 GiB at 32 TiB, far from the binary, its heap, mmap_base and the stack.
ARENA_BASE = 0x2000_0000_0000
ARENA_SIZE = 0x10_0000_0000

MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_GROWSDOWN, MAP_NORESERVE, MAP_POPULATE, MAP_STACK = 0x0100, 0x4000, 0x8000, 0x20000
_MAP_BITS = {"shared": MAP_SHARED, "private": MAP_PRIVATE, "fixed": MAP_FIXED,
             "anonymous": MAP_ANONYMOUS, "growsdown": MAP_GROWSDOWN,
             "noreserve": MAP_NORESERVE, "populate": MAP_POPULATE, "stack": MAP_STACK}
_MREMAP_BITS = {"maymove": 1, "fixed": 2, "dontunmap": 4}
_MPOL = {"default": 0, "preferred": 1, "bind": 2, "interleave": 3}
_MCL_BITS = {"current": 1, "future": 2, "onfault": 4}
# Ops of an address and a length only, and their executor records.
_RANGE_RECORDS = {"munmap": "U", "munlock": "W", "mseal": "I"}
_UFFD_BITS = {"missing": 1, "wp": 2}  # UFFDIO_REGISTER_MODE_*
SIGNALS = {int(s): s.name for s in signal.Signals}

# Seconds one script may run before its process is killed (reported as a crash).
SCRIPT_TIMEOUT = 30


def executor_path() -> Path:
    """The compiled executor, built on first use (atomic: compile to a temp name, rename)."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    target = cache_dir("executor", digest) / "executor"
    if target.exists():
        return target
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise LabError("no C compiler found (install build-essential, or set CC)")
    fd, tmp = tempfile.mkstemp(prefix=".executor.", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, "-O2", "-static", "-o", tmp, str(SOURCE)],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or ["(no output)"])[0]
            raise LabError(f"compiling {SOURCE.name} with {cc} -static failed: {first} "
                           "(a static libc is needed: libc6-dev)")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def encode_op(op: Op, memfds: dict[str, int] | None = None) -> str:
    """One op as an executor input line (arena-relative addresses). ``memfds``: the
    number (from 1, in the order of the script's memfd ops) of each memfd name so far."""
    k = op.kind
    if k == "mmap":
        flags = 0
        for f in op.flags:
            flags |= _MAP_BITS[f]
        if op.fd is None:
            return f"M {op.addr} {op.length} {op.prot} {flags}"
        fd = (memfds or {}).get(op.fd, 1 << 20)  # no such memfd: the executor uses fd -1
        return f"M {op.addr} {op.length} {op.prot} {flags} {fd} {op.offset}"
    if k in _RANGE_RECORDS:
        return f"{_RANGE_RECORDS[k]} {op.addr} {op.length}"
    if k == "mprotect":
        return f"P {op.addr} {op.length} {op.prot}"
    if k == "madvise":
        assert op.advice is not None
        return f"D {op.addr} {op.length} {MADV_NUMBERS[op.advice]}"
    if k == "mremap":
        flags = 0
        for f in op.flags:
            flags |= _MREMAP_BITS[f]
        has_new = op.new_addr is not None
        return f"R {op.addr} {op.length} {op.new_len} {op.new_addr or 0} {flags} {int(has_new)}"
    if k == "touch":
        return f"T {op.addr} {int(op.write)}"
    if k == "fork":
        return f"F {op.index + 1}"  # 0: the script's process; K+1: its fork child K
    if k == "name":
        return f"N {op.addr} {op.length}" + (f" {op.name}" if op.name is not None else "")
    if k == "mbind":
        mask = 0
        for node in op.nodes:
            mask |= 1 << node
        return f"B {op.addr} {op.length} {_MPOL[op.mode or 'default']} {mask}"
    if k == "heap":
        return f"H {op.addr}"
    if k == "brk":
        return f"K {op.addr}"
    if k == "mlock":
        return f"L {op.addr} {op.length} {1 if 'onfault' in op.flags else 0}"
    if k == "mlockall":
        return f"J {sum(_MCL_BITS[f] for f in op.flags)}"
    if k == "munlockall":
        return "Q"
    if k == "memfd":
        return f"O {op.length} {op.name}"
    if k == "exit":
        return f"e {op.index}"
    if k == "pkey_alloc":
        return "a"
    if k == "pkey_mprotect":
        return f"p {op.addr} {op.length} {op.prot} {op.index}"
    if k == "uffd":  # UFFDIO_REGISTER_MODE_MISSING 1, _WP 2; 0: unregister
        mode = sum(bit for name, bit in _UFFD_BITS.items() if name in op.flags)
        return f"u {op.addr} {op.length} {mode}"
    raise LabError(f"the executor cannot run {format_op(op)!r}")


def encode_input(scripts: Sequence[Sequence[Op]], *, max_map_count: int | None = None,
                 timeout: int = SCRIPT_TIMEOUT, sample_every: int = 0, fillers: int = 0,
                 overcommit: int | None = None,
                 settings: Sequence[dict[str, int]] | None = None,
                 kview: str | None = None) -> str:
    """The executor's input. ``sample_every``: report the map count after every N ops;
    ``fillers``: VMAs mapped outside the arena first; ``overcommit``: the
    vm.overcommit_memory mode to set (microVMs only). ``settings``: per script, any of
    max_map_count / overcommit / fillers / sample_every, set before that script when they
    change. ``kview``: the path of the kernel-view reader to run after each script."""
    lines = [f"A {ARENA_BASE} {ARENA_SIZE}"]
    if kview is not None:
        lines.append(f"k {kview}")
    now = {"max_map_count": max_map_count, "overcommit": overcommit, "fillers": fillers,
           "sample_every": sample_every}
    record = {"max_map_count": "Y", "overcommit": "o", "fillers": "f", "sample_every": "c"}
    for key, value in now.items():
        if value:
            lines.append(f"{record[key]} {value}")
    for i, ops in enumerate(scripts):
        for key, value in (settings[i] if settings is not None else {}).items():
            if value != now[key]:
                lines.append(f"{record[key]} {value}")
                now[key] = value
        lines.append(f"S {i} {timeout}")
        memfds: dict[str, int] = {}
        made = 0
        for op in ops:
            if op.kind == "memfd" and op.name is not None:
                made += 1
                memfds[op.name] = made
            lines.append(encode_op(op, memfds))
        lines.append("E")
    return "\n".join(lines) + "\n"


# The I record: the overcommit settings and memory before a script's ops (kB).
MEMORY_FIELDS = ("overcommit_memory", "overcommit_ratio", "mem_total_kb", "swap_total_kb",
                 "commit_limit_kb", "committed_as_kb", "user_reserve_kb", "admin_reserve_kb",
                 "vm_size_kb")


def parse_output(text: str, scripts: Sequence[Sequence[Op]], where: str, *,
                 release: str | None = None, max_map_count: int | None = None,
                 names: Sequence[str | None] | None = None,
                 limits: Sequence[int | None] | None = None) -> list[Outcome]:
    """Parse the executor's output for ``scripts`` into Outcomes (arena-relative).

    LabError if it is incomplete or unreadable."""
    count = len(scripts)
    results: list[Outcome | None] = [None] * count

    def line_of(index: int, i: int) -> int:
        ops = scripts[index] if 0 <= index < count else ()
        return ops[i].line if 0 <= i < len(ops) else 0

    vmas: list[Vma] = []
    kv_lines: list[str] = []
    raw_errors: list[tuple[int, int]] = []
    raw_faults: list[tuple[int, int, int]] = []
    total, crash = -1, None
    samples: list[tuple[int, int]] = []
    memory: dict[str, int] = {}
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if not line:
            continue
        tag = line[0]
        try:
            if tag == "V":
                head, _, name = line.partition("\t")
                parts = head.split()
                vmas.append(Vma(
                    start=int(parts[1], 16), end=int(parts[2], 16), perms=parts[3],
                    offset=int(parts[4], 16), name=name or None, flags=frozenset(parts[6:]),
                    smaps={"Anonymous": max(int(parts[5]), 0) * 1024}))
            elif tag == "R":
                total = int(line.split()[2])
            elif tag == "k":
                kv_lines.append(line)
            elif tag == "X":
                _, i, e = line.split()
                raw_errors.append((int(i), int(e)))
            elif tag == "G":
                _, i, a, s = line.split()
                raw_faults.append((int(i), int(a, 16), int(s)))
            elif tag == "C":
                crash = int(line.split()[2])
            elif tag == "O":
                _, i, n = line.split()
                samples.append((int(i), int(n)))
            elif tag == "I":
                memory = dict(zip(MEMORY_FIELDS, map(int, line.split()[1:]), strict=True))
            elif tag == "Z":
                idx = int(line.split()[1])
                if 0 <= idx < count:
                    limit = limits[idx] if limits is not None else None
                    meta = SnapshotMeta(kernel_release=release,
                                        max_map_count=limit or max_map_count,
                                        source="lab",
                                        comm=names[idx] if names is not None else None)
                    errors = [OpError(i, line_of(idx, i), errno_mod.errorcode.get(e, str(e)))
                              for i, e in raw_errors]
                    faults = [Fault(i, line_of(idx, i), a, SIGNALS.get(s, str(s)))
                              for i, a, s in raw_faults]
                    snap = Snapshot.from_vmas(vmas, meta=meta)
                    if kv_lines:
                        _attach_kview(snap, kv_lines, f"{where}: script {idx}")
                    results[idx] = Outcome(
                        snapshot=snap, errors=errors,
                        faults=faults, process_map_count=total, crash=crash,
                        samples=samples, memory=memory)
                vmas, raw_errors, raw_faults, total, crash = [], [], [], -1, None
                kv_lines = []
                samples, memory = [], {}
        except (IndexError, ValueError):
            raise LabError(f"{where}: unreadable executor output line {line!r}") from None
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise LabError(f"{where}: no result for script {missing[0]} of {count} "
                       "(the executor stopped early)")
    return [r for r in results if r is not None]


# The reader's exit status when the kernel has no task_vma iterator (kview.c).
NO_ITERATOR = 5


def _attach_kview(snap: Snapshot, lines: list[str], where: str) -> None:
    """The reader's lines (k START END FLAGS PGOFF DEV INO FILE AV ROOT CHAIN CHILDREN
    ACTIVE POLICY UFFD NAME BITS, arena-relative) as the arena Snapshot's kernel view."""
    from ..procfs import kview

    if any(line.startswith("k !") for line in lines):
        status = int(lines[-1].split()[-1])
        if status >= 0 and status >> 8 == NO_ITERATOR:
            return  # a kernel before 5.12: no task_vma iterator, no kernel view
        raise LabError(f"{where}: the kernel-view reader failed (wait status {status})")
    rows = []
    for line in lines:
        if line == "k .":
            continue
        parts = line.split()[1:]
        rows.append(tuple(int(p, 16) if k < 4 else
                          int(p.lstrip("afpuvn") or 0) if p != "-" else 0
                          for k, p in enumerate(parts)))
    recs = np.array(rows, dtype=kview.RECORD) if rows else np.zeros(0, kview.RECORD)
    cols = kview.align(snap, recs)
    if cols is None:
        raise LabError(f"{where}: the kernel view and smaps disagree on the arena")
    kview.attach(snap, cols)


def parse_probe(body: str, release: str | None,
                where: str) -> tuple[list[str], dict[int, Snapshot]]:
    """The executor's record of a probed program (``x`` record): its own lines, and per
    process it named, the Snapshot of its smaps with the kernel view attached."""
    from ..procfs.parse import parse_text

    lines: list[str] = []
    smaps: dict[int, list[str]] = {}
    views: dict[int, list[str]] = {}
    for line in body.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "x":
            lines.append(rest)
        elif tag in ("s", "v"):
            pid, _, text = rest.partition(" ")
            if tag == "s":
                smaps.setdefault(int(pid), []).append(text)
            else:
                views.setdefault(int(pid), []).append("k " + text)
    if not any(line.startswith("READY") for line in lines):
        raise LabError(f"{where}: the program did not get to READY: "
                       f"{(lines or ['(no output)'])[-1]}")
    snaps = {}
    for pid, text in smaps.items():
        snap = parse_text("\n".join(text) + "\n", f"{where}: /proc/{pid}/smaps",
                          SnapshotMeta(kernel_release=release, pid=pid))
        _attach_kview(snap, views.get(pid, []), f"{where}: pid {pid}")
        snaps[pid] = snap
    return lines, snaps


def kview_reader() -> str | None:
    """The kernel-view reader for the executor when the setting asks for it
    (VMASCOPE_KERNEL_VIEW=1) and it can be built here; None otherwise."""
    from ..errors import KernelViewUnavailable
    from ..procfs import kview

    if not kview.wanted(None):
        return None
    try:
        return str(kview.reader_path())
    except KernelViewUnavailable:
        return None


def per_script(value: int | Sequence[int], k: int) -> int:
    """A setting given once for all scripts, or one per script: script k's."""
    return value if isinstance(value, int) else value[k]


def run_on_host(scripts: Sequence[Sequence[Op]], *, timeout: float | None = None,
                release: str | None = None, max_map_count: int | None = None,
                names: Sequence[str | None] | None = None,
                sample_every: int | Sequence[int] = 0,
                fillers: Sequence[int] | None = None) -> list[Outcome]:
    """Run scripts on the running kernel, each in a fresh child of the executor.
    ``fillers``: per script, VMAs to map outside the arena first (a lower limit)."""
    from .. import host

    exe = executor_path()
    reader = kview_reader() if not host.kernel_view_problem() else None
    if fillers is None and isinstance(sample_every, int):
        data = encode_input(scripts, sample_every=sample_every, kview=reader)
    else:
        data = encode_input(scripts, kview=reader, settings=[
            {"fillers": fillers[i] if fillers is not None else 0,
             "sample_every": per_script(sample_every, i)} for i in range(len(scripts))])
    limit = timeout if timeout is not None else 30 + 0.5 * len(scripts)
    with procs.managed([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE) as proc:
        try:
            out, err = proc.communicate(data.encode(), timeout=limit)
        except subprocess.TimeoutExpired:
            raise LabError(f"host executor: no result within {limit:.0f} s") from None
    if proc.returncode != 0:
        msg = err.decode(errors="replace").strip().splitlines()
        raise LabError(f"host executor failed: {msg[0] if msg else f'exit {proc.returncode}'}")
    return parse_output(out.decode(errors="replace"), scripts, "host", release=release,
                        max_map_count=max_map_count, names=names)
