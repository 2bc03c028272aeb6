"""Runtime fingerprints on real processes started here: each runtime or allocator is
identified on its own process, and nothing is identified that the process does not hold.

The runtimes are Debian's (Makefile APT_PACKAGES): a JVM (G1 and ZGC), Node.js, Go, mono,
CPython; the allocators jemalloc, mimalloc and tcmalloc are LD_PRELOADed into a C
program whose threads malloc, bdwgc is linked into one, and glibc malloc is that program
without a preload. .NET is not packaged by Debian: its documented shapes (the GC regions
reservation, the memfd:doublemapper double mapping) are made by a C program
(tests/programs/shapes.c, mode dotnet): a synthetic process, stated as such.

Every process also checks the budget identity. The module prints the confusion table
(process x identified) when it is done (pytest -s shows it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROGRAMS, need, read_stopped, running
from test_real_programs import tiny_class  # noqa: F401 (a fixture)

from vmascope.analysis import analyze
from vmascope.analysis.runtimes import RUNTIMES

LIBDIR = Path("/usr/lib/x86_64-linux-gnu")
THREADS = 4
SEEN: dict[str, set[str]] = {}

# For every process: the runtimes it must be identified as, and those it may also hold
# (glibc's malloc serves every program that does not replace it, and makes per-thread
# arenas only if its threads malloc).
GLIBC = {"glibc malloc"}
EXPECTED: dict[str, tuple[set[str], set[str]]] = {
    "JVM G1": ({"JVM"}, GLIBC),
    "JVM ZGC": ({"JVM"}, GLIBC),
    "Node.js": ({"V8/Node.js"}, GLIBC),
    "Go": ({"Go"}, set()),
    "mono": ({"mono"}, GLIBC),
    "CPython threads": ({"CPython"}, GLIBC),
    "glibc threads": ({"glibc malloc"}, set()),
    "jemalloc": ({"jemalloc"}, set()),
    "mimalloc": ({"mimalloc"}, set()),
    "tcmalloc": ({"tcmalloc"}, set()),
    "bdwgc": ({"bdwgc"}, GLIBC),
    ".NET (synthetic)": ({".NET"}, set()),
}


@pytest.fixture(scope="module")
def exes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cc = need("cc")
    d = tmp_path_factory.mktemp("rt")
    out = {"shapes": d / "shapes", "gcuser": d / "gcuser"}
    subprocess.run([cc, "-O1", "-pthread", "-o", str(out["shapes"]),
                    str(PROGRAMS / "shapes.c")], check=True, timeout=120)
    libgc = LIBDIR / "libgc.so.1"
    if not libgc.exists():
        pytest.skip("libgc1 (bdwgc) is not installed")
    subprocess.run([cc, "-O1", "-o", str(out["gcuser"]), str(PROGRAMS / "gcuser.c"),
                    str(libgc)], check=True, timeout=120)
    return out


def identify(name: str, cmd: list[str], ready: str, env: dict[str, str] | None = None,
             timeout: float = 120.0, cwd: Path | None = None):  # type: ignore[no-untyped-def]
    with running(cmd, ready, timeout=timeout, cwd=cwd, env=env) as proc:
        snap, lines = read_stopped(proc.pid)
    assert snap.map_count == lines
    a = analyze(snap)
    b = a.budget
    assert b is not None
    assert sum(b.totals.counts.values()) == b.map_count - b.ideal
    for r in b.reservations:
        assert sum(r.causes.counts.values()) == r.vma_count - 1
    found = {f.runtime for f in a.runtimes}
    SEEN[name] = found
    must, may = EXPECTED[name]
    assert must <= found, (name, found, [f.evidence for f in a.runtimes])
    assert found <= must | may, (name, found, [f.evidence for f in a.runtimes])
    for f in a.runtimes:
        assert f.evidence and f.confidence in ("certain", "high", "medium")
    return a


def test_jvm_g1(tiny_class: Path) -> None:  # noqa: F811
    a = identify("JVM G1", [need("java"), "-XX:-UsePerfData", "-XX:+UseG1GC", "-Xmx256m", "-cp",
                            str(tiny_class), "Tiny"], "READY")
    (jvm,) = [f for f in a.runtimes if f.runtime == "JVM"]
    assert jvm.confidence == "certain" and jvm.detail == "G1"


def test_jvm_zgc(tiny_class: Path) -> None:  # noqa: F811
    a = identify("JVM ZGC", [need("java"), "-XX:-UsePerfData", "-XX:+UseZGC", "-Xmx256m", "-cp",
                             str(tiny_class), "Tiny"], "READY")
    (jvm,) = [f for f in a.runtimes if f.runtime == "JVM"]
    # ZGC is recognised by its multi-mapped memfd heap, not only by the option.
    assert jvm.detail == "ZGC" and any("java_heap" in e for e in jvm.evidence)


def test_nodejs() -> None:
    a = identify("Node.js", [need("node"), "-e",
                             "console.log('READY'); setTimeout(() => {}, 120000)"], "READY")
    (v8,) = [f for f in a.runtimes if f.runtime == "V8/Node.js"]
    # V8 reserves its code range (128 MiB on x86-64) up front, mostly PROT_NONE.
    assert v8.regions and all(hi - lo >= 128 << 20 for lo, hi in v8.regions)
    assert a.budget is not None
    assert any(r.owner == "V8/Node.js" for r in a.budget.reservations)


GO_PROGRAM = """package main

import (
	"fmt"
	"time"
)

var keep [][]byte

func main() {
	for i := 0; i < 20000; i++ {
		keep = append(keep, make([]byte, 4096))
	}
	fmt.Println("READY", len(keep))
	time.Sleep(120 * time.Second)
}
"""


def test_go(tmp_path: Path) -> None:
    go = need("go")
    (tmp_path / "main.go").write_text(GO_PROGRAM)
    env = {**os.environ, "GOCACHE": str(tmp_path / "cache"), "GOPATH": str(tmp_path / "gp"),
           "GO111MODULE": "off", "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    subprocess.run([go, "build", "-o", str(tmp_path / "tiny"), "main.go"], cwd=tmp_path,
                   env=env, check=True, timeout=300, capture_output=True)
    a = identify("Go", [str(tmp_path / "tiny")], "READY")
    (g,) = [f for f in a.runtimes if f.runtime == "Go"]
    assert g.confidence == "high" and g.regions and g.regions[0][0] >= 0xC000000000
    assert a.budget is not None
    assert any(r.owner == "Go" and r.start == g.regions[0][0] for r in a.budget.reservations)
    subprocess.run(["chmod", "-R", "u+w", str(tmp_path)], check=False)


CS_PROGRAM = """
public class Tiny {
    public static void Main() {
        var keep = new System.Collections.Generic.List<byte[]>();
        for (int i = 0; i < 4000; i++) keep.Add(new byte[4096]);
        System.Console.WriteLine("READY " + keep.Count);
        System.Console.Out.Flush();
        System.Threading.Thread.Sleep(120000);
    }
}
"""


def test_mono(tmp_path: Path) -> None:
    mcs = need("mcs")
    mono = need("mono")
    (tmp_path / "Tiny.cs").write_text(CS_PROGRAM)
    subprocess.run([mcs, "-out:" + str(tmp_path / "Tiny.exe"), str(tmp_path / "Tiny.cs")],
                   check=True, timeout=300, capture_output=True)
    identify("mono", [mono, str(tmp_path / "Tiny.exe")], "READY")


# CPython with 16 threads waiting: prints READY, then sleeps (at most 120 s).
CPYTHON_THREADS = ("import threading, time\n"
                   "e = threading.Event()\n"
                   "ts = [threading.Thread(target=e.wait) for _ in range(16)]\n"
                   "[t.start() for t in ts]\n"
                   "print('READY', flush=True)\n"
                   "time.sleep(120)\n")


def test_cpython_threads() -> None:
    python = shutil.which("python3") or sys.executable
    identify("CPython threads", [python, "-c", CPYTHON_THREADS], "READY")


def test_glibc_threads(exes: dict[str, Path]) -> None:
    a = identify("glibc threads", [str(exes["shapes"]), "arenas", "12"], "RESERVED")
    (m,) = [f for f in a.runtimes if f.runtime == "glibc malloc"]
    assert len(m.regions) == 12  # one arena per thread (fewer than 8 x cores)
    assert a.budget is not None
    owned = [r for r in a.budget.reservations if r.owner == "glibc malloc"]
    # Every owned reservation overlaps an arena (it may hold thread stacks beside it).
    assert owned and all(any(lo < r.end and r.start < hi for lo, hi in m.regions)
                         for r in owned)
    assert sum(r.end - r.start for r in owned) >= 12 * (64 << 20)


@pytest.mark.parametrize(("name", "lib"), [("jemalloc", "libjemalloc.so.2"),
                                           ("mimalloc", "libmimalloc.so.2"),
                                           ("tcmalloc", "libtcmalloc_minimal.so.4")])
def test_preloaded_allocator(exes: dict[str, Path], name: str, lib: str) -> None:
    path = LIBDIR / lib
    if not path.exists():
        pytest.skip(f"{lib} is not installed")
    identify(name, [str(exes["shapes"]), "arenas", str(THREADS)], "RESERVED",
             env={"LD_PRELOAD": str(path)})


def test_bdwgc(exes: dict[str, Path]) -> None:
    identify("bdwgc", [str(exes["gcuser"])], "READY")


def test_dotnet_synthetic(exes: dict[str, Path]) -> None:
    """Not .NET itself (Debian has no package): a C program making the two shapes the
    .NET runtime documents. Without libcoreclr.so the confidence is "high", not certain."""
    n = 300
    a = identify(".NET (synthetic)", [str(exes["shapes"]), "dotnet", str(n)], "RESERVED")
    (dn,) = [f for f in a.runtimes if f.runtime == ".NET"]
    assert dn.confidence == "high"
    assert any(e.startswith(f"{2 * n:,} memfd:doublemapper") for e in dn.evidence)
    assert [hi - lo for lo, hi in dn.regions] == [256 << 30]
    # The regions reservation: 64 committed pieces, the first at its start, each followed
    # by PROT_NONE space: 128 VMAs, owned by .NET.
    b = a.budget
    assert b is not None
    (gc,) = [r for r in b.reservations if r.start == dn.regions[0][0]]
    assert gc.vma_count == 128 and gc.owner == ".NET"
    # 600 double-mapped pages are worth the W^X advice, with the setting named.
    assert any(f.about == ".NET" and "DOTNET_EnableWriteXorExecute=0" in f.change
               for f in a.fixes)


@pytest.fixture(scope="module", autouse=True)
def confusion_table():  # type: ignore[no-untyped-def]
    """After the module: print the confusion table (process x identified as; "(also)"
    marks what a process may hold besides its own runtime). Each test has checked its
    own row against EXPECTED already."""
    yield
    if not SEEN:
        return
    width = max(len(k) for k in EXPECTED)
    lines = ["process".ljust(width) + " | identified as"]
    for name, found in SEEN.items():
        must, _ = EXPECTED[name]
        marks = [c + ("" if c in must else " (also)") for c in RUNTIMES if c in found]
        lines.append(name.ljust(width) + " | " + ", ".join(marks))
    print("\n" + "\n".join(lines))
