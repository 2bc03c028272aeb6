"""At 80 columns: the lab's side-by-side tables stack per kernel, and `kernels list` cuts
nothing important (the release and the path are printed whole)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from vmascope.lab import session
from vmascope.lab.backends import SimulatorBackend
from vmascope.report.lab import print_kernels, print_run

# (name, release modelled): a Debian cloud release string is long
KERNELS = [("host", "6.18.44"), ("6.1", "6.1.0-50-cloud-amd64"),
           ("6.12", "6.12.117+deb13-cloud-amd64"), ("newest", "7.2.13+deb14-cloud-amd64")]


def _runs(scenario: str) -> list[session.ScriptRun]:
    name, ops = session.load_spec(scenario, None)
    sr = session.ScriptRun(name, ops, [])
    for kname, release in KERNELS:
        out = SimulatorBackend(release.split("-")[0].split("+")[0]).run([ops], names=[name])[0]
        sr.kernels.append(session.KernelEntry(SimpleNamespace(name=kname), release, 0.1,
                                              out, out, []))
    return [sr]


def _render(fn, *args, width: int) -> str:
    buf = io.StringIO()
    fn(*args, Console(file=buf, width=width, highlight=False, color_system=None))
    return buf.getvalue()


def test_lab_run_stacks_per_kernel_at_80_columns() -> None:
    text = _render(print_run, _runs("seed"), width=80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text
    for name, release in KERNELS:  # one table per kernel, titled with its release
        assert sum(line.strip() == f"{name} {release}: arena VMAs (pages)"
                   for line in lines) == 1, text
    # the seed leaves its 6 pages as VMAs ending at page 6 on every kernel
    assert sum("-6p rw-p" in line for line in lines) == len(KERNELS)


def test_lab_run_side_by_side_when_wide() -> None:
    text = _render(print_run, _runs("seed"), width=240)
    assert "VMAs in the arena (pages): real, and the simulator's" in text
    assert "arena VMAs (pages)" not in text
    header = next(line for line in text.splitlines() if "host real" in line)
    assert all(f"{k} real" in header and f"{k} sim" in header for k, _ in KERNELS)


ROWS = [
    {"name": "host", "suite": None, "fetched": True, "version": "6.18.44",
     "release": "6.18.44-fc-v669", "path": None},
    {"name": "6.12", "suite": "trixie", "fetched": True, "version": "6.12.117-1",
     "release": "6.12.117+deb13-cloud-amd64",
     "path": "/home/me/.cache/vmascope/kernels/trixie-vmlinuz-6.12.117+deb13-cloud-amd64"},
    {"name": "newest", "suite": "sid", "fetched": True, "version": "7.2.13-1",
     "release": "7.2.13+deb14-cloud-amd64",
     "path": "/srv/a-long-cache-folder/vmascope/kernels/sid-vmlinuz-7.2.13+deb14-cloud-amd"},
]


def test_kernels_list_at_80_columns_cuts_nothing() -> None:
    text = _render(print_kernels, ROWS, width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    assert "6.12.117+deb13-cloud-amd64 " in text  # the release, whole, in the table
    # the paths, whole, under the table; one too long to follow its name has its own line
    assert len(f"6.12: {ROWS[1]['path']}") <= 80 < len(f"newest: {ROWS[2]['path']}")
    assert f"\n6.12: {ROWS[1]['path']}\n" in text
    assert f"\nnewest:\n  {ROWS[2]['path']}\n" in text


# the whole matrix, with versions as long as Debian's own: a backport's and a release
# candidate's version, a backports suite name
VERSIONS = {"5.10": ("5.10.223-1", "5.10.0-32-cloud-amd64"),
            "6.1": ("6.1.176-1", "6.1.0-50-cloud-amd64"),
            "6.12": ("6.12.117-1", "6.12.117+deb13-cloud-amd64"),
            "stable": ("7.3.4-1~bpo13+1", "7.3.4+deb13-cloud-amd64"),
            "newest": ("7.2.13-1", "7.2.13+deb14-cloud-amd64"),
            "next": ("7.3~rc7-1~exp1", "7.3-cloud-amd64")}


def _matrix_rows(cache: str) -> list[dict]:
    from vmascope.lab.kernels import SUITES

    rows = [ROWS[0]]
    for name, suite in SUITES.items():
        version, release = VERSIONS[name]
        rows.append({"name": name, "suite": suite, "fetched": name != "next",
                     "version": version if name != "next" else None,
                     "release": release if name != "next" else None,
                     "path": f"{cache}/{suite}-vmlinuz-{release}" if name != "next" else None})
    return rows


@pytest.mark.parametrize("width", [80, 100, 160])
def test_kernels_list_of_the_whole_matrix_cuts_nothing(width: int) -> None:
    rows = _matrix_rows("/root/.cache/vmascope/kernels")
    text = _render(print_kernels, rows, width=width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width and "…" not in text, text
    for r in rows:  # every name, suite, version, release and path, whole, on a line
        for key in ("name", "suite", "version", "release", "path"):
            if r[key]:
                assert any(r[key] in line.split() or r[key] == line.strip()
                           or f"{r[key]} (" in line or f"({r[key]})" in line
                           for line in lines), (key, r[key], text)
    # the kernel that is not fetched says so, in the table or in its block
    nxt = next(line for line in lines if "next" in line.split()
               or line.startswith("next"))
    assert "no" in nxt.split() or "not fetched" in nxt, text


def test_kernels_list_stacks_per_kernel_when_the_table_would_not_fit() -> None:
    rows = _matrix_rows("/root/.cache/vmascope/kernels")
    text = _render(print_kernels, rows, width=80)
    assert "┃" not in text  # no table: a block per kernel
    assert "\nstable (trixie-backports)\n  version  7.3.4-1~bpo13+1\n" \
        "  release  7.3.4+deb13-cloud-amd64\n  path:\n" \
        "  /root/.cache/vmascope/kernels/trixie-backports-vmlinuz-7.3.4+deb13-cloud-amd64\n" \
        in text, text
    assert "\nnext (experimental), not fetched\n" in text
    wide = _render(print_kernels, rows, width=160)
    assert "┃ name" in wide and "\nstable (trixie-backports)" not in wide


def test_kernels_list_command_at_80_columns(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "80", "VMASCOPE_CACHE": str(tmp_path)}
    proc = subprocess.run([str(Path(sys.executable).parent / "vmascope"), "kernels", "list"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in proc.stdout
    release = os.uname().release
    assert any(release in line for line in lines)
