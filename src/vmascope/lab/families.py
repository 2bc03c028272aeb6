"""The lab's op-text script families: each stresses one system call or feature from
every side (``lab verify --family``); the random family and the workload families are in
lab/verify.py and workloads/."""

from __future__ import annotations

import random
from collections.abc import Callable

_MREMAP_FLAGS = ("", "maymove", "maymove,fixed", "maymove,fixed,dontunmap",
                 "maymove,dontunmap")


def mremap_script(rng: random.Random) -> list[str]:
    """mremap with every flag combination over ranges spanning VMAs and holes."""
    lines = ["mmap 0 32p --- private,anonymous,noreserve"]
    for _ in range(rng.randint(2, 6)):
        s, n = rng.randrange(0, 30), rng.choice((1, 2, 3))
        lines.append(f"mprotect {s}p {n}p rw-")
        if rng.random() < 0.7:
            lines.append(f"touch {s}p")
    if rng.random() < 0.4:
        lines.append(f"munmap {rng.randrange(0, 30)}p 1p")
    for _ in range(rng.randint(1, 3)):
        old = rng.randrange(0, 28)
        oldlen, newlen = rng.choice((1, 2, 3, 4)), rng.choice((1, 2, 3, 4, 6))
        flags = rng.choice(_MREMAP_FLAGS)
        new = f" {rng.randrange(34, 60)}p" if "fixed" in flags else ""
        lines.append(f"mremap {old}p {oldlen}p {newlen}p{new} {flags}".rstrip())
        if rng.random() < 0.5:
            lines.append(f"touch {rng.randrange(0, 60)}p")
    return lines


def forks_script(rng: random.Random) -> list[str]:
    """Forks at random points, forks of fork children (grandchildren), children exiting
    at random later points, faults and splits around them (anon_vma reuse after the
    children are gone; with the kernel view, the anon_vma counters)."""
    lines = ["mmap 0 24p --- private,anonymous,fixed,noreserve"]
    forks: list[int] = []
    made = 0
    for _ in range(rng.randint(4, 14)):
        r = rng.random()
        s, n = rng.randrange(0, 22), rng.choice((1, 2, 3))
        if r < 0.3:
            lines.append(f"mprotect {s}p {n}p rw-")
        elif r < 0.55:
            lines.append(f"touch {s}p")
        elif r < 0.7 and made < 5:
            if forks and rng.random() < 0.4:
                lines.append(f"fork {rng.choice(forks)}")  # a fork of a fork child
            else:
                lines.append("fork")
            forks.append(made)
            made += 1
        elif r < 0.85 and forks:
            lines.append(f"exit {forks.pop(rng.randrange(len(forks)))}")
        else:
            lines.append(f"mprotect {s}p {n}p ---")
    return lines


def seal_script(rng: random.Random) -> list[str]:
    """mlock, munlock, mlock2(onfault), mlockall and mseal, then what may still change."""
    lines = ["mmap 0 16p rw- private,anonymous,fixed"]
    for _ in range(rng.randint(3, 10)):
        s, n = rng.randrange(0, 15), rng.choice((1, 2, 3))
        n = min(n, 16 - s)
        lines.append(rng.choice((
            f"mlock {s}p {n}p", f"mlock {s}p {n}p onfault", f"munlock {s}p {n}p",
            f"mseal {s}p {n}p", f"mprotect {s}p {n}p r--", f"mprotect {s}p {n}p rw-",
            f"munmap {s}p {n}p", f"madvise {s}p {n}p dontneed", f"touch {s}p",
            f"mremap {s}p {n}p {n}p {rng.randrange(20, 30)}p maymove,fixed",
            rng.choice(("mlockall current", "mlockall future,onfault", "munlockall")))))
    return lines


def memfd_script(rng: random.Random) -> list[str]:
    """memfd mappings, shared and private, with continuous and broken offsets (the .NET
    double mapping: an RW and an RX view of the same pages)."""
    pages = rng.choice((4, 6, 8))
    lines = [f"memfd m {pages}p"]
    at = 0
    for _ in range(rng.randint(2, 6)):
        n = rng.choice((1, 2))
        off = rng.randrange(0, pages - n + 1)
        kind = rng.choice(("shared", "shared", "private"))
        prot = rng.choice(("rw-", "r-x", "r--"))
        lines.append(f"mmap {at}p {n}p {prot} {kind},fixed fd=m off={off}p")
        if rng.random() < 0.5:
            lines.append(f"touch {at}p" + (" read" if prot != "rw-" else ""))
        at += n + rng.choice((0, 0, 1))
    for _ in range(rng.randint(0, 3)):
        s = rng.randrange(0, max(at, 1))
        lines.append(rng.choice((f"mprotect {s}p 1p r--", f"munmap {s}p 1p",
                                 f"mremap {s}p 1p 1p {at + 4}p maymove,fixed")))
    return lines


def guard_script(rng: random.Random) -> list[str]:
    """Guard regions (MADV_GUARD_INSTALL, 6.13) followed by mprotect and mremap."""
    lines = ["mmap 0 16p rw- private,anonymous,fixed"]
    for _ in range(rng.randint(3, 9)):
        s, n = rng.randrange(0, 14), rng.choice((1, 2))
        lines.append(rng.choice((
            f"madvise {s}p {n}p guard_install", f"madvise {s}p {n}p guard_remove",
            f"mprotect {s}p {n}p r--", f"mprotect {s}p {n}p rw-", f"touch {s}p",
            f"mremap {s}p {n}p {n}p {rng.randrange(18, 28)}p maymove,fixed",
            f"mremap {s}p {n}p {n + 1}p maymove", f"madvise {s}p {n}p dontneed")))
    return lines


def uffd_script(rng: random.Random) -> list[str]:
    """userfaultfd registration (missing, write-protect, off) over anonymous and shmem
    mappings, with faults on pages that are there or missing (SIGBUS), populate,
    dontneed, mprotect, munmap and mremap around it. A mapping at 40p stays, so that a
    range past the others has a VMA after it (EINVAL, as in a real process)."""
    lines = ["mmap 0 16p rw- private,anonymous,fixed", "mmap 40p 1p --- private,anonymous,fixed"]
    if rng.random() < 0.4:
        lines += ["memfd m 4p", "mmap 20p 4p rw- shared,fixed fd=m"]
    if rng.random() < 0.3:
        lines.append("mmap 26p 2p rw- shared,anonymous,fixed")
    for _ in range(rng.randint(4, 14)):
        s, n = rng.randrange(0, 30), rng.choice((1, 2, 3))
        r = rng.random()
        if r < 0.3:
            modes = rng.choice(("missing", "wp", "missing,wp", "off", "off"))
            lines.append(f"uffd {s}p {n}p {modes}")
        elif r < 0.55:
            lines.append(f"touch {s}p" + rng.choice(("", " read")))
        elif r < 0.65:
            lines.append(f"mprotect {s}p {n}p {rng.choice(('r--', 'rw-', '---'))}")
        elif r < 0.75:
            lines.append(f"madvise {s}p {n}p {rng.choice(('dontneed', 'populate_read'))}")
        elif r < 0.85:
            lines.append(f"mremap {s}p {n}p {n}p {rng.randrange(30, 38)}p maymove,fixed")
        elif r < 0.92:
            lines.append(f"munmap {s}p {n}p")
        else:
            lines.append(f"mmap {s}p {n}p rw- private,anonymous,fixed")
    return lines


# Families written as op text: one system call or feature stressed from every side.
TEXT_FAMILIES: dict[str, Callable[[random.Random], list[str]]] = {
    "mremap": mremap_script, "forks": forks_script, "mlock-mseal": seal_script,
    "memfd": memfd_script, "guard": guard_script, "uffd": uffd_script,
}


