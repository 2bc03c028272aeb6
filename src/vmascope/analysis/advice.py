"""Advice: the dominant reason, phrased as a hypothesis with the command that tests it.

Advice is never a verdict. It says what is most likely going on given the snapshot and
names a vmascope command that checks it on real kernels (the lab) or in the simulator.
"""

from __future__ import annotations

import dataclasses

from ..reasons import LAB, OLD_KERNEL, Code
from .explain import WhyNotMerged
from .headroom import Headroom

@dataclasses.dataclass(frozen=True)
class Advice:
    reason: str
    share: float  # fraction of look-alike pairs with this reason
    hypothesis: str
    test_command: str
    mitigation: str

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


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
        tpl = Code(rc.reason).advice
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
                Code.UNEXPLAINED.value,
                why.unexplained / why.pairs,
                f"Hypothesis: by what /proc shows, kernel {why.kernel} would merge these "
                "pairs; the snapshot probably comes from an older kernel, or something "
                "/proc does not show keeps them apart (file pages mapped through separate "
                "open() calls, a fork child's inherited anon_vmas).",
                f"`vmascope analyze TARGET --kernel {OLD_KERNEL}` and `{LAB}`",
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
