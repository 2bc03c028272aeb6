"""What a recorder sees: one :class:`Event` per system call or page fault of the target.

Every recorder (the BPF one, strace, an imported strace log) produces Events with the
system call's raw arguments as unsigned integers, whatever form it read them in; one
converter (``trace.convert``) turns them into ops of the op language, so that the
recorders never decide what a call means to the model.
"""

from __future__ import annotations

import dataclasses

# The calls a recorder keeps, by their kernel name. ``fault`` is a user page fault: args
# (address, error_code) with error_code as the x86 page-fault code (bit 1: a write).
CALLS: frozenset[str] = frozenset({
    "mmap", "munmap", "mprotect", "pkey_mprotect", "madvise", "process_madvise", "mremap",
    "brk", "mlock", "mlock2", "munlock", "mlockall", "munlockall", "mseal", "prctl", "mbind",
    "set_mempolicy", "memfd_create", "clone", "clone3", "fork", "vfork", "execve",
    "execveat", "exit", "exit_group", "pkey_alloc", "pkey_free", "shmat", "shmdt", "fault",
})

# The x86 page-fault error code's write bit (arch/x86/include/asm/trap_pf.h X86_PF_WRITE).
FAULT_WRITE = 1 << 1


@dataclasses.dataclass(slots=True)
class FileRef:
    """The file an mmap maps, as far as the recorder knows it."""

    path: str | None = None  # full path (strace -y, /proc), or None
    dev: int = 0  # st_dev as the kernel encodes it (new_encode_dev), 0 if unknown
    inode: int = 0
    basename: str | None = None  # the dentry's name when the full path is not known


@dataclasses.dataclass(slots=True)
class Event:
    """One call (or fault) of one thread of the target, in the order it happened.

    ``t`` is seconds since the trace started. ``args`` are the raw arguments (at most 6,
    unsigned); for clone3, ``args[0]`` is ``clone_args.flags`` (read from user memory),
    not the structure's address. ``ret`` is the result as a signed integer (-errno on failure), None for a
    fault or a call that never returned (exit, a successful execve's own thread).
    ``stack`` is user instruction pointers, innermost first: the address the call was
    made from (or the faulting instruction), then its callers. ``inferred`` marks events
    a recorder did not see but deduced (strace cannot see page faults).
    """

    t: float
    pid: int  # the process (tgid)
    tid: int
    call: str
    args: tuple[int, ...] = ()
    ret: int | None = None
    stack: tuple[int, ...] = ()
    # the same frames already symbolized by the recorder ("libc.so.6:__mmap+0x26"), when
    # it knows them (strace -k); empty otherwise, and the trace's symbolizer names them
    frames: tuple[str, ...] = ()
    file: FileRef | None = None  # mmap with a file descriptor
    inferred: bool = False
    text: str | None = None  # a string argument: prctl's anon name, memfd's name, exec path
