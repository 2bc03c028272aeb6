"""mm/util.c: __vm_enough_memory, the overcommit policy behind every ENOMEM of accounting.

The model charges what the kernel charges (private writable anonymous memory without
VM_NORESERVE, VM_ACCOUNT on the VMA): at mmap, at an mprotect that makes such memory
writable, and at brk. It does not charge mremap growth or fork (no workload here does
them under a strict policy). What the machine has (RAM, swap, CommitLimit, what is
committed already) is not the model's to know: the lab's executor reports it before a
script's ops, and :class:`Overcommit` carries it in.

* mode 0 (OVERCOMMIT_GUESS): refuse one request larger than RAM + swap (the heuristic
  since 8c7829b04c52, 5.2; every kernel the lab runs has it);
* mode 1 (OVERCOMMIT_ALWAYS): never refuse;
* mode 2 (OVERCOMMIT_NEVER): refuse when what is committed would reach CommitLimit, less
  the admin reserve for a process without CAP_SYS_ADMIN and less
  min(total_vm / 32, user_reserve_kbytes) for any process; MAP_NORESERVE is ignored
  (do_mmap sets VM_NORESERVE only when the mode is not 2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ...kconst import PAGE_SHIFT
from .. import vmflags as F
from .mm import MM, OpFailed

_KB_PAGES = PAGE_SHIFT - 10


@dataclasses.dataclass(frozen=True)
class Overcommit:
    """The machine's overcommit policy and memory, in pages."""

    mode: int
    total_pages: int  # RAM + swap
    commit_limit: int
    committed_base: int  # Committed_AS before the script (includes this process then)
    user_reserve: int
    admin_reserve: int
    outside_vm: int  # total_vm of the process outside the model, before the script
    cap_sys_admin: bool = True

    @classmethod
    def from_memory(cls, memory: Mapping[str, int], *,
                    cap_sys_admin: bool = True) -> Overcommit | None:
        """From the lab's I record (kB); None if it is incomplete."""
        try:
            return cls(mode=memory["overcommit_memory"],
                       total_pages=(memory["mem_total_kb"] + memory["swap_total_kb"])
                       >> _KB_PAGES,
                       commit_limit=memory["commit_limit_kb"] >> _KB_PAGES,
                       committed_base=memory["committed_as_kb"] >> _KB_PAGES,
                       user_reserve=memory["user_reserve_kb"] >> _KB_PAGES,
                       admin_reserve=memory["admin_reserve_kb"] >> _KB_PAGES,
                       outside_vm=memory["vm_size_kb"] >> _KB_PAGES,
                       cap_sys_admin=cap_sys_admin)
        except KeyError:
            return None


def committed_pages(mm: MM) -> int:
    """Pages of the mm's VMAs with VM_ACCOUNT."""
    return sum((v.end - v.start) >> PAGE_SHIFT for v in mm if v.flags & F.VM_ACCOUNT)


def total_vm(mm: MM) -> int:
    return sum((v.end - v.start) >> PAGE_SHIFT for v in mm)


def noreserve_honoured(mm: MM) -> bool:
    """do_mmap: MAP_NORESERVE sets VM_NORESERVE unless the mode is OVERCOMMIT_NEVER."""
    oc = mm.overcommit
    return oc is None or oc.mode != 2


def vm_enough_memory(mm: MM, pages: int, *, releasing: int = 0) -> None:
    """security_vm_enough_memory_mm(mm, pages): ENOMEM when the policy refuses.
    ``releasing``: accounted pages the same call gives back first (MAP_FIXED over them)."""
    oc = mm.overcommit
    if oc is None or pages <= 0 or oc.mode == 1:
        return
    if oc.mode == 0:
        if pages > oc.total_pages:
            _refuse(mm, pages, f"more than RAM + swap ({oc.total_pages} pages)")
        return
    allowed = oc.commit_limit
    if not oc.cap_sys_admin:
        allowed -= oc.admin_reserve
    allowed -= min((oc.outside_vm + total_vm(mm)) // 32, oc.user_reserve)
    committed = oc.committed_base + committed_pages(mm) - releasing + pages
    if committed >= allowed:
        _refuse(mm, pages, f"Committed_AS would be {committed} of {allowed} pages allowed")


def _refuse(mm: MM, pages: int, why: str) -> None:
    if mm.tracing:
        mm.note(f"__vm_enough_memory({pages} pages) refused: {why}")
    raise OpFailed("ENOMEM")
