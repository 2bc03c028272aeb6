"""The HTML report leads with the budget: the headline, the stacked bar of causes, the
reservation strips coloured by cause and the three terms, checked in headless Chromium."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from test_report import _screenshot

from vmascope.analysis import analyze
from vmascope.analysis.budget import CAUSE_COLOURS
from vmascope.model import Snapshot, SnapshotMeta, Vma
from vmascope.report import render

P = 4096
BASE = 0x7F00_0000_0000
RW = frozenset({"rd", "wr", "mr", "mw", "me", "ac"})
NONE = frozenset({"mr", "mw", "me"})


def mixed_snapshot() -> Snapshot:
    """One reservation: 600 pages alternating ---p/rw-p (600 protection boundaries), then
    200 written rw-p pages, every other one MADV_DONTDUMP (200 VmFlags boundaries), then
    100 written look-alike rw-p pages (100 anon_vma boundaries, inferred)."""
    vmas = []
    addr = BASE
    for i in range(600):
        rw = i % 2 == 1
        vmas.append(Vma(addr, addr + P, "rw-p" if rw else "---p", flags=RW if rw else NONE,
                        smaps={"Anonymous": P if rw else 0}))
        addr += P
    for i in range(200):
        vmas.append(Vma(addr, addr + P, "rw-p", flags=RW | ({"dd"} if i % 2 else set()),
                        smaps={"Anonymous": P}))
        addr += P
    for _ in range(100):
        vmas.append(Vma(addr, addr + P, "rw-p", flags=RW, smaps={"Anonymous": P}))
        addr += P
    return Snapshot.from_vmas(vmas, SnapshotMeta(pid=7, comm="gc", max_map_count=65530,
                                                 kernel_release="6.18.44", source="file"))


def test_budget_numbers_by_construction() -> None:
    a = analyze(mixed_snapshot())
    b = a.budget
    assert b is not None and b.ideal == 1 and b.excess == 899
    counts = {k: v for k, v in b.totals.counts.items() if v}
    # 599 boundaries inside the alternating part. Its last page (599) is rw-p and the
    # next (600) is rw-p without dd, both written: that boundary looks alike, so with the
    # 99 inside the last part it makes 100 anon_vma ones. The dd part alternates from
    # page 600 to 799 and page 800 has no dd: 200 VmFlags boundaries.
    assert counts == {"protection": 599, "vmflags": 200, "anon_vma": 100}


def test_html_leads_with_the_budget(tmp_path: Path) -> None:
    from matplotlib.image import imread

    a = analyze(mixed_snapshot())
    html = render(a, "html")
    assert html.index("Budget: every VMA accounted for") < html.index("<h2>Headroom")
    for term in ("<dt>VMA</dt>", "<dt>reservation</dt>", "<dt>anon_vma</dt>"):
        assert term in html
    assert "900 VMAs where 1 would do" in html
    page = tmp_path / "r.html"
    page.write_text(html)
    png = tmp_path / "r.png"
    _screenshot(page, png, 1100, 700)
    img = imread(png)
    rgb = (img[..., :3] * 255).astype(np.uint8).reshape(-1, 3)

    def present(hexcol: str) -> int:
        want = np.array([int(hexcol[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(rgb.astype(int) - want).sum(axis=1) < 12).sum())

    # The first screen (700 px) shows the bar and strip in the three causes' colours,
    # protection the widest (599 of 899).
    px = {c: present(CAUSE_COLOURS[c]) for c in ("protection", "vmflags", "anon_vma")}
    assert all(v > 200 for v in px.values()), px
    assert px["protection"] > px["vmflags"] > px["anon_vma"], px
