"""trace.symbols and trace.elf: instruction pointers of a real process named after its
functions, checked against nm (never against this reader's own output).

tests/programs/callsites.c has three functions that each call mmap; built as a PIE, as a
non-PIE executable and stripped, it prints their addresses, mmap's (dlsym) and two
anonymous executable mappings, then waits while /proc/PID/maps is read.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import struct
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import PROGRAMS, need, running

from vmascope.model import Snapshot, SnapshotMeta, Vma
from vmascope.procfs.live import read_process
from vmascope.trace import elf
from vmascope.trace.events import Event
from vmascope.trace.symbols import (
    Frame,
    Symbolizer,
    call_site,
    caller_chain,
    is_system,
    parse_frame,
    site_key,
)

FUNCS = ("grow_arena", "map_table", "reserve_space")


def this_libc() -> str:
    """The C library this test process runs with (from its own maps)."""
    with open("/proc/self/maps") as fh:
        for line in fh:
            path = line.split(maxsplit=5)[-1].strip()
            if os.path.basename(path).startswith("libc.so"):
                return path
    pytest.skip("no libc.so mapped here")


def big_binary(which: str) -> str:
    """node, or the JVM's libjvm.so, wherever they are installed."""
    exe = shutil.which("node" if which == "node" else "java")
    if exe is None:
        pytest.skip(f"{which} is not installed")
    exe = os.path.realpath(exe)
    if which == "node":
        return exe
    lib = os.path.join(os.path.dirname(os.path.dirname(exe)), "lib", "server", "libjvm.so")
    if not os.path.exists(lib):
        pytest.skip("no libjvm.so next to java")
    return lib


# -- nm, the reference -------------------------------------------------------------------


def nm(path: str | Path, dynamic: bool = False) -> dict[int, set[str]]:
    """address -> names, as nm prints them (versions such as @@GLIBC_2.2.5 dropped)."""
    need("nm")
    args = ["nm", "-D" if dynamic else "--defined-only", str(path)]
    if dynamic:
        args.insert(2, "--defined-only")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
    out: dict[int, set[str]] = defaultdict(set)
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            out[int(parts[0], 16)].add(re.sub(r"@.*", "", parts[2]))
    return out


def nm_address(path: str | Path, name: str, dynamic: bool = False) -> int:
    hits = [a for a, names in nm(path, dynamic).items() if name in names]
    assert len(hits) == 1, (name, hits)
    return hits[0]


def debug_file(path: str) -> str | None:
    """The installed detached debug file by build-id, found with readelf."""
    out = subprocess.run(["readelf", "-n", path], capture_output=True, text=True,
                         timeout=60, check=False).stdout
    m = re.search(r"Build ID: ([0-9a-f]+)", out)
    if not m:
        return None
    cand = f"/usr/lib/debug/.build-id/{m.group(1)[:2]}/{m.group(1)[2:]}.debug"
    return cand if os.path.exists(cand) else None


# -- building and running the program ----------------------------------------------------


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cc = need("gcc")
    need("strip")
    out = tmp_path_factory.mktemp("callsites")
    src = str(PROGRAMS / "callsites.c")
    flags = ["-O0", "-fno-inline", "-Wall", "-Werror"]
    variants = {"pie": ["-fPIE", "-pie"], "nopie": ["-fno-pie", "-no-pie"],
                "dynamic": ["-fPIE", "-pie", "-rdynamic"]}
    exes = {}
    for name, extra in variants.items():
        exes[name] = out / name
        subprocess.run([cc, *flags, *extra, "-o", str(exes[name]), src, "-ldl"], check=True,
                       timeout=120)
    exes["stripped"] = out / "stripped"
    subprocess.run(["strip", "--strip-all", "-o", str(exes["stripped"]),
                    str(exes["dynamic"])], check=True, timeout=60)
    return exes


@contextlib.contextmanager
def started(exe: Path) -> Iterator[tuple[dict[str, int], Snapshot]]:
    """The program running (waiting): its printed addresses and its Snapshot."""
    with running([str(exe)], "ADDRS", timeout=60) as proc:
        addrs = {k: int(v, 16) for k, v in
                 (w.split("=") for w in proc.first_line.split()[1:])}
        yield addrs, read_process(proc.pid, smaps=False, numa=False)


def load_base(snap: Snapshot, path: str) -> int:
    """Where a file's offset 0 is mapped: /proc's view, independent of the ELF reader."""
    starts = [v.start for v in snap if v.name == path and v.offset == 0]
    assert starts, path
    return min(starts)


# -- a real process ----------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["pie", "nopie"])
def test_functions_are_named_as_nm_names_them(builds: dict[str, Path], variant: str) -> None:
    exe = builds[variant]
    ref = nm(exe)
    with started(exe) as (addrs, snap):
        sym = Symbolizer([snap])
        # a non-PIE executable is linked where it runs; a PIE anywhere
        base = load_base(snap, str(exe)) if variant == "pie" else 0
        for func in FUNCS:
            f = sym.frame(addrs[func] + 5)
            assert (f.kind, f.symbol, f.offset, f.module) == ("elf", func, 5, str(exe)), f
            assert func in ref[addrs[func] - base]
            assert site_key(f) == f"{variant}:{func}+0x5"


@pytest.mark.parametrize("variant", ["pie", "nopie"])
def test_mmap_is_the_c_librarys(builds: dict[str, Path], variant: str) -> None:
    with started(builds[variant]) as (addrs, snap):
        sym = Symbolizer([snap])
        f = sym.frame(addrs["mmap"] + 5)
        assert f.kind == "elf" and f.offset == 5, f
        assert f.module is not None and os.path.basename(f.module).startswith("libc.so")
        names = nm(f.module, dynamic=True)[addrs["mmap"] - load_base(snap, f.module)]
        dbg = debug_file(f.module)
        if dbg:
            names |= nm(dbg)[addrs["mmap"] - load_base(snap, f.module)]
        assert "mmap" in names and f.symbol in names, (f, names)
        assert is_system(f)
        # the call site of mmap called from grow_arena is grow_arena
        stack = sym.frames([addrs["mmap"] + 5, addrs["grow_arena"] + 0x1a, 0x10])
        assert call_site(stack).symbol == "grow_arena"
        assert caller_chain(stack) == f"{variant}:grow_arena+0x1a"


def test_anonymous_executable_mappings_are_jit(builds: dict[str, Path]) -> None:
    with started(builds["pie"]) as (addrs, snap):
        sym = Symbolizer([snap])
        for which in ("rwx", "rx"):
            f = sym.frame(addrs[which] + 0x10)
            assert f.kind == "jit" and f.module == "pie JIT", f
            assert f.start is not None and f.end is not None
            assert f.start <= addrs[which] < addrs[which] + 0x10 < f.end
            assert site_key(f) == f"[pie JIT {f.start:#x}-{f.end:#x}]"
            assert call_site([sym.frame(addrs["mmap"]), f]) == f
        stack = next(v for v in snap if v.name == "[stack]")
        assert sym.frame(stack.start + 8).kind == "unknown"
        assert sym.frame(0x10).kind == "unknown"
        assert sym.frame(0xFFFFFFFFFFFFF000).kind == "unknown"


def test_a_stripped_copy_keeps_its_exported_symbols(builds: dict[str, Path]) -> None:
    exe, full = builds["stripped"], builds["dynamic"]
    exported = nm(exe, dynamic=True)
    with started(exe) as (addrs, snap):
        sym = Symbolizer([snap])
        base = load_base(snap, str(exe))
        for func in ("grow_arena", "map_table"):
            f = sym.frame(addrs[func] + 5)
            assert (f.kind, f.symbol, f.offset) == ("elf", func, 5), f
            assert func in exported[addrs[func] - base]
        # static: in .symtab only, which strip removed
        f = sym.frame(addrs["reserve_space"] + 5)
        assert f.kind == "module" and f.symbol is None, f
        assert f.offset == nm_address(full, "reserve_space") + 5
        assert site_key(f) == f"stripped+{f.offset:#x}"


def test_node_code_is_v8_jit_and_node_itself_is_named() -> None:
    """A runtime nobody here wrote: V8's code space is anonymous and executable; node is
    a big non-PIE executable with its own symbols."""
    node = need("node")
    main = nm_address(os.path.realpath(node), "main")
    with running([node, "-e", "console.log('READY'); setInterval(() => {}, 1000)"], "READY",
                 timeout=60) as proc:
        snap = read_process(proc.pid, smaps=False, numa=False)
    sym = Symbolizer([snap])
    code = [v for v in snap if "x" in v.perms and v.inode == 0 and not v.name]
    assert code, "no anonymous executable mapping in node"
    f = sym.frame(code[0].start + 0x40)
    assert (f.kind, f.module, f.start) == ("jit", "V8 JIT", code[0].start), f
    f = sym.frame(main + 3)
    assert (f.kind, f.symbol, f.offset) == ("elf", "main", 3), f


def test_the_vdso_is_named_from_its_image(tmp_path: Path) -> None:
    snap = read_process(os.getpid(), smaps=False, numa=False)
    vdso = next((v for v in snap if v.name == "[vdso]"), None)
    if vdso is None:
        pytest.skip("no vDSO here")
    image = tmp_path / "vdso.so"
    with open("/proc/self/mem", "rb", buffering=0) as fh:
        fh.seek(vdso.start)
        image.write_bytes(fh.read(vdso.end - vdso.start))
    ref = nm(image, dynamic=True)
    addr = next(a for a, names in ref.items() if a and any("gettime" in n for n in names))
    for source in ("live", "file"):  # a live target's memory, or this kernel's own
        snap.meta.source = source
        f = Symbolizer([snap]).frame(vdso.start + addr + 2)
        assert f.kind == "vdso" and f.symbol in ref[addr] and f.offset == 2, f
        assert site_key(f) == f"[vdso]:{f.symbol}+0x2" and is_system(f)
    snap.meta.kernel_release = "0.0-another"
    f = Symbolizer([snap]).frame(vdso.start + addr + 2)
    assert (f.kind, f.symbol, f.offset) == ("vdso", None, addr + 2)


def test_a_deleted_executable_is_read_through_map_files(builds: dict[str, Path],
                                                         tmp_path: Path) -> None:
    exe = tmp_path / "gone"
    shutil.copy(builds["pie"], exe)
    with started(exe) as (addrs, snap):
        exe.unlink()
        snap = read_process(snap.meta.pid, smaps=False, numa=False)  # type: ignore[arg-type]
        assert any(n.endswith(" (deleted)") for n in snap.names)
        f = Symbolizer([snap]).frame(addrs["grow_arena"] + 5)
        assert (f.kind, f.symbol, f.module) == ("elf", "grow_arena", str(exe)), f
        # from a snapshot file there is no process to read the file through
        snap.meta.source = "file"
        f = Symbolizer([snap]).frame(addrs["grow_arena"] + 5)
        assert f.kind == "module" and f.module == str(exe), f


def test_files_are_read_under_root_and_only_if_they_are_the_mapped_inode(
        builds: dict[str, Path], tmp_path: Path) -> None:
    exe = builds["pie"]
    with started(exe) as (addrs, snap):
        ip = addrs["grow_arena"] + 5
        pid = snap.meta.pid
        f = Symbolizer([snap], root=f"/proc/{pid}/root").frame(ip)
        assert (f.kind, f.symbol, f.module) == ("elf", "grow_arena", str(exe))
        # nothing there: the file offset, through no PT_LOAD
        snap.meta.source = "file"
        f = Symbolizer([snap], root=str(tmp_path)).frame(ip)
        assert f.kind == "module" and f.module == str(exe)
        # the same path, another file (another host's dump, a replaced file)
        v = next(v for v in snap if v.name == str(exe) and "x" in v.perms)
        other = Snapshot.from_vmas([Vma(v.start, v.end, v.perms, offset=v.offset,
                                        name=v.name, inode=v.inode + 1)])
        assert Symbolizer([other]).frame(ip).kind == "module"
        same = Snapshot.from_vmas([Vma(v.start, v.end, v.perms, offset=v.offset,
                                       name=v.name, inode=v.inode)])
        assert Symbolizer([same]).frame(ip).symbol == "grow_arena"


def test_several_snapshots_and_batches(builds: dict[str, Path]) -> None:
    with started(builds["pie"]) as (addrs, snap):
        empty = Snapshot.empty(SnapshotMeta(comm="pie"))
        sym = Symbolizer([empty, snap])
        ips = [addrs[f] + 5 for f in FUNCS] + [addrs["mmap"], addrs["rwx"], 0x10]
        batch = sym.frames(ips)
        one = Symbolizer([snap])
        assert batch == [one.frame(ip) for ip in ips]
        assert batch == sym.frames(np.array(ips, np.uint64))
        assert [f.kind for f in batch] == ["elf"] * 4 + ["jit", "unknown"]
        # every VMA of the process, and holes between them: both ways agree
        rng = random.Random(5)
        everywhere = [rng.randrange(v.start, v.end) for v in snap for _ in range(3)]
        everywhere += [rng.randrange(0, 1 << 47) for _ in range(50)]
        rng.shuffle(everywhere)
        assert Symbolizer([snap]).frames(everywhere) == \
            [Symbolizer([snap]).frame(ip) for ip in everywhere]
        # an Event's stack, or the recorder's own names
        ev = Event(t=0.0, pid=1, tid=1, call="mmap", stack=tuple(ips[:2]))
        assert sym.event_frames(ev) == batch[:2]
        ev = Event(t=0.0, pid=1, tid=1, call="mmap",
                   stack=(addrs["mmap"] + 5, addrs["reserve_space"] + 0x1a))
        assert sym.site(ev).symbol == "reserve_space"
        ev = Event(t=0.0, pid=1, tid=1, call="mmap", frames=("libc.so.6:__mmap+0x26",))
        assert sym.event_frames(ev) == [Frame("libc.so.6", "__mmap", 0x26, "elf")]


def test_a_return_address_is_named_after_the_call_before_it(builds: dict[str, Path]) -> None:
    exe = builds["pie"]
    sizes = {}
    for line in subprocess.run(["nm", "-S", "--defined-only", str(exe)], capture_output=True,
                               text=True, timeout=60, check=True).stdout.splitlines():
        parts = line.split()
        if len(parts) == 4:
            sizes[parts[3]] = (int(parts[0], 16), int(parts[1], 16))
    if sizes["grow_arena"][0] + sizes["grow_arena"][1] != sizes["map_table"][0]:
        pytest.skip("the compiler did not lay grow_arena right before map_table")
    with started(exe) as (addrs, snap):
        sym = Symbolizer([snap])
        # a call that is grow_arena's last instruction returns to map_table's first
        top, caller = sym.stack_frames([addrs["mmap"] + 5, addrs["map_table"]])
        assert top == sym.frame(addrs["mmap"] + 5)
        assert (caller.symbol, caller.offset, caller.ip) == \
            ("grow_arena", sizes["grow_arena"][1], addrs["map_table"])
        assert sym.frame(addrs["map_table"]).symbol == "map_table"
        assert sym.stack_frames([]) == []
        assert sym.stack_frames([addrs["mmap"], 0x10])[1] == \
            Frame(None, None, 0, "unknown", ip=0x10)


# -- the ELF reader against nm -----------------------------------------------------------


def _check_against_nm(path: str, sample: int, dynamic: bool = False) -> None:
    ref = nm(path, dynamic)
    e = elf.parse(path)
    assert e.ok and len(e) > 0
    rng = random.Random(7)
    addrs = [a for a in ref if a]
    for a in rng.sample(addrs, min(sample, len(addrs))):
        got = e.lookup(a)
        # nm also lists labels (NOTYPE) and sections the reader leaves out; whatever it
        # names at an address must be one of nm's names there
        if got is not None and got[1] == 0:
            assert got[0] in ref[a], (hex(a), got, ref[a])
    named = sum(1 for a in addrs if (g := e.lookup(a)) is not None and g[1] == 0)
    assert named > 0.8 * len(addrs) or named > 0.8 * len(set(e.addr.tolist()))


def test_elf64_symbols_match_nm() -> None:
    _check_against_nm(this_libc(), 500, dynamic=True)


@pytest.mark.parametrize("which", ["node", "libjvm"])
def test_a_big_binary_is_read_fast(which: str) -> None:
    path = big_binary(which)
    t0 = time.perf_counter()
    e = elf.parse(path)
    took = time.perf_counter() - t0
    assert len(e) > 10_000
    assert took < 2.0, took  # about 0.05 s for node's 100k symbols
    _check_against_nm(path, 300)


def test_minidebuginfo_adds_the_stripped_symbols(builds: dict[str, Path],
                                                 tmp_path: Path) -> None:
    """.gnu_debugdata (an xz-compressed ELF holding the symbols a distribution strips,
    as Fedora ships them) is read when .symtab is gone."""
    import lzma

    objcopy = need("objcopy")
    full, stripped = builds["pie"], tmp_path / "stripped"
    subprocess.run(["strip", "--strip-all", "-o", str(stripped), str(full)], check=True,
                   timeout=60)
    keep = tmp_path / "mini.debug"
    subprocess.run([objcopy, "--only-keep-debug", str(full), str(keep)], check=True,
                   timeout=60)
    xz = tmp_path / "mini.xz"
    xz.write_bytes(lzma.compress(keep.read_bytes(), format=lzma.FORMAT_XZ))
    mini = tmp_path / "mini"
    subprocess.run([objcopy, "--add-section", f".gnu_debugdata={xz}", str(stripped),
                    str(mini)], check=True, timeout=60)
    assert elf.parse(stripped).lookup(nm_address(full, "grow_arena") + 1) is None
    e = elf.parse(mini)
    assert e.minidebuginfo
    for func in FUNCS:
        assert e.lookup(nm_address(full, func) + 1) == (func, 1)
    # a broken one is ignored
    data = bytearray(mini.read_bytes())
    at = data.find(xz.read_bytes()[:64])
    data[at + 100:at + 200] = bytes(100)
    mini.write_bytes(bytes(data))
    assert not elf.parse(mini).minidebuginfo


def test_debuglink_with_its_crc(tmp_path: Path) -> None:
    cc, objcopy = need("gcc"), need("objcopy")
    exe = tmp_path / "prog"
    # no build-id: the debuglink's CRC is all that ties the two files
    subprocess.run([cc, "-O0", "-fno-inline", "-Wl,--build-id=none", "-o", str(exe),
                    str(PROGRAMS / "callsites.c"), "-ldl"], check=True, timeout=120)
    where = nm_address(exe, "reserve_space")
    dbg = tmp_path / "prog.debug"
    subprocess.run([objcopy, "--only-keep-debug", str(exe), str(dbg)], check=True,
                   timeout=60)
    subprocess.run(["strip", "--strip-all", str(exe)], check=True, timeout=60)
    subprocess.run([objcopy, f"--add-gnu-debuglink={dbg}", str(exe)], check=True,
                   timeout=60)
    e = elf.load(str(exe))
    assert e.build_id is None and e.debuglink == "prog.debug"
    assert (e.lookup(where + 2), e.debug_file) == (("reserve_space", 2), str(dbg))
    assert elf.load(str(exe), debug=False).lookup(where + 2) is None
    with dbg.open("ab") as fh:
        fh.write(b"\0")  # another build of it, as far as the CRC tells
    elf.clear_cache()
    assert elf.load(str(exe)).lookup(where + 2) is None


def test_elf32(tmp_path: Path) -> None:
    cc = need("gcc")
    ld = need("ld")
    src = tmp_path / "t32.c"
    src.write_text("int counter = 3;\nint helper(int x) { return x + counter; }\n"
                   "static int hidden(int x) { return x * 2; }\n"
                   "int entry(int x) { return helper(hidden(x)); }\n")
    obj, lib = tmp_path / "t32.o", tmp_path / "t32.so"
    if subprocess.run([cc, "-m32", "-O0", "-fno-inline", "-fPIC", "-c", str(src), "-o",
                       str(obj)], capture_output=True, timeout=60, check=False).returncode != 0:
        pytest.skip("gcc cannot build 32-bit objects here")
    subprocess.run([ld, "-m", "elf_i386", "-shared", "-o", str(lib), str(obj)], check=True,
                   timeout=60)
    e = elf.parse(lib)
    assert e.elf_class == 32 and e.segments
    for name in ("helper", "hidden", "entry", "counter"):
        addr = nm_address(lib, name)
        assert e.lookup(addr + 1) == (name, 1)
    # mapped as a loader would: the text segment at some base
    text = next(s for s in e.segments if s.flags & 1)
    base = 0xF7000000
    snap = Snapshot.from_vmas([Vma(base + text.vaddr, base + text.vaddr + 0x1000, "r-xp",
                                   offset=text.offset, name=str(lib),
                                   inode=lib.stat().st_ino)])
    f = Symbolizer([snap]).frame(base + nm_address(lib, "entry") + 3)
    assert (f.kind, f.symbol, f.offset) == ("elf", "entry", 3)


def test_symbol_choice_nesting_and_sizeless_symbols() -> None:
    """Aliases keep one name (a function before an object; global, weak, local), an
    address past a small symbol nested in a large one is in the large one, a symbol of
    size 0 runs to the next one."""
    strtab = b"\0big\0inner\0mmap\0__mmap\0table\0label\0next\0"
    at = {n: strtab.index(n.encode() + b"\0") for n in
          ("big", "inner", "mmap", "__mmap", "table", "label", "next")}
    func, obj = 2, 1
    glob, weak, local = 1, 2, 0
    rows = [("big", 0x100, 0x100, func, local), ("inner", 0x120, 0x10, func, local),
            ("mmap", 0x400, 0x20, func, weak), ("__mmap", 0x400, 0x20, func, glob),
            ("table", 0x400, 0x8, obj, glob), ("label", 0x500, 0, func, glob),
            ("next", 0x580, 0x10, func, glob)]
    syms = np.zeros(len(rows), elf._SYM64)
    for k, (name, value, size, kind, bind) in enumerate(rows):
        syms[k] = (at[name], bind << 4 | kind, 0, 1, value, size)
    e = elf._finish(elf.ElfFile(elf_class=64), [(syms, strtab)])
    want = {0x100: ("big", 0), 0x125: ("inner", 5), 0x150: ("big", 0x50), 0x1FF: ("big", 0xFF),
            0x200: None, 0x410: ("__mmap", 0x10), 0x420: None, 0x57F: ("label", 0x7F),
            0x580: ("next", 0), 0x590: None, 0x50: None}
    assert {a: e.lookup(a) for a in want} == want
    got = e.lookup_many(np.array(list(want), np.uint64))
    assert [e.name(int(i)) if i >= 0 else None for i in got] == \
        [w[0] if w else None for w in want.values()]


# -- bad files never raise ---------------------------------------------------------------


def _header64(**over: int) -> bytes:
    fields = {"etype": 3, "machine": 62, "version": 1, "entry": 0, "phoff": 64, "shoff": 0,
              "flags": 0, "ehsize": 64, "phentsize": 56, "phnum": 0, "shentsize": 64,
              "shnum": 0, "shstrndx": 0}
    fields.update(over)
    return b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", *fields.values())


def test_malformed_files_give_no_symbols(builds: dict[str, Path], tmp_path: Path) -> None:
    good = builds["pie"].read_bytes()
    rng = random.Random(11)
    cases: dict[str, bytes] = {
        "empty": b"", "magic": b"\x7fELF", "text": b"hello\n" * 100,
        "bigendian": b"\x7fELF\x02\x02\x01" + bytes(57),
        "badclass": b"\x7fELF\x03\x01\x01" + bytes(57),
        "huge-tables": _header64(phnum=0xFFFF, shoff=1 << 62, shnum=0xFFFF),
        "extended-count": _header64(shoff=64, shnum=0) + bytes(64),
        "random": bytes(rng.getrandbits(8) for _ in range(4096)),
    }
    for cut in (16, 40, 63, 64, 100, 1000, len(good) // 2, len(good) - 1):
        cases[f"cut{cut}"] = good[:cut]
    for k in range(150):
        data = bytearray(good)
        shoff = struct.unpack_from("<Q", good, 0x28)[0]
        for _ in range(rng.randint(1, 16)):
            where = rng.choice((rng.randrange(0, 0x400), rng.randrange(shoff, len(good))))
            data[where] = rng.getrandbits(8)
        cases[f"flip{k}"] = bytes(data)
    seen_empty = 0
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        e = elf.parse(path)  # never raises
        e.lookup_many(np.array([0, 0x1189, 1 << 63], np.uint64))
        e.vaddrs_of(np.array([0, 0x1189, (1 << 64) - 1], np.uint64))
        # nor does the Symbolizer over it, and both of its ways agree
        ino = path.stat().st_ino
        snap = Snapshot.from_vmas([
            Vma(0x10000, 0x11000, "r--p", offset=0, name=str(path), inode=ino),
            Vma(0x11000, 0x13000, "r-xp", offset=0x1000, name=str(path), inode=ino)])
        ips = [rng.randrange(0xF000, 0x14000) for _ in range(20)]
        assert Symbolizer([snap]).frames(ips) == [Symbolizer([snap]).frame(ip) for ip in ips]
        seen_empty += not len(e)
        if not name.startswith("flip"):
            assert len(e) == 0, name
        path.unlink()
    assert seen_empty >= 10
    assert elf.parse(tmp_path / "missing") is elf.EMPTY
    assert elf.parse("/dev/null") is elf.EMPTY
    assert elf.parse(tmp_path) is elf.EMPTY


def test_a_truncated_library_is_a_module_frame(builds: dict[str, Path], tmp_path: Path) -> None:
    good = builds["pie"].read_bytes()
    cut = tmp_path / "cut"
    cut.write_bytes(good[:len(good) // 2])  # the section headers are at the end
    snap = Snapshot.from_vmas([Vma(0x555555554000, 0x555555556000, "r-xp", offset=0x1000,
                                   name=str(cut), inode=cut.stat().st_ino)])
    f = Symbolizer([snap]).frame(0x555555554000 + 0x189)
    assert (f.kind, f.module, f.offset) == ("module", str(cut), 0x1189)


def test_the_cache_follows_the_file(builds: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "lib"
    shutil.copy(builds["pie"], path)
    first = elf.load(str(path))
    assert elf.load(str(path)) is first and len(first)
    path.write_bytes(b"not elf any more")
    os.utime(path, ns=(0, 1))
    assert len(elf.load(str(path))) == 0


# -- recorders' frames and ranking -------------------------------------------------------


def test_strace_frames_parse() -> None:
    assert parse_frame("libc.so.6:__mmap+0x26") == Frame("libc.so.6", "__mmap", 0x26, "elf")
    assert parse_frame("/usr/lib/x86_64-linux-gnu/libc.so.6(__mmap+0x26) [0x11ba26]") == \
        Frame("/usr/lib/x86_64-linux-gnu/libc.so.6", "__mmap", 0x26, "elf")
    assert parse_frame(" > /opt/app/prog(grow_arena+0x1a) [0x11a3]") == \
        Frame("/opt/app/prog", "grow_arena", 0x1a, "elf")
    assert parse_frame(" > /opt/app/prog() [0x11a3]") == \
        Frame("/opt/app/prog", None, 0x11a3, "module")
    assert parse_frame("libfoo.so+0x40") == Frame("libfoo.so", None, 0x40, "module")
    assert parse_frame("libfoo.so:+0x40") == Frame("libfoo.so", None, 0x40, "module")
    assert parse_frame("prog:ns::Arena::grow(unsigned long)+0x1f") == \
        Frame("prog", "ns::Arena::grow(unsigned long)", 0x1f, "elf")
    assert parse_frame("/opt/prog(ns::Arena::grow(unsigned long)+0x1f) [0x20]") == \
        Frame("/opt/prog", "ns::Arena::grow(unsigned long)", 0x1f, "elf")
    assert parse_frame("[vdso]+0x9c0").kind == "vdso"
    assert parse_frame(" > unexpected_backtracing_error [0x7f00]").kind == "unknown"
    assert parse_frame("").kind == "unknown"
    assert Frame.parse("libc.so.6:mmap64+0x1") == parse_frame("libc.so.6:mmap64+0x1")


def _f(module: str, symbol: str | None = None, offset: int = 0x10) -> Frame:
    return Frame(module, symbol, offset, "elf" if symbol else "module")


def test_call_site_looks_through_system_modules_only() -> None:
    libc = _f("/usr/lib/x86_64-linux-gnu/libc.so.6", "__mmap", 0x26)
    ld = _f("/lib64/ld-linux-x86-64.so.2", "_dl_map_object", 0x40)
    pthread = _f("/lib/libpthread.so.0", "start_thread", 0x9)
    vdso = Frame("[vdso]", None, 0x9c0, "vdso")
    app = _f("/opt/app/fragment3", "grow_arena", 0x1a)
    gc = _f("/usr/lib/libgc.so.1", "GC_unmap", 0x40)
    je = _f("/usr/lib/libjemalloc.so.2", "je_pages_map", 0x33)
    mi = _f("/usr/lib/libmimalloc.so.2", None, 0x4410)
    jit = Frame("V8 JIT", None, 0x40, "jit", start=0x7F0000000000, end=0x7F0000040000)
    unknown = Frame(None, None, 0, "unknown", ip=0x12)
    assert call_site([libc, ld, pthread, app]) == app
    assert call_site([vdso, libc, unknown, app]) == app
    assert call_site([libc, gc, app]) == gc
    assert call_site([libc, je, app]) == je
    assert call_site([libc, mi, app]) == mi
    assert call_site([libc, jit, app]) == jit
    assert call_site([libc, ld]) == libc  # only system modules: the innermost
    assert call_site([]).kind == "unknown"
    assert site_key(app) == "fragment3:grow_arena+0x1a"
    assert site_key(gc) == "libgc.so.1:GC_unmap+0x40"
    assert site_key(mi) == "libmimalloc.so.2+0x4410"
    assert site_key(jit) == "[V8 JIT 0x7f0000000000-0x7f0000040000]"
    assert site_key(vdso) == "[vdso]+0x9c0"
    assert site_key(unknown) == "[unknown 0x12]"
    assert caller_chain([libc, gc, unknown, app, libc], n=3) == \
        "libgc.so.1:GC_unmap+0x40 <- fragment3:grow_arena+0x1a <- libc.so.6:__mmap+0x26"
    assert caller_chain([libc, app], n=1) == "fragment3:grow_arena+0x1a"
    for m in ("libc.so.6", "libc-2.31.so", "ld-linux-x86-64.so.2", "ld-musl-x86_64.so.1",
              "libpthread.so.0", "linux-vdso.so.1"):
        assert is_system(_f("/lib/" + m, "f")), m
    for m in ("libjemalloc.so.2", "libgc.so.1", "libtcmalloc.so.4", "libcrypto.so.3",
              "liblib.so"):
        assert not is_system(_f("/lib/" + m, "f")), m


def test_jit_names_the_runtime() -> None:
    def snap_with(*names: str) -> Snapshot:
        vmas = [Vma(0x1000 * (k + 1), 0x1000 * (k + 2), "r-xp", name=n, inode=k + 1)
                for k, n in enumerate(names)]
        vmas.append(Vma(0x7F0000000000, 0x7F0000010000, "rwxp"))
        return Snapshot.from_vmas(vmas, SnapshotMeta(comm="worker"))

    for names, want in [(("/usr/lib/jvm/lib/server/libjvm.so",), "java JIT"),
                        (("/usr/bin/node",), "V8 JIT"),
                        (("/usr/lib/libmonosgen-2.0.so.1",), "mono JIT"),
                        (("/usr/bin/python3.11",), "Python"),
                        (("/usr/lib/libc.so.6",), "worker JIT")]:
        f = Symbolizer([snap_with(*names)]).frame(0x7F0000000040)
        assert (f.kind, f.module, f.offset) == ("jit", want, 0x40), names


# -- speed -------------------------------------------------------------------------------


def test_symbolizing_100k_addresses_in_libc(builds: dict[str, Path]) -> None:
    with started(builds["pie"]) as (_, snap):
        libc = next(v for v in snap if v.name and "libc.so" in v.name and "x" in v.perms)
        rng = np.random.default_rng(3)
        ips = rng.integers(libc.start, libc.end, 100_000, dtype=np.uint64)
        elf.clear_cache()
        sym = Symbolizer([snap])
        t0 = time.perf_counter()
        frames = sym.frames(ips)
        batch = time.perf_counter() - t0
        sym = Symbolizer([snap])
        t0 = time.perf_counter()
        for ip in ips[:10_000].tolist():
            sym.frame(ip)
        single = (time.perf_counter() - t0) * 10
    named = sum(f.kind == "elf" for f in frames)
    print(f"\n100k libc addresses: {batch:.3f} s in one batch, about {single:.1f} s "
          f"one at a time; {named} named")
    assert all(f.kind in ("elf", "module") for f in frames)
    # .dynsym alone covers about a third of libc's code; its debug file nearly all
    assert named > (90_000 if debug_file(libc.name) else 20_000)  # type: ignore[arg-type]
    assert batch < 10.0
