"""The budget as the reports show it: the headline sentence, the rows of the cause
table and the short explanations of the terms (shared by the text and HTML reports)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..analysis.budget import CAUSE_LABELS, CAUSES

if TYPE_CHECKING:
    from ..analysis import Analysis
    from ..analysis.budget import CauseTotals

# Two lines each, for readers who do not know the terms.
TERMS: tuple[tuple[str, str], ...] = (
    ("VMA", "One mapping the kernel keeps for a range of addresses with the same "
     "protection, flags and backing: one line of /proc/PID/maps. "
     "vm.max_map_count caps how many a process may have; past it mmap and mprotect fail."),
    ("reservation", "A range the program mapped as one piece (an anonymous heap reserve, "
     "a library's file): ideally one VMA. "
     "Each change of protection or flags inside it, and each hole, costs one VMA more."),
    ("anon_vma", "The kernel object that tracks a VMA's anonymous pages, made at its "
     "first write. Neighbours with different anon_vmas never merge again; /proc does not "
     "show them, so vmascope infers them."),
)


# Short names of the VmFlags mnemonics that split ranges most often.
FLAG_WORDS: dict[str, str] = {
    "dd": "dontdump", "ac": "account", "hg": "hugepage", "nh": "nohugepage",
    "lo": "locked", "lf": "lockonfault", "wf": "wipeonfork", "gu": "guard",
    "mg": "mergeable", "nr": "noreserve", "dc": "dontfork", "sr": "seqread",
    "rr": "randread", "um": "uffd-missing", "uw": "uffd-wp", "ui": "uffd-minor",
}


def which(c: CauseTotals, cause: str, limit: int = 3) -> str:
    """What differs, for one cause: 'rw-p/---p', 'dd, ac', 'inferred', '8K of holes'."""
    if cause == "protection":
        items = list(c.protections.items())[:limit]
        return ", ".join(k for k, _ in items)
    if cause == "vmflags":
        return ", ".join(f"{m} ({FLAG_WORDS[m]})" if m in FLAG_WORDS else m
                         for m in list(c.flags)[:limit])
    if cause == "anon_vma":
        return ", ".join(c.anon_confidence)
    if cause == "hole":
        from .fmt import human_bytes

        return f"{human_bytes(c.hole_bytes)} of holes"
    return ""


def cause_rows(c: CauseTotals) -> list[tuple[str, str, int, str]]:
    """(cause code, label, boundaries, which) for every cause with boundaries."""
    return [(k, CAUSE_LABELS[k], c.counts[k], which(c, k)) for k in CAUSES if c.counts[k]]


def headline(a: Analysis) -> str:
    b = a.budget
    if b is None:
        return ""
    healthy = a.healthy_line
    if healthy:
        return healthy
    head = f"{b.map_count:,} VMAs where {b.ideal:,} would do"
    big = b.largest
    if big is not None and big.excess >= 0.5 * b.excess and big.excess > 1:
        # One reservation holds most of the excess: name it and its commonest cause.
        top = big.causes.dominant()
        assert top is not None
        n = big.causes.counts[top]
        w = which(big.causes, top, 1)
        text = (f"{head}: {n:,} boundaries with {CAUSE_LABELS[top]}"
                + (f" ({w})" if w else "") + f" in one reservation at {big.start:#x}")
        mine = [p for p in a.patterns if p.start == big.start and p.excess]
    else:
        top = b.totals.dominant()
        if top is None:
            return head + "."
        n = b.totals.counts[top]
        w = which(b.totals, top, 1)
        text = f"{head}: {n:,} boundaries with {CAUSE_LABELS[top]}" + (f" ({w})" if w else "")
        mine = [p for p in a.patterns if p.excess]
    if mine:
        text += f": {mine[0].name}"
    return text + "."
