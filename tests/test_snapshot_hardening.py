"""Snapshot files that used to break the loader: metadata of the wrong JSON types, long
section names, deep nesting, decompression bombs, sizes that disagree with end.json."""

from __future__ import annotations

import io
import struct
import time

import pytest
import zstandard

from vmascope.errors import ParseError, SnapshotFormatError
from vmascope.procfs import snapfile
from vmascope.procfs.load import load_stream

MAPS = b"00400000-00401000 r--p 00000000 00:00 0 \n"


def snapshot_bytes(meta: object = None, end: object = None, *, maps: bytes = MAPS,
                   raw_meta: bytes | None = None, raw_end: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    w = snapfile.SnapshotWriter(buf)
    if raw_meta is not None:
        w.section("meta.json", raw_meta)
    else:
        w.json_section("meta.json", {"meta": {"pid": 7}, "sections": ["maps"]}
                       if meta is None else meta)
    w.section("maps", maps)
    if raw_end is not None:
        w.section("end.json", raw_end)
    else:
        w.json_section("end.json", {} if end is None else end)
    w.close()
    return buf.getvalue()


def load(data: bytes):
    return load_stream(io.BytesIO(data), "f.vmasnap")


def test_a_good_file_loads():
    snap = load(snapshot_bytes(end={"map_count": 1, "sections": {"maps": len(MAPS)}}))
    assert len(snap) == 1 and snap.meta.pid == 7


@pytest.mark.parametrize("meta, where", [
    ([], "meta.json: expected an object"),
    ({"meta": None}, "meta.json.meta: expected an object"),
    ({"meta": {"extra": []}}, "meta.json.meta.extra: expected an object"),
    ({"meta": {"max_map_count": "x"}}, "meta.json.meta.max_map_count: expected an integer"),
    ({"meta": {"max_map_count": 1.5}}, "meta.json.meta.max_map_count: expected an integer"),
    ({"meta": {"kernel_release": 5}}, "meta.json.meta.kernel_release: expected a string"),
    ({"meta": {"pid": True}}, "meta.json.meta.pid: expected an integer"),
    ({"meta": {"pid": 0}}, "meta.json.meta.pid: expected an integer from 1"),
    ({"meta": {"time": "now"}}, "meta.json.meta.time: expected a number"),
    ({"meta": {"page_size": 3000}}, "meta.json.meta.page_size"),
    ({"meta": {"status": {"Pid": 1}}}, "meta.json.meta.status.Pid: expected a string"),
    ({"meta": {"smaps_rollup": {"Rss": "1"}}}, "meta.json.meta.smaps_rollup.Rss"),
    ({"meta": {"cmdline": "x"}}, "meta.json.meta.cmdline: expected a list"),
    ({"meta": {}, "sections": 5}, "meta.json.sections: expected a list"),
    ({"meta": {}, "sections": [5]}, "meta.json.sections[0]: expected a section name"),
    ({}, "meta.json: expected a key 'meta'"),
])
def test_metadata_of_the_wrong_type_is_one_clear_error(meta, where):
    with pytest.raises(SnapshotFormatError) as err:
        load(snapshot_bytes(meta))
    assert str(err.value).startswith("f.vmasnap: corrupt snapshot file (")
    assert where in str(err.value)


@pytest.mark.parametrize("end, where", [
    ([], "end.json: expected an object"),
    ({"map_count": "1"}, "end.json.map_count: expected an integer"),
    ({"sections": 3}, "end.json.sections: expected an object"),
    ({"sections": {"maps": -1}}, "end.json.sections.maps"),
    ({"map_count": 2}, "end.json declares 2 mappings"),
    ({"sections": {"maps": 5}}, f"section maps: end.json declares 5 bytes, found {len(MAPS)}"),
])
def test_end_json_is_validated_and_must_match_what_was_read(end, where):
    with pytest.raises(SnapshotFormatError) as err:
        load(snapshot_bytes(end=end))
    assert where in str(err.value)


def test_nan_and_deep_nesting_are_refused():
    with pytest.raises(SnapshotFormatError, match="not JSON"):
        load(snapshot_bytes(raw_meta=b'{"meta": {"time": NaN}}'))
    deep = b'{"meta": {"extra": {"x": ' + b"[" * 100000 + b"]" * 100000 + b"}}}"
    with pytest.raises(SnapshotFormatError, match="nested too deeply"):
        load(snapshot_bytes(raw_meta=deep))


def test_a_section_name_of_4096_bytes_is_refused():
    with pytest.raises(SnapshotFormatError, match="section name of 4096 bytes"):
        buf = io.BytesIO()
        w = snapfile.SnapshotWriter(buf)
        w.json_section("meta.json", {"meta": {}, "sections": ["maps"]})
        w.section("a" * 4096, b"x")
        w.close()
        load(buf.getvalue())


def test_a_section_twice_is_refused():
    buf = io.BytesIO()
    w = snapfile.SnapshotWriter(buf)
    w.json_section("meta.json", {"meta": {}, "sections": ["maps"]})
    w.section("maps", MAPS)
    w.section("maps", MAPS)
    w.json_section("end.json", {})
    w.close()
    with pytest.raises(SnapshotFormatError, match="section maps twice"):
        load(buf.getvalue())


def test_only_blank_lines_is_no_snapshot():
    with pytest.raises(SnapshotFormatError, match="no mapping lines"):
        load(snapshot_bytes(maps=b"\n" * 100000))


def _bomb(section: str, total: int, fill: bytes = b"\n") -> bytes:
    """A well-formed file whose section ``section`` holds ``total`` bytes of ``fill``."""
    out = io.BytesIO()
    out.write(snapfile.HEADER.pack(snapfile.MAGIC, snapfile.FORMAT_VERSION))
    z = zstandard.ZstdCompressor(level=19, write_checksum=True).compressobj()
    meta = b'{"meta": {}, "sections": ["maps"]}'
    out.write(z.compress(b"S" + struct.pack("<H", 9) + b"meta.json"
                         + b"D" + struct.pack("<I", len(meta)) + meta))
    name = section.encode()
    out.write(z.compress(b"S" + struct.pack("<H", len(name)) + name))
    block = fill * (1 << 20)
    left = total
    while left:
        n = min(left, snapfile.MAX_DATA)
        out.write(z.compress(b"D" + struct.pack("<I", n)))
        while n:
            k = min(n, len(block))
            out.write(z.compress(block[:k]))
            n -= k
            left -= k
    out.write(z.compress(b"E"))
    out.write(z.flush())
    return out.getvalue()


@pytest.mark.parametrize("section", ["maps", "status", "meta.json", "unknown-section"])
def test_decompression_is_bounded_by_the_file_size(section):
    # ~200 MiB of one byte compress to a few KB: far past MAX_RATIO times the file.
    data = _bomb(section, 200 << 20)
    assert len(data) < 64 << 10
    t = time.monotonic()
    with pytest.raises(SnapshotFormatError) as err:
        load(data)
    assert time.monotonic() - t < 10
    msg = str(err.value)
    assert ("times its size" in msg) or ("larger than 8 MiB" in msg) or ("nested" in msg)


def test_small_sections_are_capped():
    data = _bomb("status", 9 << 20, b"x")
    with pytest.raises(SnapshotFormatError, match="times its size|larger than 8 MiB"):
        load(data)


SMAPS_FIELDS = b"".join(b"%-16s %8d kB\n" % (k, 0) for k in (
    b"Size:", b"KernelPageSize:", b"MMUPageSize:", b"Rss:", b"Pss:", b"Pss_Dirty:",
    b"Shared_Clean:", b"Shared_Dirty:", b"Private_Clean:", b"Private_Dirty:",
    b"Referenced:", b"Anonymous:", b"KSM:", b"LazyFree:", b"AnonHugePages:",
    b"ShmemPmdMapped:", b"FilePmdMapped:", b"Shared_Hugetlb:", b"Private_Hugetlb:",
    b"Swap:", b"SwapPss:", b"Locked:")) + b"THPeligible:           0\n"


def test_a_heap_of_alike_vmas_loads(monkeypatch):
    """A fragmented heap compresses to a few bytes a VMA while its columns take ~225 bytes
    a VMA: a snapshot file of 2,000,000 such VMAs (written by ``snapshot -o``) was
    refused as a bomb. Without the constant allowance, only the bound per byte of the
    file counts here: the old bound (48) refuses these 30,000 VMAs, the new one loads
    them."""
    from vmascope.procfs import load as load_mod

    n = 30_000
    smaps = b"".join(b"7f%010x-7f%010x %s 00000000 00:00 0 \n" % (
        2 * i * 4096, (2 * i + 1) * 4096, b"rw-p" if i % 2 else b"---p")
        + SMAPS_FIELDS.replace(b"Size:                   0", b"Size:                   4")
        + (b"VmFlags: rd wr mr mw me ac \n" if i % 2 else b"VmFlags: mr mw me nr \n")
        for i in range(n))
    buf = io.BytesIO()
    w = snapfile.SnapshotWriter(buf)
    w.json_section("meta.json", {"meta": {"pid": 7}, "sections": ["smaps"]})
    w.section("smaps", smaps)
    w.json_section("end.json", {"map_count": n, "sections": {"smaps": len(smaps)}})
    w.close()
    data = buf.getvalue()
    monkeypatch.setattr(load_mod, "COL_BYTES_SLACK", 0)
    monkeypatch.setattr(load_mod, "COL_BYTES_PER_FILE_BYTE", 48)
    with pytest.raises(ParseError, match="bounded memory"):
        load(data)
    monkeypatch.undo()
    monkeypatch.setattr(load_mod, "COL_BYTES_SLACK", 0)
    snap = load(data)
    assert len(snap) == n and int(snap.end[-1] - snap.start[0]) == (2 * n - 1) * 4096


def test_a_snapshot_file_loads_with_only_some_smaps_fields():
    """The recorder keeps only the fields it reads of its snapshots: the others are
    still checked, not kept; the rows are those of a whole load."""
    smaps = b"".join(b"7f%010x-7f%010x rw-p 00000000 00:00 0 \n" % (2 * i * 4096, (2 * i + 1) * 4096)
                     + SMAPS_FIELDS.replace(b"Rss:                    0", b"Rss:                    4")
                     + b"VmFlags: rd wr mr mw me ac \n" for i in range(50))
    buf = io.BytesIO()
    w = snapfile.SnapshotWriter(buf)
    w.json_section("meta.json", {"meta": {"pid": 7}, "sections": ["smaps"]})
    w.section("smaps", smaps)
    w.json_section("end.json", {"map_count": 50, "sections": {"smaps": len(smaps)}})
    w.close()
    data = buf.getvalue()
    whole = load(data)
    some = load_stream(io.BytesIO(data), "f.vmasnap", fields=("Rss", "Anonymous"),
                       kernel_view=False)
    assert set(whole.smaps) > {"Rss", "Anonymous", "Swap"}
    assert set(some.smaps) == {"Rss", "Anonymous"}
    assert some.smaps["Rss"].tolist() == whole.smaps["Rss"].tolist() == [4096] * 50
    assert some.start.tolist() == whole.start.tolist()
    assert (some.vmflags == whole.vmflags).all()
