"""The op language: parsing, canonical text, JSONL, and clear errors."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmascope.errors import ParseError
from vmascope.ops import (
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    Op,
    format_op,
    load_script,
    parse_jsonl,
    parse_number,
    parse_script,
    script_text,
)
from vmascope.ops.jsonl import op_from_json
from vmascope.ops.language import MADVICE


@pytest.mark.parametrize(
    "text,value",
    [("0", 0), ("4096", 4096), ("0x1000", 4096), ("16p", 65536), ("4K", 4096),
     ("2M", 2 << 20), ("1G", 1 << 30), ("0x10p", 16 * 4096), ("3k", 3072)],
)
def test_numbers(text: str, value: int) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "p", "0x", "1.5M", "-1", "12q", "0xg"])
def test_bad_numbers(text: str) -> None:
    with pytest.raises(ValueError):
        parse_number(text)


def test_every_op_kind() -> None:
    ops = parse_script(
        """
        # a comment line
        mmap 0 6p --- private,anonymous,noreserve   # trailing comment
        mprotect 5p 1p rw-
        touch 5p
        touch 0 read
        madvise 0 2p dontdump
        munmap 1p 1p
        mremap 0 1p 2p 8p maymove,fixed
        mremap 0 2p 1p
        fork
        name 0 1p gc heap
        name 0 1p -
        mbind 0 1p interleave:0-1,3
        mbind 0 1p default
        heap 0x100000
        brk 0x104000
        """,
        "t.ops",
    )
    kinds = [op.kind for op in ops]
    assert kinds == ["mmap", "mprotect", "touch", "touch", "madvise", "munmap", "mremap",
                     "mremap", "fork", "name", "name", "mbind", "mbind", "heap", "brk"]
    mmap = ops[0]
    assert (mmap.addr, mmap.length, mmap.prot) == (0, 6 * 4096, 0)
    assert mmap.flags == {"private", "anonymous", "noreserve"}
    assert ops[1].prot == PROT_READ | PROT_WRITE
    assert ops[2].write and not ops[3].write
    assert ops[6].new_addr == 8 * 4096 and ops[6].flags == {"maymove", "fixed"}
    assert ops[7].new_addr is None and ops[7].flags == frozenset()
    assert ops[9].name == "gc heap" and ops[10].name is None
    assert ops[11].mode == "interleave" and ops[11].nodes == (0, 1, 3)
    assert ops[14].addr == 0x104000
    # line numbers count blank and comment lines
    assert mmap.line == 3


def test_mmap_flags_default_and_shared() -> None:
    (op,) = parse_script("mmap 0 1p rwx")
    assert op.flags == {"private", "anonymous"} and op.prot == PROT_READ | PROT_WRITE | PROT_EXEC
    (op,) = parse_script("mmap 0 1p r-- shared")
    assert op.flags == {"shared", "anonymous"}


@pytest.mark.parametrize(
    "line,needle",
    [
        ("mmap 0 1p", "mmap ADDR LEN PROT"),
        ("mmap 0 1p rw- private,shared", "private or shared"),
        ("mmap 0 1p rw- fixed", "private or shared"),
        ("mmap 0 1p rwz", "PROT as maps prints it"),
        ("mprotect x 1p rw-", "ADDR as a number"),
        ("madvise 0 1p nonsense", "ADVICE"),
        ("touch 0 exec", "write or read"),
        ("fork now", "CHILD as a number"),
        ("mbind 0 1p bind", "MODE"),
        ("mbind 0 1p preferred:0-1", "one node"),
        ("mremap 0 1p 2p 3p 4p", "mremap ADDR OLDLEN NEWLEN"),
        ("mremap 0 1p 2p sideways", "FLAGS"),
        ("frobnicate 1", "unknown operation"),
    ],
)
def test_errors_name_file_and_line(line: str, needle: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_script("mmap 0 1p ---\n\n" + line + "\n", "bad.ops")
    msg = str(info.value)
    assert msg.startswith("bad.ops:3: "), msg
    assert needle in msg


_addr = st.integers(0, (1 << 35) - 2).map(lambda x: x * 4096) | st.integers(1, 4095)
_prot = st.integers(0, 7)


@st.composite
def ops(draw: st.DrawFn) -> Op:
    kind = draw(st.sampled_from(["mmap", "munmap", "mprotect", "madvise", "mremap", "touch",
                                 "fork", "name", "mbind", "heap", "brk"]))
    a, n = draw(_addr), draw(_addr)
    if kind == "mmap":
        share = draw(st.sampled_from(["private", "shared"]))
        extra = draw(st.sets(st.sampled_from(["fixed", "noreserve", "populate", "growsdown"])))
        return Op("mmap", addr=a, length=n, prot=draw(_prot),
                  flags=frozenset({share, "anonymous"} | extra))
    if kind in ("munmap",):
        return Op(kind, addr=a, length=n)
    if kind == "mprotect":
        return Op(kind, addr=a, length=n, prot=draw(_prot))
    if kind == "madvise":
        return Op(kind, addr=a, length=n, advice=draw(st.sampled_from(MADVICE)))
    if kind == "mremap":
        return Op(kind, addr=a, length=n, new_len=draw(_addr),
                  new_addr=draw(st.none() | _addr),
                  flags=frozenset(draw(st.sets(st.sampled_from(["maymove", "fixed", "dontunmap"])))))
    if kind == "touch":
        return Op(kind, addr=a, write=draw(st.booleans()))
    if kind == "name":
        name = draw(st.none() | st.text("abcXYZ_-:. 09", min_size=1, max_size=20).map(str.strip)
                    .filter(lambda s: s not in ("", "-") and "#" not in s))
        return Op(kind, addr=a, length=n, name=name)
    if kind == "mbind":
        mode = draw(st.sampled_from(["default", "bind", "interleave", "preferred"]))
        nodes: tuple[int, ...] = ()
        if mode == "preferred":
            nodes = (draw(st.integers(0, 7)),)
        elif mode != "default":
            nodes = tuple(sorted(draw(st.sets(st.integers(0, 7), min_size=1))))
        return Op(kind, addr=a, length=n, mode=mode, nodes=nodes)
    if kind == "fork":
        return Op(kind, index=-1)
    return Op(kind, addr=a)


@given(st.lists(ops(), max_size=20))
def test_text_round_trip(script: list[Op]) -> None:
    text = script_text(script)
    again = parse_script(text)
    assert [o.to_json() for o in again] == [o.to_json() for o in script]


@given(st.lists(ops(), max_size=20))
def test_jsonl_round_trip(script: list[Op]) -> None:
    import json

    text = "".join(json.dumps(o.to_json()) + "\n" for o in script)
    assert [format_op(o) for o in load_script(text)] == [format_op(o) for o in script]


def test_jsonl_errors() -> None:
    with pytest.raises(ParseError, match=r"^x.jsonl:2: expected a JSON object"):
        parse_jsonl('{"op": "fork"}\n[1, 2]\n', "x.jsonl")
    with pytest.raises(ParseError, match=r"^x.jsonl:1: "):
        parse_jsonl('{"op": "nope"}\n', "x.jsonl")


def test_shifted_moves_addresses_only() -> None:
    op = Op("mremap", addr=4096, length=4096, new_len=8192, new_addr=16384,
            flags=frozenset({"maymove", "fixed"}))
    moved = op.shifted(1 << 30)
    assert (moved.addr, moved.new_addr, moved.length, moved.new_len) == (
        (1 << 30) + 4096, (1 << 30) + 16384, 4096, 8192)
    assert Op("fork").shifted(5) == Op("fork")


@given(st.text(max_size=200))
def test_garbage_only_raises_parse_error(text: str) -> None:
    try:
        parse_script(text)
    except ParseError:
        pass


def test_uffd_register_and_unregister() -> None:
    ops = parse_script("uffd 0x100000 4p missing\nuffd 0x100000 2p wp,missing\n"
                       "uffd 0x100000 4p off\n", "u.ops")
    assert [o.flags for o in ops] == [{"missing"}, {"missing", "wp"}, set()]
    assert script_text(ops).splitlines() == [
        "uffd 256p 4p missing", "uffd 256p 2p missing,wp", "uffd 256p 4p off"]
    assert [op_from_json(o.to_json()) for o in ops] == [
        dataclasses.replace(o, line=0) for o in ops]
    for bad in ("uffd 0 1p", "uffd 0 1p minor", "uffd 0 1p missing,off"):
        with pytest.raises(ParseError, match="MODES"):
            parse_script(bad, "u.ops")


def test_fork_of_a_fork_child() -> None:
    ops = parse_script("fork\nfork 0\nfork 1\nexit 0\n", "f.ops")
    assert [o.index for o in ops] == [-1, 0, 1, 0]
    assert script_text(ops).splitlines() == ["fork", "fork 0", "fork 1", "exit 0"]
    assert [op_from_json(o.to_json()) for o in ops] == [
        dataclasses.replace(o, line=0) for o in ops]
    assert op_from_json({"op": "fork"}).index == -1


def test_file_seal_exit_and_key_ops() -> None:
    ops = parse_script("memfd dm 6p\nmmap 0 2p r-x shared,fixed fd=dm off=2p\n"
                       "mmap 4p 1p rw- private fd=dm\nfork\nexit 0\nmseal 0 2p\n"
                       "pkey_alloc\npkey_mprotect 0 1p r-- -1\npkey_mprotect 0 1p r-- 1\n"
                       "madvise 0 2p collapse\n", "f.ops")
    assert [o.kind for o in ops] == ["memfd", "mmap", "mmap", "fork", "exit", "mseal",
                                     "pkey_alloc", "pkey_mprotect", "pkey_mprotect",
                                     "madvise"]
    assert (ops[0].name, ops[0].length) == ("dm", 6 * 4096)
    assert (ops[1].fd, ops[1].offset, ops[1].flags) == ("dm", 2 * 4096,
                                                        {"shared", "fixed"})
    assert ops[2].flags == {"private"} and ops[2].offset == 0
    assert ops[4].index == 0 and ops[7].index == -1 and ops[8].index == 1
    # the file, the child and the key are not addresses: an arena leaves them alone
    assert [o.shifted(1 << 30) for o in (ops[0], ops[4], ops[6])] == [ops[0], ops[4], ops[6]]
    assert parse_script(script_text(ops)) == [
        dataclasses.replace(o, line=i + 1) for i, o in enumerate(ops)]


@pytest.mark.parametrize(
    "text,needle",
    [
        ("exit 0", "exit: child 0 is not a running fork child"),
        ("fork 0", "fork: child 0 is not a running fork child"),
        ("fork\nexit 0\nfork 0", "fork: child 0 is not a running fork child"),
        ("fork 1 2", "fork [CHILD]"),
        ("fork\nexit 0\nexit 0", "exit: child 0 is not a running fork child"),
        ("mmap 0 1p rw- shared fd=nope", "fd=nope names no earlier memfd"),
        ("memfd a 1p\nmmap 0 1p rw- shared,anonymous fd=a", "no anonymous with fd=NAME"),
        ("mmap 0 1p rw- private off=1p", "off=N with fd=NAME only"),
        ("memfd a/b 1p", "NAME of 1 to 64"),
        ("pkey_mprotect 0 1p r-- -2", "PKEY"),
        ("mseal 0", "mseal ADDR LEN"),
        ("pkey_alloc 1", "no arguments"),
    ],
)
def test_new_op_errors_are_one_line(text: str, needle: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_script(text, "bad.ops")
    msg = str(info.value)
    assert msg.startswith("bad.ops:") and "\n" not in msg and needle in msg, msg


def test_new_ops_in_jsonl() -> None:
    import json

    ops = parse_script("memfd dm 2p\nmmap 0 2p rw- shared,fixed fd=dm off=1p\nfork\nexit 0\n"
                       "pkey_mprotect 0 1p r-- -1\n")
    text = "".join(json.dumps(o.to_json()) + "\n" for o in ops)
    assert [format_op(o) for o in parse_jsonl(text)] == [format_op(o) for o in ops]
    with pytest.raises(ParseError, match="names no earlier memfd"):
        parse_jsonl('{"op": "mmap", "addr": 0, "length": 4096, "flags": ["shared"], '
                    '"fd": "x"}\n', "x.jsonl")
    with pytest.raises(ParseError, match="exit: fields index"):
        parse_jsonl('{"op": "exit", "addr": 1}\n', "x.jsonl")
