"""Small shared helpers: atomic file writes, the user's cache directory, a pause of the
cycle collector."""

from __future__ import annotations

import contextlib
import gc
import os
from pathlib import Path
from collections.abc import Iterator
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
