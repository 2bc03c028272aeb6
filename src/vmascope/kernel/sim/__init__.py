"""The kernel VMA simulator, one module per kernel file it mirrors.

==============  =====================================================================
``mm``          struct mm_struct, the VMA tree, struct vm_area_struct, struct anon_vma
``vma``         mm/vma.c: split_vma, vma_merge_existing_range, vma_merge_new_range,
                vma_modify, do_vmi_munmap
``rmap``        mm/rmap.c: anon_vma_prepare, dup_anon_vma, anon_vma_fork
``mmap``        mm/mmap.c: do_mmap, munmap, get_unmapped_area, brk, expand_downwards
``mprotect``    mm/mprotect.c: do_mprotect_pkey
``madvise``     mm/madvise.c: do_madvise, madvise_set_anon_name
``mremap``      mm/mremap.c: do_mremap, mremap_to, move_vma
``mempolicy``   mm/mempolicy.c: do_mbind
``memory``      mm/memory.c: handle_mm_fault (the ``touch`` op)
``fork``        kernel/fork.c: dup_mmap
``result``      the syscall table, run_ops, simulate, and the Outcome it returns
``fromsnap``    MM.from_snapshot's work: an mm built from a real process's Snapshot
==============  =====================================================================

Every merge decision goes through :mod:`vmascope.kernel.rules`, the predicates the
explainer uses too; the differences between kernels come from the
:class:`~vmascope.kernel.epochs.Epoch`. A failing op records its errno and the script
goes on; a bad touch records SIGSEGV and the script goes on.
"""

from .mm import MM, AnonVma, OpFailed, ShmemFile, SVma
from .result import SYSCALLS, outcome_of, run_ops, simulate, simulate_ops, snapshot_of

__all__ = ["MM", "SYSCALLS", "AnonVma", "OpFailed", "SVma", "ShmemFile", "outcome_of",
           "run_ops", "simulate", "simulate_ops", "snapshot_of"]
