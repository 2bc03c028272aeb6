"""Running op scripts on a simulated mm, and what it leaves: an Outcome.

``run_ops`` is the syscall table: each op kind goes to the handler named after the kernel
function it mirrors. ``simulate_ops`` runs a script on a fresh :class:`MM` and returns an
:class:`~vmascope.outcome.Outcome` whose Snapshot has what /proc would show plus what it
cannot (anon_vma identities, vm_pgoff of anonymous memory).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...kconst import DEFAULT_MAX_MAP_COUNT, PAGE_SHIFT
from ...model import (KNOWN_VMFLAGS, KV_NONAME, KV_NOPOLICY, KV_NOUFFD, KVIEW_FIELDS, Snapshot,
                      SnapshotMeta)
from ...ops.language import NO_ADDRESS, Op, format_op, load_script
from ...outcome import Fault, OpError, Outcome
from .. import vmflags as F
from ..epochs import Epoch, epoch_for
from .fork import dup_mmap, mmput
from .madvise import do_madvise, madvise_set_anon_name
from .memory import handle_mm_fault
from .memfd import sys_memfd_create
from .mempolicy import do_mbind, policy_text
from .mlock import do_mlock, sys_mlockall, sys_munlock, sys_munlockall
from .mm import MM, OpFailed, SVma
from .mmap import do_mmap, prctl_set_mm_brk, sys_brk, vm_munmap
from .mprotect import do_mprotect_pkey, sys_pkey_alloc
from .mremap import do_mremap
from .userfaultfd import userfaultfd_ioctl
from .mseal import do_mseal

# The syscall table: op kind -> handler (touch, a fault, is handled apart).
SYSCALLS: dict[str, Callable[[MM, Op], None]] = {
    "mmap": do_mmap, "munmap": vm_munmap, "mprotect": do_mprotect_pkey,
    "madvise": do_madvise, "mremap": do_mremap, "fork": dup_mmap,
    "name": madvise_set_anon_name, "mbind": do_mbind, "heap": prctl_set_mm_brk,
    "brk": sys_brk, "mlock": do_mlock, "munlock": sys_munlock, "mlockall": sys_mlockall,
    "munlockall": sys_munlockall, "mseal": do_mseal, "exit": mmput, "uffd": userfaultfd_ioctl,
    "memfd": sys_memfd_create, "pkey_alloc": sys_pkey_alloc,
    "pkey_mprotect": do_mprotect_pkey,
}


def op_text(op: Op) -> str:
    """An op as the language writes it, with addresses in hex (for the decision log)."""
    if op.kind in NO_ADDRESS:
        return format_op(op)
    words = format_op(op).split()
    words[1] = hex(op.addr)
    if op.kind == "mremap" and op.new_addr is not None:
        words[4] = hex(op.new_addr)
    return " ".join(words)


def run_ops(mm: MM, ops: Sequence[Op]) -> tuple[list[OpError], list[Fault]]:
    """Apply ops to mm. Returns (errors, faults); a failing op does not stop the script."""
    errors: list[OpError] = []
    faults: list[Fault] = []
    tracing = mm.tracing
    handlers = SYSCALLS
    every = mm.sample_every
    if mm.present is None and any(op.kind == "uffd" for op in ops):
        mm.present = set()  # which pages are there decides a registered range's faults
    for i, op in enumerate(ops):
        if every and i and i % every == 0:
            mm.samples.append((i - 1, mm.map_count))
        kind = op.kind
        if tracing:
            mm.log.append(f"op {i} (line {op.line}): {op_text(op)}")
        if kind == "touch":
            sig = handle_mm_fault(mm, op)
            if sig is not None:
                faults.append(Fault(i, op.line, op.addr, sig))
                if tracing:
                    mm.log.append(f"  -> {sig} at {op.addr:#x}")
            continue
        try:
            handlers[kind](mm, op)
        except OpFailed as exc:
            errors.append(OpError(i, op.line, exc.errno))
            if tracing:
                mm.log.append(f"  -> fails with {exc.errno}")
    if every and ops and len(ops) % every == 0:
        mm.samples.append((len(ops) - 1, mm.map_count))
    return errors, faults


def _perms(flags: np.ndarray) -> np.ndarray:
    """maps' permission bits (r 1, w 2, x 4, s 8) from the model's flag words."""
    out = np.zeros(len(flags), np.uint8)
    for bit, flag in ((1, F.VM_READ), (2, F.VM_WRITE), (4, F.VM_EXEC), (8, F.VM_MAYSHARE)):
        out |= np.where(flags & np.uint64(flag), np.uint8(bit), np.uint8(0))
    return out


def snapshot_of(mm: MM, meta: SnapshotMeta, *, lo: int = 0, hi: int | None = None,
                shift: int = 0, kernel_view: bool = False) -> Snapshot:
    """The VMAs of mm in [lo, hi), moved down by ``shift``, as a Snapshot.

    The simulator's flag words use bit i for ``model.KNOWN_VMFLAGS[i]``, so they are the
    snapshot's VmFlags column as they are. ``kernel_view``: give it the model's own
    kernel view (:func:`model_view`), to be compared with the BPF reader's.
    """
    vs = list(mm) if lo == 0 and hi is None else [
        v for v in mm if v.end > lo and (hi is None or v.start < hi)]
    n = len(vs)
    get = operator.attrgetter
    start, end, pgoff, flags = (np.fromiter(map(get(a), vs), np.uint64, count=n)
                                for a in ("start", "end", "pgoff", "flags"))
    anon_vma = np.fromiter([-1 if a is None else a.id for a in map(get("anon_vma"), vs)],
                           np.int64, count=n)
    # Names, inodes and policies, where a VMA has any (most have none).
    inode = np.zeros(n, np.uint64)
    name_id = np.full(n, -1, np.int32)
    names: list[str] = []
    name_index: dict[str, int] = {}
    named = set()
    for attr in ("file", "anon_name"):
        values = list(map(get(attr), vs))
        if values.count(None) != n:
            named.update(i for i, x in enumerate(values) if x is not None)
    if mm.start_brk is not None and mm.brk is not None:
        named.update(np.flatnonzero((start <= mm.brk) & (end >= mm.start_brk)).tolist())
    for i in sorted(named):
        v = vs[i]
        inode[i] = getattr(v.file, "inode", 0)
        name = mm.vma_name(v)
        if name is not None:
            nid = name_index.get(name)
            if nid is None:
                nid = name_index[name] = len(names)
                names.append(name)
            name_id[i] = nid
    pols = list(map(get("policy"), vs))
    policy_id = np.zeros(n, np.int32)
    policies = ["default"] if n else []
    if pols.count(None) != n:  # numbered as they come
        policy_index: dict[Any, int] = {}
        policies = []
        for i, pol in enumerate(pols):
            pid = policy_index.get(pol)
            if pid is None:
                pid = policy_index[pol] = len(policies)
                policies.append(policy_text(pol))
            policy_id[i] = pid
    smaps = {}
    if mm.resident is not None:  # Anonymous (bytes), from the pages the model keeps
        pages = np.fromiter(sorted(mm.resident), dtype=np.int64, count=len(mm.resident))
        lo_p, hi_p = (start >> PAGE_SHIFT).astype(np.int64), (end >> PAGE_SHIFT).astype(np.int64)
        smaps["Anonymous"] = (np.searchsorted(pages, hi_p) - np.searchsorted(pages, lo_p)
                              ) << PAGE_SHIFT
    flag_names = KNOWN_VMFLAGS if mm.epoch.lf_mnemonic else tuple(
        "??" if m == "lf" else m for m in KNOWN_VMFLAGS)  # smaps before 6.2 (8614d6c5eda0)
    return Snapshot(
        start=start - np.uint64(shift), end=end - np.uint64(shift), perms=_perms(flags),
        offset=pgoff << np.uint64(PAGE_SHIFT), dev=(inode != 0).astype(np.uint32),
        inode=inode, name_id=name_id, names=names, meta=meta,
        vmflags=flags & np.uint64(~F.VM_PKEY_MASK & (1 << 64) - 1), flag_names=flag_names,
        policy_id=policy_id, policies=policies, anon_vma=anon_vma, smaps=smaps,
        kview=model_view(vs) if kernel_view else None)


def model_view(vs: Sequence[SVma]) -> dict[str, np.ndarray]:
    """What the kernel-view reader (model.KVIEW_FIELDS) would read from the model's
    VMAs: vm_pgoff, the anon_vma and its root, the length of the anon_vma chain and the
    anon_vma's num_children / num_active_vmas. The fields the model does not keep as the
    kernel does (raw vm_flags, file, policy, userfaultfd context, name) are 0, with the
    reader's bits for "not known" set."""
    n = len(vs)

    def col(values: Any) -> np.ndarray:
        return np.fromiter(values, dtype=np.uint64, count=n)

    cols = {f: np.zeros(n, dtype=np.uint64) for f in KVIEW_FIELDS}
    cols["pgoff"] = col(v.pgoff for v in vs)
    cols["anon_vma"] = col(0 if v.anon_vma is None else v.anon_vma.id for v in vs)
    cols["root"] = col(0 if v.anon_vma is None else v.anon_vma.root.id for v in vs)
    cols["chain"] = col(len(v.chain) for v in vs)
    cols["children"] = col(0 if v.anon_vma is None else v.anon_vma.num_children for v in vs)
    cols["active"] = col(0 if v.anon_vma is None else v.anon_vma.num_active_vmas for v in vs)
    cols["bits"][:] = KV_NOPOLICY | KV_NOUFFD | KV_NONAME
    return cols


def outcome_of(mm: MM, errors: list[OpError], faults: list[Fault], *,
               script: str | None = None, lo: int = 0, hi: int | None = None,
               shift: int = 0, outside: int | None = None,
               kernel_view: bool = False) -> Outcome:
    """The Outcome of a script that ran on mm (``lo``/``hi``/``shift``: an arena;
    ``kernel_view``: with the model's kernel view, see :func:`model_view`)."""
    epoch = mm.epoch

    def meta() -> SnapshotMeta:
        m = SnapshotMeta(kernel_release=epoch.release, max_map_count=mm.max_map_count,
                         source="simulated", comm=script)
        m.extra["epoch"] = epoch.name
        return m

    snap = snapshot_of(mm, meta(), lo=lo, hi=hi, shift=shift, kernel_view=kernel_view)
    arena = hi is not None
    if arena:
        faults = [Fault(f.op, f.line, f.addr - shift, f.signal) for f in faults]
    return Outcome(
        snapshot=snap, errors=errors, faults=faults,
        children=[] if arena else [snapshot_of(c, meta()) for c in mm.children
                                   if not c.exited],
        process_map_count=mm.map_count + (outside or 0) if arena else None,
        epoch=epoch.name, brk=None if mm.brk is None else mm.brk - shift,
        trace=mm.log, samples=[(i, n + (outside or 0)) for i, n in mm.samples])


def simulate_ops(ops: Sequence[Op], kernel: str | Epoch, *,
                 max_map_count: int = DEFAULT_MAX_MAP_COUNT, trace: bool = False,
                 thp: str = "never", numa_nodes: int = 1, pku: bool = True,
                 script: str | None = None) -> Outcome:
    """Run parsed ops on a fresh simulated address space of ``kernel`` (an Epoch or a
    release string).

    ``thp`` is the modelled machine's transparent_hugepage/enabled (read faults on the
    huge-page path create an anon_vma); "never" is what the lab's 512 MiB microVMs have.
    For the running kernel, ``vmascope.host`` knows this machine's setting and facts
    (``vmascope.simulate`` uses them).
    """
    epoch = kernel if isinstance(kernel, Epoch) else epoch_for(kernel)
    mm = MM(epoch, max_map_count=max_map_count, trace=trace, thp=thp, numa_nodes=numa_nodes,
            pku=pku)
    errors, faults = run_ops(mm, ops)
    return outcome_of(mm, errors, faults, script=script)


def simulate(text: str, kernel: str | Epoch, *, source: str = "<script>",
             **kwargs: Any) -> Outcome:
    """Parse an op script (text or JSONL) and simulate it. ParseError on a bad script."""
    ops = load_script(text, source)
    kwargs.setdefault("script", source)
    return simulate_ops(ops, kernel, **kwargs)
