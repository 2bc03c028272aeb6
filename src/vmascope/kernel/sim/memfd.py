"""mm/memfd.c: memfd_create, the file behind the ``memfd`` op and ``mmap ... fd=NAME``.

A memfd is a shmem file: ``/memfd:NAME (deleted)`` in maps. Its VMAs merge like any
file's: the same open file, flags equal, and file offsets (vm_pgoff) continuous, so two
mappings of one memfd side by side merge only where the second maps the pages that follow
the first's. A private mapping gets an anon_vma at its first write (copy on write); a
touch past the end of the file (the ftruncate size) is SIGBUS.
"""

from __future__ import annotations

from ...kconst import PAGE_SHIFT, PAGE_SIZE
from ...ops.language import Op
from .mm import MM, MemFile, SVma, linear_page_index


def sys_memfd_create(mm: MM, op: Op) -> None:
    """memfd_create(NAME, 0) and ftruncate(fd, LEN): a new file under NAME."""
    assert op.name is not None
    mm.files[op.name] = MemFile(mm.next_inode, op.name, op.length)
    mm.next_inode += 1


def beyond_eof(v: SVma, addr: int) -> bool:
    """A fault at addr in a memfd's VMA reads past the file's end (SIGBUS)."""
    f = v.file
    if not isinstance(f, MemFile):
        return False
    return linear_page_index(v, addr) >= (f.size + PAGE_SIZE - 1) >> PAGE_SHIFT
