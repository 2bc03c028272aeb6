"""The Snapshot model: records to columns and back, JSON, compactness."""

from __future__ import annotations

import numpy as np
import pytest

from vmascope.model import (
    PERM_READ,
    PERM_SHARED,
    PERM_WRITE,
    Snapshot,
    SnapshotMeta,
    Vma,
    bits_to_perms,
    encode_dev,
    perms_to_bits,
)


def test_perms_round_trip() -> None:
    for text in ("---p", "r--p", "rw-p", "r-xp", "rwxs", "-w-s"):
        assert bits_to_perms(perms_to_bits(text)) == text
    assert perms_to_bits("rw-s") == PERM_READ | PERM_WRITE | PERM_SHARED
    for bad in ("rw-", "rw-x", "xw-p", "rw-pp"):
        with pytest.raises(ValueError):
            perms_to_bits(bad)


def _sample() -> list[Vma]:
    return [
        Vma(0x1000, 0x3000, "r-xp", 0x2000, encode_dev(0xFE, 1), 42, "/usr/bin/cat",
            flags=frozenset({"rd", "ex", "mr", "mw", "me"})),
        Vma(0x3000, 0x4000, "rw-p", name="[heap]", flags=frozenset({"rd", "wr", "ac", "zz"}),
            anon_vma=7, smaps={"Rss": 4096, "Anonymous": 4096}),
        Vma(0x4000, 0x5000, "---p", policy="bind:0"),
    ]


def test_from_vmas_and_back() -> None:
    vmas = _sample()
    snap = Snapshot.from_vmas(vmas, SnapshotMeta(pid=1, max_map_count=65530))
    assert len(snap) == snap.map_count == 3
    back = list(snap)
    assert back[0].name == "/usr/bin/cat" and back[0].offset == 0x2000 and back[0].inode == 42
    assert back[0].flags == vmas[0].flags
    # an unknown mnemonic is kept (appended to this snapshot's table)
    assert back[1].flags == {"rd", "wr", "ac", "zz"} and "zz" in snap.flag_names
    assert back[1].anon_vma == 7 and back[0].anon_vma is None
    assert back[1].smaps == {"Rss": 4096, "Anonymous": 4096} and back[0].smaps is None
    assert back[2].policy == "bind:0" and back[2].name is None
    assert snap.vma(-1) == back[2]
    assert snap.sizes().tolist() == [0x2000, 0x1000, 0x1000]


def test_backing_counts_and_headroom() -> None:
    vmas = [Vma(i * 4096, (i + 1) * 4096) for i in range(5)] + [
        Vma(0x100000, 0x101000, name="/lib/x.so"), Vma(0x101000, 0x102000, name="/lib/x.so"),
        Vma(0x200000, 0x201000, name="[stack]"),
    ]
    snap = Snapshot.from_vmas(vmas, SnapshotMeta(max_map_count=16))
    assert snap.backing_counts() == [("[anon]", 5), ("/lib/x.so", 2), ("[stack]", 1)]
    assert snap.headroom() == (8, 16, 50.0)


def test_json_uses_hex_addresses_and_schema_version() -> None:
    snap = Snapshot.from_vmas(_sample(), SnapshotMeta(pid=9, max_map_count=100))
    data = snap.to_json()
    assert data["schema_version"] == 1 and data["map_count"] == 3
    assert data["percent_used"] == 3.0
    v0 = data["vmas"][0]
    assert v0["start"] == "0x1000" and v0["end"] == "0x3000" and v0["size"] == 0x2000
    assert v0["dev"] == "fe:01"


def test_maps_line_format() -> None:
    # The kernel pads the header to 73 columns before a name (fs/proc/task_mmu.c).
    line = Vma(0x55CE8FBB1000, 0x55CE8FBB3000, "r--p", 0, encode_dev(0xFE, 0), 260131,
               "/usr/bin/cat").maps_line()
    assert line == "55ce8fbb1000-55ce8fbb3000 r--p 00000000 fe:00 260131" + " " * 21 + "/usr/bin/cat"
    assert Vma(0x1000, 0x2000).maps_line() == "00001000-00002000 rw-p 00000000 00:00 0 "


def test_columns_are_compact() -> None:
    n = 100_000
    snap = Snapshot(
        start=np.arange(n, dtype=np.uint64) * 4096, end=np.arange(1, n + 1, dtype=np.uint64) * 4096,
        perms=np.zeros(n, np.uint8), offset=np.zeros(n, np.uint64), dev=np.zeros(n, np.uint32),
        inode=np.zeros(n, np.uint64), name_id=np.full(n, -1, np.int32), names=[],
    )
    assert snap.nbytes() <= 45 * n
