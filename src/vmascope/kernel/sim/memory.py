"""mm/memory.c: page faults (the ``touch`` op) and the huge-page read-fault path."""

from __future__ import annotations

from ...kconst import PAGE_SHIFT
from ...ops.language import Op
from .. import vmflags as F
from .memfd import beyond_eof
from .mm import MM, PMD_SIZE, SVma, linear_page_index, shmem_file
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
    if v.file is not None and beyond_eof(v, addr):
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
    elif mm.present is not None or mm.resident is not None:  # the pages, when kept
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
    assert mm.resident is not None
    add_page(mm.resident, addr, thp_suitable(mm, v, addr))


def add_page(pages: set[int], addr: int, huge: bool) -> None:
    """The page at addr is in ``pages`` after a fault, or (``huge``: the fault may take
    the huge-page path) its whole 2 MiB when none of it is there yet."""
    page = addr >> PAGE_SHIFT
    if page in pages:
        return
    per = PMD_SIZE >> PAGE_SHIFT
    block = page & ~(per - 1)
    if huge and not any(p in pages for p in range(block, block + per)):
        pages.update(range(block, block + per))
    else:
        pages.add(page)


def map_page(mm: MM, v: SVma, addr: int) -> None:
    """A fault (or populate) maps a page at addr: shmem puts it in the file's page cache;
    private memory gets a page table entry (MM.present), a whole huge page's worth when
    the fault takes the huge-page path and nothing of its 2 MiB is there yet."""
    present = mm.present
    if present is None:
        return
    f = shmem_file(v)
    if f is not None:
        f.pages.add(linear_page_index(v, addr))
    if not v.flags & F.VM_SHARED:
        add_page(present, addr, v.file is None and thp_suitable(mm, v, addr))


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
