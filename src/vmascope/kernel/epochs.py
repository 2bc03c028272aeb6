"""Kernel behaviour epochs: which VMA merge/split behaviour a kernel release has.

An :class:`Epoch` is a set of behaviour switches. Their values per release come from one
table, :mod:`vmascope.kernel.changes`, which names beside each change the upstream commit
and release that introduced it (and says so openly where a boundary is assumed).
``epoch_for(release)`` maps any release string ("6.1", "6.12.117", "6.18.44-fc-v595",
"7.2.13") to its epoch. Supported: 5.10 onward.

Build configuration matters too (CONFIG_ANON_VMA_NAME, CONFIG_MEM_SOFT_DIRTY). The
defaults are those of Debian's cloud kernels (checked on 6.1, 6.12 and 7.2: soft-dirty on,
anon VMA names off). This module reads nothing from the host: for the running kernel,
``vmascope.host.epoch_for`` passes its facts (patch level, /proc/config.gz) in ``facts``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ..errors import UsageError
from .changes import values_for

OLDEST_SUPPORTED = (5, 10)

_RELEASE = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+~_.].*)?\s*$")


@dataclasses.dataclass(frozen=True)
class Epoch:
    """Behaviour switches of one kernel release (see docs/kernel-epochs.md)."""

    release: str  # the release string it was made for
    version: tuple[int, int, int]

    # The switches. What each value means, the commit and release that introduced it and
    # the kernels it was checked on: kernel/changes.py (and docs/kernel-epochs.md).
    anon_rule: str  # is_mergeable_anon_vma: "legacy" / "tgt_src"
    new_range: str  # new-range merge: "vma_merge" / "next_first" / "merge_new_range"
    copy_vma_new_range: bool  # mremap's copy_vma through vma_merge_new_range
    mprotect_unaccount: bool  # mprotect to non-writable drops VM_ACCOUNT when unfaulted
    madvise_split_errno: str  # errno of a split at the limit in madvise: ENOMEM / EAGAIN
    anon_vma_name: bool  # PR_SET_VMA_ANON_NAME exists and CONFIG_ANON_VMA_NAME=y
    soft_dirty: bool  # CONFIG_MEM_SOFT_DIRTY: "sd" on every VMA (never affects merging)
    brk_mode: str  # "vma_merge" / "expand" / "merge_new_range" / "just_expand"
    mremap_expand_merges_next: bool  # mremap grow in place merges the next VMA
    mremap_lookup_first: bool  # mremap: EFAULT for an unmapped address before anything
    mremap_limit: str  # mremap's map_count checks: "legacy" / "6.17"
    populate_advice: bool  # MADV_POPULATE_READ / MADV_POPULATE_WRITE exist
    lf_mnemonic: bool  # smaps prints VM_LOCKONFAULT as "lf" (before: "??")
    onfault_skips_populate: bool  # MLOCK_ONFAULT does not walk the range with gup
    populate_in_walk: bool  # MADV_POPULATE_* inside madvise_walk_vmas
    mremap_multi_vma: bool  # MREMAP_FIXED moves ranges spanning several VMAs
    guard_regions: bool  # MADV_GUARD_INSTALL / MADV_GUARD_REMOVE
    sticky_guard_flag: bool  # VM_MAYBE_GUARD ("gu"), ignored for merging
    copied_from_dup: bool  # mremap merge duplicates the moved anon_vma (vmg->copied_from)
    clone_reuse: str  # anon_vma_clone reuse: "degree" / "num_children"
    mseal: bool  # the mseal syscall (before: ENOSYS)
    madv_collapse: bool  # MADV_COLLAPSE (before: EINVAL, unknown advice)
    map_stack_nohugepage: bool  # mmap(MAP_STACK) sets VM_NOHUGEPAGE
    uffd_wp_shmem: bool  # userfaultfd write-protect registration on shmem
    uffd_pgoff_fix: bool  # UFFDIO_(UN)REGISTER propose merges with the range's pgoff
    uffd_keep_modes: bool  # UFFDIO_REGISTER dropping a VMA's modes is EBUSY
    # Rules no released kernel has (kernel/whatif.py): the workbench's what-if kernels.
    hypotheses: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        """A short label of the merge-rule era, e.g. "6.16+ (tgt_src anon rule)"."""
        v = self.version
        if v >= (6, 19, 0):
            era = "6.19+"
        elif v >= (6, 16, 0):
            era = "6.16-6.18"
        elif v >= (6, 12, 0):
            era = "6.12-6.15"
        elif v >= (6, 7, 0):
            era = "6.7-6.11"
        elif v >= (6, 1, 0):
            era = "6.1-6.6"
        else:
            era = "5.15-6.0"
        if self.hypotheses:
            era += " + HYPOTHETICAL " + ", ".join(sorted(self.hypotheses))
        return era

    def to_json(self) -> dict[str, object]:
        out = dataclasses.asdict(self)
        out["hypotheses"] = sorted(self.hypotheses)
        out["version"] = ".".join(str(x) for x in self.version)
        out["name"] = self.name
        return out


def parse_release(release: str) -> tuple[int, int, int]:
    """'6.18.44-fc-v595' -> (6, 18, 44). UsageError if it is not a release string."""
    m = _RELEASE.match(release or "")
    if not m:
        raise UsageError(
            f"kernel release {release!r}: expected MAJOR.MINOR[.PATCH][-suffix], e.g. 6.12.117"
        )
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def epoch_for(
    release: str,
    *,
    anon_vma_name: bool | None = None,
    soft_dirty: bool | None = None,
    facts: Any = None,
) -> Epoch:
    """The behaviour epoch of a kernel release string.

    ``anon_vma_name`` / ``soft_dirty`` override the build-option defaults (Debian's cloud
    kernels: names off, soft-dirty on). ``facts`` (a ``vmascope.host.KernelFacts`` of the
    running kernel) supplies the patch level Debian's uname hides and /proc/config.gz.
    """
    v = parse_release(release)
    debian = getattr(facts, "debian_version", None)
    if debian is not None and debian[:2] == v[:2]:
        v = debian
    if v[:2] < OLDEST_SUPPORTED:
        raise UsageError(
            f"kernel release {release!r}: vmascope models kernels 5.15 and newer "
            "(5.10, 5.15, 6.1, 6.6, 6.12, 6.18, 7.x ...)"
        )
    config = getattr(facts, "config", None)
    if config is not None:
        if anon_vma_name is None:
            anon_vma_name = config.get("CONFIG_ANON_VMA_NAME", "n") == "y"
        if soft_dirty is None:
            soft_dirty = config.get("CONFIG_MEM_SOFT_DIRTY", "n") == "y"
    values = values_for(v)
    values["anon_vma_name"] = values["anon_vma_name"] and bool(anon_vma_name)
    return Epoch(release=release.strip(), version=v,
                 soft_dirty=True if soft_dirty is None else soft_dirty, **values)
