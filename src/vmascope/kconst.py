"""Constants of the kernel ABI that every part of vmascope shares (x86-64 values)."""

from __future__ import annotations

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)

# The VmFlags mnemonics of smaps (fs/proc/task_mmu.c show_smap_vma_flags) that vmascope
# knows, in the order of their VM_* bits before 6.18; bit i of a VmFlags column is
# KNOWN_VMFLAGS[i].
KNOWN_VMFLAGS: tuple[str, ...] = (
    "rd", "wr", "ex", "sh", "mr", "mw", "me", "ms", "gd", "pf", "dw", "lo", "io",
    "sr", "rr", "dc", "de", "ac", "nr", "ht", "sf", "ar", "wf", "dd", "bt", "mm",
    "hg", "nh", "mg", "um", "uw", "ui", "ss", "sl", "lf", "sd", "mt", "dp", "gu",
)

# The smaps fields the explanations read per VMA (whether a side holds anonymous or
# swapped pages: analysis/explain.py, kernel/pairs.py). ``analyze`` keeps only these as
# columns: at 2M VMAs the other twenty-odd would take about 370 MB.
ANALYSIS_SMAPS_FIELDS: tuple[str, ...] = ("Anonymous", "Swap")

# include/linux/mm.h DEFAULT_MAX_MAP_COUNT (USHRT_MAX - MAPCOUNT_ELF_CORE_MARGIN).
DEFAULT_MAX_MAP_COUNT = 65530

# The top of user space with 4-level page tables (arch/x86/include/asm/page_64_types.h).
TASK_SIZE = 0x7FFFFFFFF000


def page_align(x: int) -> int:
    """Round up to a whole number of pages (the kernel's PAGE_ALIGN)."""
    return (x + PAGE_SIZE - 1) & PAGE_MASK
