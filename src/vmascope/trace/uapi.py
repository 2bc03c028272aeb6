"""The kernel's symbolic constants that strace prints, as numbers (x86-64 values).

The one table the strace parser reads to turn ``PROT_READ|PROT_WRITE`` back into the raw
argument the kernel saw. Each group names the uapi header it comes from (include/uapi/
unless said otherwise); x86-64 uses the asm-generic values for all of them except the
few arch/x86/include/uapi/asm/mman.h adds.
"""

from __future__ import annotations

import errno as _errno
import signal as _signal

# include/uapi/asm-generic/mman-common.h, include/uapi/linux/mman.h,
# arch/x86/include/uapi/asm/mman.h (MAP_32BIT).
PROT = {
    "PROT_NONE": 0x0, "PROT_READ": 0x1, "PROT_WRITE": 0x2, "PROT_EXEC": 0x4,
    "PROT_SEM": 0x8, "PROT_GROWSDOWN": 0x01000000, "PROT_GROWSUP": 0x02000000,
}
MAP = {
    "MAP_FILE": 0x0, "MAP_SHARED": 0x01, "MAP_PRIVATE": 0x02, "MAP_SHARED_VALIDATE": 0x03,
    "MAP_DROPPABLE": 0x08, "MAP_FIXED": 0x10, "MAP_ANONYMOUS": 0x20, "MAP_ANON": 0x20,
    "MAP_32BIT": 0x40, "MAP_GROWSDOWN": 0x0100, "MAP_DENYWRITE": 0x0800,
    "MAP_EXECUTABLE": 0x1000, "MAP_LOCKED": 0x2000, "MAP_NORESERVE": 0x4000,
    "MAP_POPULATE": 0x8000, "MAP_NONBLOCK": 0x10000, "MAP_STACK": 0x20000,
    "MAP_HUGETLB": 0x40000, "MAP_SYNC": 0x80000, "MAP_FIXED_NOREPLACE": 0x100000,
    "MAP_UNINITIALIZED": 0x4000000,
    # include/uapi/asm-generic/hugetlb_encode.h: log2(size) << 26
    "MAP_HUGE_64KB": 16 << 26, "MAP_HUGE_512KB": 19 << 26, "MAP_HUGE_1MB": 20 << 26,
    "MAP_HUGE_2MB": 21 << 26, "MAP_HUGE_8MB": 23 << 26, "MAP_HUGE_16MB": 24 << 26,
    "MAP_HUGE_32MB": 25 << 26, "MAP_HUGE_256MB": 28 << 26, "MAP_HUGE_512MB": 29 << 26,
    "MAP_HUGE_1GB": 30 << 26, "MAP_HUGE_2GB": 31 << 26, "MAP_HUGE_16GB": 34 << 26,
}
MAP_TYPE = 0x0F
MADV = {
    "MADV_NORMAL": 0, "MADV_RANDOM": 1, "MADV_SEQUENTIAL": 2, "MADV_WILLNEED": 3,
    "MADV_DONTNEED": 4, "MADV_FREE": 8, "MADV_REMOVE": 9, "MADV_DONTFORK": 10,
    "MADV_DOFORK": 11, "MADV_MERGEABLE": 12, "MADV_UNMERGEABLE": 13, "MADV_HUGEPAGE": 14,
    "MADV_NOHUGEPAGE": 15, "MADV_DONTDUMP": 16, "MADV_DODUMP": 17, "MADV_WIPEONFORK": 18,
    "MADV_KEEPONFORK": 19, "MADV_COLD": 20, "MADV_PAGEOUT": 21, "MADV_POPULATE_READ": 22,
    "MADV_POPULATE_WRITE": 23, "MADV_DONTNEED_LOCKED": 24, "MADV_COLLAPSE": 25,
    "MADV_HWPOISON": 100, "MADV_SOFT_OFFLINE": 101, "MADV_GUARD_INSTALL": 102,
    "MADV_GUARD_REMOVE": 103,
}
# include/uapi/linux/mman.h
MREMAP = {"MREMAP_MAYMOVE": 1, "MREMAP_FIXED": 2, "MREMAP_DONTUNMAP": 4}
MLOCK = {"MLOCK_ONFAULT": 0x01}
# include/uapi/asm-generic/mman.h (x86-64 uses it)
MCL = {"MCL_CURRENT": 1, "MCL_FUTURE": 2, "MCL_ONFAULT": 4}
# include/uapi/asm-generic/mman-common.h
PKEY = {"PKEY_DISABLE_ACCESS": 0x1, "PKEY_DISABLE_WRITE": 0x2}
# include/uapi/linux/memfd.h
MFD = {"MFD_CLOEXEC": 0x1, "MFD_ALLOW_SEALING": 0x2, "MFD_HUGETLB": 0x4,
       "MFD_NOEXEC_SEAL": 0x8, "MFD_EXEC": 0x10}
# include/uapi/linux/shm.h
SHM = {"SHM_RDONLY": 0o10000, "SHM_RND": 0o20000, "SHM_REMAP": 0o40000,
       "SHM_EXEC": 0o100000}
# include/uapi/linux/mempolicy.h
MPOL = {
    "MPOL_DEFAULT": 0, "MPOL_PREFERRED": 1, "MPOL_BIND": 2, "MPOL_INTERLEAVE": 3,
    "MPOL_LOCAL": 4, "MPOL_PREFERRED_MANY": 5, "MPOL_WEIGHTED_INTERLEAVE": 6,
    "MPOL_F_STATIC_NODES": 1 << 15, "MPOL_F_RELATIVE_NODES": 1 << 14,
    "MPOL_F_NUMA_BALANCING": 1 << 13,
    "MPOL_MF_STRICT": 1 << 0, "MPOL_MF_MOVE": 1 << 1, "MPOL_MF_MOVE_ALL": 1 << 2,
}
# include/uapi/linux/sched.h
CLONE = {
    "CSIGNAL": 0x000000FF, "CLONE_NEWTIME": 0x00000080, "CLONE_VM": 0x00000100,
    "CLONE_FS": 0x00000200, "CLONE_FILES": 0x00000400, "CLONE_SIGHAND": 0x00000800,
    "CLONE_PIDFD": 0x00001000, "CLONE_PTRACE": 0x00002000, "CLONE_VFORK": 0x00004000,
    "CLONE_PARENT": 0x00008000, "CLONE_THREAD": 0x00010000, "CLONE_NEWNS": 0x00020000,
    "CLONE_SYSVSEM": 0x00040000, "CLONE_SETTLS": 0x00080000,
    "CLONE_PARENT_SETTID": 0x00100000, "CLONE_CHILD_CLEARTID": 0x00200000,
    "CLONE_DETACHED": 0x00400000, "CLONE_UNTRACED": 0x00800000,
    "CLONE_CHILD_SETTID": 0x01000000, "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000, "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000, "CLONE_NEWNET": 0x40000000, "CLONE_IO": 0x80000000,
    "CLONE_CLEAR_SIGHAND": 0x100000000, "CLONE_INTO_CGROUP": 0x200000000,
}
CLONE_THREAD = CLONE["CLONE_THREAD"]
CLONE_VM = CLONE["CLONE_VM"]
# include/uapi/linux/prctl.h
PR_SET_VMA = 0x53564D41
PR = {
    "PR_SET_PDEATHSIG": 1, "PR_GET_PDEATHSIG": 2, "PR_GET_DUMPABLE": 3,
    "PR_SET_DUMPABLE": 4, "PR_GET_UNALIGN": 5, "PR_SET_UNALIGN": 6, "PR_GET_KEEPCAPS": 7,
    "PR_SET_KEEPCAPS": 8, "PR_GET_FPEMU": 9, "PR_SET_FPEMU": 10, "PR_GET_FPEXC": 11,
    "PR_SET_FPEXC": 12, "PR_GET_TIMING": 13, "PR_SET_TIMING": 14, "PR_SET_NAME": 15,
    "PR_GET_NAME": 16, "PR_GET_ENDIAN": 19, "PR_SET_ENDIAN": 20, "PR_GET_SECCOMP": 21,
    "PR_SET_SECCOMP": 22, "PR_CAPBSET_READ": 23, "PR_CAPBSET_DROP": 24, "PR_GET_TSC": 25,
    "PR_SET_TSC": 26, "PR_GET_SECUREBITS": 27, "PR_SET_SECUREBITS": 28,
    "PR_SET_TIMERSLACK": 29, "PR_GET_TIMERSLACK": 30, "PR_TASK_PERF_EVENTS_DISABLE": 31,
    "PR_TASK_PERF_EVENTS_ENABLE": 32, "PR_MCE_KILL": 33, "PR_MCE_KILL_GET": 34,
    "PR_SET_MM": 35, "PR_SET_CHILD_SUBREAPER": 36, "PR_GET_CHILD_SUBREAPER": 37,
    "PR_SET_NO_NEW_PRIVS": 38, "PR_GET_NO_NEW_PRIVS": 39, "PR_GET_TID_ADDRESS": 40,
    "PR_SET_THP_DISABLE": 41, "PR_GET_THP_DISABLE": 42, "PR_SET_FP_MODE": 45,
    "PR_GET_FP_MODE": 46, "PR_CAP_AMBIENT": 47, "PR_GET_SPECULATION_CTRL": 52,
    "PR_SET_SPECULATION_CTRL": 53, "PR_SET_TAGGED_ADDR_CTRL": 55,
    "PR_GET_TAGGED_ADDR_CTRL": 56, "PR_SET_IO_FLUSHER": 57, "PR_GET_IO_FLUSHER": 58,
    "PR_SET_SYSCALL_USER_DISPATCH": 59, "PR_SCHED_CORE": 62, "PR_SET_MDWE": 65,
    "PR_GET_MDWE": 66, "PR_SET_MEMORY_MERGE": 67, "PR_GET_MEMORY_MERGE": 68,
    "PR_SET_VMA": PR_SET_VMA, "PR_SET_VMA_ANON_NAME": 0, "PR_SET_PTRACER": 0x59616D61,
    "PR_SET_PTRACER_ANY": (1 << 64) - 1,
    # PR_SET_MDWE's argument
    "PR_MDWE_REFUSE_EXEC_GAIN": 1 << 0, "PR_MDWE_NO_INHERIT": 1 << 1,
}
# include/uapi/linux/fcntl.h
AT = {"AT_FDCWD": (1 << 64) - 100, "AT_SYMLINK_NOFOLLOW": 0x100, "AT_EMPTY_PATH": 0x1000}

# Shift names strace prints as "21<<MAP_HUGE_SHIFT" (include/uapi/asm-generic/
# hugetlb_encode.h, include/uapi/linux/memfd.h).
SHIFTS = {"MAP_HUGE_SHIFT": 26, "MFD_HUGE_SHIFT": 26}

SYMBOLS: dict[str, int] = {}
for _table in (PROT, MAP, MADV, MREMAP, MLOCK, MCL, PKEY, MFD, SHM, MPOL, CLONE, PR, AT):
    SYMBOLS.update(_table)
# Signal names in clone's flags (the exit signal) and clone3's exit_signal: Python's
# signal module on Linux has the kernel's x86-64 numbers (arch/x86/include/uapi/asm/
# signal.h).
for _sig in _signal.Signals:
    SYMBOLS.setdefault(_sig.name, int(_sig))

# Kernel-internal restart codes strace may print as results (include/linux/errno.h).
ERRNO_EXTRA = {"ERESTARTSYS": 512, "ERESTARTNOINTR": 513, "ERESTARTNOHAND": 514,
               "ENOIOCTLCMD": 515, "ERESTART_RESTARTBLOCK": 516}


def errno_number(name: str) -> int | None:
    """ENOMEM -> 12 (include/uapi/asm-generic/errno-base.h, errno.h; Python's errno
    module has the same values on Linux), None if unknown."""
    value = getattr(_errno, name, None)
    if isinstance(value, int) and name.startswith("E"):
        return value
    return ERRNO_EXTRA.get(name)
