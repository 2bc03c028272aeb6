"""Tests of the reporters: text in 80 columns, the JSON keys, a self-contained HTML file
checked in a real headless Chromium with a screenshot."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from vmascope.analysis import analyze
from vmascope.model import Snapshot, SnapshotMeta, Vma
from vmascope.report import render

P = 4096
BASE = 0x7F00_0000_0000
RW = frozenset({"rd", "wr", "mr", "mw", "me", "ac"})


def gc_like_snapshot() -> Snapshot:
    """A GC-heap-like reservation: committed rw-p pieces faulted separately (distinct
    anon_vmas, adjacent and unmerged), PROT_NONE gaps, a dd-flagged piece, plus libs."""
    vmas = []
    addr = BASE
    for i in range(3000):
        pages = 1 + (i * 7) % 5
        if i % 40 == 39:
            vmas.append(Vma(addr, addr + pages * P, "---p", flags=frozenset({"mr", "mw", "me"}),
                            smaps={"Anonymous": 0}))
        else:
            flags = RW | ({"dd"} if i % 97 == 5 else set())
            vmas.append(Vma(addr, addr + pages * P, "rw-p", flags=frozenset(flags),
                            smaps={"Anonymous": P}))
        addr += pages * P
    vmas.append(Vma(addr, addr + 4096 * P, "---p", flags=frozenset({"mr", "mw", "me"}),
                    smaps={"Anonymous": 0}))
    lib = 0x7F80_0000_0000
    for k in range(40):
        vmas.append(Vma(lib + k * 0x10000, lib + k * 0x10000 + P, "r--p", 0, 0x801, 100 + k,
                        f"/usr/lib/lib{k}.so", flags=frozenset({"rd", "mr", "mw", "me"})))
    return Snapshot.from_vmas(vmas, SnapshotMeta(pid=4242, comm="dotnet", max_map_count=4000,
                                                 kernel_release="6.18.44", source="file"))


@pytest.fixture(scope="module")
def analysis():  # type: ignore[no-untyped-def]
    return analyze(gc_like_snapshot())


def test_text_fits_80_columns(analysis) -> None:  # type: ignore[no-untyped-def]
    text = render(analysis, "text", width=80)
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert "\x1b[" not in text  # no colour codes when not asked for
    # The numbers a reader needs: the map count, the limit, the biggest reservation.
    assert "3,041 of 4,000 mappings" in text
    assert "ELEVATED" in text  # 3041 / 4000 = 76%: at least 50%, below 80%
    assert "3,001/3,041" in text  # largest reservation / total mappings

def test_json_keys(analysis) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(render(analysis, "json"))
    assert data["schema_version"] == 1
    assert data["map_count"] == 3041 and data["max_map_count"] == 4000
    res = data["reservations"][0]
    # The reservation is the 3000 pieces plus the trailing PROT_NONE VMA.
    assert res["vma_count"] == 3001
    assert int(res["start"], 16) == BASE
    assert {"start", "end", "vma_count"} <= set(res)
    frag = data["fragmentation"]
    assert {"ideal_count", "runs"} <= set(frag)
    reasons = {r["reason"]: r["count"] for r in data["reasons"]}
    assert set(reasons) >= {"anon_vma", "vmflags"}
    for r in data["reasons"]:
        assert {"reason", "count", "confidence"} <= set(r)


def test_html_is_self_contained(analysis) -> None:  # type: ignore[no-untyped-def]
    html = render(analysis, "html")
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html and "<link" not in html and "<img" not in html
    assert not re.search(r"url\((?!#)", html)  # only references inside the document
    # The only URLs are XML namespace names (not fetched by a browser).
    urls = set(re.findall(r"https?://[^\s\"'<>]+", html))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls
    # Three kinds of pictures: strips, histogram, reasons.
    assert html.count("<svg") >= 4
    assert "unmerged split" in html and "distinct anon_vmas" in html


def test_html_needs_jinja2_only() -> None:
    # The report extra is jinja2 alone: the HTML report renders with no plotting library
    # installed (its pictures are SVG written by vmascope), and without jinja2 it says
    # what to install.
    import sys

    probe = ("import sys\n"
             "sys.modules['matplotlib'] = None\n"  # as if it were not installed
             "{}\n"
             "from vmascope.analysis import analyze\n"
             "from vmascope.report import render\n"
             "import test_report\n"
             "print(render(analyze(test_report.gc_like_snapshot()), 'html')[:15])\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    proc = subprocess.run([sys.executable, "-c", probe.format("")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("<!DOCTYPE html>")
    proc = subprocess.run([sys.executable, "-c", probe.format("sys.modules['jinja2'] = None")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "the HTML report needs jinja2 (it is missing): pip install 'vmascope[report]'" in (
        proc.stderr)


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _screenshot(html_path: Path, png: Path, width: int, height: int) -> None:
    browser = _find_chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian package chromium)")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--window-size={width},{height}", f"--screenshot={png}",
               html_path.as_uri()]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            _, err = proc.communicate(timeout=90)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    assert png.exists(), err.decode(errors="replace")[-2000:]


def test_html_screenshot_in_chromium(analysis, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from matplotlib.image import imread

    html_path = tmp_path / "report.html"
    html_path.write_text(render(analysis, "html"))
    png = tmp_path / "report.png"
    _screenshot(html_path, png, 1100, 1500)
    img = imread(png)
    assert img.shape[:2] == (1500, 1100)
    rgb = (img[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours = np.unique(rgb, axis=0)
    assert len(colours) > 50  # text, bars and strips, not a blank page
    not_white = np.any(rgb < 240, axis=1).mean()
    assert 0.03 < not_white < 0.9
    # The strip's committed green (#3aa35b) and reserved grey (#c9ced6) are on screen.
    def present(hexcol: str) -> bool:
        want = np.array([int(hexcol[i:i + 2], 16) for i in (1, 3, 5)])
        return bool((np.abs(rgb.astype(int) - want).sum(axis=1) < 12).any())

    assert present("#3aa35b") and present("#c9ced6")


@pytest.mark.parametrize("vmas", [[], [Vma(BASE, BASE + P, "---p")]])
def test_every_format_renders_tiny_snapshots(vmas: list[Vma]) -> None:
    a = analyze(Snapshot.from_vmas(vmas, SnapshotMeta(kernel_release="6.18.44")))
    assert "0 adjacent look-alike pairs" in render(a, "text")
    assert json.loads(render(a, "json"))["map_count"] == len(vmas)
    assert render(a, "html").rstrip().endswith("</html>")


def test_long_names_still_fit_80_columns() -> None:
    path = "/opt/" + "very-long-directory-name/" * 8 + "libsomething.so.1"
    vmas = [Vma(BASE + i * P, BASE + (i + 1) * P, "r--p", i * P, 0x801, 99, path)
            for i in range(3)]
    a = analyze(Snapshot.from_vmas(vmas, SnapshotMeta(kernel_release="6.18.44")))
    text = render(a, "text", width=80)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    assert "libsomething" in text.replace("\n", "").replace(" ", "")
