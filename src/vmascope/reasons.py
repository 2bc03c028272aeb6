"""Why two adjacent VMAs are not one: the reason codes, in one table.

Each member of :class:`Code` is a reason the kernel refuses a merge (what
``kernel.rules`` returns), with its short label for summaries and, where vmascope has
one, the advice template the analysis phrases as a hypothesis: (what is most likely
going on, the vmascope command that tests it, what to change). ``{kernel}``, ``{detail}``,
``{flag_hint}`` and ``{flag_fix}`` are filled in by ``analysis.advice``.
"""

from __future__ import annotations

import enum

# The kernel the lab compares the host with: before the 6.16 anon_vma change.
OLD_KERNEL = "6.12"
SCRIPT = "pattern.ops"
LAB = f"vmascope lab run {SCRIPT} --kernel {OLD_KERNEL},host"

Advice = tuple[str, str, str]


class Code(str, enum.Enum):
    """A reason code. It is a str, so ``Code.ANON_VMA == "anon_vma"``."""

    label: str
    advice: Advice | None

    def __new__(cls, value: str, label: str, advice: Advice | None = None) -> "Code":
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.label = label
        obj.advice = advice
        return obj

    def __str__(self) -> str:
        return self.value

    VMFLAGS = ("vmflags", "different VmFlags", (
        "Neighbours differ in VmFlags that /proc shows ({detail}). {flag_hint}",
        "check with `grep -B20 VmFlags /proc/PID/smaps` around the example address, and "
        f"replay the calls with `vmascope simulate {SCRIPT} --kernel {{kernel}}`",
        "{flag_fix}",
    ))
    ANON_NAME = ("anon_name", "different anon names", (
        "Neighbouring pieces carry different PR_SET_VMA_ANON_NAME names.",
        f"`vmascope simulate {SCRIPT} --kernel {{kernel}}` with and without the `name` ops",
        "name a whole reservation once instead of naming each piece",
    ))
    MEMPOLICY = ("mempolicy", "different NUMA memory policies", (
        "Neighbouring pieces have different NUMA policies (mbind).",
        "compare the policies in /proc/PID/numa_maps, then `vmascope simulate "
        f"{SCRIPT} --kernel {{kernel}}` with the mbind ops",
        "bind whole reservations, not pieces",
    ))
    FILE = ("file", "not the same open file", (
        "The same file is mapped through separate open() calls; VMAs of different "
        "open files never merge.",
        f"`vmascope simulate {SCRIPT} --kernel {{kernel}}`",
        "map all pieces through one file descriptor",
    ))
    PGOFF = ("pgoff", "discontinuous page offsets", (
        "The pieces were moved (mremap) after being written, so their page offsets no "
        "longer line up.",
        f"`vmascope simulate {SCRIPT} --kernel {{kernel}}` with the mremap ops",
        "avoid moving written anonymous memory next to other memory",
    ))
    ANON_VMA = ("anon_vma", "distinct anon_vmas", (
        "Pages were written in neighbouring pieces before those pieces became identical "
        "(for example committed one by one inside a PROT_NONE reservation), so each "
        "piece got its own anon_vma at its first write fault and the kernel can never "
        "merge them again.",
        "see the pattern in `vmascope lab run seed --kernel 6.1,6.12,host`; then write "
        f"the runtime's commit/decommit sequence as an op script ({SCRIPT}) and run "
        f"`vmascope simulate {SCRIPT} --kernel {{kernel}}` and `{LAB}`",
        "make the pieces share one anon_vma: change protection before the first write "
        "(mprotect the whole range first, then fault), or fault one page of the "
        "reservation while it is accessible so that later splits inherit its anon_vma; "
        "or decommit with madvise(MADV_DONTNEED) instead of mprotect(PROT_NONE)",
    ))
    ANON_VMA_UNFAULTED = (
        "anon_vma_unfaulted", "faulted VMA next to an unfaulted one (before 6.16)", (
        "A written (faulted) piece is next to a never-written one; kernels before 6.16 "
        "refuse to merge the two (fixed by commit 879bca0a2c4f in 6.16).",
        f"`{LAB}` on a script of the pattern: the old kernel should keep the VMAs "
        "apart and the new one merge them",
        "run on 6.16 or newer, or touch one page of every piece before changing its "
        "protection back",
    ))
    FORK_CHILD = ("fork_child", "anon_vma inherited through fork", (
        "This process is a fork child: VMAs with anon_vmas inherited from the parent "
        "are not merged with others.",
        f"`{LAB}` with a `fork` op before the pattern",
        "create the runtime's reservations after fork, or exec",
    ))
    # What only the kernel view (BPF) sees: the blind spots of /proc.
    ANON_PGOFF = ("anon_pgoff", "moved anonymous memory: page offsets differ", (
        "Anonymous memory was moved with mremap: it keeps the page offset of its old "
        "address, which /proc prints as 0, so it never merges with its new neighbour.",
        f"`vmascope simulate {SCRIPT} --kernel {{kernel}}` with the mremap ops",
        "avoid moving written anonymous memory next to other memory; map it where it "
        "is to stay",
    ))
    ANON_VMA_EMPTIED = ("anon_vma_emptied", "emptied side keeps its anon_vma", (
        "A piece emptied by MADV_DONTNEED (or never refilled) holds no pages, yet keeps "
        "the anon_vma of its first write, so it still never merges with a neighbour "
        "that has another one.",
        f"`vmascope simulate {SCRIPT} --kernel {{kernel}}` with the madvise ops",
        "write the pieces through one VMA before splitting it, so they share one "
        "anon_vma",
    ))
    FILE_TWICE = ("file_twice", "one file opened twice", (
        "The same file (same device and inode) is mapped through two open() calls: the "
        "kernel compares the open file, not the inode, so the pieces never merge.",
        f"`vmascope simulate {SCRIPT} --kernel {{kernel}}`",
        "map all pieces through one file descriptor (open the file once)",
    ))
    SPECIAL = ("special", "special mapping (VM_IO/VM_PFNMAP/VM_MIXEDMAP/VM_DONTEXPAND)",
               (
        "These are special mappings (device or PFN maps) that the kernel never merges.",
        "nothing to test: VM_SPECIAL mappings are never merged on any kernel",
        "reduce the number of such mappings in the driver or library that creates them",
    ))
    UFFD = ("uffd", "different userfaultfd contexts", (
        "Different userfaultfd registrations split the range.",
        f"`vmascope simulate {SCRIPT} --kernel {{kernel}}`",
        "register whole ranges with userfaultfd",
    ))
    PERMS = ("perms", "different permissions")
    NOT_ADJACENT = ("not_adjacent", "not adjacent")
    UNEXPLAINED = ("unexplained", "no reason visible now (split earlier, or a difference "
                   "/proc does not show)")


def label(code: str) -> str:
    """The short label of a reason code (the code itself if it is not one)."""
    try:
        return Code(code).label
    except ValueError:
        return code
