"""The trace file (trace/format.py) and the event converter (trace/convert.py)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from vmascope.errors import ParseError
from vmascope.kconst import TASK_SIZE
from vmascope.ops.language import format_op, parse_line
from vmascope.trace.convert import Converter
from vmascope.trace.events import Event, FileRef
from vmascope.trace.format import Annotation, TraceWriter, parse_annotation
from vmascope.trace.parse import _FastParser, _OpBlock, parse_trace, read_trace

PID = 4242
NEG = lambda e: (1 << 64) - e  # noqa: E731  a negative argument as the kernel sees it


def _ev(call: str, args: tuple[int, ...] = (), ret: int | None = 0, **kw: object) -> Event:
    kw.setdefault("pid", PID)
    kw.setdefault("tid", PID)
    return Event(t=kw.pop("t", 0.5), call=call, args=args, ret=ret, **kw)  # type: ignore[arg-type]


def _lines(events: list[Event], conv: Converter | None = None) -> list[tuple[str | None, str, Annotation]]:
    return list((conv or Converter(PID)).lines(events))


def _ops(events: list[Event], conv: Converter | None = None) -> list[str]:
    return [op for op, _s, _n in _lines(events, conv) if op is not None]


# -- the converter: each call's meaning, from the uapi values -----------------------------

def test_mmap_anonymous_is_placed_where_the_kernel_put_it() -> None:
    # mmap(NULL, 5000, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, -1, 0)
    ev = _ev("mmap", (0, 5000, 0x3, 0x02 | 0x20 | 0x4000, NEG(1), 0), ret=0x7F0000000000)
    assert _ops([ev]) == ["mmap 0x7f0000000000 0x2000 rw- private,anonymous,fixed,noreserve"]


def test_mmap_shared_populate_growsdown() -> None:
    ev = _ev("mmap", (0, 0x1000, 0x1, 0x01 | 0x20 | 0x8000, NEG(1), 0), ret=0x10000)
    assert _ops([ev]) == ["mmap 0x10000 0x1000 r-- shared,anonymous,fixed,populate"]
    ev = _ev("mmap", (0, 0x1000, 0x3, 0x02 | 0x20 | 0x100, NEG(1), 0), ret=0x20000)
    assert _ops([ev]) == ["mmap 0x20000 0x1000 rw- private,anonymous,fixed,growsdown"]


def test_a_thread_stack_keeps_map_stack() -> None:
    # glibc: MAP_PRIVATE|MAP_ANONYMOUS|MAP_STACK (0x20000); VM_NOHUGEPAGE from 6.7
    ev = _ev("mmap", (0, 0x801000, 0x3, 0x02 | 0x20 | 0x20000, NEG(1), 0), ret=0x7F0000000000)
    assert _ops([ev]) == ["mmap 0x7f0000000000 0x801000 rw- private,anonymous,fixed,stack"]


def test_a_file_is_declared_once_and_mapped_by_name() -> None:
    libc = FileRef(path="/usr/lib/libc.so.6", dev=0x801, inode=77)
    evs = [_ev("mmap", (0, 0x2000, 0x1, 0x02, 3, 0), ret=0x7F0000000000, file=libc),
           _ev("mmap", (0x7F0000002000, 0x1000, 0x5, 0x02 | 0x10, 3, 0x2000),
               ret=0x7F0000002000, file=libc)]
    lines = _lines(evs)
    assert [op for op, _s, _n in lines] == [
        "memfd f1 0x10000000000",
        "mmap 0x7f0000000000 0x2000 r-- private,fixed fd=f1",
        "mmap 0x7f0000002000 0x1000 r-x private,fixed fd=f1 off=0x2000"]
    assert lines[0][2].file == "/usr/lib/libc.so.6"


def test_the_inode_names_a_file_from_the_snapshot() -> None:
    conv = Converter(PID, files={(0x801, 77): "/opt/lib.so"})
    lines = _lines([_ev("mmap", (0, 0x1000, 1, 2, 5, 0), ret=0x1000,
                        file=FileRef(dev=0x801, inode=77, basename="lib.so"))], conv)
    assert lines[0][2].file == "/opt/lib.so"


def test_failed_and_unsupported_calls_are_kept_but_not_replayed() -> None:
    conv = Converter(PID)
    evs = [_ev("mmap", (0, 0x1000, 3, 0x22, NEG(1), 0), ret=-12),
           _ev("mmap", (0, 0x200000, 3, 0x22 | 0x40000, NEG(1), 0), ret=0x7F0000000000),
           _ev("madvise", (0x1000, 0x1000, 99), ret=0),
           _ev("mbind", (0x1000, 0x1000, 2, 0x7FFF0000, 64, 0), ret=0)]
    lines = _lines(evs, conv)
    assert all(op is None for op, _s, _n in lines)
    assert [n.skip for _o, _s, n in lines] == ["failed", "unsupported", "unsupported",
                                               "unsupported"]
    assert lines[0][2].ret == -12
    assert conv.stats.skipped == {"failed": 1, "unsupported": 3}


def test_mprotect_madvise_munmap_mlock_mseal_lengths_round_up() -> None:
    evs = [_ev("mprotect", (0x1000, 100, 0x5)), _ev("madvise", (0x1000, 0x3000, 4)),
           _ev("munmap", (0x1000, 0x1001)), _ev("mlock2", (0x1000, 0x1000, 1)),
           _ev("mlock", (0x1000, 0x1000)), _ev("munlock", (0x1000, 0x1000)),
           _ev("mseal", (0x1000, 0x1000, 0)), _ev("mlockall", (2 | 4,)),
           _ev("munlockall"), _ev("pkey_mprotect", (0x1000, 0x1000, 1, 1)),
           _ev("pkey_mprotect", (0x1000, 0x1000, 1, NEG(1)))]
    assert _ops(evs) == [
        "mprotect 0x1000 0x1000 r-x", "madvise 0x1000 0x3000 dontneed",
        "munmap 0x1000 0x2000", "mlock 0x1000 0x1000 onfault", "mlock 0x1000 0x1000",
        "munlock 0x1000 0x1000", "mseal 0x1000 0x1000", "mlockall future,onfault",
        "munlockall", "pkey_mprotect 0x1000 0x1000 r-- 1", "pkey_mprotect 0x1000 0x1000 r-- -1"]


def test_mremap_in_place_and_moved() -> None:
    evs = [_ev("mremap", (0x10000, 0x1000, 0x2000, 0, 0), ret=0x10000),
           _ev("mremap", (0x10000, 0x2000, 0x4000, 1, 0), ret=0x40000),
           _ev("mremap", (0x40000, 0x4000, 0x4000, 1 | 2 | 4, 0x80000), ret=0x80000)]
    assert _ops(evs) == ["mremap 0x10000 0x1000 0x2000",
                         "mremap 0x10000 0x2000 0x4000 0x40000 maymove,fixed",
                         "mremap 0x40000 0x4000 0x4000 0x80000 maymove,fixed,dontunmap"]


def test_brk_query_sets_the_heap_once() -> None:
    evs = [_ev("brk", (0,), ret=0x555000), _ev("brk", (0x576000,), ret=0x576000),
           _ev("brk", (0,), ret=0x576000)]
    lines = _lines(evs)
    assert [op for op, _s, _n in lines] == ["heap 0x555000", "brk 0x576000", None]
    assert lines[2][2].skip == "query"
    # a snapshot with [heap] already knows it
    assert _ops(evs[:1], Converter(PID, heap_known=True)) == []


def test_prctl_anon_name() -> None:
    evs = [_ev("prctl", (0x53564D41, 0, 0x1000, 0x2000, 0x7FFF00), text="java heap"),
           _ev("prctl", (0x53564D41, 0, 0x1000, 0x2000, 0x7FFF00), text="jheap"),
           _ev("prctl", (0x53564D41, 0, 0x1000, 0x2000, 0)),
           _ev("prctl", (15, 0x7FFF00, 0, 0, 0), text="worker")]  # PR_SET_NAME
    lines = _lines(evs)
    assert [op for op, _s, _n in lines] == [None, "name 0x1000 0x2000 jheap",
                                            "name 0x1000 0x2000 -", None]
    assert [n.skip for _o, _s, n in lines] == ["unsupported", None, None, "query"]


def test_faults_become_touches_of_their_page() -> None:
    evs = [_ev("fault", (0x7F0000001234, 0x6), ret=None, stack=(0x401000,)),
           _ev("fault", (0x7F0000002000, 0x4), ret=None, inferred=True)]
    lines = _lines(evs)
    assert [op for op, _s, _n in lines] == ["touch 0x7f0000001000 write",
                                            "touch 0x7f0000002000 read"]
    assert lines[0][2].fault and lines[0][2].stack == (0x401000,)
    assert lines[1][2].inferred


def test_threads_forks_and_children() -> None:
    conv = Converter(PID)
    # CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM
    thread = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000
    evs = [_ev("clone", (thread, 0, 0, 0, 0), ret=4243),
           _ev("mmap", (0, 0x1000, 3, 0x22, NEG(1), 0), ret=0x10000, tid=4243),
           _ev("clone", (0x11, 0, 0, 0, 0), ret=5000),  # SIGCHLD: a fork
           _ev("mmap", (0, 0x1000, 3, 0x22, NEG(1), 0), ret=0x20000, pid=5000, tid=5000),
           _ev("exit_group", (0,), ret=None, pid=5000, tid=5000),
           _ev("vfork", (), ret=5001),
           _ev("execve", (0, 0, 0), ret=0, pid=5001, tid=5001)]
    lines = _lines(evs, conv)
    assert [op for op, _s, _n in lines] == [None, "mmap 0x10000 0x1000 rw- private,anonymous,fixed",
                                            "fork", None, "exit 0", None, None]
    assert [n.skip for _o, _s, n in lines] == ["thread", None, None, "child", None, "vfork",
                                               "child"]
    assert lines[3][2].pid == 5000


# -- the file ----------------------------------------------------------------------------

def _write(path: Path, *, first: bytes | None, last: bytes | None, ops: list[str]) -> None:
    with TraceWriter(path, {"recorder": "test", "pid": PID, "kernel": "6.18.4"}) as w:
        if first is not None:
            w.snapshot("first", first)
        for i, op in enumerate(ops):
            w.op(op, Annotation(t=i / 10, tid=PID, stack=(0x401000 + i, 0x7F00)))
        w.skipped("mmap(0x0, ...)", Annotation(t=9.0, tid=PID, ret=-12, skip="failed"))
        if last is not None:
            w.snapshot("last", last)
        w.symbols({0x401000: "prog:grow+0x10", 0x7F00: "libc.so.6:__mmap+0x26"})
        w.header({"lost": 3})


MAPS = (b"7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n"
        b"7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]\n")


@pytest.mark.parametrize("name", ["t.trace", "t.trace.gz", "t.trace.zst", "t.trace.xz"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    ops = ["mmap 0x7f0000001000 0x2000 rw- private,anonymous,fixed",
           "touch 0x7f0000001000 write", "mprotect 0x7f0000001000 0x1000 r--"]
    _write(tmp_path / name, first=MAPS, last=MAPS, ops=ops)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left
    tr = read_trace(tmp_path / name)
    assert [format_op(op) for op in tr.ops] == [format_op(parse_line(o)) for o in ops]
    assert tr.header["recorder"] == "test" and tr.header["kernel"] == "6.18.4"
    assert tr.lost == 3
    assert tr.first is not None and len(tr.first) == 2 and tr.last is not None
    a = tr.annotation(1)
    assert (a.t, a.tid, a.stack) == (0.1, PID, (0x401001, 0x7F00))
    assert tr.skipped == [("mmap(0x0, ...)", f"t=9.000000 tid={PID} ret=-12 skip=failed")]
    assert tr.symbols == {0x401000: "prog:grow+0x10", 0x7F00: "libc.so.6:__mmap+0x26"}
    if name == "t.trace":  # the file's own line numbers
        text = (tmp_path / name).read_text().splitlines()
        assert [op.line for op in tr.ops] == [i for i, line in enumerate(text, 1)
                                              if line.split(" ", 1)[0] in ("mmap", "touch", "mprotect")]


def test_a_trace_is_an_op_script(tmp_path: Path) -> None:
    from vmascope.ops.language import load_script

    _write(tmp_path / "t", first=MAPS, last=None, ops=["mmap 0x10000 0x1000 rw- private,anonymous,fixed"])
    assert len(load_script((tmp_path / "t").read_text())) == 1


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with TraceWriter(tmp_path / "t.gz", {"recorder": "x"}) as w:
            w.op("touch 0x1000 write", "")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text,line,what", [
    (b"mmap 0x1000 0x1000 rw-\n", 1, "vmascope trace"),
    (b"#!vmascope-trace 99\n", 1, "version 1 or older"),
    (b"#!vmascope-trace 1\n#snapshot first\n#=!!!!\n#snapshot end\n", 2, "base64"),
    (b"#!vmascope-trace 1\n#snapshot first\n#=AAAA\n", 2, "cut short"),
    (b"#!vmascope-trace 1\n#snapshot first\nmmap 0 0 rw-\n", 3, "#snapshot end"),
    (b"#!vmascope-trace 1\n\ntouch 0x1000 sideways\n", 3, "write or read"),
    (b"#!vmascope-trace 1\nmmap 0x1000 0x1000 rw- private,fixed fd=f9\n", 2, "no earlier memfd"),
    (b"#!vmascope-trace 1\n#sym zz name\n", 2, "#sym ADDR NAME"),
    (b"#!vmascope-trace 1\n\xff\n", 2, "UTF-8"),
])
def test_bad_traces_name_the_line(text: bytes, line: int, what: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_trace(text, "t.trace")
    assert exc.value.line == line and what in str(exc.value)


def test_a_hand_edited_annotation_is_only_informative() -> None:
    a = parse_annotation("t=abc tid=12 ret=zz at=0x10/zz fault")
    assert a.tid == 12 and a.t is None and a.fault


def test_the_fast_parser_agrees_with_the_language() -> None:
    rnd = random.Random(7)
    words = ["touch {a} write", "touch {a} read", "mprotect {a} {n} {p}", "munmap {a} {n}",
             "madvise {a} {n} dontneed", "madvise {a} {n} guard_install", "mseal {a} {n}",
             "mlock {a} {n}", "munlock {a} {n}",
             "mmap {a} {n} {p} private,anonymous,fixed",
             "mmap {a} {n} {p} shared,anonymous,fixed,noreserve",
             "mmap {a} {n} {p} private,fixed,bogus",  # falls through and fails alike
             "mprotect {a} {n} rwz", "touch {A} write", "munmap {a} {n} extra"]
    fast = _FastParser("x")
    for _ in range(3000):
        line = rnd.choice(words).format(
            a=hex(rnd.randrange(0, 1 << 47) & ~0xFFF), A=hex(rnd.randrange(1 << 47)).upper(),
            n=hex(rnd.randrange(1, 1 << 30)), p=rnd.choice(["---", "r--", "rw-", "r-x", "rwx"]))
        try:
            want = parse_line(line, "x", 5)
        except ParseError as exc:
            with pytest.raises(ParseError) as got:
                fast(line, 5)
            assert str(got.value) == str(exc)
            continue
        got_op = fast(line, 5)
        assert got_op == want and want == got_op and hash(got_op) == hash(want)
        assert format_op(got_op) == format_op(want)


def test_the_c_op_reader_agrees_with_the_language() -> None:
    """A block of op lines read in C (ops._oplines) gives the ops, line numbers and notes
    the language's parser gives line by line; a line it does not take (any other shape)
    gets the language's own result or error, at the same line."""
    rnd = random.Random(11)
    shapes = ["touch {a} write", "touch {a} read", "mprotect {a} {n} {p}", "munmap {a} {n}",
              "madvise {a} {n} dontneed", "madvise {a} {n} free", "mseal {a} {n}",
              "mlock {a} {n}", "munlock {a} {n}", "mmap {a} {n} {p} private,anonymous",
              "touch {A} write", "touch 0x{big} read", "munmap {a} 0x{big}",
              "touch {a}  write", "touch {a} write ", "touch {a}\twrite", "mprotect {a} {n}",
              "madvise {a} {n} nosuch", "touch 0x_1000 read", "touch {top} read",
              "munmap {a} 0x", "mprotect {a} {n} rw", "touch {a} write\r"]
    notes = ["", "  # t=0.1 tid=5 at=0x401000", "  # ", " # one space", "#x", "  #x",
             "   # three spaces"]
    block = _OpBlock("x")
    for _ in range(4000):
        body = rnd.choice(shapes).format(
            a=hex(rnd.randrange(0, 1 << 47) & ~0xFFF), A=hex(rnd.randrange(1 << 47)).upper(),
            n=hex(rnd.randrange(1, 1 << 30)), p=rnd.choice(["---", "r--", "rw-", "r-x", "rwx"]),
            big="0" * 17 + "1000", top=hex(TASK_SIZE))
        line = body + rnd.choice(notes)
        gap = rnd.randrange(3)
        want_body, sep, want_note = line.partition("  # ")
        if not sep and "#" in line:
            want_body, sep, want_note = line.partition("#")
        try:
            want = parse_line(want_body.strip(), "x", 7 + gap)
        except ParseError as exc:
            with pytest.raises(ParseError) as got:
                block("\n" * gap + line + "\n", 7, {})
            assert str(got.value) == str(exc)
            continue
        ops, got_notes = block("\n" * gap + line + "\nmunmap 0x1000 0x1000\n", 7, {})
        assert len(ops) == 2 and ops[1].line == 8 + gap
        assert ops[0] == want and hash(ops[0]) == hash(want) and ops[0].line == 7 + gap
        assert got_notes == [want_note, ""]
        assert format_op(ops[0]) == format_op(want)


def test_compare_counts_the_vmas_both_have_and_where_they_differ() -> None:
    """The model's end state against the real one, on random states: a VMA counts as
    reproduced when both have its start, end and permissions (the vsyscall page left
    out, the stack matched by its end); every other VMA lies in a differing region."""
    from vmascope.model import Snapshot, SnapshotMeta, Vma
    from vmascope.trace.replay import VSYSCALL, compare

    rnd = random.Random(5)
    for _ in range(200):
        real, model, addr = [], [], 0x10000
        for _v in range(rnd.randrange(0, 40)):
            addr += rnd.randrange(0, 3) * 0x1000
            end = addr + rnd.randrange(1, 5) * 0x1000
            perms = rnd.choice(["rw-p", "r--p", "---p", "rw-s"])
            real.append(Vma(addr, end, perms))
            fate = rnd.random()
            if fate < 0.6:
                model.append(Vma(addr, end, perms))
            elif fate < 0.75 and end - addr > 0x1000:  # split in two
                model += [Vma(addr, addr + 0x1000, perms), Vma(addr + 0x1000, end, perms)]
            elif fate < 0.9:
                model.append(Vma(addr, end, "rwxp"))
            addr = end
        stack = rnd.random() < 0.5
        if stack:  # grown by faults: same end, a lower start
            real.append(Vma(0x7FFF0000 - 0x3000, 0x7FFF0000, "rw-p", name="[stack]"))
            model.append(Vma(0x7FFF0000 - 0x1000, 0x7FFF0000, "rw-p", name="[stack]"))
        real.append(Vma(VSYSCALL, VSYSCALL + 0x1000, "--xp", name="[vsyscall]"))
        r = Snapshot.from_vmas(real, SnapshotMeta())
        m = Snapshot.from_vmas(model, SnapshotMeta())
        c = compare(r, m, limit=1000)
        rk = {(v.start, v.end, v.perms) for v in real if v.start != VSYSCALL}
        mk = {(v.start, v.end, v.perms) for v in model}
        both = rk & mk
        assert (c.real, c.model, c.matched) == (len(rk), len(mk), len(both) + stack)
        alone = [k for k in (rk | mk) - both if not (stack and k[1] == 0x7FFF0000)]
        assert sum(g.real + g.model for g in c.regions) == len(alone)
        assert all(any(g.start <= k[0] and k[1] <= g.end for g in c.regions) for k in alone)


# -- attribution of a replay to call sites (trace/sites.py) ----------------------------------

def test_sites_count_the_vmas_each_call_site_made(tmp_path: Path) -> None:
    from vmascope.trace.replay import replay
    from vmascope.trace.sites import AT_START, SiteNamer, attribute

    base = 0x7F0000100000
    first = MAPS
    with TraceWriter(tmp_path / "t", {"recorder": "test", "pid": PID, "kernel": "6.18"}) as w:
        w.snapshot("first", first)
        w.op(f"mmap {base:#x} 0x100000 --- private,anonymous,fixed,noreserve",
             Annotation(t=0.0, stack=(0x7F01, 0x401000)))
        for i in range(10):  # site a: 10 read-write pages, every other page
            w.op(f"mprotect {base + 0x2000 * i:#x} 0x1000 rw-",
                 Annotation(t=0.1 + i / 100, stack=(0x7F02, 0x401100)))
        for i in range(5):  # site b: 5 read-only pages further up
            w.op(f"mprotect {base + 0x80000 + 0x2000 * i:#x} 0x1000 r--",
                 Annotation(t=0.3 + i / 100, stack=(0x7F02, 0x401200)))
        # site c: the page after site b's last, made r-x: the r-- page before it does
        # not merge (a refused merge); the reservation's rest after it is not a candidate
        w.op(f"mprotect {base + 0x80000 + 0x2000 * 4 + 0x1000:#x} 0x1000 r-x",
             Annotation(t=0.4, stack=(0x7F02, 0x401300)))
        w.symbols({0x7F01: "libc.so.6:__mmap+0x13", 0x7F02: "libc.so.6:__mprotect+0x7",
                   0x401000: "prog:reserve+0x20", 0x401100: "prog:_ZN4heap6commitEv+0x30",
                   0x401200: "prog:seal+0x40", 0x401300: "prog:jit+0x50"})
    tr = read_trace(tmp_path / "t")
    rep = replay(tr)
    att = attribute(rep, SiteNamer(tr))
    by = {s.key: s for s in att.sites}
    # A VMA belongs to the op that made the boundary at its start. Site a's 10 pages
    # make boundaries at both edges of each page but the first one's start (the
    # reservation's, made by the mmap): 19; site b's 5 pages 10 (both edges of each).
    commit = "prog:heap::commit+0x30" if shutil.which("c++filt") else "prog:_ZN4heap6commitEv+0x30"
    assert by[commit].vmas == 19 and by[commit].causes["protection"] == 19
    assert by["prog:seal+0x40"].vmas == 10  # its last page's end is site c's start
    assert by["prog:jit+0x50"].vmas == 1  # the reservation's rest, after site c's page
    assert by["prog:reserve+0x20"].vmas == 1
    assert by[AT_START].vmas == 2
    assert sum(s.vmas for s in att.sites) == len(rep.snapshot)
    assert att.timeline[-1][1] == len(rep.snapshot)
    assert sum(att.timeline[-1][2].values()) == len(rep.snapshot)
    # each refused merge counts once at its site, whatever its number of reasons; the
    # report's per-site counts add up to its total
    assert att.refusals == len(rep.refusals) > 0
    assert by["prog:jit+0x50"].refusals == 1
    assert by["prog:jit+0x50"].refused["perms"] == 1
    assert sum(s.refusals for s in att.sites) == att.refusals
    assert all(s.refusals <= sum(s.refused.values()) for s in att.sites)
    from vmascope.report.replay import replay_text

    text = replay_text(rep, att)
    head = f"Refused merges by call site ({att.refusals:,} in all"
    rows = text.split(head, 1)[1].splitlines()[1:]
    assert sum(int(r.split()[0].replace(",", "")) for r in rows if r.strip()) == att.refusals


def test_demangling_keeps_keys_that_are_not_cpp() -> None:
    from vmascope.trace.sites import demangle_keys

    if shutil.which("c++filt") is None:
        assert demangle_keys(["a:_ZN2os4sizeEv+0x1"]) == {}
        return
    got = demangle_keys(["libjvm.so:_ZN2os16pd_commit_memoryEPcmb+0x37",
                         "prog:main+0x10", "a:_ZN2os16pd_commit_memoryEPcmb+0x1 <- b:f+0x2"])
    assert got == {"libjvm.so:_ZN2os16pd_commit_memoryEPcmb+0x37": "libjvm.so:os::pd_commit_memory+0x37",
                   "a:_ZN2os16pd_commit_memoryEPcmb+0x1 <- b:f+0x2": "a:os::pd_commit_memory+0x1 <- b:f+0x2"}


def test_clone3_is_told_by_its_flags() -> None:
    # glibc's pthread_create: clone3 with CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|
    # CLONE_THREAD|CLONE_SYSVSEM|CLONE_SETTLS|CLONE_PARENT_SETTID|CLONE_CHILD_CLEARTID;
    # posix_spawn: CLONE_VM|CLONE_VFORK; a plain fork through clone3: no CLONE_VM.
    thread = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000 | 0x80000 | 0x100000 | 0x200000
    lines = _lines([_ev("clone3", (thread, 88), ret=4300),
                    _ev("clone3", (0x100 | 0x4000, 88), ret=4301),
                    _ev("clone3", (0, 88), ret=4302)])
    assert [(op, n.skip) for op, _s, n in lines] == [(None, "thread"), (None, "vfork"),
                                                     ("fork", None)]
