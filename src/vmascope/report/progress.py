"""Progress of long work (kernels fetch, lab verify, lab run, a capture): a rich display
on standard error, shown only when standard output is a terminal and the output is not
JSON. Otherwise every call is a no-op, so a pipe or a JSON reader sees nothing extra."""

from __future__ import annotations

import sys
from typing import Any


def wanted(json_output: bool = False) -> bool:
    """Show progress? Only on a terminal (stdout and stderr), never under --json. The
    process's own standard output counts: with ``-o FILE`` the output goes to the file
    but the user still watches the terminal."""
    out = sys.__stdout__ or sys.stdout
    return not json_output and out.isatty() and sys.stderr.isatty()


class _Quiet:
    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, **kw: Any) -> int:
        return 0

    def update(self, task: int, **kw: Any) -> None:
        return None

    def advance(self, task: int, n: float = 1) -> None:
        return None


def display(json_output: bool = False, *, bar: bool = False) -> Any:
    """A context manager with rich's ``add_task/update/advance``: per item (one task per
    kernel), what it is doing (``state=``) and the time taken; with ``bar``, a bar of
    completed/total."""
    if not wanted(json_output):
        return _Quiet()
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                               TextColumn, TimeElapsedColumn)

    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if bar:
        columns += [BarColumn(bar_width=20), MofNCompleteColumn()]
    columns += [TextColumn("{task.fields[state]}"), TimeElapsedColumn()]
    console = Console(stderr=True, highlight=False)
    return Progress(*columns, console=console, transient=True)
