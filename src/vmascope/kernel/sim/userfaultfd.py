"""fs/userfaultfd.c: UFFDIO_REGISTER / UFFDIO_UNREGISTER of a range, and the missing-page
faults a registered range gets.

A script has one userfaultfd (made at its first ``uffd`` op, with UFFD_FEATURE_SIGBUS, as
the lab's executor makes it: a fault the context would be told of raises SIGBUS instead
of waiting for a handler). Registering sets VM_UFFD_MISSING / VM_UFFD_WP (``um``/``uw``)
and the context on every VMA of the range, splitting at the ends and merging like
mprotect: a VMA merges only with a neighbour of the same context and flags
(kernel/rules.py). Unregistering clears both. Holes inside the range are skipped.

The checks, in the kernel's order (userfaultfd_register, 4.3+; the same in 6.x):

* the range: page-aligned start and length, not empty, at or above mmap_min_addr and
  inside the address space (validate_range): EINVAL;
* a VMA at or after start: none is ENOMEM; one only at or after the end is EINVAL;
* from 7.3, a VMA already registered with this userfaultfd for write-protect, when the
  new registration leaves write-protect out, is EBUSY (before: the VMA kept its modes,
  or took the new ones); dropping the missing mode is still allowed. The lab sees it on
  7.3.4 and 7.3-rc7, not on 7.2.13 (the commit was not looked up);
* every VMA of the range: one the context cannot serve (vma_can_userfault: anonymous
  or shmem; write-protect on shmem only from 5.19, b1f9e876862d) is EINVAL; one without
  VM_MAYWRITE (a read-only shared file) is EPERM.

Merging: each VMA's modification is proposed to the merge with the page offset of the
range; before the fix of 2023 ("mm/uffd: fix vma operation where start addr cuts part of
vma", assumed 6.3; the lab sees 6.1.176 without it and 6.12.117 with it) it was the
VMA's own vm_pgoff, so a range starting inside a VMA never merged with the next one.

Missing pages: a fault on a page of a VM_UFFD_MISSING VMA that has none (private
anonymous memory: no page table entry; shmem: nothing in the page cache) raises SIGBUS.
The model keeps which pages are there (``MM.present`` for private anonymous memory, the
file's ``pages`` for shmem; see kernel/sim/memory.py).

mremap of a registered VMA (without UFFD_FEATURE_EVENT_REMAP, which the executor does
not ask for) leaves the moved VMA unregistered: mremap_userfaultfd_prep clears its flags
and context after copy_vma (mm/mremap.c move_vma), whatever it merged with. A fork
child's copies are not registered (dup_userfaultfd without UFFD_FEATURE_EVENT_FORK).
"""

from __future__ import annotations

from ...kconst import PAGE_MASK, PAGE_SHIFT, TASK_SIZE
from ...ops.language import Op
from .. import vmflags as F
from .mm import MM, MMAP_MIN_ADDR, OpFailed, SVma, linear_page_index, shmem_file
from .vma import vma_modify

_MODE_FLAGS = {"missing": F.VM_UFFD_MISSING, "wp": F.VM_UFFD_WP}


class UffdCtx:
    """struct userfaultfd_ctx: only its identity matters to merging."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "uffd"


def userfaultfd_ioctl(mm: MM, op: Op) -> None:
    """The ``uffd`` op, fs/userfaultfd.c userfaultfd_ioctl: UFFDIO_REGISTER with op.flags
    (userfaultfd_register), or UFFDIO_UNREGISTER without (userfaultfd_unregister)."""
    if mm.uffd is None:
        mm.uffd = UffdCtx()
    if mm.present is None:  # run_ops keeps it from the start of a script with uffd ops
        mm.present = set()
    start, length = op.addr, op.length
    if (start & ~PAGE_MASK or length & ~PAGE_MASK or not length or start < MMAP_MIN_ADDR
            or start >= TASK_SIZE or length > TASK_SIZE - start):
        raise OpFailed("EINVAL")  # validate_range
    end = start + length
    want = 0
    for mode in op.flags:
        want |= _MODE_FLAGS[mode]
    v = mm.find_vma(start)
    if v is None:
        # no VMA at or after start: ENOMEM; but the lab's arena has the executor's
        # fence above it (MM.fence_above), which the kernel finds (EINVAL)
        raise OpFailed("ENOMEM" if mm.fence_above is None or start >= mm.fence_above
                       else "EINVAL")
    if v.start >= end:
        raise OpFailed("EINVAL")
    ep = mm.epoch
    cur: SVma | None = v
    while cur is not None and cur.start < end:
        if not can_userfault(mm, cur, want if want else cur.flags & F.VM_UFFD_FLAGS):
            raise OpFailed("EINVAL")
        if want and not cur.flags & F.VM_MAYWRITE:
            raise OpFailed("EPERM")
        if (want and ep.uffd_keep_modes and cur.uffd is mm.uffd
                and cur.flags & F.VM_UFFD_WP and not want & F.VM_UFFD_WP):
            raise OpFailed("EBUSY")  # 7.3: a registration may not drop write-protect
        cur = cur.next
    ctx = mm.uffd if want else None
    cur = v
    while cur is not None and cur.start < end:
        registered = cur.uffd is not None
        if want and registered and cur.flags & want == want:
            nxt = cur.next  # already registered with these modes
        elif not want and not registered:
            nxt = cur.next
        else:
            flags = (cur.flags & ~F.VM_UFFD_FLAGS) | want
            # Before the fix (6.3) the merge was proposed with the VMA's own vm_pgoff
            # even when the range starts inside it: no merge with the next VMA then.
            pgoff = None if ep.uffd_pgoff_fix or cur.start >= start else cur.pgoff
            cur = vma_modify(mm, cur, max(start, cur.start), min(end, cur.end),
                             flags=flags, uffd=ctx, pgoff=pgoff)
            nxt = cur.next
        cur = nxt


def can_userfault(mm: MM, v: SVma, flags: int) -> bool:
    """fs/userfaultfd.c vma_can_userfault: anonymous private memory, or shmem (a shared
    anonymous mapping, a memfd); write-protect mode on shmem from 5.19."""
    shmem = shmem_file(v) is not None
    if v.file is not None and not shmem:
        return False
    if flags & F.VM_UFFD_WP and shmem and not mm.epoch.uffd_wp_shmem:
        return False
    return True


def missing_page(mm: MM, v: SVma, addr: int) -> bool:
    """A fault at addr would be a missing-page userfault: the VMA is registered for
    missing pages and has none at addr (SIGBUS with UFFD_FEATURE_SIGBUS)."""
    if not v.flags & F.VM_UFFD_MISSING:
        return False
    f = shmem_file(v)
    if f is not None:
        return linear_page_index(v, addr) not in f.pages
    return mm.present is not None and (addr >> PAGE_SHIFT) not in mm.present


def unregister_moved(v: SVma) -> None:
    """mm/userfaultfd.c mremap_userfaultfd_prep without UFFD_FEATURE_EVENT_REMAP."""
    if v.uffd is not None:
        v.uffd = None
        v.flags &= ~F.VM_UFFD_FLAGS
