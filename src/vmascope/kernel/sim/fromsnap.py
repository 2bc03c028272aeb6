"""An mm built from a Snapshot of a real (or simulated) process: ``MM.from_snapshot``.

Replay starts the model from the state a recorded program was in. A Snapshot knows each
VMA's range, permissions, VmFlags (from smaps), file, offset, name and NUMA policy; the
kernel's private state is rebuilt as follows:

* anon_vma: the snapshot's identities when it has them (simulated snapshots, the
  kernel's-eye view); otherwise a VMA that holds anonymous or swapped pages (smaps
  ``Anonymous``/``Swap``) gets an anon_vma of its own, and one without gets none. That is
  the same inference ``analyze`` makes, and it is counted in ``mm.inferred_anon_vmas``.
* vm_pgoff of anonymous memory: /proc prints 0, so a 0 is taken as "linear"
  (start >> PAGE_SHIFT), which is what an anonymous VMA that was never moved has.
* VmFlags: from smaps; from a maps-only snapshot, the permissions plus what mmap would
  have given (may-read/write/exec, VM_ACCOUNT for private writable memory).
* the heap: ``[heap]`` sets start_brk and brk.
"""

from __future__ import annotations

from typing import Any

from ...kconst import DEFAULT_MAX_MAP_COUNT, PAGE_SHIFT
from ...model import PERM_EXEC, PERM_READ, PERM_SHARED, PERM_WRITE, Snapshot
from .. import vmflags as F
from ..epochs import Epoch, epoch_for
from .mm import MM, AnonVma, ShmemFile, SVma


def parse_policy(text: str | None) -> Any:
    """numa_maps policy text -> the simulator's policy (None = default)."""
    if not text or text == "default" or ":" not in text:
        return None
    mode, _, nodes = text.partition(":")
    mode = "preferred" if mode == "prefer" else mode
    out: list[int] = []
    for part in nodes.split(","):
        lo, _, hi = part.partition("-")
        try:
            out.extend(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            return (mode, ())
    return (mode, tuple(sorted(out)))


class _FileId:
    """One struct file, identified by (dev, inode, name) in the snapshot."""

    __slots__ = ("key",)

    def __init__(self, key: tuple[int, int, str | None]) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"file {self.key[2] or self.key[1]}"


def _flags_from_perms(perms: int, anonymous: bool) -> int:
    flags = ((F.VM_READ if perms & PERM_READ else 0) | (F.VM_WRITE if perms & PERM_WRITE else 0)
             | (F.VM_EXEC if perms & PERM_EXEC else 0)
             | F.VM_MAYREAD | F.VM_MAYWRITE | F.VM_MAYEXEC)
    if perms & PERM_SHARED:
        flags |= F.VM_SHARED | F.VM_MAYSHARE
    elif anonymous and perms & PERM_WRITE:
        flags |= F.VM_ACCOUNT
    return flags


def mm_from_snapshot(snap: Snapshot, epoch: Epoch | str | None = None, *,
                     max_map_count: int | None = None, trace: bool = False,
                     thp: str = "never") -> MM:
    if epoch is None:
        epoch = snap.meta.kernel_release or "6.18"
    ep = epoch if isinstance(epoch, Epoch) else epoch_for(epoch)
    limit = max_map_count or snap.meta.max_map_count or DEFAULT_MAX_MAP_COUNT
    mm = MM(ep, max_map_count=limit, trace=trace, thp=thp)
    files: dict[tuple[int, int, str | None], Any] = {}
    anon_vmas: dict[int, AnonVma] = {}
    pages = None
    for key in ("Anonymous", "Swap"):
        col = snap.smaps.get(key)
        if col is not None:
            pages = col > 0 if pages is None else (pages | (col > 0))
    prev: SVma | None = None
    for i in range(len(snap)):
        start, end = int(snap.start[i]), int(snap.end[i])
        perms = int(snap.perms[i])
        name = snap.name(i)
        inode = int(snap.inode[i])
        anonymous = inode == 0 and (name is None or name.startswith("["))
        names = snap.flags(i)
        flags = (F.flags_from_names(names) if names is not None
                 else _flags_from_perms(perms, anonymous) | mm.soft_dirty)
        offset = int(snap.offset[i]) >> PAGE_SHIFT
        file: Any = None
        if not anonymous:
            key = (int(snap.dev[i]), inode, name)
            if perms & PERM_SHARED and name is not None and name.startswith("/dev/zero"):
                file = files.setdefault(key, ShmemFile(inode))
            else:
                file = files.setdefault(key, _FileId(key))
        pgoff = offset if (file is not None or offset) else start >> PAGE_SHIFT
        anon_name = name[6:-1] if name and name.startswith("[anon:") else None
        policy = None
        if snap.policy_id is not None and snap.policy_id[i] >= 0:
            policy = parse_policy(snap.policies[int(snap.policy_id[i])])
        v = SVma(start, end, pgoff, flags, file, anon_name, policy)
        av: AnonVma | None = None
        if snap.anon_vma is not None:
            ident = int(snap.anon_vma[i])
            if ident >= 0:
                av = anon_vmas.get(ident)
                if av is None:
                    av = anon_vmas[ident] = AnonVma(ident)
                    av.num_children = 1
        elif pages is not None and bool(pages[i]) and file is None:
            av = AnonVma(mm.next_anon_id)
            av.num_children = 1
            mm.next_anon_id += 1
            mm.inferred_anon_vmas += 1
        if av is not None:
            v.anon_vma = av
            v.chain = (av,)
            av.num_active_vmas += 1
        mm.insert(v, prev)
        prev = v
        if name == "[heap]":
            mm.start_brk = start if mm.start_brk is None else mm.start_brk
            mm.brk = end
    if anon_vmas:
        mm.next_anon_id = max(mm.next_anon_id, max(anon_vmas) + 1)
    return mm
