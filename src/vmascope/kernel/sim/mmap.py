"""mm/mmap.c: mmap, munmap, brk and stack expansion, and where new mappings go.

``do_mmap`` checks the map count ('>', as in every release), replaces what MAP_FIXED
covers, and merges the new range with its neighbours (``vma_merge_new_range``, in the
epoch's mode). ``sys_brk`` grows the heap the way each era's do_brk_flags does.
"""

from __future__ import annotations

from ...kconst import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, TASK_SIZE, page_align
from ...ops.language import Op
from .. import rules as R
from .. import vmflags as F
from .util import noreserve_honoured, vm_enough_memory
from .mm import MM, MMAP_BASE, MMAP_MIN_ADDR, OpFailed, ShmemFile, SVma, prot_bits
from .rmap import anon_vma_prepare
from .vma import do_vmi_munmap, refusal, vma_merge_new_range

STACK_GUARD_GAP = 256 << PAGE_SHIFT  # stack_guard_gap default
STACK_RLIMIT = 8 << 20  # RLIMIT_STACK default (ulimit -s 8192)


def get_unmapped_area(mm: MM, hint: int, length: int) -> int:
    """A hint that is free is used as is; otherwise top-down below MMAP_BASE."""
    if hint:
        hint = max(hint & PAGE_MASK, MMAP_MIN_ADDR)
        if hint + length <= TASK_SIZE and mm.range_free(hint, hint + length):
            return hint
    top = MMAP_BASE
    v = mm.find_vma(top)
    v = v.prev if v is not None else mm.last_vma()
    while True:
        low = v.end if v is not None else MMAP_MIN_ADDR
        if top - low >= length:
            return top - length
        if v is None:
            raise OpFailed("ENOMEM")
        top = min(top, v.start)
        v = v.prev


def do_mmap(mm: MM, op: Op) -> None:
    """mm/mmap.c do_mmap + mmap_region (anonymous mappings, private or shared)."""
    ep = mm.epoch
    length = page_align(op.length)
    if op.length == 0 or length == 0:
        raise OpFailed("EINVAL")
    shared = "shared" in op.flags
    fixed = "fixed" in op.flags
    if fixed and op.addr & ~PAGE_MASK:
        raise OpFailed("EINVAL")
    file = None
    if op.fd is not None:  # a memfd (opened read-write: VM_MAYWRITE stays)
        file = mm.files.get(op.fd)
        if file is None:
            raise OpFailed("EBADF")
        if op.offset & ~PAGE_MASK:
            raise OpFailed("EINVAL")
    flags = prot_bits(op.prot) | F.VM_MAYREAD | F.VM_MAYWRITE | F.VM_MAYEXEC
    if shared:
        if "growsdown" in op.flags:
            raise OpFailed("EINVAL")
        flags |= F.VM_SHARED | F.VM_MAYSHARE
    if "growsdown" in op.flags:
        flags |= F.VM_GROWSDOWN
    if "stack" in op.flags and ep.map_stack_nohugepage:
        flags |= F.VM_NOHUGEPAGE  # c4608d1bf7c6 (6.7): calc_vm_flag_bits
    if "noreserve" in op.flags and noreserve_honoured(mm):
        flags |= F.VM_NORESERVE
    # mm/mmap.c do_mmap: "Too many mappings?" uses '>' (every release).
    if mm.map_count > mm.max_map_count:
        if mm.tracing:
            mm.note(f"do_mmap refused: map_count {mm.map_count} > max_map_count "
                    f"{mm.max_map_count}")
        raise OpFailed("ENOMEM")
    if fixed:
        addr = op.addr
        if addr + length > TASK_SIZE:
            raise OpFailed("ENOMEM")
    else:
        addr = get_unmapped_area(mm, op.addr, length)
    end = addr + length
    if R.accountable_mapping(flags):
        if mm.overcommit is not None:  # mmap_region: charged less what MAP_FIXED unmaps
            vm_enough_memory(mm, length >> PAGE_SHIFT,
                             releasing=accounted_in(mm, addr, end) if fixed else 0)
        flags |= F.VM_ACCOUNT
    flags |= mm.soft_dirty | mm.def_flags  # def_flags: mlockall(MCL_FUTURE)
    do_vmi_munmap(mm, addr, end)  # MAP_FIXED replaces what was there
    prev = mm.prev_of(addr)
    nxt = prev.next if prev is not None else mm.head
    v: SVma | None = None
    if shared and file is None:
        # The shmem file is set up after the merge attempt, so shared anonymous
        # memory never merges at mmap time.
        pgoff = 0
    else:
        pgoff = op.offset >> PAGE_SHIFT if file is not None else addr >> PAGE_SHIFT
        vmg = R.Vmg(addr, end, pgoff, flags, file=file)
        v = vma_merge_new_range(mm, vmg, prev, nxt, ep.new_range)
    if v is None:
        v = SVma(addr, end, pgoff, flags, file)
        if shared and file is None:
            v.file = ShmemFile(mm.next_inode)
            mm.next_inode += 1
        mm.insert(v, prev)
        if mm.tracing:
            mm.note(f"new VMA {v} -> map_count {mm.map_count}")
    if "populate" in op.flags:
        from .memory import populate_range  # MAP_POPULATE faults the range in

        populate_range(mm, mm.vma_lookup(addr) or v, addr, end)
    if "populate" in op.flags and not shared and flags & F.VM_WRITE:
        anon_vma_prepare(mm, mm.vma_lookup(addr) or v)
    elif not shared and "eager-anon-vma" in ep.hypotheses:
        anon_vma_prepare(mm, mm.vma_lookup(addr) or v)  # HYPOTHETICAL (kernel/whatif.py)
    if flags & (F.VM_LOCKED | F.VM_LOCKONFAULT) == F.VM_LOCKED:
        from .mlock import mm_populate  # locked by mlockall(MCL_FUTURE): faulted in

        mm_populate(mm, addr, end, ignore_errors=True)


def accounted_in(mm: MM, start: int, end: int) -> int:
    """Pages with VM_ACCOUNT inside [start, end)."""
    n = 0
    v = mm.find_vma(start)
    while v is not None and v.start < end:
        if v.flags & F.VM_ACCOUNT:
            n += (min(v.end, end) - max(v.start, start)) >> PAGE_SHIFT
        v = v.next
    return n


def vm_munmap(mm: MM, op: Op) -> None:
    """The munmap syscall (mm/mmap.c __vm_munmap)."""
    if op.addr & ~PAGE_MASK or op.length == 0:
        raise OpFailed("EINVAL")
    length = page_align(op.length)
    if op.addr + length > TASK_SIZE:
        raise OpFailed("EINVAL")
    do_vmi_munmap(mm, op.addr, op.addr + length)


def expand_downwards(mm: MM, addr: int) -> SVma | None:
    """mm/mmap.c expand_downwards: a fault just below a VM_GROWSDOWN VMA grows it.

    Refused (SIGSEGV) below mmap_min_addr, beyond RLIMIT_STACK (8 MiB), or when an
    accessible VMA that does not grow down ends less than stack_guard_gap (256 pages)
    below the new start. The grown VMA gets an anon_vma first (anon_vma_prepare).
    """
    v = mm.find_vma(addr)
    if v is None or not v.flags & F.VM_GROWSDOWN or addr >= v.start:
        return None
    address = addr & PAGE_MASK
    if address < MMAP_MIN_ADDR or v.end - address > STACK_RLIMIT:
        return None
    prev = v.prev
    if (prev is not None and not prev.flags & F.VM_GROWSDOWN
            and prev.flags & (F.VM_READ | F.VM_WRITE | F.VM_EXEC)
            and address - prev.end < STACK_GUARD_GAP):
        return None
    if prev is not None and prev.end > address:
        return None
    anon_vma_prepare(mm, v)
    grow = (v.start - address) >> PAGE_SHIFT
    v.pgoff -= grow
    mm.set_start(v, address)
    if mm.tracing:
        mm.note(f"expand_downwards: {v} grew by {grow} page(s)")
    return v


def prctl_set_mm_brk(mm: MM, op: Op) -> None:
    """prctl(PR_SET_MM, PR_SET_MM_START_BRK and PR_SET_MM_BRK): the ``heap`` op."""
    mm.start_brk = mm.brk = page_align(op.addr)


def sys_brk(mm: MM, op: Op) -> None:
    """The brk syscall. It reports failure by returning the old break (ENOMEM here)."""
    ep = mm.epoch
    if mm.start_brk is None or mm.brk is None:
        # No `heap` op: the real break is far from the script's addresses, and moving
        # it there fails (the kernel returns the old break).
        raise OpFailed("ENOMEM")
    brk = op.addr
    if brk < mm.start_brk:
        raise OpFailed("ENOMEM")
    newbrk = page_align(brk)
    oldbrk = page_align(mm.brk)
    if oldbrk == newbrk:
        mm.brk = brk
        return
    if brk <= mm.brk:
        do_vmi_munmap(mm, newbrk, oldbrk)
        mm.brk = brk
        return
    nxt = mm.find_vma(oldbrk)
    if nxt is not None and newbrk + PAGE_SIZE > nxt.start:
        raise OpFailed("ENOMEM")
    # do_brk_flags
    if mm.map_count > mm.max_map_count:
        raise OpFailed("ENOMEM")
    vm_enough_memory(mm, (newbrk - oldbrk) >> PAGE_SHIFT)
    flags = (F.VM_READ | F.VM_WRITE | F.VM_MAYREAD | F.VM_MAYWRITE | F.VM_MAYEXEC
             | F.VM_ACCOUNT | mm.soft_dirty | mm.def_flags)
    prev = mm.prev_of(oldbrk)
    brkvma = prev if prev is not None and prev.start >= mm.start_brk else None
    vmg = R.Vmg(oldbrk, newbrk, oldbrk >> PAGE_SHIFT, flags)
    merged: SVma | None = None
    mode = ep.brk_mode
    if mode == "vma_merge":
        merged = vma_merge_new_range(mm, vmg, prev, prev.next if prev else mm.head, "vma_merge")
    elif mode in ("merge_new_range", "just_expand"):
        if brkvma is not None:
            merged = vma_merge_new_range(mm, vmg, brkvma, brkvma.next, "merge_new_range",
                                    just_expand=mode == "just_expand")
    elif brkvma is not None and brkvma.end == oldbrk:  # "expand" (6.1-6.11)
        reasons = R.can_vma_merge_after(ep, vmg, brkvma)
        if not reasons:
            brkvma.end = newbrk
            merged = brkvma
        if mm.tracing:
            mm.note(f"do_brk_flags: expand {brkvma} in place: "
                    + ("yes" if merged else "refused: " + refusal(reasons)))
    if merged is None:
        v = SVma(oldbrk, newbrk, oldbrk >> PAGE_SHIFT, flags)
        mm.insert(v, prev)
        if mm.tracing:
            mm.note(f"do_brk_flags: new VMA {v} -> map_count {mm.map_count}")
    mm.brk = brk
    if mm.def_flags & (F.VM_LOCKED | F.VM_LOCKONFAULT) == F.VM_LOCKED:
        from .mlock import mm_populate  # the brk syscall populates a locked heap

        mm_populate(mm, oldbrk, newbrk, ignore_errors=True)
