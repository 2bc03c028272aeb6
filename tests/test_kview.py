"""The kernel view (procfs/kview.py, the BPF task_vma reader): it equals /proc/PID/maps,
it names the blind spots of /proc with certain reasons, no kernel pointer leaves it,
snapshot files carry it, and without root the inferred report goes on.

Needs root and a kernel with BTF (skipped otherwise; under CI as root a skip fails).
The module prints the agreement of the inferred reasons with the kernel view on real
runtimes when it is done (pytest -s shows it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import PROGRAMS, need, python_child, running, stopped
from test_real_programs import tiny_class  # noqa: F401 (a fixture)
from test_runtimes import CPYTHON_THREADS

from vmascope import host
from vmascope.analysis import analyze
from vmascope.kernel.pairs import explain_pair
from vmascope.model import Snapshot
from vmascope.procfs import kview
from vmascope.procfs.live import read_process
from vmascope.procfs.load import load_target
from vmascope.procfs.snapfile import iter_sections
from vmascope.reasons import Code

VMASCOPE = [sys.executable, "-m", "vmascope"]
AGREEMENT: dict[str, tuple[int, int, int, int, int]] = {}


@pytest.fixture(autouse=True)
def _need_bpf(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("unprivileged"):
        return
    if os.geteuid() != 0:
        pytest.skip("the kernel view needs root")
    problem = host.kernel_view_problem() or host.bpf_build_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module", autouse=True)
def _report() -> object:
    yield
    if AGREEMENT:
        print("\nkernel view vs inferred reasons (pairs with an inferred reason):")
        for name, (pairs, inferred, confirmed, overturned, blind) in AGREEMENT.items():
            pct = "-" if not inferred else f"{100 * confirmed / inferred:.1f}%"
            print(f"  {name:<16} {pairs:>5} pairs {inferred:>4} inferred {confirmed:>4} "
                  f"confirmed {overturned:>3} overturned {blind:>3} blind ({pct})")
        inf = sum(v[1] for v in AGREEMENT.values())
        conf = sum(v[2] for v in AGREEMENT.values())
        if inf:
            print(f"  all: {conf}/{inf} = {100 * conf / inf:.1f}%")


def read_with_view(pid: int) -> Snapshot:
    with stopped(pid):
        return kview.read_consistent(pid, lambda: read_process(pid))


def maps_lines(pid: int) -> list[str]:
    with open(f"/proc/{pid}/maps") as fh:
        return fh.read().splitlines()


# -- the reader ---------------------------------------------------------------------------


def test_reader_equals_maps() -> None:
    code = ("import os, signal, threading, mmap\n"
            "ms = [mmap.mmap(-1, 4096 * (i + 1)) for i in range(50)]\n"
            "ts = [threading.Thread(target=threading.Event().wait, daemon=True)"
            " for _ in range(4)]\n"
            "[t.start() for t in ts]\n"
            "print('READY', flush=True)\n"
            "os.kill(os.getpid(), signal.SIGSTOP)\n")
    with python_child(code) as (pid, _):
        recs = kview.read_records(pid)
        lines = [ln for ln in maps_lines(pid) if not ln.endswith("[vsyscall]")]
    assert len(recs) == len(lines) > 50
    for rec, line in zip(recs, lines):
        rng, perms = line.split()[:2]
        lo, hi = (int(x, 16) for x in rng.split("-"))
        assert (int(rec["start"]), int(rec["end"])) == (lo, hi)
        flags = int(rec["vm_flags"])
        assert perms == ("r" if flags & 1 else "-") + ("w" if flags & 2 else "-") + (
            "x" if flags & 4 else "-") + ("s" if flags & 0x80 else "p")


def test_server_loads_once_and_answers_each_process_id() -> None:
    """--serve (what the lab's executor runs): "+" once loaded, then per process id its
    records and "." (or "! STATUS"), the numbering starting again at each capture."""
    exe = kview.reader_path()
    code = "import os, signal\nprint('R', flush=True)\nos.kill(os.getpid(), signal.SIGSTOP)\n"
    with python_child(code) as (pid, _):
        proc = subprocess.run([str(exe), "--serve", "--text"], capture_output=True,
                              text=True, timeout=120,
                              input=f"{pid}\n{pid}\n999999999\nabc\n{pid}\n")
        once = subprocess.run([str(exe), str(pid), "--text"], capture_output=True,
                              text=True, timeout=120, check=True)
        maps = [line for line in maps_lines(pid) if "[vsyscall]" not in line]
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "+"
    answers: list[list[str]] = [[]]
    ends = []
    for line in lines[1:]:
        if line == "." or line.startswith("! "):
            ends.append(line)
            answers.append([])
        else:
            answers[-1].append(line)
    assert ends == [".", ".", "! 6", "! 2", "."]
    first, second, _, _, third, _ = answers
    assert first == second == third == once.stdout.splitlines()
    assert len(first) == len(maps)
    assert [int(r.split()[0], 16) for r in first] == [int(m.split("-")[0], 16) for m in maps]
    assert "no process 999999999" in proc.stderr and "not abc" in proc.stderr


def test_align_refuses_a_different_process_state() -> None:
    with python_child("import os, signal\nprint('R', flush=True)\n"
                      "os.kill(os.getpid(), signal.SIGSTOP)\n") as (pid, _):
        snap = read_process(pid)
        recs = kview.read_records(pid)
    assert kview.align(snap, recs) is not None
    moved = recs.copy()
    moved["end"][0] += 4096
    assert kview.align(snap, moved) is None
    assert kview.align(snap, recs[1:]) is None  # a VMA of maps the iterator did not see


# -- the blind spots ----------------------------------------------------------------------

BLIND = {"moved": Code.ANON_PGOFF, "emptied": Code.ANON_VMA_EMPTIED,
         "twice": Code.FILE_TWICE, "fork": Code.FORK_CHILD}


@pytest.fixture(scope="module")
def blindspots_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bs") / "blindspots"
    subprocess.run([need("cc"), "-O1", "-Wall", "-Werror", "-o", str(out),
                    str(PROGRAMS / "blindspots.c")], check=True, timeout=120)
    return out


def _pairs(proc) -> dict[str, tuple[int, int]]:  # type: ignore[no-untyped-def]
    """{case: (boundary, pid)} from the program's lines up to READY."""
    found = {}
    for line in proc.output.splitlines():
        if line.startswith("PAIR"):
            _, name, addr, pid = line.split()
            found[name] = (int(addr, 16), int(pid))
    assert set(found) == set(BLIND), proc.output
    return found


def test_every_blind_spot_gets_its_certain_reason(blindspots_exe: Path,
                                                  tmp_path: Path) -> None:
    epoch = host.epoch_for()
    with running([str(blindspots_exe), str(tmp_path)], "READY") as proc:
        pairs = _pairs(proc)
        for name, (addr, pid) in pairs.items():
            snap = read_with_view(pid)
            (i,) = np.flatnonzero(snap.start == addr)
            certain = explain_pair(snap.vma(i - 1), snap.vma(i), epoch)
            assert BLIND[name] in {r.code for r in certain}, (name, certain)
            assert all(r.confidence == "certain" for r in certain), (name, certain)
            plain = snap.vma(i - 1), snap.vma(i)
            inferred = explain_pair(*(type(v)(**{**_fields(v), "anon_vma": None,
                                                 "kview": None}) for v in plain), epoch)
            assert BLIND[name] not in {r.code for r in inferred}, (name, inferred)
            # analyze counts it among the pairs /proc could not see.
            a = analyze(snap, epoch=epoch)
            assert a.kernel_check is not None
            assert any(str(BLIND[name]) in change.split("->")[1]
                       for change in a.kernel_check.changes), (name, a.kernel_check)


def _fields(v) -> dict:  # type: ignore[no-untyped-def]
    return {f: getattr(v, f) for f in v.__dataclass_fields__}


# -- no kernel pointer leaves the reader --------------------------------------------------

# Kernel addresses on x86-64 are at 0xffff800000000000 and above. The vsyscall page
# (0xffffffffff600000, the same in every process and printed by /proc/PID/maps) and
# all-ones are not pointers to kernel objects.
KERNEL_LOW = 0xFFFF_8000_0000_0000
ALLOWED = {0xFFFF_FFFF_FF60_0000, 0xFFFF_FFFF_FF60_1000, 0xFFFF_FFFF_FFFF_FFFF}
HEX = re.compile(rb"(?:0x)?([0-9a-fA-F]{16})")
DEC = re.compile(rb"\d{19,20}")


def kernel_values(data: bytes, binary: bool = False) -> list[int]:
    """Values in ``data`` that look like kernel addresses: hex or decimal numbers in
    text, and (``binary``) aligned little-endian 64-bit words."""
    found = [int(m.group(1), 16) for m in HEX.finditer(data)]
    found += [int(m.group(0)) for m in DEC.finditer(data)]
    if binary:
        found += np.frombuffer(data[: len(data) // 8 * 8], dtype="<u8").tolist()
    return [v for v in found if KERNEL_LOW <= v < 1 << 64 and v not in ALLOWED]


def test_no_kernel_address_reaches_any_output(blindspots_exe: Path, tmp_path: Path) -> None:
    exe = kview.reader_path()
    outputs: dict[str, bytes] = {}
    with running([str(blindspots_exe), str(tmp_path)], "READY") as proc:
        pairs = _pairs(proc)
        pid = pairs["fork"][1]
        with stopped(pid):
            for args in ([], ["--text"]):
                outputs[f"reader {args}"] = subprocess.run(
                    [str(exe), str(pid), *args], capture_output=True, check=True,
                    timeout=60).stdout
            snapfile = tmp_path / "k.snap"
            for name, cmd in {
                "snapshot json": ["snapshot", str(pid), "--kernel-view", "--json", "--vmas"],
                "snapshot -o": ["snapshot", str(pid), "--kernel-view", "-o", str(snapfile)],
                "analyze json": ["analyze", str(pid), "--kernel-view", "--json"],
                "analyze text": ["analyze", str(pid), "--kernel-view"],
            }.items():
                r = subprocess.run(VMASCOPE + cmd, capture_output=True, timeout=120)
                assert r.returncode == 0, r.stderr
                outputs[name] = r.stdout + r.stderr
        for fmt in ("json", "html", "text"):
            r = subprocess.run(VMASCOPE + ["analyze", str(snapfile), "--format", fmt],
                               capture_output=True, timeout=120, check=True)
            outputs[f"analyze file {fmt}"] = r.stdout + r.stderr
    with open(snapfile, "rb") as fh:
        for name, chunks in iter_sections(fh, str(snapfile)):
            outputs[f"section {name}"] = b"".join(bytes(c) for c in chunks)
    assert "section kview" in outputs
    assert b"av1" in outputs["reader ['--text']"]
    for name, data in outputs.items():
        binary = name in ("reader []", "section kview")
        found = kernel_values(data, binary)
        assert not found, (name, [hex(v) for v in found][:5])


def test_the_leak_check_sees_a_pointer() -> None:
    for data in (b"anon_vma ffff8881234abcd0", b"x 18446612682366962128 y",
                 np.array([0xFFFF888100000040], dtype="<u8").tobytes()):
        assert kernel_values(data, binary=True)
    assert not kernel_values(b"ffffffffff600000-ffffffffff601000 --xp [vsyscall]")


# -- snapshot files -----------------------------------------------------------------------


def test_snapshot_file_keeps_the_kernel_view(blindspots_exe: Path, tmp_path: Path) -> None:
    path = tmp_path / "k.snap"
    with running([str(blindspots_exe), str(tmp_path)], "READY") as proc:
        pid = _pairs(proc)["moved"][1]
        with stopped(pid):
            r = subprocess.run(VMASCOPE + ["snapshot", str(pid), "-o", str(path),
                                           "--kernel-view"], capture_output=True, timeout=120)
            assert r.returncode == 0, r.stderr
            live = read_with_view(pid)
    assert path.read_bytes()[8:12] == (2).to_bytes(4, "little")
    snap = load_target(path)
    assert snap.kview is not None and snap.anon_vma is not None
    for f in kview.FIELDS:
        assert np.array_equal(snap.kview[f], live.kview[f]), f
    # A file of format 1 (no kernel view) still loads.
    old = tmp_path / "old.snap"
    with running([str(blindspots_exe), str(tmp_path)], "READY") as proc:
        pid = _pairs(proc)["moved"][1]
        subprocess.run(VMASCOPE + ["snapshot", str(pid), "-o", str(old), "--no-kernel-view"],
                       check=True, capture_output=True, timeout=120)
    data = bytearray(old.read_bytes())
    data[8:12] = (1).to_bytes(4, "little")
    old.write_bytes(bytes(data))
    assert load_target(old).kview is None


def test_setting_turns_it_on(blindspots_exe: Path, tmp_path: Path) -> None:
    with running([str(blindspots_exe), str(tmp_path)], "READY") as proc:
        pid = _pairs(proc)["moved"][1]
        r = subprocess.run(VMASCOPE + ["snapshot", str(pid), "--json", "--vmas"],
                           capture_output=True, timeout=120, text=True,
                           env={**os.environ, "VMASCOPE_KERNEL_VIEW": "1"})
    assert r.returncode == 0, r.stderr
    assert '"kernel":{' in r.stdout.replace(" ", "")


# -- without root -------------------------------------------------------------------------


@pytest.mark.unprivileged  # runs as anyone: as root it drops to nobody
def test_without_root_a_notice_and_the_inferred_report(tmp_path: Path) -> None:
    setpriv = need("setpriv") if os.geteuid() == 0 else None
    cmd = [sys.executable, "-m", "vmascope", "analyze", "--kernel-view"]
    child = [sys.executable, "-c", "import time; print('READY', flush=True); "
             "time.sleep(60)"]
    drop = ([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
             "--inh-caps=-all", "--bounding-set=-all"] if setpriv else [])
    env = {"VMASCOPE_CACHE": str(tmp_path), "HOME": str(tmp_path)}
    os.chmod(tmp_path, 0o777)
    with running(drop + child, "READY", env=env) as proc:
        r = subprocess.run(drop + cmd + [str(proc.pid)], capture_output=True, text=True,
                           timeout=120, env={**os.environ, **env})
    assert r.returncode == 0, r.stderr
    notice = [ln for ln in r.stderr.splitlines() if ln]
    assert len(notice) == 1 and "not root" in notice[0], r.stderr
    assert "Why not merged" in r.stdout


# -- real runtimes ------------------------------------------------------------------------


def check_runtime(name: str, cmd: list[str], ready: str, **kw: object) -> None:
    with running(cmd, ready, **kw) as proc:  # type: ignore[arg-type]
        snap = read_with_view(proc.pid)
    epoch = host.epoch_for()
    a = analyze(snap, epoch=epoch)
    kc = a.kernel_check
    assert kc is not None
    assert all(r.confidence == "certain" for r in a.why.reasons), a.why.reasons
    assert kc.inferred == kc.confirmed + kc.overturned
    AGREEMENT[name] = (kc.pairs, kc.inferred, kc.confirmed, kc.overturned, kc.blind)


def test_runtime_jvm(tiny_class: Path) -> None:  # noqa: F811
    check_runtime("JVM G1", [need("java"), "-XX:-UsePerfData", "-XX:+UseG1GC", "-Xmx256m",
                             "-cp", str(tiny_class), "Tiny"], "READY", timeout=120)


def test_runtime_nodejs() -> None:
    check_runtime("Node.js", [need("node"), "-e",
                              "console.log('READY'); setTimeout(() => {}, 120000)"], "READY")


def test_runtime_cpython_threads() -> None:
    python = shutil.which("python3") or sys.executable
    check_runtime("CPython threads", [python, "-c", CPYTHON_THREADS], "READY")


def test_runtime_glibc_arenas(tmp_path: Path) -> None:
    exe = tmp_path / "shapes"
    subprocess.run([need("cc"), "-O1", "-pthread", "-o", str(exe),
                    str(PROGRAMS / "shapes.c")], check=True, timeout=120)
    check_runtime("glibc arenas", [str(exe), "arenas", "12"], "RESERVED")


def test_analysis_json_has_the_check(blindspots_exe: Path, tmp_path: Path) -> None:
    with running([str(blindspots_exe), str(tmp_path)], "READY") as proc:
        pid = _pairs(proc)["moved"][1]
        r = subprocess.run(VMASCOPE + ["analyze", str(pid), "--kernel-view", "--json"],
                           capture_output=True, timeout=120, text=True)
    assert r.returncode == 0, r.stderr
    kv = json.loads(r.stdout)["kernel_view"]
    assert kv["blind_spots"] >= 2 and "anon_pgoff" in " ".join(kv["changes"])
