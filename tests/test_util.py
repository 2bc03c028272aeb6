"""atomic_write: the whole file or nothing, and a clear error for a bad place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmascope.cli import main
from vmascope.errors import OutputError
from vmascope.util import atomic_write


def test_atomic_write_renames_into_place(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with atomic_write(target) as fh:
        fh.write(b"abc")
        assert not target.exists()
    assert target.read_bytes() == b"abc"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_write_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write(b"partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_missing_directory_is_an_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"missing/x\.bin: cannot write here: No such file"):
        with atomic_write(tmp_path / "missing" / "x.bin"):
            pass


def test_cli_names_the_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "no" / "such" / "dir.vmasnap"
    rc = main(["snapshot", str(os.getpid()), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == OutputError.exit_code == 8
    assert err.count("\n") == 1 and str(out) in err and "Traceback" not in err
