"""Long file paths in the text reports at 80 columns: elided from the left, the file name
kept whole, never folded in two (a library's name is what a reader looks for)."""

from __future__ import annotations

import io
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


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _summary(width: int, out: io.StringIO | None = None, mmc: int | None = 65530) -> str:
    from vmascope.meta import SnapshotMeta
    from vmascope.report.snapshot import print_counts

    out = out if out is not None else io.StringIO()
    meta = SnapshotMeta(pid=4242, comm="java", kernel_release="6.12.117+deb13-cloud-amd64",
                        max_map_count=mmc, source="live")
    top = [("[anon]", 60_000), (LIBC, 5),
           ("/opt/a-vendor/runtime/lib/server/libjvm-with-a-rather-long-name.so", 3),
           ("[anon:a name given by prctl that runs on and on past the column]", 2)]
    print_counts(meta, 60_010, 3 << 30, top, out, width=width)
    return out.getvalue()


@pytest.mark.parametrize("width", [40, 80, 120])
def test_the_snapshot_summary_fits_and_cuts_no_name(width: int) -> None:
    text = _summary(width)
    lines = text.splitlines()
    assert max(map(len, lines)) <= width, text
    assert "\x1b[" not in text  # not a terminal: no styles
    assert "mappings 60010 of max_map_count 65530: 91.6% used, 5520 left" in " ".join(lines)
    rows = lines[lines.index(next(x for x in lines if x.strip().startswith("VMAs"))) + 1:]
    col = rows[0].index("[anon]")
    # every backing is in its column: a path ends with its file name; a name wider than
    # the column folds under it, whole
    cells: list[str] = []
    for r in rows:  # a row with counts starts a cell; a blank-led row continues it
        if r[:col].strip():
            cells.append(r[col:])
        else:
            cells[-1] += r[col:]
    assert cells[0] == "[anon]" and cells[1].endswith("/libc.so.6")
    assert cells[2].endswith("/libjvm-with-a-rather-long-name.so")
    assert cells[3] == "[anon:a name given by prctl that runs on and on past the column]"
    if width >= 80:  # room for libc's whole path
        assert cells[1] == LIBC


def test_the_snapshot_summary_styles_only_a_terminal(monkeypatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    text = _summary(80, _Tty())
    assert "mappings \x1b[1m60010\x1b[0m of" in text
    assert "\x1b[1;31m91.6% used\x1b[0m" in text  # past 90 %: bold red
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in _summary(80, _Tty())
    assert "mappings 60010 (max_map_count unknown for this source)" in _summary(80, mmc=None)
