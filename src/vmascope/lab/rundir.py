"""Temporary run directories of the lab (``vmascope-vm-*``) that survive no run.

A run writes its pid and that process's start time into ``owner`` inside its directory.
A run killed with SIGKILL cannot remove its directory; the next run removes every
``vmascope-vm-*`` directory whose owner process is gone (or is another process that
reused the pid: the start time tells them apart). A directory whose owner is alive is
left alone, so two runs at once never remove each other's files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PREFIX = "vmascope-vm-"
OWNER = "owner"
# A directory without an owner file is a run's that is just starting (mkdtemp, then the
# owner file) or one of an older vmascope: removed only once it is this old.
NO_OWNER_GRACE = 3600.0


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def _owner_alive(d: Path) -> bool | None:
    """True/False if the owner file says; None if there is no (readable) owner file."""
    try:
        pid_text, start = (d / OWNER).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return _start_time(pid) == start


def clean_stale(base: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the ``vmascope-vm-*`` directories in ``base`` (the temp dir) whose owner
    process is gone; returns those removed. Only this user's directories are touched."""
    removed: list[Path] = []
    base = Path(base or tempfile.gettempdir())
    try:
        entries = list(base.glob(PREFIX + "*"))
    except OSError:
        return removed
    for d in entries:
        try:
            st = os.lstat(d)
        except OSError:
            continue
        if not d.is_dir() or d.is_symlink() or st.st_uid != os.geteuid():
            continue
        alive = _owner_alive(d)
        if alive is None:
            alive = time.time() - st.st_mtime < NO_OWNER_GRACE
        if not alive:
            shutil.rmtree(d, ignore_errors=True)
            if not d.exists():
                removed.append(d)
    return removed


@contextlib.contextmanager
def run_dir() -> Iterator[Path]:
    """A fresh ``vmascope-vm-*`` directory with an owner file, removed on exit; stale
    ones of earlier runs are removed first."""
    clean_stale()
    d = Path(tempfile.mkdtemp(prefix=PREFIX))
    try:
        (d / OWNER).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
