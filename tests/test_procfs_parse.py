"""The /proc text parser on literal text of every line form, and against a pure-Python
reference parser (kept here, not in the package) on hypothesis-generated input.

Maps lines follow fs/proc/task_mmu.c show_vma_header_prefix():
``%08lx-%08lx %c%c%c%c %08llx %02x:%02x %lu `` and, for a named VMA, seq_pad() to
column 72 plus one space (the name starts at column 73), then the name; an unnamed VMA
line ends in the single space after the inode.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vmascope.errors import ParseError
from vmascope.model import KNOWN_VMFLAGS, PERM_EXEC, PERM_READ, PERM_SHARED, PERM_WRITE
from vmascope.procfs.parse import (
    TextParser,
    attach_numa,
    parse_numa_text,
    parse_rollup,
    parse_status,
    parse_text,
    split_deleted,
    unescape_name,
)

MAPS = (
    "00400000-0040b000 r-xp 00000000 08:01 1234                               /usr/bin/my prog\n"
    "0060a000-0060b000 rw-p 0000a000 08:01 1234                               /usr/bin/my prog\n"
    "01c4e000-01c6f000 rw-p 00000000 00:00 0                                  [heap]\n"
    "7f0000000000-7f0000021000 rw-p 00000000 00:00 0 \n"
    "7f0000021000-7f0004000000 ---p 00000000 00:00 0 \n"
    "7f1000000000-7f1000001000 rw-s 00000000 00:01 4096                       /dev/zero (deleted)\n"
    "7f1000001000-7f1000002000 rw-s 00000000 00:01 32769                      /SYSV00000000 (deleted)\n"
    "7f1000002000-7f1000003000 rw-s 00000000 00:01 5                          /memfd:x (deleted)\n"
    "7f1000003000-7f1000004000 rw-p 00000000 00:00 0                          [anon:my buffer]\n"
    "7f1000004000-7f1000005000 rw-s 00000000 00:01 6                          [anon_shmem:shared thing]\n"
    "7f1000005000-7f1000006000 r--p 00000000 fd:00 77                         /tmp/odd\\012name\n"
    "7f1000006000-7f1000007000 r--p 123456789 103:fffff 18446744073709551615  /tmp/deleted file (deleted)\n"
    "7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]\n"
    "7ffc00100000-7ffc00101000 rw-p 00000000 00:00 0                          [stack:1234]\n"
    "7ffc00200000-7ffc00204000 r--p 00000000 00:00 0                          [vvar]\n"
    "7ffc00204000-7ffc00205000 r--p 00000000 00:00 0                          [vvar_vclock]\n"
    "7ffc00205000-7ffc00207000 r-xp 00000000 00:00 0                          [vdso]\n"
    "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n"
)

RW = PERM_READ | PERM_WRITE
# (start, end, perms bits, offset, dev = major << 20 | minor, inode, name), read off MAPS.
EXPECTED = [
    (0x00400000, 0x0040B000, PERM_READ | PERM_EXEC, 0, 8 << 20 | 1, 1234, "/usr/bin/my prog"),
    (0x0060A000, 0x0060B000, RW, 0xA000, 8 << 20 | 1, 1234, "/usr/bin/my prog"),
    (0x01C4E000, 0x01C6F000, RW, 0, 0, 0, "[heap]"),
    (0x7F0000000000, 0x7F0000021000, RW, 0, 0, 0, None),
    (0x7F0000021000, 0x7F0004000000, 0, 0, 0, 0, None),
    (0x7F1000000000, 0x7F1000001000, RW | PERM_SHARED, 0, 1, 4096, "/dev/zero (deleted)"),
    (0x7F1000001000, 0x7F1000002000, RW | PERM_SHARED, 0, 1, 32769, "/SYSV00000000 (deleted)"),
    (0x7F1000002000, 0x7F1000003000, RW | PERM_SHARED, 0, 1, 5, "/memfd:x (deleted)"),
    (0x7F1000003000, 0x7F1000004000, RW, 0, 0, 0, "[anon:my buffer]"),
    (0x7F1000004000, 0x7F1000005000, RW | PERM_SHARED, 0, 1, 6, "[anon_shmem:shared thing]"),
    (0x7F1000005000, 0x7F1000006000, PERM_READ, 0, 0xFD << 20, 77, "/tmp/odd\\012name"),
    (0x7F1000006000, 0x7F1000007000, PERM_READ, 0x123456789, 0x103 << 20 | 0xFFFFF,
     2**64 - 1, "/tmp/deleted file (deleted)"),
    (0x7FFC00000000, 0x7FFC00021000, RW, 0, 0, 0, "[stack]"),
    (0x7FFC00100000, 0x7FFC00101000, RW, 0, 0, 0, "[stack:1234]"),
    (0x7FFC00200000, 0x7FFC00204000, PERM_READ, 0, 0, 0, "[vvar]"),
    (0x7FFC00204000, 0x7FFC00205000, PERM_READ, 0, 0, 0, "[vvar_vclock]"),
    (0x7FFC00205000, 0x7FFC00207000, PERM_READ | PERM_EXEC, 0, 0, 0, "[vdso]"),
    (0xFFFFFFFFFF600000, 0xFFFFFFFFFF601000, PERM_EXEC, 0, 0, 0, "[vsyscall]"),
]


def rows(snap):
    return [
        (int(snap.start[i]), int(snap.end[i]), int(snap.perms[i]), int(snap.offset[i]),
         int(snap.dev[i]), int(snap.inode[i]), snap.name(i))
        for i in range(len(snap))
    ]


def test_every_maps_line_form():
    snap = parse_text(MAPS, "maps.txt")
    assert rows(snap) == EXPECTED
    assert snap.meta.source == "maps-dump"
    assert snap.vmflags is None and snap.smaps == {}
    # one interned string per distinct name
    assert snap.names.count("/usr/bin/my prog") == 1
    assert snap.name_id[0] == snap.name_id[1]
    assert snap.start.dtype == np.uint64 and snap.dev.dtype == np.uint32


def test_thirty_two_bit_addresses():
    text = (
        "08048000-08049000 r-xp 00000000 03:00 8951                               /bin/app\n"
        "08049000-0804a000 rw-p 00000000 03:00 8951                               /bin/app\n"
        "bfffe000-c0000000 rwxp 00000000 00:00 0                                  [stack]\n"
    )
    snap = parse_text(text)
    assert rows(snap) == [
        (0x08048000, 0x08049000, PERM_READ | PERM_EXEC, 0, 3 << 20, 8951, "/bin/app"),
        (0x08049000, 0x0804A000, RW, 0, 3 << 20, 8951, "/bin/app"),
        (0xBFFFE000, 0xC0000000, RW | PERM_EXEC, 0, 0, 0, "[stack]"),
    ]


def test_lenient_forms_of_pasted_text():
    # CRLF line ends, a missing final newline, no trailing space after the inode, blank
    # lines: a customer's paste still parses.
    text = "00400000-00401000 r--p 00000000 00:00 0\r\n\n00401000-00402000 r--p 00000000 00:00 0"
    snap = parse_text(text)
    assert [int(x) for x in snap.start] == [0x400000, 0x401000]
    assert snap.name(0) is None and snap.name(1) is None


def test_names_helpers():
    assert unescape_name("/tmp/odd\\012name") == "/tmp/odd\nname"
    assert unescape_name("/tmp/plain name") == "/tmp/plain name"
    assert unescape_name("/a\\134b") == "/a\\b"
    assert split_deleted("/memfd:x (deleted)") == ("/memfd:x", True)
    assert split_deleted("[heap]") == ("[heap]", False)


def test_non_utf8_name_round_trips_through_fsdecode():
    text = b"00400000-00401000 r--p 00000000 08:01 5" + b" " * 33 + b"/tmp/\xff\xfe\n"
    snap = parse_text(text)
    assert os.fsencode(snap.name(0)) == b"/tmp/\xff\xfe"


SMAPS = """\
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
Size:                132 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                   8 kB
Pss:                   8 kB
Pss_Dirty:             8 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         8 kB
Referenced:            8 kB
Anonymous:             8 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:           1
ProtectionKey:         3
VmFlags: rd wr mr mw me ac dd sd 
7f0000021000-7f0000022000 ---p 00000000 00:00 0                          [anon:guard]
Size:                  4 kB
FutureCounter:        12 kB
FutureMode:      enabled
Rss:                   0 kB
VmFlags: mr mw me zz 
"""


def test_smaps_every_field_and_unknown_ones():
    snap = parse_text(SMAPS, "smaps.txt")
    assert snap.meta.source == "smaps-dump"
    assert len(snap) == 2
    sm = snap.smaps
    assert int(sm["Size"][0]) == 132 * 1024 and int(sm["Size"][1]) == 4096
    assert int(sm["Rss"][0]) == 8192 and int(sm["Rss"][1]) == 0
    # plain numbers are kept as printed, not multiplied
    assert int(sm["THPeligible"][0]) == 1 and int(sm["ProtectionKey"][0]) == 3
    # a field the second block lacks stays -1; a field the first block lacked is -1 there
    assert int(sm["Pss"][1]) == -1 and int(sm["ProtectionKey"][1]) == -1
    assert int(sm["FutureCounter"][0]) == -1 and int(sm["FutureCounter"][1]) == 12 * 1024
    # a textual field of some future kernel is not a column; it is counted
    assert "FutureMode" not in sm
    assert snap.meta.extra["skipped_smaps_lines"] == 1
    assert list(sm)[:4] == ["Size", "KernelPageSize", "MMUPageSize", "Rss"]
    assert snap.flags(0) == frozenset({"rd", "wr", "mr", "mw", "me", "ac", "dd", "sd"})
    assert snap.flags(1) == frozenset({"mr", "mw", "me", "zz"})
    assert snap.flag_names[: len(KNOWN_VMFLAGS)] == list(KNOWN_VMFLAGS)
    assert snap.flag_names[len(KNOWN_VMFLAGS)] == "zz"  # unknown mnemonic appended
    assert snap.flag_mask("dd") & int(snap.vmflags[0])
    assert not snap.flag_mask("dd") & int(snap.vmflags[1])
    assert snap.name(1) == "[anon:guard]"


def test_rollup_status_and_numa():
    rollup = (
        "00400000-7ffe1c038000 ---p 00000000 00:00 0                          [rollup]\n"
        "Rss:                1772 kB\nPss_Anon:             116 kB\nKSM:   0 kB\n"
    )
    assert parse_rollup(rollup) == {"Rss": 1772 * 1024, "Pss_Anon": 116 * 1024, "KSM": 0}
    status = "Name:\tmy app\nVmRSS:\t    2064 kB\nThreads:\t4\nUid:\t0\t0\t0\t0\n"
    st_ = parse_status(status)
    assert st_["Name"] == "my app" and st_["Threads"] == "4" and st_["VmRSS"] == "2064 kB"

    numa = (
        "00400000 default file=/usr/bin/my\\040prog mapped=2 N0=2 kernelpagesize_kB=4\n"
        "01c4e000 prefer:0 heap anon=2 dirty=2 N0=2 kernelpagesize_kB=4\n"
        "7f0000000000 bind:0-1 anon=3 dirty=3 N0=3 kernelpagesize_kB=4\n"
        "7f1000000000 interleave:0-1 file=/dev/zero\\040(deleted) dirty=1 N0=1\n"
        "7f1000003000 prefer (many)=static:0-1 anon=1 dirty=1 N1=1\n"
        "7f1000004000 weighted interleave:0-1 mapped=1 N0=1\n"
        "7ffc00000000 local stack anon=1 dirty=1 N0=1 kernelpagesize_kB=4\n"
        "7777777000 default\n"  # no such VMA in MAPS
    )
    snap = parse_text(MAPS)
    res = parse_numa_text(numa)
    assert attach_numa(snap, res) == 1
    pol = {snap.vma(i).start: snap.vma(i).policy for i in range(len(snap))}
    assert pol[0x400000] == "default"
    assert pol[0x1C4E000] == "prefer:0"
    assert pol[0x7F0000000000] == "bind:0-1"
    assert pol[0x7F1000000000] == "interleave:0-1"
    assert pol[0x7F1000003000] == "prefer (many)=static:0-1"
    assert pol[0x7F1000004000] == "weighted interleave:0-1"
    assert pol[0x7FFC00000000] == "local"
    assert pol[0xFFFFFFFFFF600000] is None  # the gate VMA has no numa_maps line

    # The usual case: numa_maps has every VMA of maps but the gate VMA, in order. The
    # policies are taken by position, as the matching by start would give them.
    lines = [line for line in numa.splitlines(keepends=True) if "7777777000" not in line]
    by_start = parse_text(MAPS)
    assert attach_numa(by_start, parse_numa_text("".join(lines[:1] + lines[2:]))) == 0
    snap = parse_text(MAPS)
    starts = "".join(f"{snap.vma(i).start:08x} bind:{i}\n" for i in range(len(snap) - 1))
    assert attach_numa(snap, parse_numa_text(starts)) == 0
    assert [snap.vma(i).policy for i in range(len(snap))] == [
        *(f"bind:{i}" for i in range(len(snap) - 1)), None]
    assert by_start.vma(0).policy == "default" and by_start.vma(1).policy is None


BAD = [
    ("00400000-0040b000 r-xp 00000000 08:01 12\nhello world\n", 2, "mapping line"),
    ("00400000 0040b000 r-xp 00000000 08:01 12\n", 1, "START-END"),
    ("00400000-0040b000 r-xz 00000000 08:01 12\n", 1, "permissions"),
    ("00400000-0040b000 rwxp 0000000g 08:01 12\n", 1, "offset"),
    ("00400000-0040b000 rwxp 00000000 0801 12\n", 1, "MAJOR:MINOR"),
    ("00400000-0040b000 rwxp 00000000 1234:01 12\n", 1, "MAJOR:MINOR"),
    ("00400000-0040b000 rwxp 00000000 08:01\n", 1, "inode"),
    ("00400000-0040b000 rwxp 00000000 08:01 18446744073709551616\n", 1, "inode"),
    ("00400000-0040b000 rwxp 00000000 08:01 12x /a\n", 1, "inode"),
    ("0040b000-00400000 rwxp 00000000 08:01 12\n", 1, "greater than START"),
    ("00000000000400000-0040b000 rwxp 00000000 08:01 12\n", 1, "START-END"),
    ("Size:  4 kB\n", 1, "before smaps fields"),
    ("00400000-0040b000 rwxp 00000000 08:01 12\nRss: 99999999999999999999 kB\n", 2, "63 bits"),
    ("00400000-0040b000 rwxp 00000000 08:01 12\nRss: 9223372036854775 kB\n", 2, "63 bits"),
    ("00400000-0040b000 rwxp 00000000 08:01 12\nVmFlags: rd toolongflag\n", 2, "VmFlags"),
]


@pytest.mark.parametrize("text,line,what", BAD)
def test_malformed_lines_name_line_and_expectation(text, line, what):
    with pytest.raises(ParseError) as info:
        parse_text(text, "dump.txt")
    err = info.value
    assert err.source == "dump.txt" and err.line == line
    assert what in err.expected
    assert str(err).startswith(f"dump.txt:{line}: expected")


def test_too_many_flags_and_long_lines():
    flags = " ".join(f"q{i:02d}" for i in range(30))  # 39 known + 30 new > 64
    with pytest.raises(ParseError, match="64"):
        parse_text(f"00400000-0040b000 rwxp 00000000 08:01 12\nVmFlags: {flags}\n")
    with pytest.raises(ParseError) as info:
        parse_text("00400000-0040b000 rwxp 00000000 08:01 12 /" + "a" * 70000 + "\n")
    assert info.value.line == 1 and "shorter" in info.value.expected


def test_chunk_boundaries_anywhere_give_the_same_result():
    data = SMAPS.encode() + MAPS.encode()
    whole = parse_text(data)
    for size in (1, 2, 7, 64, 333):
        p = TextParser("x")
        for i in range(0, len(data), size):
            p.feed(data[i : i + size])
        res = p.finish()
        assert res["n"] == len(whole)
        assert np.array_equal(np.frombuffer(res["start"], np.uint64), whole.start)
        assert np.array_equal(np.frombuffer(res["vmflags"], np.uint64), whole.vmflags)
        assert res["names"] == whole.names


def test_count_only_mode_counts_per_name():
    p = TextParser("x", keep=False)
    p.feed(MAPS.encode())
    res = p.finish()
    assert res["n"] == len(EXPECTED)
    assert "start" not in res
    counts = dict(zip(res["names"], res["name_counts"]))
    assert counts["/usr/bin/my prog"] == 2 and counts["[heap]"] == 1
    assert res["anon_count"] == 2


# --------------------------------------------------------------------------------------
# A pure-Python reference parser, written from the same format rules, for differential
# testing. It returns either ("ok", result) or ("error", line).

_HEADER = re.compile(
    rb"([0-9a-fA-F]{1,16})-([0-9a-fA-F]{1,16}) ([r-])([w-])([x-])([sp]) ([0-9a-fA-F]{1,16}) "
    rb"([0-9a-fA-F]{1,3}):([0-9a-fA-F]{1,5}) ([0-9]+)(?: (.*))?\Z",
    re.S,
)
_KEY = re.compile(rb"([A-Za-z_][A-Za-z0-9_]*):")
INT64_MAX = 2**63 - 1


# A CR inside a line followed by what starts a maps line or an smaps field.
_CR_LINE = re.compile(rb"\r(?:[0-9a-fA-F]+-|[A-Za-z_][A-Za-z0-9_]*:)")


class RefError(Exception):
    pass


def ref_parse(data: bytes):
    rows_, names, flags = [], [], list(KNOWN_VMFLAGS)
    field_order: list[str] = []
    lineno = 0
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    try:
        for raw in lines:
            lineno += 1
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if _CR_LINE.search(line):
                raise RefError  # CR-only line endings
            if line.strip(b" \t") == b"":
                continue
            if re.match(rb"[0-9a-fA-F]+-", line):
                m = _HEADER.match(line)
                if not m:
                    raise RefError
                start, end = int(m[1], 16), int(m[2], 16)
                ino = int(m[10])
                if end <= start or ino >= 2**64:
                    raise RefError
                perms = ((m[3] == b"r") * 1 | (m[4] == b"w") * 2 | (m[5] == b"x") * 4
                         | (m[6] == b"s") * 8)
                name = (m[11] or b"").lstrip(b" ")
                nid = -1
                if name:
                    dec = os.fsdecode(name)
                    if dec not in names:
                        names.append(dec)
                    nid = names.index(dec)
                rows_.append({"start": start, "end": end, "perms": perms,
                              "offset": int(m[7], 16),
                              "dev": int(m[8], 16) << 20 | int(m[9], 16),
                              "inode": ino, "name_id": nid, "fields": {}, "flags": 0})
                continue
            m = _KEY.match(line)
            if not m:
                raise RefError
            if not rows_:
                raise RefError
            key = m[1].decode()
            if len(key) >= 48:
                raise RefError
            value = line[m.end():]
            if key == "VmFlags":
                bits = 0
                for tok in value.split(b" "):
                    if not tok:
                        continue
                    if len(tok) > 7 or any(b < 0x21 or b > 0x7E for b in tok):
                        raise RefError  # printable ASCII only (not NUL, not \xff)
                    t = tok.decode("latin-1")
                    if t not in flags:
                        if len(flags) >= 64:
                            raise RefError
                        flags.append(t)
                    bits |= 1 << flags.index(t)
                rows_[-1]["flags"] = bits
                rows_[-1]["has_flags"] = True
                continue
            value = value.lstrip(b" \t")
            mnum = re.match(rb"[0-9]+", value)
            if not mnum:
                continue
            n = int(mnum[0])
            if n > INT64_MAX:
                raise RefError
            rest = value[mnum.end():].lstrip(b" ")
            if rest == b"kB":
                if n > INT64_MAX // 1024:
                    raise RefError
                n *= 1024
            elif rest != b"":
                continue
            if key not in field_order:
                field_order.append(key)
            rows_[-1]["fields"][key] = n
    except RefError:
        return ("error", lineno)
    return ("ok", {"rows": rows_, "names": names, "field_order": field_order,
                   "flags": flags})


def c_parse(chunks):
    p = TextParser("gen")
    try:
        for c in chunks:
            p.feed(c)
        return ("ok", p.finish())
    except ParseError as exc:
        return ("error", exc.line)


def assert_agree(data: bytes, cuts: list[int]):
    cuts = sorted({min(c, len(data)) for c in cuts})
    pieces, prev = [], 0
    for c in cuts + [len(data)]:
        pieces.append(data[prev:c])
        prev = c
    want = ref_parse(data)
    got = c_parse(pieces)
    assert got[0] == want[0], (got, want)
    if want[0] == "error":
        assert got[1] == want[1]
        return
    res, ref = got[1], want[1]
    n = len(ref["rows"])
    assert res["n"] == n
    for col, dtype in (("start", np.uint64), ("end", np.uint64), ("perms", np.uint8),
                       ("offset", np.uint64), ("dev", np.uint32), ("inode", np.uint64),
                       ("name_id", np.int32)):
        assert np.frombuffer(res[col], dtype).tolist() == [r[col] for r in ref["rows"]], col
    assert res["names"] == ref["names"]
    assert res["field_names"] == ref["field_order"]
    for key, col in zip(res["field_names"], res["fields"]):
        assert np.frombuffer(col, np.int64).tolist() == [
            r["fields"].get(key, -1) for r in ref["rows"]], key
    if res["has_vmflags"]:
        assert res["flag_names"] == ref["flags"]
        assert np.frombuffer(res["vmflags"], np.uint64).tolist() == [
            r["flags"] for r in ref["rows"]]
    else:
        assert not any(r.get("has_flags") for r in ref["rows"])


NAMES = st.sampled_from([
    None, "[heap]", "[stack]", "[stack:77]", "[vdso]", "[vvar]", "[vvar_vclock]",
    "[vsyscall]", "[anon:gc heap]", "[anon_shmem:ring]", "/usr/lib/libc.so.6",
    "/opt/my app/lib x.so", "/dev/zero (deleted)", "/SYSV00000000 (deleted)",
    "/memfd:x (deleted)", "/tmp/a\\012b", "/tmp/trailing ",
])
FIELDS = st.sampled_from(["Size", "Rss", "Pss", "Swap", "THPeligible", "ProtectionKey",
                          "NewThing", "Locked"])


@st.composite
def maps_text(draw):
    n = draw(st.integers(0, 12))
    out = []
    addr = draw(st.integers(0, 2**40))
    for _ in range(n):
        start = addr + draw(st.integers(0, 2**20)) * 4096
        end = start + draw(st.integers(1, 2**16)) * 4096
        addr = end
        if end >= 2**64:
            break
        perms = (draw(st.sampled_from("r-")) + draw(st.sampled_from("w-"))
                 + draw(st.sampled_from("x-")) + draw(st.sampled_from("ps")))
        head = (f"{start:08x}-{end:08x} {perms} {draw(st.integers(0, 2**44)):08x} "
                f"{draw(st.integers(0, 0xFFF)):02x}:{draw(st.integers(0, 0xFFFFF)):02x} "
                f"{draw(st.integers(0, 2**64 - 1))} ")
        name = draw(NAMES)
        out.append(head if name is None else head.ljust(72) + " " + name)
        if draw(st.booleans()):
            for key in draw(st.lists(FIELDS, max_size=5)):
                v = draw(st.integers(0, 2**40))
                unit = " kB" if key not in ("THPeligible", "ProtectionKey") else ""
                out.append(f"{key}:{' ' * draw(st.integers(1, 9))}{v}{unit}")
            if draw(st.booleans()):
                fl = draw(st.lists(st.sampled_from(list(KNOWN_VMFLAGS) + ["zz", "q1"]),
                                   max_size=6))
                out.append("VmFlags: " + "".join(f + " " for f in fl))
    return ("\n".join(out) + ("\n" if out else "")).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(maps_text(), st.lists(st.integers(0, 4000), max_size=4))
def test_c_parser_agrees_with_reference_on_valid_text(data, cuts):
    assert_agree(data, cuts)


@st.composite
def mutated(draw):
    data = bytearray(draw(maps_text()))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        pos = draw(st.integers(0, len(data)))
        byte = draw(st.sampled_from(b" -:\n\r\t0aFgz\x00\xff[(kB"))
        if op == "flip" and pos < len(data):
            data[pos] = byte
        elif op == "insert":
            data.insert(pos, byte)
        elif op == "delete" and pos < len(data):
            del data[pos]
    return bytes(data)


KERNEL_FIELDS = ["Size", "KernelPageSize", "Rss", "Pss", "Private_Dirty", "Anonymous",
                 "AnonHugePages", "Shared_Hugetlb", "Swap", "Locked", "THPeligible"]
VALUES = st.one_of(st.integers(0, 99999999), st.integers(0, 2**63 - 1),
                   st.sampled_from([10**17 - 1, 10**17, 10**18 - 1, 10**18, 2**63 // 1024,
                                    2**63 // 1024 + 1, 2**63 - 1]))


@st.composite
def kernel_smaps(draw):
    """smaps as the kernel prints it: every block with the same fields in the same order,
    each key padded to 16 columns and its value to 8 (the shape the C parser reads
    without looking for the line's end first)."""
    keys = draw(st.lists(st.sampled_from(KERNEL_FIELDS), min_size=1, max_size=8,
                         unique=True))
    out = []
    for i in range(draw(st.integers(1, 6))):
        start = 0x7F0000000000 + 2 * i * 4096
        out.append(f"{start:x}-{start + 4096:x} rw-p 00000000 00:00 0 ")
        for key in keys:
            unit = "" if key == "THPeligible" else " kB"
            out.append(f"{key + ':':<16}{draw(VALUES):>8}{unit}")
        out.append("VmFlags: rd wr mr mw me ac ")
    return ("\n".join(out) + "\n").encode()


@st.composite
def mutated_kernel_smaps(draw):
    data = bytearray(draw(kernel_smaps()))
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(data) - 1))
        byte = draw(st.sampled_from(b" \t0:9kBx\n\r"))
        if draw(st.booleans()):
            data[pos] = byte
        else:
            data.insert(pos, byte)
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_kernel_smaps(), st.lists(st.integers(0, 2000), max_size=3))
@example(b"7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n"
         b"Rss:            9007199254740992 kB\n", [])  # 2^63 / 1024: too big as bytes
@example(b"7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n"
         b"Rss:            999999999999999999 kB\nRss:           1000000000000000000\n", [])
@example(b"".join(b"7f000000%d000-7f000000%d000 rw-p 00000000 00:00 0 \nVmFlags: %s\n"
                  % (i, i + 1, f) for i, f in enumerate(
                      [b"rd wr mr ", b"mr mw ", b"rd wr mr ", b"mr mw ", b"rd wr mr",
                       b"mr mw ", b"mr\x01mw "])), [])  # remembered texts, then a bad one
def test_kernel_shaped_smaps_agree_with_reference(data, cuts):
    # The fields of the kernel's shape take a shorter way through the C parser; it gives
    # what the reference gives, or fails at the same line, mutated or not.
    assert_agree(data, cuts)


_NUL_FLAGS = b"00400000-00401000 r--p 00000000 00:00 0 \nSize:  4 kB\nVmFlags:\x00\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.lists(st.integers(0, 4000), max_size=3))
# the two parsers once disagreed on a NUL in VmFlags (a run in six found it): always tried
@example(_NUL_FLAGS, [])
@example(_NUL_FLAGS, [len(_NUL_FLAGS) - 2])
@example(_NUL_FLAGS.replace(b"\x00", b" rd\x00"), [])
@example(_NUL_FLAGS.replace(b"\x00", b"\x00 rd"), [40])
def test_malformed_text_only_ever_raises_parse_error_at_the_same_line(data, cuts):
    # Either both parsers accept it with identical columns, or both reject it at the
    # same line; the C parser never raises anything but ParseError (nor crashes).
    assert_agree(data, cuts)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data):
    assert_agree(data, [len(data) // 2])


NUMA_RE = re.compile(rb"([0-9a-fA-F]{1,16}) ")


def ref_numa(data: bytes):
    out = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for i, raw in enumerate(lines, 1):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if _CR_LINE.search(line) or re.search(rb"\r[0-9a-fA-F]+ ", line):
            return ("error", i)
        if line.strip(b" \t") == b"":
            continue
        m = NUMA_RE.match(line)
        if not m:
            return ("error", i)
        rest = line[m.end():]
        pol = rest.split(b" ")[0]
        after = rest[len(pol):]
        # the two policy names with a space in them (mm/mempolicy.c policy_modes[])
        if (pol == b"weighted" and after.startswith(b" interleave")) or (
            pol.startswith(b"prefer") and after.startswith(b" (many)")
        ):
            pol = pol + b" " + after[1:].split(b" ")[0]
        if not pol:
            return ("error", i)
        out.append((int(m[1], 16), os.fsdecode(pol)))
    return ("ok", out)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**48), st.sampled_from(
    ["default", "local", "bind:0", "prefer (many)=static:0-1", "weighted interleave:1",
     "interleave:0-3", "", "prefer"])), max_size=6),
    st.sampled_from(["", " anon=1 N0=1", " file=/a\\040b mapped=1", " heap"]))
def test_numa_agrees_with_reference(lines, tail):
    data = "".join(f"{a:x} {p}{tail}\n" for a, p in lines).encode()
    want = ref_numa(data)
    try:
        res = parse_numa_text(data)
        got = ("ok", list(zip(np.frombuffer(res["start"], np.uint64).tolist(),
                              [res["names"][i] for i in np.frombuffer(res["name_id"], np.int32)])))
    except ParseError as exc:
        got = ("error", exc.line)
    assert got == want


# -- regressions: input the parser used to mishandle ----------------------------------

HEAD = b"00400000-00401000 r--p 00000000 00:00 0\n"


@pytest.mark.parametrize("flags", [b"\xff", b"rd \xc3\x28", b"r\x00d", b"rd\x00", b"\x7f"])
def test_vmflags_that_are_not_printable_ascii_are_a_parse_error(flags):
    # Used to be a SystemError from the C extension (\xff) or a silently cut token (NUL).
    with pytest.raises(ParseError) as err:
        parse_text(HEAD + b"VmFlags: " + flags + b"\n", "dump")
    assert err.value.line == 2 and "VmFlags" in err.value.expected
    assert ref_parse(HEAD + b"VmFlags: " + flags + b"\n") == ("error", 2)


def test_cr_only_line_endings_are_refused_at_line_1():
    text = (b"00400000-00401000 r--p 00000000 00:00 0 \r"
            b"00401000-00402000 r--p 00000000 00:00 0 \rSize: 4 kB\r")
    with pytest.raises(ParseError) as err:
        parse_text(text, "dump.txt")
    assert str(err.value).startswith("dump.txt:1: ") and "carriage return" in str(err.value)
    with pytest.raises(ParseError):
        parse_numa_text(b"7f0000000000 default\r7f0000001000 default\r")


def test_a_lone_cr_in_a_file_name_is_kept():
    text = HEAD.rstrip(b"\n") + b" /tmp/a\rb\n"
    snap = parse_text(text)
    assert snap.name(0) == "/tmp/a\rb"


def test_bare_mapping_lines_after_a_wide_smaps_block_are_bounded():
    # 128 fields then ~10 MB of bare mapping lines: each row would cost 1 KB of columns
    # (60x the text); the parser refuses instead of growing past its memory budget.
    block = HEAD + b"".join(b"F%d: 4 kB\n" % i for i in range(128))
    bare = b"0-1 ---p 0 0:0 0\n"
    parser = TextParser("dump")
    with pytest.raises(ParseError) as err:
        parser.feed(block)
        for _ in range(100):
            parser.feed(bare * 6000)
        parser.finish()
    assert "bounded memory" in err.value.expected


def test_many_bare_mapping_lines_alone_still_parse():
    bare = b"".join(b"%x-%x ---p 0 0:0 0\n" % (i * 4096, i * 4096 + 4096) for i in range(1, 200001))
    snap = parse_text(bare)
    assert len(snap) == 200000


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_take_between_chunks_gives_the_rows_of_a_whole_parse(seed: int) -> None:
    """Rows handed over while the text streams in (``take``), then ``finish``: the same
    rows, columns and smaps fields as one parse of the whole text, wherever the chunks
    end (inside a line, between a mapping line and its fields)."""
    import random

    from vmascope.procfs.parse import TextParser, snapshot_from_result

    with open(f"/proc/{os.getpid()}/smaps", "rb") as fh:
        text = fh.read()
    cut = text.index(b"\nSwap:")  # a field missing from the first VMA only
    text = text[:cut] + text[text.index(b"\n", cut + 1):]
    whole = TextParser("w")
    whole.feed(text)
    want = snapshot_from_result(whole.finish())
    rng = random.Random(seed)
    p = TextParser("s")
    names: list[str] = []
    pieces = []
    pos = 0
    while pos < len(text):
        step = rng.choice([1, 7, 80, 500, 4096])
        p.feed(text[pos:pos + step])
        pos += step
        res = p.take(len(names))
        names.extend(res["names"])
        pieces.append(snapshot_from_result({**res, "names": list(names)}))
    res = p.finish()
    res["names"] = res["names"][len(names):]
    names.extend(res["names"])
    pieces.append(snapshot_from_result({**res, "names": list(names)}))
    assert sum(len(s) for s in pieces) == len(want)
    assert names == want.names
    for col in ("start", "end", "perms", "offset", "dev", "inode", "name_id", "vmflags"):
        got = np.concatenate([getattr(s, col) for s in pieces if len(s)])
        assert (got == getattr(want, col)).all(), col
    for key, col in want.smaps.items():
        got = np.concatenate([s.smaps.get(key, np.full(len(s), -1)) for s in pieces if len(s)])
        assert (got == col).all(), key
    assert want.smaps["Swap"][0] == -1 and (want.smaps["Swap"][1:] >= 0).all()


@pytest.mark.parametrize("chunk", [7, 4096, 1 << 20])
def test_kept_fields_are_those_of_a_whole_parse(chunk: int) -> None:
    """A parser told which smaps fields to keep (``fields``, as ``analyze`` does) parses
    and checks every field but keeps columns of those only: the same columns as a whole
    parse, also when its rows are handed over piece by piece."""
    from vmascope.procfs.parse import TextParser, snapshot_from_result

    with open(f"/proc/{os.getpid()}/smaps", "rb") as fh:
        text = fh.read()
    cut = text.index(b"\nSwap:")  # a kept field missing from the first VMA only
    text = text[:cut] + text[text.index(b"\n", cut + 1):]
    whole = TextParser("w")
    whole.feed(text)
    wres = whole.finish()
    want = snapshot_from_result(wres)
    p = TextParser("f", fields=("Swap", "Rss", "NoSuchField"))
    names: list[str] = []
    pieces = []
    for pos in range(0, len(text), chunk):
        p.feed(text[pos:pos + chunk])
        res = p.take(len(names))
        names.extend(res["names"])
        pieces.append(snapshot_from_result({**res, "names": list(names)}))
    res = p.finish()
    assert res["field_lines"] == wres["field_lines"] and res["field_names"] == ["Rss", "Swap"]
    res["names"] = res["names"][len(names):]
    names.extend(res["names"])
    pieces.append(snapshot_from_result({**res, "names": list(names)}))
    kept = [s for s in pieces if len(s)]
    assert all(set(s.smaps) <= {"Rss", "Swap"} for s in kept)  # Swap: once it was seen
    for key in ("Rss", "Swap"):
        got = np.concatenate([s.smaps.get(key, np.full(len(s), -1)) for s in kept])
        assert (got == want.smaps[key]).all(), key
    assert (np.concatenate([s.vmflags for s in kept]) == want.vmflags).all()


def test_a_field_not_kept_is_still_checked() -> None:
    from vmascope.procfs.parse import TextParser

    text = (b"10000-11000 rw-p 00000000 00:00 0 \nRss:      4 kB\n"
            b"Pss:      99999999999999999999 kB\n")
    for fields in (None, ("Rss",)):
        p = TextParser("t.smaps", fields=fields)
        with pytest.raises(ParseError) as err:
            p.feed(text)
            p.finish()
        assert err.value.line == 3 and "63 bits" in str(err.value)
    with pytest.raises(ValueError):
        TextParser("t", fields=("x" * 60,))


# Lines in the kernel's commonest shape (12-digit addresses, an 8-digit offset, a 2:2
# device) take a shorter way through the C parser when at least 96 bytes of text follow
# them (a chunk's last lines take the long way); other widths take the long way.
KERNEL_LINES = [
    b"7f1c2a400000-7f1c2a600000 rw-p 00000000 00:00 0 ",
    b"55d0c0a00000-55d0c0a21000 r-xp 0001f000 fd:01 2359321" + b" " * 19 + b"/usr/bin/x y",
    b"7ffc00100000-7ffc00101000 rw-p 00000000 00:00 0" + b" " * 26 + b"[stack:1234]",
    b"00400000-0040b000 r-xp 00000000 08:01 1234" + b" " * 31 + b"/usr/bin/my prog",
    b"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0" + b" " * 18 + b"[vsyscall]",
    b"7f1000006000-7f1000007000 r--s 123456789 103:fffff 1844674407370955161 /tmp/a (deleted)",
    b"7f1000006000-7f1000007000 r--p 00000000 00:00 18446744073709551615 /tmp/b",
    b"7f1000007000-7f1000008000 rw-s 1234567890abcdef ab:cd 7" + b" " * 20 + b"/t ",
    b"7f1000008000-7f1000009000 ---p 00000000 00:05 0" + b" " * 26 + b"/dev/zero",
]
FILLER = b"7e0000000000-7e0000001000 rw-p 00000000 00:00 0 \n" * 3
MUTANTS = b"09aAfFg-: \t\n\x00\xff"


def _mutations(line: bytes):
    yield line
    for i in range(len(line) + 1):
        if i < len(line):
            yield line[:i] + line[i + 1:]
        for b in MUTANTS:
            if i < len(line):
                yield line[:i] + bytes([b]) + line[i + 1:]
            yield line[:i] + bytes([b]) + line[i:]


@pytest.mark.parametrize("line", KERNEL_LINES, ids=range(len(KERNEL_LINES)))
def test_kernel_shaped_maps_lines_agree_with_reference_mutated_anywhere(line):
    # Every one-byte change of each line (removed, replaced, inserted), with text after
    # it: the shorter way gives what the reference gives, or fails at the same line.
    count_checked = 0
    for mutant in _mutations(line):
        data = FILLER + mutant + b"\n" + FILLER
        assert_agree(data, [])
        want = ref_parse(data)
        if want[0] == "ok":  # and counting only gives the same counts
            p = TextParser("gen", keep=False)
            p.feed(data)
            res = p.finish()
            rows = want[1]["rows"]
            assert res["n"] == len(rows)
            assert res["total_size"] == sum(r["end"] - r["start"] for r in rows)
            assert res["anon_count"] == sum(r["name_id"] == -1 for r in rows)
            count_checked += 1
    assert count_checked > 0
