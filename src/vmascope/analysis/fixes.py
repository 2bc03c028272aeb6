"""Advice from the budget: per pattern, cause and runtime, the change to make, its
expected effect in VMAs, and the `vmascope simulate` or `vmascope lab` command that shows
the effect before and after (small op scripts, docs/op-language.md).

When nothing is worth fixing, :func:`summary_line` says so in one line.
"""

from __future__ import annotations

import dataclasses

from .budget import Budget
from .headroom import Headroom
from .patterns import Pattern
from .runtimes import Fingerprint

WORTH = 256  # VMAs beyond the ideal that make a pattern worth fixing
BASE = 0x10000000
PIECES = 8  # pieces in the example scripts


@dataclasses.dataclass(frozen=True)
class Fix:
    about: str  # pattern code, cause or runtime
    change: str  # what to change
    effect: str  # expected effect in VMAs
    saves: int  # VMAs the change is expected to save
    command: str  # the vmascope command that shows before and after
    scripts: dict[str, str] = dataclasses.field(default_factory=dict)  # file -> op script

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _pieces_script(prot_before: bool, pages: int, advice: str | None = None,
                   advice_after: str | None = None) -> tuple[str, str]:
    """(before, after) op scripts of PIECES pieces of `pages` pages each."""
    n = 2 * PIECES
    size = f"{n * pages}p"
    if prot_before:
        before = [f"# commit every other {pages}-page piece with mprotect, then write it",
                  f"mmap {BASE:#x} {size} --- private,anonymous,noreserve"]
        for i in range(0, n, 2):
            addr = BASE + i * pages * 4096
            before += [f"mprotect {addr:#x} {pages}p rw-", f"touch {addr:#x} write"]
        after = ["# map read-write once; decommit with MADV_DONTNEED, keep the protection",
                 f"mmap {BASE:#x} {size} rw- private,anonymous,noreserve"]
        for i in range(n):
            addr = BASE + i * pages * 4096
            after.append(f"touch {addr:#x} write" if i % 2 == 0
                         else f"madvise {addr:#x} {pages}p dontneed")
        return "\n".join(before) + "\n", "\n".join(after) + "\n"
    assert advice is not None
    before = [f"# madvise {advice} on every other piece",
              f"mmap {BASE:#x} {size} rw- private,anonymous,noreserve"]
    for i in range(0, n, 2):
        before.append(f"madvise {BASE + i * pages * 4096:#x} {pages}p {advice}")
    if advice_after:
        for i in range(1, n, 2):
            before.append(f"madvise {BASE + i * pages * 4096:#x} {pages}p {advice_after}")
    after = [f"# madvise {advice} once on the whole range",
             f"mmap {BASE:#x} {size} rw- private,anonymous,noreserve",
             f"madvise {BASE:#x} {size} {advice}"]
    return "\n".join(before) + "\n", "\n".join(after) + "\n"


def _sim(name: str) -> str:
    return f"vmascope simulate {name}-before.ops {name}-after.ops"


def _runtime(fps: list[Fingerprint], name: str) -> Fingerprint | None:
    return next((f for f in fps if f.runtime == name), None)


def fixes(b: Budget, patterns: list[Pattern], fps: list[Fingerprint], h: Headroom,
          worth: int = WORTH) -> list[Fix]:
    """The changes worth making, the biggest expected saving first."""
    out: list[Fix] = []
    for p in patterns:
        if p.excess < worth:
            continue
        if p.code == "checkerboard":
            g = max(1, p.granularity.get("committed_pages", 1))
            before, after = _pieces_script(True, g)
            runtime = ""
            if _runtime(fps, "JVM"):
                runtime = (" For the JVM: set -Xms equal to -Xmx so the heap is committed "
                           "once and never uncommitted (and -XX:-ZUncommit with ZGC).")
            elif _runtime(fps, ".NET"):
                runtime = (" For .NET: a larger GC region size (GCRegionSize) commits in "
                           "larger pieces; DOTNET_GCConserveMemory trades this the other way.")
            elif _runtime(fps, "bdwgc"):
                runtime = (" For bdwgc: GC_UNMAP_THRESHOLD=0 disables unmapping, and "
                           "incremental mode (GC_ENABLE_INCREMENTAL) multiplies mappings.")
            elif _runtime(fps, "mimalloc"):
                runtime = " For mimalloc: MIMALLOC_ARENA_EAGER_COMMIT=1 commits arenas eagerly."
            out.append(Fix(
                "checkerboard",
                ("commit in larger pieces than one page" if g == 1 else
                 f"commit in larger pieces than {g} pages") + ", or decommit with "
                "madvise(MADV_DONTNEED) and keep the protection instead of "
                "mprotect(PROT_NONE)." + runtime,
                f"{p.excess:,} VMAs fewer when the protection is kept (the "
                "reservation's protection boundaries go away); committing in pieces "
                f"{16 * g} pages large divides them by about 16",
                p.excess, _sim("checkerboard"),
                {"checkerboard-before.ops": before, "checkerboard-after.ops": after}))
        elif p.code == "dontdump_stripes":
            before, after = _pieces_script(False, 1, "dontdump")
            out.append(Fix("dontdump_stripes",
                           "stop toggling MADV_DONTDUMP on pieces: apply it to whole "
                           "reservations once",
                           f"{p.excess:,} VMAs fewer", p.excess, _sim("dontdump"),
                           {"dontdump-before.ops": before, "dontdump-after.ops": after}))
        elif p.code == "hugepage_toggles":
            before, after = _pieces_script(False, 1, "hugepage", "nohugepage")
            go = " (Go 1.21.0 did this: upgrade Go)" if _runtime(fps, "Go") else ""
            out.append(Fix("hugepage_toggles",
                           "stop alternating MADV_HUGEPAGE/MADV_NOHUGEPAGE on pieces; "
                           "advise whole ranges once" + go,
                           f"{p.excess:,} VMAs fewer", p.excess, _sim("hugepage"),
                           {"hugepage-before.ops": before, "hugepage-after.ops": after}))
        elif p.code == "malloc_arenas":
            keep = 2
            saves = max(0, 2 * (p.count - keep))
            out.append(Fix("malloc_arenas",
                           f"MALLOC_ARENA_MAX={keep} (glibc tunable glibc.malloc.arena_max) "
                           "limits glibc's per-thread heaps",
                           f"about {saves:,} VMAs fewer ({p.count:,} arenas of 2 VMAs each "
                           f"down to {keep})", saves,
                           "vmascope analyze PID, once as is and once restarted with "
                           f"MALLOC_ARENA_MAX={keep}"))
        elif p.code == "thread_stacks":
            out.append(Fix("thread_stacks",
                           "use fewer threads (a pool), or pthread_attr_setguardsize(0) "
                           "to drop each stack's guard VMA (losing overflow detection)",
                           f"{p.excess:,} VMAs fewer without guards", p.excess,
                           "vmascope analyze PID before and after"))
    dn = _runtime(fps, ".NET")
    if dn and any("doublemapper" in e for e in dn.evidence):
        dm = next(e for e in dn.evidence if "doublemapper" in e)
        count = int(dm.split()[0].replace(",", ""))
        if count >= worth:
            out.append(Fix(".NET",
                           "DOTNET_EnableWriteXorExecute=0 turns off the W^X double "
                           "mapping of code (a security trade-off)",
                           f"the {count:,} memfd:doublemapper VMAs go away", count,
                           "vmascope analyze PID, once as is and once restarted with "
                           "DOTNET_EnableWriteXorExecute=0"))
    out += _by_cause(b, patterns, out, worth)
    out.sort(key=lambda f: -f.saves)
    return out


# Patterns whose boundaries are normal costs, not worth a fix by themselves.
_NORMAL = ("thread_stacks", "malloc_arenas", "library_segments", "file_holes")


def _by_cause(b: Budget, patterns: list[Pattern], done: list[Fix], worth: int) -> list[Fix]:
    """Fixes for the causes in anonymous reservations that no pattern's fix covers."""
    from .advice import FLAG_HINTS

    covered = {f.about for f in done}
    normal = {p.code: p.excess for p in patterns if p.code in _NORMAL}
    named = {p.code: p.excess for p in patterns}
    out = []
    prot = (b.anon_counts.get("protection", 0) - normal.get("thread_stacks", 0)
            - normal.get("malloc_arenas", 0) - named.get("checkerboard", 0))
    if prot >= worth and "checkerboard" not in covered:
        out.append(Fix("protection",
                       "change protection on whole reservations, not on pieces: decommit "
                       "with madvise(MADV_DONTNEED) and keep the protection, or commit in "
                       "larger pieces",
                       f"up to {prot:,} VMAs fewer", prot,
                       "vmascope simulate checkerboard-before.ops checkerboard-after.ops",
                       dict(zip(("checkerboard-before.ops", "checkerboard-after.ops"),
                                _pieces_script(True, 1)))))
    flags = b.anon_counts.get("vmflags", 0) - named.get("dontdump_stripes", 0) \
        - named.get("hugepage_toggles", 0)
    if flags >= worth and not covered & {"dontdump_stripes", "hugepage_toggles"}:
        top = next(iter(b.totals.flags), "")
        hint, fix = FLAG_HINTS.get(top, ("", "apply the same call to whole ranges, not "
                                         "to pieces of them"))
        out.append(Fix("vmflags", fix + (f" ({hint})" if hint else ""),
                       f"up to {flags:,} VMAs fewer", flags,
                       "vmascope simulate dontdump-before.ops dontdump-after.ops",
                       dict(zip(("dontdump-before.ops", "dontdump-after.ops"),
                                _pieces_script(False, 1, "dontdump")))))
    anon = b.anon_counts.get("anon_vma", 0)
    if anon >= worth and "anon_vma" not in covered:
        out.append(Fix("anon_vma",
                       "let the pieces share one anon_vma: write one page of the "
                       "reservation while it is accessible, before splitting it (the "
                       "seed's pre-fault), or change the protection before the first write",
                       f"up to {anon:,} VMAs fewer (distinct anon_vmas, inferred)", anon,
                       "vmascope lab run seed --kernel 6.12,host"))
    return out


def summary_line(b: Budget, patterns: list[Pattern], fx: list[Fix], h: Headroom) -> str | None:
    """One line when nothing is worth fixing; None otherwise."""
    if fx or h.level in ("warning", "critical"):
        return None
    normal = ", ".join([p.name for p in patterns if p.excess][:3]) or "none"
    return (f"Nothing worth fixing: {b.map_count:,} VMAs, {b.excess:,} more than the "
            f"ideal {b.ideal:,}, from normal shapes ({normal}).")


__all__ = ["WORTH", "Fix", "fixes", "summary_line"]
