"""Small shared helpers: atomic file writes, the user's cache directory, a pause of the
cycle collector."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator

# typing.TYPE_CHECKING without importing typing (type checkers know the name): the
# console script's early read of /proc starts after this module, before the rest
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import IO


def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> contextlib.AbstractContextManager[IO]:
    """Write to a temporary file beside ``path`` and rename it into place on success.

    The one safe writer, :func:`vmascope.output.safe_write`: no partial file is ever left
    behind, a target that is not a regular file is refused, and any failure (no space,
    no permission) is an OutputError naming ``path``.
    """
    from .output import safe_write

    return safe_write(path, mode)


def kernel_view_wanted(option: bool | None) -> bool:
    """Whether to read the kernel view: the option when given, else the setting
    VMASCOPE_KERNEL_VIEW (1, yes, on: read it wherever it is available)."""
    if option is not None:
        return option
    return os.environ.get("VMASCOPE_KERNEL_VIEW", "").strip().lower() in ("1", "yes", "on")


def cache_dir(*parts: str) -> Path:
    """$VMASCOPE_CACHE or $XDG_CACHE_HOME/vmascope or ~/.cache/vmascope, created."""
    base = os.environ.get("VMASCOPE_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "vmascope")
    from pathlib import Path

    p = Path(base, *parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (as it was after): for work that makes
    hundreds of thousands of objects and no garbage cycles, such as reading a trace or
    replaying it, where each collection would walk every object made so far (a quarter
    of the time of a replay). Reference counting still frees everything at once."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
REUSE_UP_TO = 256 << 20  # bytes: freed blocks up to this size stay for reuse


def reuse_freed_arrays() -> None:
    """Tune the allocator for a command that makes and frees many large numpy arrays:
    ``analyze`` at 2M VMAs makes about a hundred of 2-64 MB. By default glibc maps each
    one afresh and unmaps it when freed, and numpy asks for transparent huge pages on
    each, so the kernel faults in and zeroes (and may compact for) hundreds of MB again
    and again. With freed blocks of up to REUSE_UP_TO kept for reuse and no huge-page
    advice, the analysis of a 2M-VMA process went from 0.32-0.43 s to 0.28-0.33 s.
    The memory stays with the process until it exits: for one-shot commands only."""
    import ctypes

    import numpy as np

    advise = getattr(getattr(np, "_core", np), "multiarray", None)
    if hasattr(advise, "_set_madvise_hugepage"):
        advise._set_madvise_hugepage(False)
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc's mallopt only (musl's is a stub)
        libc.mallopt(_M_MMAP_THRESHOLD, REUSE_UP_TO)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * REUSE_UP_TO)
    except (OSError, AttributeError):
        pass
