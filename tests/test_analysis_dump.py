"""`vmascope analyze` from the command line on raw dumps: every output format, -o
written atomically, and bad input reported in one line with no partial file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmascope.cli import main

KB_FIELDS = ("Size", "KernelPageSize", "MMUPageSize", "Rss", "Pss", "Pss_Dirty",
             "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty", "Referenced",
             "Anonymous", "KSM", "LazyFree", "AnonHugePages", "ShmemPmdMapped",
             "FilePmdMapped", "Shared_Hugetlb", "Private_Hugetlb", "Swap", "SwapPss",
             "Locked")


def smaps_entry(start: int, end: int, perms: str, name: str, anon_kb: int, flags: str,
                offset: int = 0, dev: str = "00:00", inode: int = 0) -> str:
    """One entry in the layout fs/proc/task_mmu.c prints (show_smap)."""
    head = f"{start:08x}-{end:08x} {perms} {offset:08x} {dev} {inode}"
    head = head.ljust(73) + name if name else head + " "
    size_kb = (end - start) // 1024
    lines = [head]
    for f in KB_FIELDS:
        val = {"Size": size_kb, "KernelPageSize": 4, "MMUPageSize": 4, "Rss": anon_kb,
               "Pss": anon_kb, "Pss_Dirty": anon_kb, "Private_Dirty": anon_kb,
               "Referenced": anon_kb, "Anonymous": anon_kb}.get(f, 0)
        lines.append(f"{f + ':':<16}{val:>8} kB")
    lines.append("THPeligible:    0")
    lines.append(f"VmFlags: {flags} ")
    return "\n".join(lines) + "\n"


BASE = 0x7F12_3456_0000
P = 4096
RW = "rd wr mr mw me nr sd"


@pytest.fixture()
def named_dump(tmp_path: Path) -> Path:
    # A fence, two pages named differently by PR_SET_VMA_ANON_NAME (nothing written),
    # two faulted pages, then a fence again: what a 6.x kernel with anon names prints.
    text = (
        smaps_entry(BASE, BASE + 16 * P, "---p", "", 0, "mr mw me nr sd")
        + smaps_entry(BASE + 16 * P, BASE + 17 * P, "rw-p", "[anon:left]", 0, RW)
        + smaps_entry(BASE + 17 * P, BASE + 18 * P, "rw-p", "[anon:right]", 0, RW)
        + smaps_entry(BASE + 18 * P, BASE + 19 * P, "rw-p", "", 4, RW)
        + smaps_entry(BASE + 19 * P, BASE + 20 * P, "rw-p", "", 4, RW)
        + smaps_entry(BASE + 20 * P, BASE + 64 * P, "---p", "", 0, "mr mw me nr sd")
    )
    path = tmp_path / "named.smaps"
    path.write_text(text)
    return path


def test_json_from_smaps_dump(named_dump: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["analyze", str(named_dump), "--kernel", "6.12.117", "--format", "json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    data = json.loads(out)
    assert data["map_count"] == 6
    assert data["kernel"] == "6.12.117" and data["kernel_source"] == "option"
    # Pairs that look alike: left|right (anon, names differ), right|faulted (name vs
    # none), faulted|faulted. fence|left differ in perms.
    reasons = {(r["reason"], r["confidence"]): r["count"] for r in data["reasons"]}
    # left|right: only the names differ. right (unfaulted, named) | first faulted page:
    # names differ and, before 6.16, faulted next to unfaulted. faulted|faulted: distinct
    # anon_vmas.
    assert reasons == {("anon_name", "certain"): 2,
                       ("anon_vma_unfaulted", "inferred"): 1,
                       ("anon_vma", "inferred"): 1}
    assert data["fragmentation"]["ideal_count"] == 6 - 3
    res = data["reservations"]
    assert len(res) == 1 and res[0]["vma_count"] == 6
    assert int(res[0]["start"], 16) == BASE and int(res[0]["end"], 16) == BASE + 64 * P


def test_text_default_kernel_is_host_for_a_dump(named_dump: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # A raw dump names no kernel: the explanation says it used this host's.
    assert main(["analyze", str(named_dump)]) == 0
    out = capsys.readouterr().out
    assert "this host's" in out and "different anon names" in out


@pytest.mark.parametrize("fmt", ["text", "json", "html"])
def test_output_file(named_dump: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"report.{fmt}"
    assert main(["analyze", str(named_dump), "--format", fmt, "-o", str(out)]) == 0
    text = out.read_text()
    assert text
    if fmt == "json":
        assert json.loads(text)["schema_version"] == 1
    if fmt == "html":
        assert text.startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_malformed_dump_one_line_no_file(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.maps"
    bad.write_text("7f0000000000-7f0000001000 rw-p 00000000 00:00 0\nthis is not maps\n")
    out = tmp_path / "out.json"
    rc = main(["analyze", str(bad), "--format", "json", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 5
    assert len(err.strip().splitlines()) == 1 and "bad.maps:2" in err
    assert "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_bad_kernel_release(named_dump: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["analyze", str(named_dump), "--kernel", "banana"])
    err = capsys.readouterr().err
    assert rc == 2 and "banana" in err and len(err.strip().splitlines()) == 1


def test_unknown_pid(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["analyze", "4194305"])  # above the kernel's PID_MAX_LIMIT
    err = capsys.readouterr().err
    assert rc == 3 and "4194305" in err


def test_stdin_target(named_dump: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(named_dump.read_bytes())))
    assert main(["analyze", "-", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["map_count"] == 6
