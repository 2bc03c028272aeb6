"""The one data model: a Snapshot of a process's VMAs plus metadata.

Every source (a live pid, a pasted maps/smaps dump, a snapshot file, the simulator, the
lab's executor) produces a :class:`Snapshot`. It keeps its VMAs as columns (numpy
arrays), never as a Python object per field, so that two million VMAs stay compact:
about 45 bytes a VMA for the maps columns.

Column conventions
------------------
``start``, ``end``   uint64, the VMA is ``[start, end)``.
``perms``            uint8 bit set of ``PERM_*`` as /proc/PID/maps prints them.
``offset``           uint64, the file offset in bytes (for anonymous VMAs the kernel
                     prints ``vm_pgoff << PAGE_SHIFT``, which is non-zero only for
                     mremap'd or simulated VMAs; /proc prints 0 for most anonymous ones).
``dev``              uint32, ``major << 20 | minor`` (the kernel's internal encoding).
``inode``            uint64.
``name_id``          int32 index into ``names``; -1 for a VMA with no name.

Optional columns: ``smaps`` (field name -> int64 array; kB fields are stored in bytes;
-1 where the field was absent), ``vmflags`` (uint64 bit set over ``flag_names``),
``policy_id`` (int32 index into ``policies``, from numa_maps; -1 unknown) and
``anon_vma`` (int64 anon_vma identity, known for simulated VMAs and with the kernel
view; -1 none) and ``kview`` (field name -> uint64 array: the kernel's view of each VMA
read by ``procfs.kview``; identities renumbered per capture, 0 none).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .kconst import KNOWN_VMFLAGS, PAGE_SHIFT
from .meta import (SCHEMA_VERSION, SnapshotMeta, headroom,  # noqa: F401 - re-exported
                   rank_backings, summary_head)

PERM_READ = 1
PERM_WRITE = 2
PERM_EXEC = 4
PERM_SHARED = 8  # 's' in the fourth column (VM_MAYSHARE); 'p' otherwise

# KNOWN_VMFLAGS (kconst): the mnemonics' bits; mnemonics a snapshot meets that are not
# there are appended per snapshot.

# Order in which /proc/PID/smaps prints the mnemonics (show_smap_vma_flags prints by
# VM_* bit number). VM_MAYBE_GUARD ("gu") took bit 11, the old VM_DENYWRITE slot, so it
# prints between "pf" and "lo" (seen on 6.18.44: "rd wr mr mw me gu nr").
FLAG_ORDER: tuple[str, ...] = tuple(
    m for m in KNOWN_VMFLAGS[:KNOWN_VMFLAGS.index("dw") + 1]) + ("gu",) + tuple(
    m for m in KNOWN_VMFLAGS[KNOWN_VMFLAGS.index("dw") + 1:] if m != "gu")

# What each mnemonic means, for explanations.
VMFLAG_MEANING: dict[str, str] = {
    "rd": "readable", "wr": "writeable", "ex": "executable", "sh": "shared",
    "mr": "may read", "mw": "may write", "me": "may execute", "ms": "may share",
    "gd": "stack grows down (VM_GROWSDOWN)", "pf": "pure PFN range (VM_PFNMAP)",
    "dw": "disabled write to the mapped file (VM_DENYWRITE)", "lo": "locked (VM_LOCKED)",
    "io": "memory-mapped I/O (VM_IO)", "sr": "sequential read advised (VM_SEQ_READ)",
    "rr": "random read advised (VM_RAND_READ)",
    "dc": "not copied on fork (VM_DONTCOPY, MADV_DONTFORK)",
    "de": "not expandable on remap (VM_DONTEXPAND)",
    "ac": "accounted (VM_ACCOUNT)", "nr": "swap space not reserved (VM_NORESERVE)",
    "ht": "hugetlb (VM_HUGETLB)", "sf": "synchronous page faults (VM_SYNC)",
    "ar": "architecture-specific flag", "wf": "wiped on fork (VM_WIPEONFORK)",
    "dd": "not in core dumps (VM_DONTDUMP, MADV_DONTDUMP)", "bt": "arm64 BTI guarded",
    "mm": "mixed map (VM_MIXEDMAP)", "hg": "huge pages advised (VM_HUGEPAGE)",
    "nh": "no huge pages advised (VM_NOHUGEPAGE)", "mg": "KSM mergeable (VM_MERGEABLE)",
    "um": "userfaultfd missing-page tracking", "uw": "userfaultfd write-protect tracking",
    "ui": "userfaultfd minor-fault tracking", "ss": "shadow stack", "sl": "sealed (mseal)",
    "lf": "locked on fault (VM_LOCKONFAULT)", "sd": "soft-dirty (ignored for merging)",
    "mt": "arm64 MTE allowed", "dp": "droppable (VM_DROPPABLE)", "gu": "may hold guard regions",
}

# smaps fields whose value is in kB (stored in bytes in the Snapshot).
# Anything else numeric (THPeligible, ProtectionKey) is stored as printed.


def perms_to_bits(text: str) -> int:
    """'rw-p' -> bits. Raises ValueError on anything else."""
    if len(text) != 4:
        raise ValueError(text)
    bits = 0
    for ch, want, bit in zip(text[:3], "rwx", (PERM_READ, PERM_WRITE, PERM_EXEC)):
        if ch == want:
            bits |= bit
        elif ch != "-":
            raise ValueError(text)
    if text[3] == "s":
        bits |= PERM_SHARED
    elif text[3] != "p":
        raise ValueError(text)
    return bits


def bits_to_perms(bits: int) -> str:
    return (
        ("r" if bits & PERM_READ else "-")
        + ("w" if bits & PERM_WRITE else "-")
        + ("x" if bits & PERM_EXEC else "-")
        + ("s" if bits & PERM_SHARED else "p")
    )


_PERMS_TABLE = [bits_to_perms(b) for b in range(16)]


# The kernel view's columns (procfs/kview.py reads them with the BPF reader; the simulator
# gives its own, kernel/sim/result.py model_view), and the bits of its ``bits`` column.
KVIEW_FIELDS: tuple[str, ...] = (
    "vm_flags", "pgoff", "dev", "ino", "file", "anon_vma", "root", "chain", "children",
    "active", "policy", "uffd", "name", "bits")
KV_CLOSE, KV_DEGREE, KV_NOCOUNTS, KV_CHAINMAX, KV_NOPOLICY, KV_NOUFFD, KV_NONAME = (
    1 << i for i in range(7))
KV_ABSENT = 1 << 16  # a VMA of maps the iterator does not see (the vsyscall page)

_KVIEW_IDS = {"file": "f", "anon_vma": "av", "root": "av", "policy": "p", "uffd": "u",
              "name": "n"}


def kview_json(kv: dict[str, int] | None) -> dict[str, Any] | None:
    """One VMA's kernel view for JSON: identities as av3, f1, ... (None: not seen)."""
    if kv is None:
        return None
    out: dict[str, Any] = {}
    for k, v in kv.items():
        if k in _KVIEW_IDS:
            out[k] = f"{_KVIEW_IDS[k]}{v}" if v else None
        elif k in ("vm_flags", "pgoff"):
            out[k] = hex(v)
        else:
            out[k] = v
    return out


def encode_dev(major: int, minor: int) -> int:
    return (major << 20) | minor


def decode_dev(dev: int) -> tuple[int, int]:
    return dev >> 20, dev & 0xFFFFF


@dataclasses.dataclass(frozen=True, slots=True)
class Vma:
    """One VMA as a record: handy for small results, tests and explanations.

    Large collections stay in :class:`Snapshot` columns; ``Snapshot.vma(i)`` builds one.
    """

    start: int
    end: int
    perms: str = "rw-p"
    offset: int = 0
    dev: int = 0
    inode: int = 0
    name: str | None = None
    flags: frozenset[str] | None = None  # VmFlags mnemonics, None when unknown
    anon_vma: int | None = None  # identity, known in simulated/lab snapshots, kview
    policy: str | None = None  # numa_maps policy text
    smaps: dict[str, int] | None = None
    kview: dict[str, int] | None = None  # the kernel's view (KVIEW_FIELDS)

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def pgoff(self) -> int:
        """The offset in pages (vm_pgoff)."""
        return self.offset >> PAGE_SHIFT

    def maps_line(self) -> str:
        major, minor = decode_dev(self.dev)
        head = (
            f"{self.start:08x}-{self.end:08x} {self.perms} {self.offset:08x} "
            f"{major:02x}:{minor:02x} {self.inode}"
        )
        if self.name is None:
            return head + " "
        return head.ljust(73) + self.name if len(head) < 73 else head + " " + self.name


_U64 = np.dtype(np.uint64)


class Snapshot:
    """VMAs of one address space (columns) plus metadata."""

    __slots__ = (
        "start", "end", "perms", "offset", "dev", "inode", "name_id", "names",
        "smaps", "vmflags", "flag_names", "policy_id", "policies", "anon_vma", "meta",
        "kview",
    )

    def __init__(
        self,
        *,
        start: np.ndarray,
        end: np.ndarray,
        perms: np.ndarray,
        offset: np.ndarray,
        dev: np.ndarray,
        inode: np.ndarray,
        name_id: np.ndarray,
        names: Sequence[str],
        meta: SnapshotMeta | None = None,
        smaps: dict[str, np.ndarray] | None = None,
        vmflags: np.ndarray | None = None,
        flag_names: Sequence[str] = KNOWN_VMFLAGS,
        policy_id: np.ndarray | None = None,
        policies: Sequence[str] = (),
        anon_vma: np.ndarray | None = None,
        kview: dict[str, np.ndarray] | None = None,
    ) -> None:
        n = len(start)
        self.start = np.asarray(start, dtype=np.uint64)
        self.end = np.asarray(end, dtype=np.uint64)
        self.perms = np.asarray(perms, dtype=np.uint8)
        self.offset = np.asarray(offset, dtype=np.uint64)
        self.dev = np.asarray(dev, dtype=np.uint32)
        self.inode = np.asarray(inode, dtype=np.uint64)
        self.name_id = np.asarray(name_id, dtype=np.int32)
        self.names = list(names)
        for col in (self.end, self.perms, self.offset, self.dev, self.inode, self.name_id):
            if len(col) != n:
                raise ValueError("snapshot columns differ in length")
        self.smaps = dict(smaps or {})
        self.vmflags = None if vmflags is None else np.asarray(vmflags, dtype=np.uint64)
        self.flag_names = list(flag_names)
        self.policy_id = None if policy_id is None else np.asarray(policy_id, dtype=np.int32)
        self.policies = list(policies)
        self.anon_vma = None if anon_vma is None else np.asarray(anon_vma, dtype=np.int64)
        self.meta = meta or SnapshotMeta()
        self.kview = None if kview is None else {
            k: np.asarray(v, dtype=np.uint64) for k, v in kview.items()}

    # -- construction -------------------------------------------------------------------

    @classmethod
    def empty(cls, meta: SnapshotMeta | None = None) -> Snapshot:
        return cls.from_vmas([], meta=meta)

    @classmethod
    def from_vmas(cls, vmas: Iterable[Vma], meta: SnapshotMeta | None = None) -> Snapshot:
        """Build columns from records (simulator and lab results, tests)."""
        vmas = list(vmas)
        names: list[str] = []
        name_index: dict[str, int] = {}
        flag_names = list(KNOWN_VMFLAGS)
        flag_index = {f: i for i, f in enumerate(flag_names)}
        policies: list[str] = []
        policy_index: dict[str, int] = {}

        def intern(value: str | None, table: list[str], index: dict[str, int]) -> int:
            if value is None:
                return -1
            if value not in index:
                index[value] = len(table)
                table.append(value)
            return index[value]

        n = len(vmas)
        name_id = np.empty(n, dtype=np.int32)
        vmflags = np.zeros(n, dtype=np.uint64)
        have_flags = any(v.flags is not None for v in vmas)
        have_policy = any(v.policy is not None for v in vmas)
        have_anon = any(v.anon_vma is not None for v in vmas)
        policy_id = np.full(n, -1, dtype=np.int32)
        anon = np.full(n, -1, dtype=np.int64)
        smaps_keys: list[str] = []
        for v in vmas:
            for k in v.smaps or ():
                if k not in smaps_keys:
                    smaps_keys.append(k)
        smaps = {k: np.full(n, -1, dtype=np.int64) for k in smaps_keys}
        for i, v in enumerate(vmas):
            name_id[i] = intern(v.name, names, name_index)
            if v.flags:
                bits = 0
                for f in v.flags:
                    if f not in flag_index:
                        if len(flag_names) >= 64:
                            raise ValueError("more than 64 distinct VmFlags mnemonics")
                        flag_index[f] = len(flag_names)
                        flag_names.append(f)
                    bits |= 1 << flag_index[f]
                vmflags[i] = bits
            policy_id[i] = intern(v.policy, policies, policy_index)
            if v.anon_vma is not None:
                anon[i] = v.anon_vma
            for k, val in (v.smaps or {}).items():
                smaps[k][i] = val
        return cls(
            start=np.array([v.start for v in vmas], dtype=np.uint64),
            end=np.array([v.end for v in vmas], dtype=np.uint64),
            perms=np.array([perms_to_bits(v.perms) for v in vmas], dtype=np.uint8),
            offset=np.array([v.offset for v in vmas], dtype=np.uint64),
            dev=np.array([v.dev for v in vmas], dtype=np.uint32),
            inode=np.array([v.inode for v in vmas], dtype=np.uint64),
            name_id=name_id,
            names=names,
            meta=meta,
            smaps=smaps,
            vmflags=vmflags if have_flags else None,
            flag_names=flag_names,
            policy_id=policy_id if have_policy else None,
            policies=policies,
            anon_vma=anon if have_anon else None,
        )

    # -- access -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.start)

    @property
    def map_count(self) -> int:
        return len(self.start)

    def name(self, i: int) -> str | None:
        nid = int(self.name_id[i])
        return None if nid < 0 else self.names[nid]

    def flags(self, i: int) -> frozenset[str] | None:
        if self.vmflags is None:
            return None
        bits = int(self.vmflags[i])
        return frozenset(f for b, f in enumerate(self.flag_names) if bits >> b & 1)

    def flag_mask(self, mnemonic: str) -> int:
        """The bit of ``mnemonic`` in ``vmflags`` (0 if this snapshot never saw it)."""
        try:
            return 1 << self.flag_names.index(mnemonic)
        except ValueError:
            return 0

    def vma(self, i: int) -> Vma:
        if i < 0:
            i += len(self)
        pid = None if self.policy_id is None else int(self.policy_id[i])
        anon = None if self.anon_vma is None else int(self.anon_vma[i])
        return Vma(
            start=int(self.start[i]),
            end=int(self.end[i]),
            perms=_PERMS_TABLE[int(self.perms[i])],
            offset=int(self.offset[i]),
            dev=int(self.dev[i]),
            inode=int(self.inode[i]),
            name=self.name(i),
            flags=self.flags(i),
            anon_vma=None if anon is None or anon < 0 else anon,
            policy=None if pid is None or pid < 0 else self.policies[pid],
            smaps={k: int(col[i]) for k, col in self.smaps.items() if col[i] >= 0} or None,
            kview=self.kview_of(i),
        )

    def kview_of(self, i: int) -> dict[str, int] | None:
        """The kernel's view of VMA i (None without one, or if the iterator missed it)."""
        if self.kview is None or int(self.kview["bits"][i]) >> 16 & 1:
            return None
        return {k: int(col[i]) for k, col in self.kview.items()}

    def __iter__(self) -> Iterator[Vma]:
        for i in range(len(self)):
            yield self.vma(i)

    def perms_text(self, i: int) -> str:
        return _PERMS_TABLE[int(self.perms[i])]

    def sizes(self) -> np.ndarray:
        """Each VMA's size in bytes, as int64 (the unsigned difference seen as signed: no
        copy; a VMA is far below 2**63 bytes)."""
        return (self.end - self.start).view(np.int64)

    def nbytes(self) -> int:
        """Memory held by the columns (for the compactness checks)."""
        total = 0
        for col in (self.start, self.end, self.perms, self.offset, self.dev, self.inode,
                    self.name_id, self.vmflags, self.policy_id, self.anon_vma):
            if col is not None:
                total += col.nbytes
        total += sum(c.nbytes for c in (self.kview or {}).values())
        return total + sum(c.nbytes for c in self.smaps.values())

    def backing_counts(self) -> list[tuple[str, int]]:
        """(backing, VMA count), most VMAs first. Unnamed VMAs count as '[anon]'."""
        if len(self) == 0:
            return []
        counts = np.bincount(self.name_id.astype(np.int64) + 1, minlength=len(self.names) + 1)
        return rank_backings(counts, self.names)

    def headroom(self) -> tuple[int, int | None, float | None]:
        """(map_count, max_map_count, percent used)."""
        return headroom(self.meta, len(self))

    # -- serialisation ------------------------------------------------------------------

    def vma_json(self, i: int) -> dict[str, Any]:
        v = self.vma(i)
        out: dict[str, Any] = {
            "start": hex(v.start),
            "end": hex(v.end),
            "size": v.size,
            "perms": v.perms,
            "offset": v.offset,
            "dev": "%02x:%02x" % decode_dev(v.dev),
            "inode": v.inode,
            "name": v.name,
        }
        if v.flags is not None:
            out["flags"] = sorted(v.flags, key=self.flag_names.index)
        if self.anon_vma is not None:
            out["anon_vma"] = v.anon_vma
        if self.policy_id is not None:
            out["policy"] = v.policy
        if v.smaps:
            out["smaps"] = v.smaps
        if self.kview is not None:
            out["kernel"] = kview_json(v.kview)
        return out

    def to_json(self, *, vmas: bool = True) -> dict[str, Any]:
        out = summary_head(self.meta, len(self))
        if vmas:
            out["vmas"] = [self.vma_json(i) for i in range(len(self))]
        return out

    def maps_text(self) -> str:
        """The VMAs printed as /proc/PID/maps would print them."""
        return "".join(self.vma(i).maps_line() + "\n" for i in range(len(self)))

    def __repr__(self) -> str:
        return (
            f"<Snapshot pid={self.meta.pid} comm={self.meta.comm!r} "
            f"vmas={len(self)} source={self.meta.source}>"
        )
