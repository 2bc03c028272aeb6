"""`vmascope check TARGET --max-used PCT`: the exit status a CI gate relies on, and the
recommended limit from the count and its trend (the rule in docs/analyze.md)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import PROGRAMS, need, running, stopped

from vmascope.analysis.limit import KERNEL_DEFAULT, recommend
from vmascope.cli import main
from vmascope.cli.check import EXIT_OVER


@pytest.fixture(scope="module")
def shapes_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("check") / "shapes"
    subprocess.run([need("cc"), "-O1", "-pthread", "-o", str(out),
                    str(PROGRAMS / "shapes.c")], check=True, timeout=120)
    return out


def test_gate_on_a_live_process(shapes_exe: Path, capsys: pytest.CaptureFixture[str],
                                tmp_path: Path) -> None:
    v = 3001
    with running([str(shapes_exe), "checkerboard", str(v)], "RESERVED") as proc:
        with stopped(proc.pid):
            with open(f"/proc/{proc.pid}/maps") as fh:
                count = sum(1 for _ in fh)
            limit = 10_000
            used = 100.0 * count / limit
            assert main(["check", str(proc.pid), "--limit", str(limit),
                         "--max-used", f"{used + 1:.1f}"]) == 0
            out = capsys.readouterr().out
            assert f"{count:,} of {limit:,} mappings" in out and ": ok" in out
            assert main(["check", str(proc.pid), "--limit", str(limit),
                         "--max-used", f"{used - 1:.1f}", "--json"]) == EXIT_OVER
            data = json.loads(capsys.readouterr().out)
            assert data["over"] is True and data["map_count"] == count
            assert data["exit_code"] == EXIT_OVER == 9
            # A snapshot file checks the same way.
            snap = tmp_path / "p.vmasnap"
            assert main(["snapshot", str(proc.pid), "-o", str(snap)]) == 0
    capsys.readouterr()
    assert main(["check", str(snap), "--limit", str(limit), "--max-used",
                 f"{used - 1:.1f}"]) == EXIT_OVER
    assert all(len(line) <= 80 for line in capsys.readouterr().out.splitlines())


@pytest.mark.parametrize("argv", [
    ["check", "1", "--max-used", "0"],
    ["check", "1", "--max-used", "150"],
    ["check", "1", "--max-used", "50", "--limit", "0"],
])
def test_bad_options_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vmascope: error:")


def test_bad_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "maps"
    bad.write_text("this is not a maps file\n")
    assert main(["check", str(bad), "--max-used", "50"]) not in (0, EXIT_OVER)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_recommendation_rule() -> None:
    # Flat: twice 20,000 fits the default.
    r = recommend(20_000, 65_530)
    assert r.recommended == KERNEL_DEFAULT and r.enough is True
    # Flat, 40,000: twice is 80,000, rounded up to a multiple of 65,536: 131,072.
    r = recommend(40_000, 65_530)
    assert r.recommended == 131_072 and r.enough is False
    # A trend of +10,000 an hour over a week (168 h) from 30,000.
    r = recommend(30_000, 65_530, previous=(1000.0, 20_000), now=4600.0)
    assert r.rate_per_hour == 10_000
    assert r.projected == 30_000 + 10_000 * 168
    want = -(-2 * r.projected // 65_536) * 65_536
    assert r.recommended == want
    # A shrinking process is projected at its current count.
    r = recommend(30_000, None, previous=(0.0, 50_000), now=3600.0)
    assert r.projected == 30_000 and r.enough is None


def test_analyze_previous_gives_the_trend(shapes_exe: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`analyze --previous`: the limit follows the growth between the two snapshots."""
    import vmascope

    prev = tmp_path / "before.vmasnap"
    with running([str(shapes_exe), "checkerboard", "1001"], "RESERVED") as proc:
        assert main(["snapshot", str(proc.pid), "-o", str(prev)]) == 0
    before = vmascope.load(str(prev))
    capsys.readouterr()
    with running([str(shapes_exe), "checkerboard", "5001"], "RESERVED") as proc:
        assert main(["analyze", str(proc.pid), "--previous", str(prev),
                     "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    lim = data["limit"]
    now, count = data["process"]["time"], data["map_count"]
    assert count - before.map_count == 4000
    hours = (now - before.meta.time) / 3600
    assert lim["rate_per_hour"] == pytest.approx(4000 / hours)
    assert lim["projected"] >= count + 4000 / hours * 168 - 1
    assert lim["recommended"] % 65_536 == 0 and lim["recommended"] >= 2 * lim["projected"]
