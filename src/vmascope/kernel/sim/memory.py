"""mm/memory.c: page faults (the ``touch`` op) and the huge-page read-fault path."""

from __future__ import annotations

from ...kconst import PAGE_SHIFT
from ...ops.language import Op
from .. import vmflags as F
from .memfd import beyond_eof
from .mm import MM, PMD_SIZE, MemFile, ShmemFile, SVma
from .mmap import expand_downwards
from .rmap import anon_vma_prepare
from .userfaultfd import missing_page


def handle_mm_fault(mm: MM, op: Op) -> str | None:
    """mm/memory.c handle_mm_fault: a fault at op.addr. Returns the signal name for a bad access."""
    addr = op.addr
    v = mm.vma_lookup(addr)
    if v is None:
        v = expand_downwards(mm, addr)
        if v is None:
            return "SIGSEGV"
    flags = v.flags
    if op.write:
        if not flags & F.VM_WRITE:
            return "SIGSEGV"
    elif not flags & (F.VM_READ | F.VM_WRITE | F.VM_EXEC):
        return "SIGSEGV"
    if mm.guards and (addr >> PAGE_SHIFT) in mm.guards:
        return "SIGSEGV"
    if beyond_eof(v, addr):
        if op.write and not flags & F.VM_SHARED:
            # do_cow_fault prepares the anon_vma before the file's fault says SIGBUS (the
            # kernel view shows it on 6.1, 6.12, 6.18 and 7.2)
            anon_vma_prepare(mm, v)
        return "SIGBUS"
    sig = None
    if flags & F.VM_UFFD_MISSING and missing_page(mm, v, addr):
        # The userfault, with UFFD_FEATURE_SIGBUS (kernel/sim/userfaultfd.py). It comes
        # after the anon_vma is prepared (do_anonymous_page and do_cow_fault for a write,
        # the huge-page path for a read too): the VMA gets one, no page.
        sig = "SIGBUS"
    else:
        map_page(mm, v, addr)
        if mm.resident is not None and op.write and not flags & F.VM_SHARED:  # files: COW
            fault_in(mm, v, addr)
    if v.anon_vma is not None or flags & F.VM_SHARED:
        return sig
    if v.file is not None:
        if op.write:  # copy on write of a private file page
            anon_vma_prepare(mm, v)
        return sig
    if op.write or thp_read_fault(mm, v, addr):
        anon_vma_prepare(mm, v)
    return sig


def thp_read_fault(mm: MM, v: SVma, addr: int) -> bool:
    """A read fault that takes the huge-page path prepares an anon_vma too."""
    return thp_suitable(mm, v, addr)


def thp_suitable(mm: MM, v: SVma, addr: int) -> bool:
    """THP is on for the VMA and the aligned 2 MiB around addr lies inside it
    (thp_vma_allowable_order + thp_vma_suitable_order)."""
    if v.flags & F.VM_NOHUGEPAGE or mm.thp == "never":
        return False
    if mm.thp == "madvise" and not v.flags & F.VM_HUGEPAGE:
        return False
    lo = addr & ~(PMD_SIZE - 1)
    return v.start <= lo and lo + PMD_SIZE <= v.end


def fault_in(mm: MM, v: SVma, addr: int) -> None:
    """A write fault on private anonymous memory makes a page resident, or a whole huge
    page when THP applies and nothing of its 2 MiB is resident yet (do_huge_pmd_anonymous_page;
    assumes a huge page is available, as on an idle machine)."""
    res = mm.resident
    assert res is not None
    page = addr >> PAGE_SHIFT
    if page in res:
        return
    per = PMD_SIZE >> PAGE_SHIFT
    block = page & ~(per - 1)
    if thp_suitable(mm, v, addr) and not any(p in res for p in range(block, block + per)):
        res.update(range(block, block + per))
    else:
        res.add(page)


def map_page(mm: MM, v: SVma, addr: int) -> None:
    """A fault (or populate) maps a page at addr: shmem puts it in the file's page cache;
    private memory gets a page table entry (MM.present), a whole huge page's worth when
    the fault takes the huge-page path and nothing of its 2 MiB is there yet."""
    present = mm.present
    if present is None:
        return
    f = v.file
    if isinstance(f, (ShmemFile, MemFile)):
        f.pages.add(v.pgoff + ((addr - v.start) >> PAGE_SHIFT))
    if v.flags & F.VM_SHARED:
        return
    page = addr >> PAGE_SHIFT
    if page in present:
        return
    per = PMD_SIZE >> PAGE_SHIFT
    block = page & ~(per - 1)
    if f is None and thp_suitable(mm, v, addr) and not any(
            p in present for p in range(block, block + per)):
        present.update(range(block, block + per))
    else:
        present.add(page)


def populate_range(mm: MM, v: SVma, start: int, end: int) -> bool:
    """Fault in [start, end) of v page by page (gup's populate); False when a page cannot
    be (SIGBUS: past the end of a memfd, or a missing-page userfault): populate stops
    there with EFAULT."""
    if beyond_eof(v, end - (1 << PAGE_SHIFT)):
        return False  # the pages before the end of the file are faulted in
    if mm.present is None:
        return True
    for addr in range(start, end, 1 << PAGE_SHIFT):
        if v.flags & F.VM_UFFD_MISSING and missing_page(mm, v, addr):
            return False
        map_page(mm, v, addr)
    return True
