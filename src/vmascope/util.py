"""Small shared helpers: atomic file writes, the user's cache directory."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place on success.

    On any error the temporary file is removed, so no partial file is ever left behind.
    Failing to create, write out or rename the file is an OutputError naming ``path``.
    """
    from .errors import OutputError

    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                   dir=path.parent or ".")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write here: {exc.strerror}") from None
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            try:
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as exc:
                raise OutputError(f"{path}: cannot write: {exc.strerror}") from None
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write: {exc.strerror}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def cache_dir(*parts: str) -> Path:
    """$VMASCOPE_CACHE or $XDG_CACHE_HOME/vmascope or ~/.cache/vmascope, created."""
    base = os.environ.get("VMASCOPE_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "vmascope")
    p = Path(base, *parts)
    p.mkdir(parents=True, exist_ok=True)
    return p
