"""Kernel behaviour epochs: which VMA merge/split behaviour a kernel release has.

An :class:`Epoch` is a set of behaviour switches. Each switch names, beside it, the kernel
change that introduced it: a commit id where it is known for certain, otherwise the
function and the release in which the behaviour is found (docs/kernel-epochs.md has the
table). ``epoch_for(release)`` maps any release string ("6.1", "6.12.117",
"6.18.44-fc-v595", "7.2.13") to its epoch. Supported: 5.15 onward.

Build configuration matters too (CONFIG_ANON_VMA_NAME, CONFIG_MEM_SOFT_DIRTY). The
defaults are those of Debian's cloud kernels (checked on 6.1, 6.12 and 7.2: soft-dirty on,
anon VMA names off); when the release asked for is the running kernel, its
/proc/config.gz (if present) decides instead.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import re

from ..errors import UsageError

OLDEST_SUPPORTED = (5, 15)

_RELEASE = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+~_.].*)?\s*$")


@dataclasses.dataclass(frozen=True)
class Epoch:
    """Behaviour switches of one kernel release (see docs/kernel-epochs.md)."""

    release: str  # the release string it was made for
    version: tuple[int, int, int]

    # is_mergeable_anon_vma: "legacy" (an unfaulted target refuses a faulted source,
    # because its empty anon_vma_chain is not singular) or "tgt_src" (the target/source
    # rewrite that allows that merge unless the source is a fork child).
    # 879bca0a2c4f "mm/vma: fix incorrectly disallowed anonymous VMA merges" (6.16).
    anon_rule: str

    # How a new range (mmap) is merged with its neighbours:
    # "vma_merge"       prev first, then next, with the prev<->next anon cross check
    #                   (mm/mmap.c vma_merge, up to 6.0);
    # "next_first"      mmap_region checks next first and then prev against next's
    #                   anon_vma (mm/mmap.c mmap_region, maple tree rewrite, 6.1-6.11);
    # "merge_new_range" vma_merge_new_range, prev wins (mm/vma.c, 6.12).
    new_range: str

    # mremap move (copy_vma) merges through vma_merge (prev first) before 6.12 and
    # through vma_merge_new_range from 6.12 (mm/vma.c copy_vma, 6.12).
    copy_vma_new_range: bool

    # mprotect of an unfaulted anonymous VMA to non-writable drops VM_ACCOUNT
    # (mm/mprotect.c mprotect_fixup, 6.7).
    mprotect_unaccount: bool

    # errno of a split that fails in madvise / PR_SET_VMA_ANON_NAME at the map_count
    # limit: ENOMEM in 5.15 (the early check in madvise_update_vma returned it
    # directly), EAGAIN once madvise_vma_behavior converted it (mm/madvise.c, 5.17).
    madvise_split_errno: str

    # PR_SET_VMA_ANON_NAME exists: 9a10064f5625 (5.17), and CONFIG_ANON_VMA_NAME=y
    # (not set in Debian's cloud kernels 6.1, 6.12, 7.2 nor on the host: EINVAL there).
    anon_vma_name: bool

    # VM_SOFTDIRTY set on every VMA (CONFIG_MEM_SOFT_DIRTY=y); shows as "sd".
    soft_dirty: bool

    # brk growth: "vma_merge" (<= 6.0: may merge the next VMA too), "expand" (6.1-6.11
    # do_brk_flags: only expands the brk VMA in place), "merge_new_range" (6.12: may
    # also swallow next), "just_expand" (vmg->just_expand, mm/vma.c, 6.13).
    brk_mode: str

    # mremap grow in place merges with the following VMA (vma_merge() with prev = the
    # VMA instead of vma_adjust(), mm/mremap.c). Seen on Debian's 6.1.176; 5.15 is
    # modelled with vma_adjust() (extend only), which is not verified.
    mremap_expand_merges_next: bool

    # mremap looks the VMA up before anything else: an unmapped ADDR is EFAULT even for
    # a shrink (mm/mremap.c, hugetlb mremap support, 5.16).
    mremap_lookup_first: bool

    # mremap's map_count checks: "legacy" (mremap_to: map_count + 2 >= max - 3, then
    # move_vma: map_count >= max - 3; Debian's 6.12.117 checked) or "6.17" (one check
    # before anything is unmapped: map_count + (1 with MREMAP_DONTUNMAP) >= max - 3; seen
    # on Debian's 7.2.13 and assumed to come with the 6.17 mremap rewrite; the host's
    # 6.18.44 cannot be checked without lowering its vm.max_map_count).
    mremap_limit: str

    # MADV_POPULATE_(READ|WRITE) runs inside madvise_walk_vmas (a hole is ENOMEM only
    # after the rest was tried, a bad VMA EINVAL at once); later it walks on its own and
    # stops with ENOMEM at the first hole (mm/madvise.c). Seen: walk on 6.1.176, own
    # walk on 6.12.117; taken to change in 6.10, not verified in between.
    populate_in_walk: bool

    # mremap(MREMAP_FIXED) of a range spanning several VMAs (mm/mremap.c, 6.17).
    mremap_multi_vma: bool

    # MADV_GUARD_INSTALL / MADV_GUARD_REMOVE exist (mm/madvise.c guard regions, 6.13);
    # installing calls anon_vma_prepare on anonymous VMAs.
    guard_regions: bool

    # Sticky VM_MAYBE_GUARD ("gu") set on the whole VMA by MADV_GUARD_INSTALL, ignored
    # for merging and kept by the merged VMA (VMA_IGNORE_MERGE_FLAGS, mm/vma.h, 6.19).
    # Also seen on the host's 6.18.44 (a 6.18.y stable backport; the first 6.18.y
    # release that has it is not known here, so 6.18.0-6.18.43 are modelled without).
    sticky_guard_flag: bool

    # A mremap copy merged into an unfaulted neighbour duplicates the moved anon_vma
    # into it (vmg->copied_from, mm/vma.c, 6.19 and 6.18.8 stable).
    copied_from_dup: bool

    # anon_vma_clone reuse test: "degree" (anon_vma->degree < 2, before Jann Horn's
    # fix) or "num_children" (num_children < 2 && num_active_vmas == 0),
    # 2555283eb40d (6.2, in 6.1 stable from 6.1.7).
    clone_reuse: str

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
        return era

    def to_json(self) -> dict[str, object]:
        out = dataclasses.asdict(self)
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


def _running_config(release: str) -> dict[str, str] | None:
    """The running kernel's build options, when ``release`` is the running kernel."""
    try:
        if os.uname().release != release.strip():
            return None
        with gzip.open("/proc/config.gz", "rt") as fh:
            text = fh.read()
    except OSError:
        return None
    config: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_"):
            key, _, val = line.partition("=")
            config[key] = val
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            config[line[2:].split()[0]] = "n"
    return config


_DEBIAN_VERSION = re.compile(r" Debian (\d+)\.(\d+)\.(\d+)")


def _running_debian_version(release: str) -> tuple[int, int, int] | None:
    """The upstream version of the running kernel when ``release`` is the running kernel
    and Debian built it: its uname (6.1.0-50-cloud-amd64) hides the stable patch level,
    which /proc/version names ("... Debian 6.1.176-1 ...")."""
    try:
        if os.uname().release != release.strip():
            return None
        with open("/proc/version") as fh:
            m = _DEBIAN_VERSION.search(fh.read())
    except OSError:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def epoch_for(
    release: str,
    *,
    anon_vma_name: bool | None = None,
    soft_dirty: bool | None = None,
) -> Epoch:
    """The behaviour epoch of a kernel release string.

    ``anon_vma_name`` / ``soft_dirty`` override the build-option defaults (Debian's cloud
    kernels: names off, soft-dirty on; the running kernel's /proc/config.gz when
    ``release`` is the running kernel).
    """
    v = parse_release(release)
    debian = _running_debian_version(release)
    if debian is not None and debian[:2] == v[:2]:
        v = debian
    if v[:2] < OLDEST_SUPPORTED:
        raise UsageError(
            f"kernel release {release!r}: vmascope models kernels 5.15 and newer "
            "(5.15, 6.1, 6.6, 6.12, 6.18, 7.x ...)"
        )
    config = _running_config(release)
    if config is not None:
        if anon_vma_name is None:
            anon_vma_name = config.get("CONFIG_ANON_VMA_NAME", "n") == "y"
        if soft_dirty is None:
            soft_dirty = config.get("CONFIG_MEM_SOFT_DIRTY", "n") == "y"
    if anon_vma_name is None:
        anon_vma_name = False
    if soft_dirty is None:
        soft_dirty = True

    def at_least(*ver: int) -> bool:
        return v >= tuple(ver) + (0,) * (3 - len(ver))

    if at_least(6, 12):
        new_range = "merge_new_range"
    elif at_least(6, 1):
        new_range = "next_first"
    else:
        new_range = "vma_merge"
    if at_least(6, 13):
        brk_mode = "just_expand"
    elif at_least(6, 12):
        brk_mode = "merge_new_range"
    elif at_least(6, 1):
        brk_mode = "expand"
    else:
        brk_mode = "vma_merge"
    stable_6_1_fix = v[:2] == (6, 1) and v[2] >= 7
    return Epoch(
        release=release.strip(),
        version=v,
        anon_rule="tgt_src" if at_least(6, 16) else "legacy",
        new_range=new_range,
        copy_vma_new_range=at_least(6, 12),
        mprotect_unaccount=at_least(6, 7),
        madvise_split_errno="EAGAIN" if at_least(5, 17) else "ENOMEM",
        anon_vma_name=at_least(5, 17) and anon_vma_name,
        soft_dirty=soft_dirty,
        brk_mode=brk_mode,
        mremap_expand_merges_next=at_least(6, 1),
        mremap_lookup_first=at_least(5, 16),
        mremap_limit="6.17" if at_least(6, 17) else "legacy",
        populate_in_walk=not at_least(6, 10),
        mremap_multi_vma=at_least(6, 17),
        guard_regions=at_least(6, 13),
        sticky_guard_flag=at_least(6, 19) or (v[:2] == (6, 18) and v[2] >= 44),
        copied_from_dup=at_least(6, 19) or (v[:2] == (6, 18) and v[2] >= 8),
        clone_reuse="num_children" if at_least(6, 2) or stable_6_1_fix else "degree",
    )


def default_release() -> str:
    """The running kernel's release (what --kernel defaults to)."""
    return os.uname().release
