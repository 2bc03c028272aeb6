"""The kernel changes the model knows, as data: one table drives the epochs, the docs and
the citations.

Each :class:`Change` says that from release ``since`` (and from the stable releases in
``stable``) the behaviour switch ``switch`` has ``value``, names the upstream commit that
made it so, and says on which real kernels the lab has checked it. A switch whose commit
is not known says so (``commit=None``) and why in ``note``: such a release boundary is
assumed. ``BASE`` gives each switch's value in the oldest supported release.

``python -m vmascope.kernel.changes`` prints the Markdown table of docs/kernel-epochs.md
(a test checks that the page holds exactly that table).
"""

from __future__ import annotations

import dataclasses
from typing import Any

Version = tuple[int, ...]

# The lab's real kernels, by the release strings the checks ran on.
LAB = ("5.10.223", "6.1.176", "6.12.117", "6.18.44", "7.2.13", "7.3.4", "7.3-rc7")


@dataclasses.dataclass(frozen=True)
class Change:
    switch: str
    value: Any
    since: Version  # first mainline release (major, minor)
    commit: str | None  # upstream commit id, None when not known (then: assumed)
    title: str  # the commit's subject, or what changed
    summary: str  # what the change does to VMAs, for the docs
    verified: tuple[str, ...] = ()  # lab kernels on which the behaviour was checked
    stable: tuple[Version, ...] = ()  # stable releases that got it earlier: (6, 18, 8)
    note: str = ""  # why a boundary is assumed, or what is not known

    @property
    def citation(self) -> str:
        """'879bca0a2c4f (6.16)', or the title and release when the commit is unknown."""
        rel = ".".join(map(str, self.since))
        if self.commit:
            return f"{self.commit[:12]} ({rel})"
        return f"{self.title} ({rel}, assumed)"

    def applies(self, v: Version) -> bool:
        if v[:2] >= self.since[:2]:
            return True
        return any(v[:2] == s[:2] and v >= s for s in self.stable)


# Values in the oldest supported release (5.10).
BASE: dict[str, Any] = {
    "anon_rule": "legacy",
    "new_range": "vma_merge",
    "copy_vma_new_range": False,
    "mprotect_unaccount": False,
    "madvise_split_errno": "ENOMEM",
    "anon_vma_name": False,
    "brk_mode": "vma_merge",
    "mremap_expand_merges_next": False,
    "mremap_lookup_first": False,
    "mremap_limit": "legacy",
    "populate_advice": False,
    "lf_mnemonic": False,
    "onfault_skips_populate": False,
    "populate_in_walk": True,
    "mremap_multi_vma": False,
    "guard_regions": False,
    "sticky_guard_flag": False,
    "copied_from_dup": False,
    "clone_reuse": "degree",
    "mseal": False,
    "madv_collapse": False,
    "uffd_wp_shmem": False,
    "uffd_pgoff_fix": False,
    "uffd_keep_modes": False,
    "map_stack_nohugepage": False,
}

CHANGES: tuple[Change, ...] = (
    Change("clone_reuse", "num_children", (6, 0), "2555283eb40d",
           "mm/rmap: Fix anon_vma->degree ambiguity leading to double-reuse",
           "anon_vma_clone reuses an anon_vma with `num_children < 2 && num_active_vmas == "
           "0` instead of `degree < 2`; only matters for forks of forks",
           note="also taken by older stable trees (4.14.292 has it); the 5.15.y release "
                "that did is not known here, so 5.15 is modelled without it"),
    Change("new_range", "next_first", (6, 1), "4dd1b84140c1",
           "mm/mmap: use advanced maple tree API for mmap_region()",
           "a new mapping tries to merge with next first and then with prev against next's "
           "anon_vma: between anon_vma X and anon_vma Y it joins Y; between an unfaulted "
           "prev and a faulted next it joins only next",
           verified=("6.1.176",)),
    Change("brk_mode", "expand", (6, 1), "2e7ce7d354f2",
           "mm/mmap: change do_brk_flags() to expand existing VMA and add do_brk_munmap()",
           "brk only expands the brk VMA in place",
           verified=("6.1.176",)),
    Change("mremap_expand_merges_next", True, (6, 1), "ca3d76b0aa80",
           "mm: add merging after mremap resize",
           "growing a VMA in place with mremap merges the following VMA when it becomes "
           "adjacent and compatible",
           verified=("6.1.176", "6.12.117", "6.18.44", "7.2.13", "7.3.4")),
    Change("mprotect_unaccount", True, (6, 7), "9b9143298585",
           "mm/mprotect: allow unfaulted VMAs to be unaccounted on mprotect()",
           "making an unfaulted anonymous VMA non-writable drops VM_ACCOUNT, so it can "
           "merge with a never-writable neighbour again",
           verified=("6.12.117", "6.18.44", "7.2.13", "7.3.4")),
    Change("populate_in_walk", False, (6, 9), "631426ba1d45",
           "mm/madvise: make MADV_POPULATE_(READ|WRITE) handle VM_FAULT_RETRY properly",
           "MADV_POPULATE_READ/WRITE walks the range on its own and stops with ENOMEM at "
           "the first hole (before: inside madvise_walk_vmas, where a hole is ENOMEM only "
           "after the rest was tried, so a bad VMA's EINVAL wins)",
           verified=("6.1.176", "6.12.117", "6.18.44", "7.2.13", "7.3.4"), stable=((6, 6, 30),)),
    Change("new_range", "merge_new_range", (6, 12), "cacded5e42b9",
           "mm: avoid using vma_merge() for new VMAs",
           "vma_merge_new_range() in mm/vma.c: a new mapping tries prev first again",
           verified=("6.12.117", "6.18.44", "7.2.13", "7.3.4")),
    Change("copy_vma_new_range", True, (6, 12), "cacded5e42b9",
           "mm: avoid using vma_merge() for new VMAs",
           "mremap's copy_vma merges through vma_merge_new_range (before: vma_merge, prev "
           "first)", verified=("6.12.117", "6.18.44", "7.2.13", "7.3.4")),
    Change("brk_mode", "merge_new_range", (6, 12), "cacded5e42b9",
           "mm: avoid using vma_merge() for new VMAs",
           "brk grows through vma_merge_new_range, which may also swallow the next VMA",
           verified=("6.12.117",)),
    Change("brk_mode", "just_expand", (6, 13), "c4d91e225ff3",
           "mm/vma: add expand-only VMA merge mode and optimise do_brk_flags()",
           "brk never looks at the VMA after the heap (vmg->just_expand)",
           verified=("6.18.44", "7.2.13", "7.3.4"),
           note="the commit came through the 6.12-rc hotfixes by its history; the model "
                "keeps 6.12 on merge_new_range, which agrees with 6.12.117 on every brk "
                "script the lab has run: no script yet tells the two apart there"),
    Change("guard_regions", True, (6, 13), "662df3e5c376",
           "mm: madvise: implement lightweight guard page mechanism",
           "MADV_GUARD_INSTALL / MADV_GUARD_REMOVE; installing prepares an anon_vma on "
           "anonymous VMAs; touching a guard page is SIGSEGV; earlier kernels: EINVAL",
           verified=("6.18.44", "7.2.13", "7.3.4")),
    Change("anon_rule", "tgt_src", (6, 16), "879bca0a2c4f",
           "mm/vma: fix incorrectly disallowed anonymous VMA merges",
           "is_mergeable_anon_vma looks at the target and the source: a faulted VMA may "
           "merge into an unfaulted neighbour (before, the neighbour's empty "
           "anon_vma_chain was not 'singular'), unless the source is a fork child",
           verified=("6.1.176", "6.12.117", "6.18.44", "7.2.13", "7.3.4")),
    Change("mremap_multi_vma", True, (6, 17), "d23cb648e365",
           "mm/mremap: permit mremap() move of multiple VMAs",
           "mremap(MREMAP_FIXED) with old_len == new_len may move a range that spans "
           "several VMAs, keeping the gaps (with MREMAP_DONTUNMAP too: the sources stay); "
           "before: EFAULT",
           verified=("6.18.44", "7.2.13", "7.3.4")),
    Change("mremap_limit", "6.17", (6, 17), None,
           "mremap checks map_count once, before unmapping anything",
           "`map_count + 1 >= max - 3` with MREMAP_DONTUNMAP (the old mapping stays), "
           "`map_count >= max - 3` otherwise; before: `map_count + 2 >= max - 3` in "
           "mremap_to, then `map_count >= max - 3` in move_vma",
           verified=("6.1.176", "6.12.117", "7.2.13"),
           note="seen on 7.2.13; the series that changed the check came after the 6.17 "
                "mremap rewrite and its mainline commit was not found, so 6.17 is "
                "assumed; the host's 6.18.44 cannot be checked without lowering its "
                "vm.max_map_count"),
    Change("sticky_guard_flag", True, (6, 19), "5dba5cc2e0ff",
           "mm: introduce VM_MAYBE_GUARD and make visible in /proc/$pid/smaps",
           "VM_MAYBE_GUARD (`gu`) is set on the whole VMA by guard installation, ignored "
           "for merging (VMA_IGNORE_MERGE_FLAGS) and kept by the merged VMA",
           verified=("6.18.44",), stable=((6, 18, 37),)),
    Change("copied_from_dup", True, (6, 19), "61f67c230a5e",
           "mm/vma: fix anon_vma UAF on mremap() faulted, unfaulted merge",
           "an mremap'd faulted VMA merged into an unfaulted neighbour gives the merged VMA "
           "its anon_vma (vmg->copied_from); 6.16.0-6.18.7 merged without it",
           verified=("6.18.44",), stable=((6, 18, 8),)),
    Change("madvise_split_errno", "EAGAIN", (5, 17), "ac1e9acc5acf",
           "mm: rearrange madvise code to allow for reuse",
           "a split that fails at vm.max_map_count in madvise (or PR_SET_VMA_ANON_NAME) is "
           "EAGAIN: the map_count check moved into the path whose ENOMEM "
           "madvise_vma_behavior turns into EAGAIN",
           verified=("6.1.176", "6.12.117", "7.2.13"),
           note="read from the code on both sides of the change, not from its diff"),
    Change("anon_vma_name", True, (5, 17), "9a10064f5625",
           "mm: add a field to store names for private anonymous memory",
           "PR_SET_VMA_ANON_NAME; also needs CONFIG_ANON_VMA_NAME, which Debian's cloud "
           "kernels and the host do not set (EINVAL there; checked)"),
    Change("onfault_skips_populate", True, (5, 18), "b67bf49ce7aa",
           "mm/munlock: delete FOLL_MLOCK and FOLL_POPULATE",
           "mlock2(MLOCK_ONFAULT) no longer walks the range with get_user_pages: before, a "
           "PROT_NONE part made it fail with ENOMEM (EFAULT from the walk)",
           verified=("5.10.223", "6.1.176", "6.12.117", "6.18.44", "7.2.13", "7.3.4")),
    Change("lf_mnemonic", True, (6, 2), "8614d6c5eda0",
           "smaps names VM_LOCKONFAULT (\"lf\")",
           "/proc/PID/smaps prints VM_LOCKONFAULT as \"lf\"; before, as \"??\" (no name)",
           verified=("5.10.223", "6.1.176", "6.12.117", "6.18.44", "7.2.13")),
    Change("populate_advice", True, (5, 14), "4ca9b3859dac",
           "mm/madvise: introduce MADV_POPULATE_(READ|WRITE) to prefault page tables",
           "MADV_POPULATE_READ and MADV_POPULATE_WRITE exist (before: EINVAL, unknown advice)",
           verified=("5.10.223", "6.1.176", "6.12.117", "6.18.44", "7.2.13", "7.3.4")),
    Change("mremap_lookup_first", True, (5, 16), "550a7d60bd5e",
           "mm, hugepages: add mremap() support for hugepage backed vma",
           "mremap looks the VMA up before anything else: an unmapped address is EFAULT "
           "even for a shrink",
           verified=("6.1.176", "6.12.117", "6.18.44", "7.2.13", "7.3.4")),
    Change("map_stack_nohugepage", True, (6, 7), "c4608d1bf7c6",
           "mm: mmap: map MAP_STACK to VM_NOHUGEPAGE",
           "mmap(MAP_STACK) sets VM_NOHUGEPAGE (`nh`): a thread stack never merges with "
           "anonymous memory mapped without it (the op language's `stack` flag). Later "
           "kernels set it only with CONFIG_TRANSPARENT_HUGEPAGE, which Debian's have",
           note="a trace of glibc threads shows it: pthread stacks are MAP_STACK"),
    Change("madv_collapse", True, (6, 1), None,
           "mm/madvise: introduce MADV_COLLAPSE sync hugepage collapse",
           "MADV_COLLAPSE (25) exists: EINVAL on a VMA that holds no 2 MiB aligned range or "
           "is VM_NOHUGEPAGE (whatever transparent_hugepage/enabled says), ENOMEM for a "
           "hole; it changes no VMA. Before: EINVAL (unknown advice)",
           verified=LAB,
           note="the commit id was not looked up; 6.1 is where the lab sees it first (5.10 "
                "does not have it, and no 5.15-6.0 kernel was checked)"),
    Change("uffd_wp_shmem", True, (5, 19), "b1f9e876862d",
           "mm/uffd: enable write protection for shmem & hugetlbfs",
           "UFFDIO_REGISTER with the write-protect mode accepts shmem (a shared anonymous "
           "mapping, a memfd); before, EINVAL (anonymous private memory only)",
           verified=LAB,
           note="the lab sees the change between 5.10 and 6.1; no 5.11-6.0 kernel was "
                "checked"),
    Change("uffd_pgoff_fix", True, (6, 3), None,
           "mm/uffd: fix vma operation where start addr cuts part of vma",
           "UFFDIO_REGISTER/UNREGISTER propose the merge with the page offset of the "
           "range; before, with the VMA's own vm_pgoff, so a range starting inside a VMA "
           "never merged with the next VMA",
           verified=LAB,
           note="the commit id was not looked up; the lab sees 6.1.176 without the fix "
                "and 6.12.117 with it, 6.3 is assumed"),
    Change("uffd_keep_modes", True, (7, 3), None,
           "userfaultfd: a registration may not drop write-protect",
           "UFFDIO_REGISTER without the write-protect mode over a VMA already registered "
           "with the same userfaultfd for write-protect is EBUSY, nothing is changed; "
           "before, the VMA kept its modes (a subset) or took the new ones",
           verified=("6.18.44", "7.2.13", "7.3.4", "7.3-rc7"),
           note="found by lab verify --family uffd on 7.3.4 and 7.3-rc7 (7.2.13 does not "
                "do it); the commit was not looked up"),
    Change("mseal", True, (6, 10), "8be7258aad44", "mseal: add mseal syscall",
           "mseal (syscall 462) sets VM_SEALED (`sl` in smaps) through vma_modify, so it "
           "splits and merges like mprotect (a sealed VMA merges only with sealed "
           "neighbours); a range with a hole is ENOMEM and nothing is sealed. On a sealed "
           "VMA mprotect, munmap, mmap(MAP_FIXED) over it and mremap of it or onto it are "
           "EPERM, and so is discarding advice (dontneed, free, dontfork, wipeonfork, "
           "guard_install) on private anonymous memory that is not writable. The checks "
           "are made VMA by VMA: what the call did to the VMAs before the sealed one "
           "(mprotect's changes, munmap's split at the start) stays; before: ENOSYS",
           verified=LAB,
           note="6.10 and 6.11 checked the whole range before changing anything "
                "(can_modify_mm); the per-VMA checks the lab sees on 6.12.117 are "
                "modelled from 6.10 on (no lab kernel is a 6.10 or 6.11)"),
)


def values_for(v: Version) -> dict[str, Any]:
    """Every switch's value in release v (the latest change that applies wins)."""
    out = dict(BASE)
    for c in sorted(CHANGES, key=lambda c: c.since):
        if c.applies(v):
            out[c.switch] = c.value
    return out


def first_change(switch: str) -> Change:
    """The (first) change of a switch: what a rule that depends on it cites."""
    return next(c for c in CHANGES if c.switch == switch)


def markdown_table() -> str:
    """The switches table of docs/kernel-epochs.md."""
    lines = ["| switch | value | from | commit | what changes | checked on |",
             "| --- | --- | --- | --- | --- | --- |"]
    for c in sorted(CHANGES, key=lambda c: (c.since, c.switch)):
        since = ".".join(map(str, c.since))
        if c.stable:
            since += " (stable " + ", ".join(".".join(map(str, s)) for s in c.stable) + ")"
        commit = f"`{c.commit}` {c.title}" if c.commit else f"assumed: {c.note}"
        what = c.summary + (f". Note: {c.note}" if c.note and c.commit else "")
        checked = ", ".join(c.verified) or "sources only"
        lines.append(f"| `{c.switch}` | `{c.value}` | {since} | {commit} | {what} | "
                     f"{checked} |")
    base = ", ".join(f"`{k}` = `{v}`" for k, v in BASE.items())
    lines.append("")
    lines.append(f"Before these changes (5.10): {base}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
