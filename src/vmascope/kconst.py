"""Constants of the kernel ABI that every part of vmascope shares (x86-64 values)."""

from __future__ import annotations

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)

# include/linux/mm.h DEFAULT_MAX_MAP_COUNT (USHRT_MAX - MAPCOUNT_ELF_CORE_MARGIN).
DEFAULT_MAX_MAP_COUNT = 65530

# The top of user space with 4-level page tables (arch/x86/include/asm/page_64_types.h).
TASK_SIZE = 0x7FFFFFFFF000


def page_align(x: int) -> int:
    """Round up to a whole number of pages (the kernel's PAGE_ALIGN)."""
    return (x + PAGE_SIZE - 1) & PAGE_MASK
