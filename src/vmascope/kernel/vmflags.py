"""VM_* flags as the simulator and the rules hold them: bit i is ``model.KNOWN_VMFLAGS[i]``,
so a flag word is directly a Snapshot's VmFlags column, and their /proc mnemonics."""

from __future__ import annotations

from collections.abc import Iterable

from ..model import FLAG_ORDER, KNOWN_VMFLAGS

_BIT = {m: 1 << i for i, m in enumerate(KNOWN_VMFLAGS)}

VM_READ = _BIT["rd"]
VM_WRITE = _BIT["wr"]
VM_EXEC = _BIT["ex"]
VM_SHARED = _BIT["sh"]
VM_MAYREAD = _BIT["mr"]
VM_MAYWRITE = _BIT["mw"]
VM_MAYEXEC = _BIT["me"]
VM_MAYSHARE = _BIT["ms"]
VM_GROWSDOWN = _BIT["gd"]
VM_PFNMAP = _BIT["pf"]
VM_LOCKED = _BIT["lo"]
VM_IO = _BIT["io"]
VM_SEQ_READ = _BIT["sr"]
VM_RAND_READ = _BIT["rr"]
VM_DONTCOPY = _BIT["dc"]
VM_DONTEXPAND = _BIT["de"]
VM_ACCOUNT = _BIT["ac"]
VM_NORESERVE = _BIT["nr"]
VM_HUGETLB = _BIT["ht"]
VM_WIPEONFORK = _BIT["wf"]
VM_DONTDUMP = _BIT["dd"]
VM_MIXEDMAP = _BIT["mm"]
VM_HUGEPAGE = _BIT["hg"]
VM_NOHUGEPAGE = _BIT["nh"]
VM_MERGEABLE = _BIT["mg"]
VM_UFFD_MISSING = _BIT["um"]
VM_UFFD_WP = _BIT["uw"]
VM_UFFD_MINOR = _BIT["ui"]
VM_LOCKONFAULT = _BIT["lf"]
VM_SEALED = _BIT["sl"]
VM_SOFTDIRTY = _BIT["sd"]
VM_DROPPABLE = _BIT["dp"]
VM_MAYBE_GUARD = _BIT["gu"]

# VM_PKEY_BIT0..3 (x86): the VMA's protection key. Not printed in VmFlags (smaps has
# "ProtectionKey:"), so the model keeps them above the bits of KNOWN_VMFLAGS and
# snapshots leave them out; they take part in merging like any flag.
PKEY_SHIFT = 56
VM_PKEY_MASK = 0xF << PKEY_SHIFT

VM_SPECIAL = VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP
VM_ACCESS_FLAGS = VM_READ | VM_WRITE | VM_EXEC
VM_UFFD_FLAGS = VM_UFFD_MISSING | VM_UFFD_WP | VM_UFFD_MINOR
PERM_FLAGS = VM_ACCESS_FLAGS | VM_SHARED | VM_MAYSHARE

_PRINT = tuple((_BIT[m], m) for m in FLAG_ORDER)
_ALL_KNOWN = (1 << len(KNOWN_VMFLAGS)) - 1


_NAMES_CACHE: dict[int, list[str]] = {}


def flag_names(flags: int) -> list[str]:
    """VmFlags mnemonics of a flag word, in the kernel's printing order."""
    hit = _NAMES_CACHE.get(flags)
    if hit is not None:
        return list(hit)
    out = [m for bit, m in _PRINT if flags & bit]
    rest = flags & ~_ALL_KNOWN
    i = len(KNOWN_VMFLAGS)
    while rest >> i:
        if rest >> i & 1:
            out.append(f"bit{i}")
        i += 1
    if len(_NAMES_CACHE) < 4096:
        _NAMES_CACHE[flags] = out
    return list(out)


def flags_from_names(names: Iterable[str], extra: dict[str, int] | None = None) -> int:
    """Mnemonics -> flag word. Unknown mnemonics get bits above the known ones in ``extra``."""
    word = 0
    for m in names:
        bit = _BIT.get(m)
        if bit is None:
            if extra is None:
                continue
            bit = extra.setdefault(m, 1 << (len(KNOWN_VMFLAGS) + len(extra)))
        word |= bit
    return word
