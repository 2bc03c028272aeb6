"""Long file paths in the text reports at 80 columns: elided from the left, the file name
kept whole, never folded in two (a library's name is what a reader looks for)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import python_child

from vmascope.report.fmt import elide_path

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


@pytest.mark.parametrize("text, width, want", [
    (LIBC, 80, LIBC),  # fits: whole
    (LIBC, len(LIBC), LIBC),
    (LIBC, 30, "…/x86_64-linux-gnu/libc.so.6"),  # directories go first, from the left
    (LIBC, 20, "…/libc.so.6"),
    (LIBC, 11, "…/libc.so.6"),
    (LIBC, 8, "…/libc.so.6"),  # the name is never cut: it folds over lines
    ("[anon:a name that runs on and on]", 12, "[anon:a name that runs on and on]"),
    ("anonymous", 4, "anonymous"),  # not a path: folds
])
def test_elide_path(text: str, width: int, want: str) -> None:
    assert elide_path(text, width) == want


# A child maps a file deep in long folders three times, with three protections: three
# VMAs of one backing, the most of any file, so that it leads "Top backings" and "Longest
# runs" cannot hide it.
CHILD = r"""
import mmap, os, signal, sys
path = sys.argv[1]
fd = os.open(path, os.O_RDONLY)
maps = [mmap.mmap(fd, 4096, prot=mmap.PROT_READ, offset=i * 4096) for i in range(40)]
print("ready", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
"""


def _cell(lines: list[str], i: int, col: int) -> str:
    """The table cell that starts at ``lines[i][col]``, with the lines it folds onto (blank
    before ``col``)."""
    text = lines[i][col:].split()[0]
    for line in lines[i + 1:]:
        if line[:col].strip() or not line[col:].strip():
            break
        text += line[col:].split()[0]
    return text


def test_a_long_path_at_80_columns(tmp_path: Path) -> None:
    deep = tmp_path / ("a-folder-with-a-rather-long-name-" * 2) / "and-one-more-level"
    deep.mkdir(parents=True)
    lib = deep / "libexample-runtime-with-a-long-name.so.1.2.3"
    lib.write_bytes(b"\0" * 4096 * 40)
    assert len(str(lib)) > 80
    with python_child(CHILD, str(lib)) as (pid, _):
        env = {**os.environ, "COLUMNS": "80"}
        outs = [subprocess.run([sys.executable, "-m", "vmascope", verb, str(pid)],
                               capture_output=True, text=True, timeout=120, env=env)
                for verb in ("snapshot", "analyze")]
    for out in outs:
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert max(map(len, lines)) <= 80
        # the file's name whole, after an ellipsis of its folders: on a line where the
        # column is wide enough, else folded over lines but never cut
        cells = [_cell(lines, i, line.index("…/")) for i, line in enumerate(lines)
                 if "…/" in line and "libexample" in line]
        assert cells and all(c.endswith(f"/{lib.name}") for c in cells), out.stdout
        assert "a-folder-with-a-rather-long-name" not in out.stdout
    assert f"…/and-one-more-level/{lib.name}" in outs[0].stdout  # snapshot's Top backings
