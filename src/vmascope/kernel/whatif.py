"""What-if kernels: merge rules that no released kernel has, for the workbench.

Each hypothesis is a set of switches on top of a real epoch; ``rules.py`` and the
simulator read them from ``Epoch.hypotheses``. Everything computed under one is marked
HYPOTHETICAL (``Epoch.name`` says so, and so do the reports): it is evidence for a
conversation with the mm maintainers, not a prediction of any kernel.
"""

from __future__ import annotations

import dataclasses

from ..errors import UsageError
from .epochs import Epoch

# name -> (one line, where it comes from)
HYPOTHESES: dict[str, tuple[str, str]] = {
    "anon-merge": (
        "adjacent anonymous VMAs with different anon_vmas merge when neither anon_vma is "
        "shared with another process (no fork child links it)",
        "Jakub Matěna, \"Removing limitations of merging anonymous VMAs\" (RFC, linux-mm, "
        "2022, on v5.17-rc4), patch 3 \"mm: enable merging of VMAs with different "
        "anon_vmas\"; never merged"),
    "eager-anon-vma": (
        "a private anonymous mapping gets its anon_vma when it is mapped, so every piece "
        "an mprotect splits off a reservation shares it (the seed's pre-fault hack, done "
        "by the kernel, without touching a page or charging the reservation)",
        "the seed's \"What can we do about it?\"; no patch proposed"),
}


def apply(epoch: Epoch, name: str) -> Epoch:
    """The epoch with hypothesis ``name`` (or several, comma separated) switched on."""
    names = {n.strip() for n in name.split(",") if n.strip()}
    unknown = sorted(names - set(HYPOTHESES))
    if unknown or not names:
        raise UsageError(f"unknown what-if rule {', '.join(unknown) or repr(name)} "
                         f"(expected one of {', '.join(HYPOTHESES)})")
    return dataclasses.replace(epoch, hypotheses=epoch.hypotheses | names)


def unshared(av: object) -> bool:
    """The anon_vma is its own root and no fork child hangs below it."""
    return (av is not None and getattr(av, "root", None) is av
            and getattr(av, "num_children", 0) <= 1)
