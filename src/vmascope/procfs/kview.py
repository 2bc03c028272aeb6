"""The kernel's view of a process's VMAs, read with a BPF task_vma iterator.

/proc shows neither a VMA's anon_vma nor the page offset of anonymous memory nor which
open file maps it. The reader (``native/kview.bpf.c``, a CO-RE BPF program, and
``native/kview.c``, its libbpf loader) reads them from ``struct vm_area_struct``. Both
are compiled on first use into ``cache_dir("kview", <hash of the sources>)`` by
``native.build_bpf_tool``: the BPF program with clang, the loader linked statically where
the static libraries are there (so that the same binary also runs as part of a microVM's
initramfs).

Kernel pointers never leave the loader: it renumbers them per capture (``av1``, ...).

The result becomes the Snapshot's ``kview`` columns (see :data:`FIELDS`), aligned with
its VMAs; VMAs the iterator does not see (the ``[vsyscall]`` page, which is no VMA of
the process) carry :data:`ABSENT` in ``bits``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import host
from ..errors import KernelViewUnavailable, ProcessNotFound
from ..model import (KV_ABSENT, KV_DEGREE, KVIEW_FIELDS, PERM_EXEC, PERM_READ, PERM_SHARED,
                     PERM_WRITE, Snapshot)
from ..native import build_bpf_tool
from ..util import kernel_view_wanted as wanted

NATIVE = Path(__file__).with_name("native")
BPF_SOURCE = NATIVE / "kview.bpf.c"
LOADER_SOURCE = NATIVE / "kview.c"

# One record per VMA, as the loader writes it (struct kv_rec: 16 little-endian u64).
RECORD = np.dtype([(name, "<u8") for name in ("start", "end", *KVIEW_FIELDS)])
# The columns a Snapshot keeps (start and end are the Snapshot's own).
FIELDS: tuple[str, ...] = KVIEW_FIELDS

# The bits of the ``bits`` field are model.KV_* (kview.bpf.c sets them; ABSENT is set
# here, for a VMA of maps the iterator does not see).
ABSENT = KV_ABSENT

# VM_* bits that the maps line's permissions come from (include/linux/mm.h).
VM_READ, VM_WRITE, VM_EXEC, VM_MAYSHARE = 0x1, 0x2, 0x4, 0x80

# The loader's exit statuses (kview.c).
_NOT_PERMITTED, _NO_BTF, _NO_ITERATOR, _NO_PROCESS = 3, 4, 5, 6
READ_TIMEOUT = 60
TRIES = 5


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or ["(no output)"])[0]


def reader_path() -> Path:
    """The compiled reader, built on first use (``native.build_bpf_tool``)."""
    return build_bpf_tool("kview", BPF_SOURCE, LOADER_SOURCE,
                          lambda why: KernelViewUnavailable(f"no kernel view: {why}"))


def read_records(pid: int) -> np.ndarray:
    """The iterator's records of process ``pid`` (identities already renumbered)."""
    problem = host.kernel_view_problem()
    if problem:
        raise KernelViewUnavailable(f"no kernel view: {problem}")
    exe = reader_path()
    try:
        proc = subprocess.run([str(exe), str(int(pid))], capture_output=True,
                              timeout=READ_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise KernelViewUnavailable(f"no kernel view: the reader took more than "
                                    f"{READ_TIMEOUT} s") from None
    err = _first_line(proc.stderr.decode(errors="replace")).removeprefix("kview: ")
    if proc.returncode == _NO_PROCESS:
        raise ProcessNotFound(int(pid))
    if proc.returncode != 0:
        raise KernelViewUnavailable(f"no kernel view: {err}")
    if len(proc.stdout) % RECORD.itemsize:
        raise KernelViewUnavailable("no kernel view: the reader's output is cut")
    return np.frombuffer(proc.stdout, dtype=RECORD)


def _perms(flags: np.ndarray) -> np.ndarray:
    out = np.zeros(len(flags), dtype=np.uint8)
    for vm, perm in ((VM_READ, PERM_READ), (VM_WRITE, PERM_WRITE), (VM_EXEC, PERM_EXEC),
                     (VM_MAYSHARE, PERM_SHARED)):
        out |= np.where(flags & np.uint64(vm), perm, 0).astype(np.uint8)
    return out


def align(snap: Snapshot, recs: np.ndarray) -> dict[str, np.ndarray] | None:
    """The records as columns aligned with ``snap``'s VMAs, or None when the two
    disagree (a VMA of one is not in the other, or their permissions differ)."""
    n = len(snap)
    idx = np.searchsorted(snap.start, recs["start"])
    if len(recs) and (idx.max() >= n or not np.array_equal(snap.start[idx], recs["start"])
                      or not np.array_equal(snap.end[idx], recs["end"])
                      or not np.array_equal(snap.perms[idx], _perms(recs["vm_flags"]))):
        return None
    seen = np.zeros(n, dtype=bool)
    seen[idx] = True
    # Only the gate page (above the user address space) may be missing from the iterator.
    if (~seen & (snap.start < np.uint64(1 << 63))).any():
        return None
    cols = {f: np.zeros(n, dtype=np.uint64) for f in FIELDS}
    for f in FIELDS:
        cols[f][idx] = recs[f]
    cols["bits"][~seen] = ABSENT
    return cols


def attach(snap: Snapshot, cols: dict[str, np.ndarray]) -> Snapshot:
    """Give ``snap`` the kernel view: the kview columns and the anon_vma identities."""
    snap.kview = cols
    av = cols["anon_vma"].astype(np.int64)
    snap.anon_vma = np.where(av > 0, av, -1)
    counts = "degree" if (cols["bits"] & np.uint64(KV_DEGREE)).any() else "num_children"
    snap.meta.extra["kernel_view"] = {"reader": "bpf task_vma", "counts": counts}
    return snap


def read_consistent(pid: int, read: Callable[[], Snapshot], tries: int = TRIES) -> Snapshot:
    """``read()`` (the /proc reading) with the kernel view attached; both are read again
    while they disagree (the process changed its mappings in between)."""
    for _ in range(tries):
        recs = read_records(pid)
        snap = read()
        cols = align(snap, recs)
        if cols is not None:
            return attach(snap, cols)
    raise KernelViewUnavailable(f"no kernel view: pid {pid} kept changing its mappings "
                                f"({tries} tries)")


__all__ = ["ABSENT", "FIELDS", "RECORD", "align", "attach", "read_consistent",
           "read_records", "reader_path", "wanted"]
