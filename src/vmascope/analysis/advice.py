"""Advice: the dominant reason, phrased as a hypothesis with the command that tests it.

Advice is never a verdict. It says what is most likely going on given the snapshot and
names a vmascope command that checks it on real kernels (the lab) or in the simulator.
"""

from __future__ import annotations

import dataclasses

from .explain import WhyNotMerged
from .headroom import Headroom

# The kernel the lab compares the host with: before the 6.16 anon_vma change.
OLD_KERNEL = "6.12"


@dataclasses.dataclass(frozen=True)
class Advice:
    reason: str
    share: float  # fraction of look-alike pairs with this reason
    hypothesis: str
    test_command: str
    mitigation: str

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


_SCRIPT = "pattern.ops"
_LAB = f"vmascope lab run {_SCRIPT} --kernel {OLD_KERNEL},host"

_TEMPLATES: dict[str, tuple[str, str, str]] = {
    "anon_vma": (
        "Pages were written in neighbouring pieces before those pieces became identical "
        "(for example committed one by one inside a PROT_NONE reservation), so each "
        "piece got its own anon_vma at its first write fault and the kernel can never "
        "merge them again.",
        "see the pattern in `vmascope lab run seed --kernel 6.1,6.12,host`; then write "
        f"the runtime's commit/decommit sequence as an op script ({_SCRIPT}) and run "
        f"`vmascope simulate {_SCRIPT} --kernel {{kernel}}` and `{_LAB}`",
        "make the pieces share one anon_vma: change protection before the first write "
        "(mprotect the whole range first, then fault), or fault one page of the "
        "reservation while it is accessible so that later splits inherit its anon_vma; "
        "or decommit with madvise(MADV_DONTNEED) instead of mprotect(PROT_NONE)",
    ),
    "anon_vma_unfaulted": (
        "A written (faulted) piece is next to a never-written one; kernels before 6.16 "
        "refuse to merge the two (fixed by commit 879bca0a2c4f in 6.16).",
        f"`{_LAB}` on a script of the pattern: the old kernel should keep the VMAs "
        "apart and the new one merge them",
        "run on 6.16 or newer, or touch one page of every piece before changing its "
        "protection back",
    ),
    "vmflags": (
        "Neighbours differ in VmFlags that /proc shows ({detail}). {flag_hint}",
        "check with `grep -B20 VmFlags /proc/PID/smaps` around the example address, and "
        f"replay the calls with `vmascope simulate {_SCRIPT} --kernel {{kernel}}`",
        "{flag_fix}",
    ),
    "anon_name": (
        "Neighbouring pieces carry different PR_SET_VMA_ANON_NAME names.",
        f"`vmascope simulate {_SCRIPT} --kernel {{kernel}}` with and without the `name` ops",
        "name a whole reservation once instead of naming each piece",
    ),
    "mempolicy": (
        "Neighbouring pieces have different NUMA policies (mbind).",
        "compare the policies in /proc/PID/numa_maps, then `vmascope simulate "
        f"{_SCRIPT} --kernel {{kernel}}` with the mbind ops",
        "bind whole reservations, not pieces",
    ),
    "file": (
        "The same file is mapped through separate open() calls; VMAs of different "
        "open files never merge.",
        f"`vmascope simulate {_SCRIPT} --kernel {{kernel}}`",
        "map all pieces through one file descriptor",
    ),
    "pgoff": (
        "The pieces were moved (mremap) after being written, so their page offsets no "
        "longer line up.",
        f"`vmascope simulate {_SCRIPT} --kernel {{kernel}}` with the mremap ops",
        "avoid moving written anonymous memory next to other memory",
    ),
    "fork_child": (
        "This process is a fork child: VMAs with anon_vmas inherited from the parent "
        "are not merged with others.",
        f"`{_LAB}` with a `fork` op before the pattern",
        "create the runtime's reservations after fork, or exec",
    ),
    "uffd": (
        "Different userfaultfd registrations split the range.",
        f"`vmascope simulate {_SCRIPT} --kernel {{kernel}}`",
        "register whole ranges with userfaultfd",
    ),
    "special": (
        "These are special mappings (device or PFN maps) that the kernel never merges.",
        "nothing to test: VM_SPECIAL mappings are never merged on any kernel",
        "reduce the number of such mappings in the driver or library that creates them",
    ),
}


# Per VmFlags mnemonic: (what usually sets it on part of a range, how to avoid the split).
FLAG_HINTS: dict[str, tuple[str, str]] = {
    "ac": ("VM_ACCOUNT differs: one side was mapped (or made) writable and charged to "
           "the commit limit and the other was not, e.g. a RELRO segment made read-only "
           "after relocation, or pieces of a reservation committed with mprotect.",
           "reserve with MAP_NORESERVE (then no piece carries VM_ACCOUNT), or commit "
           "whole reservations the same way; a few such splits per library are normal"),
    "nr": ("MAP_NORESERVE was used for some mappings and not for their neighbours.",
           "map all pieces of a reservation with the same MAP_NORESERVE choice"),
    "dd": ("madvise(MADV_DONTDUMP) was applied to pieces of a range.",
           "apply MADV_DONTDUMP to whole reservations"),
    "hg": ("madvise(MADV_HUGEPAGE) was applied to pieces of a range.",
           "apply MADV_HUGEPAGE to whole reservations"),
    "nh": ("madvise(MADV_NOHUGEPAGE) (or prctl PR_SET_THP_DISABLE) was applied to pieces.",
           "apply MADV_NOHUGEPAGE to whole reservations"),
    "dc": ("madvise(MADV_DONTFORK) was applied to pieces of a range.",
           "apply MADV_DONTFORK to whole reservations"),
    "wf": ("madvise(MADV_WIPEONFORK) was applied to pieces of a range.",
           "apply MADV_WIPEONFORK to whole reservations"),
    "lo": ("mlock was applied to pieces of a range.", "lock whole ranges, or use mlockall"),
    "lf": ("mlock2(MLOCK_ONFAULT) was applied to pieces of a range.", "lock whole ranges"),
    "mg": ("KSM (MADV_MERGEABLE) was enabled on pieces of a range.",
           "enable KSM on whole ranges (or per process with PR_SET_MEMORY_MERGE)"),
    "sr": ("madvise(MADV_SEQUENTIAL) was applied to pieces of a range.",
           "advise whole ranges"),
    "rr": ("madvise(MADV_RANDOM) was applied to pieces of a range.", "advise whole ranges"),
}
_GENERIC_FLAG = ("Some call (madvise, mlock, userfaultfd) changed the flags of part of a "
                 "range.", "apply the same call to whole ranges, not to pieces of them")


def advise(why: WhyNotMerged, headroom: Headroom) -> list[Advice]:
    out: list[Advice] = []
    if why.pairs == 0:
        return out
    for rc in why.reasons[:2]:
        tpl = _TEMPLATES.get(rc.reason)
        if tpl is None:
            continue
        hyp, cmd, mit = tpl
        share = rc.count / why.pairs
        top_flag = next(iter(rc.flags), "")
        flag_hint, flag_fix = FLAG_HINTS.get(top_flag, _GENERIC_FLAG)
        text = hyp.format(detail=rc.detail, flag_hint=flag_hint)
        mit = mit.format(flag_fix=flag_fix)
        if rc.confidence == "inferred":
            text = "Hypothesis (inferred, not visible in /proc): " + text
        else:
            text = "Hypothesis: " + text
        out.append(Advice(rc.reason, share, text, cmd.format(kernel=why.kernel), mit))
        if share >= 0.5:
            break  # the dominant reason says enough
    if why.unexplained and why.unexplained / why.pairs >= 0.5:
        out.append(
            Advice(
                "unexplained",
                why.unexplained / why.pairs,
                f"Hypothesis: by what /proc shows, kernel {why.kernel} would merge these "
                "pairs; the snapshot probably comes from an older kernel, or something "
                "/proc does not show keeps them apart (file pages mapped through separate "
                "open() calls, a fork child's inherited anon_vmas).",
                f"`vmascope analyze TARGET --kernel {OLD_KERNEL}` and `{_LAB}`",
                "upgrade the kernel if an older one keeps the VMAs apart",
            )
        )
    if headroom.level in ("warning", "critical") and out:
        first = out[0]
        out[0] = dataclasses.replace(
            first, hypothesis=first.hypothesis + f" The process uses {headroom.percent_used:.0f}% "
            "of vm.max_map_count, so this matters now."
        )
    return out
