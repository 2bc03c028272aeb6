"""vmascope record, replay, import-strace and analyze --trace, end to end on the host.

A C program with a known fragmenting pattern in three functions (tests/programs/frag3.c)
is recorded with both recorders and replayed: the replay must reproduce >= 99% of its
final VMAs and rank the three functions by the VMAs they made. Programs nobody here wrote
(a JVM with G1 and with ZGC, Node.js, CPython with threads, a bdwgc program in
incremental mode) are recorded and replayed too, with their agreement asserted. And the
recording leaves nothing behind on SIGINT, SIGTERM or SIGKILL.

Needs root (BPF, ptrace) and the programs (skipped otherwise; under CI as root a skip
fails).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from vmascope.trace.parse import read_trace
from vmascope.trace.replay import replay
from vmascope.trace.sites import SiteNamer, attribute

from conftest import PROGRAMS, need, need_root

VMASCOPE = [sys.executable, "-m", "vmascope"]
TIMEOUT = 240
# frag3's three functions and what each makes with the arguments below (from frag3.c):
# 2*A VMAs by protection, 2*C by VmFlags, about B/2 by anon_vma
A, B, C = 1500, 1000, 400
FUNCTIONS = ("stripe_protections", "mark_dontfork", "commit_out_of_order")


def _need_recording(strace: bool) -> None:
    need_root()
    if strace:
        need("strace")
    else:
        from vmascope.trace import bpf

        why = bpf.problem()
        if why:
            pytest.skip(why)


@pytest.fixture(scope="module")
def frag3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = need("cc")
    out = tmp_path_factory.mktemp("frag3") / "frag3"
    subprocess.run([cc, "-O0", "-fno-inline", "-fno-omit-frame-pointer", "-o", str(out),
                    str(PROGRAMS / "frag3.c")], check=True, timeout=120)
    return out


def vmascope(*args: str, timeout: float = TIMEOUT, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VMASCOPE, *args], capture_output=True, text=True,
                          timeout=timeout, **kw)  # type: ignore[call-overload]


def record(out: Path, cmd: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    proc = vmascope("record", "-o", str(out), *extra, "--", *cmd)
    assert proc.returncode == 0, proc.stderr
    assert out.exists()
    return proc


def replayed(path: Path) -> tuple[float, list[str]]:
    rep = replay(read_trace(path))
    att = attribute(rep, SiteNamer(rep.trace))
    assert rep.comparison is not None, "no last snapshot"
    return rep.comparison.agreement, [s.key for s in att.sites if s.vmas]


def ranked_functions(keys: list[str]) -> list[str]:
    """The three functions in the order their first call site appears."""
    order = []
    for k in keys:
        for f in FUNCTIONS:
            if f":{f}+" in k and f not in order:
                order.append(f)
    return order


@pytest.mark.parametrize("recorder", ["bpf", "strace"])
def test_frag3_replays_and_ranks_its_three_call_sites(frag3: Path, tmp_path: Path,
                                                      recorder: str) -> None:
    _need_recording(recorder == "strace")
    out = tmp_path / f"frag3-{recorder}.trace.gz"
    extra = ("--strace",) if recorder == "strace" else ()
    proc = record(out, [str(frag3), str(A), str(B), str(C)], *extra)
    assert f"({recorder})" in proc.stderr and "last snapshot: exit" in proc.stderr
    tr = read_trace(out)
    assert tr.header["recorder"] == recorder and tr.lost == 0
    agreement, keys = replayed(out)
    assert agreement >= 99.0
    assert ranked_functions(keys) == list(FUNCTIONS)
    # the counts per site follow from frag3.c, not from the model: 2A by protection ...
    rep = replay(tr)
    att = attribute(rep, SiteNamer(tr))
    by = {f: sum(s.vmas for s in att.sites if f":{f}+" in s.key) for f in FUNCTIONS}
    assert abs(by["stripe_protections"] - 2 * A) <= 2
    assert abs(by["mark_dontfork"] - 2 * C) <= 2
    assert abs(by["commit_out_of_order"] - B // 2) <= 2
    if recorder == "strace":  # faults are inferred, and say so
        assert any(tr.annotation(i).inferred for i in range(len(tr.ops)))
        assert "inferred" in tr.header["faults"]


def test_import_an_strace_log_a_user_made(frag3: Path, tmp_path: Path) -> None:
    """strace attached by hand to a running program, snapshots before and after: the
    log imported (faults inferred from the final snapshot) replays like a recording."""
    need_root()
    strace = need("strace")
    from conftest import wait_line

    popen = subprocess.Popen([str(frag3), str(A), str(B), str(C), "wait"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
    tracer = None
    try:
        wait_line(popen, "ready", 30)
        first, final, log = tmp_path / "first.snap", tmp_path / "final.snap", tmp_path / "log"
        assert vmascope("snapshot", str(popen.pid), "-o", str(first)).returncode == 0
        tracer = subprocess.Popen([strace, "-f", "-ttt", "-k", "-o", str(log), "-p",
                                   str(popen.pid)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = Path(f"/proc/{popen.pid}/status").read_text()
            if f"TracerPid:\t{tracer.pid}" in status:
                break
            time.sleep(0.05)
        assert popen.stdin is not None
        popen.stdin.write(b"go\n")
        popen.stdin.flush()
        wait_line(popen, "done", 120)
        assert vmascope("snapshot", str(popen.pid), "-o", str(final)).returncode == 0
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
        popen.stdin.write(b"go\n")
        popen.stdin.flush()
        popen.wait(timeout=30)
    finally:
        for p in (popen, tracer):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    out = tmp_path / "imported.trace"
    proc = vmascope("import-strace", str(log), "--first", str(first), "--final", str(final),
                    "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    tr = read_trace(out)
    assert tr.header["recorder"] == "strace-import" and "inferred" in tr.header["faults"]
    agreement, keys = replayed(out)
    assert agreement >= 99.0
    assert ranked_functions(keys) == list(FUNCTIONS)
    # without the first snapshot the trace says it cannot be replayed
    bare = tmp_path / "bare.trace"
    assert vmascope("import-strace", str(log), "-o", str(bare)).returncode == 0
    proc = vmascope("replay", str(bare))
    assert proc.returncode == 5 and "first snapshot" in proc.stderr


@pytest.mark.parametrize("recorder", ["bpf", "strace"])
def test_first_writes_by_the_kernel_are_seen(tmp_path: Path, recorder: str) -> None:
    """read() into fresh memory: the first write, which gives the anon_vma, is the
    kernel's (a kernel-mode fault for BPF; inferred for strace)."""
    _need_recording(recorder == "strace")
    exe = tmp_path / "kread"
    subprocess.run([need("cc"), "-O1", "-o", str(exe), str(PROGRAMS / "kread.c")],
                   check=True, timeout=120)
    out = tmp_path / "k.trace"
    record(out, [str(exe)], *(("--strace",) if recorder == "strace" else ()))
    agreement, _keys = replayed(out)
    assert agreement >= 99.0


def test_replay_cli_text_json_plot_and_another_kernel(frag3: Path, tmp_path: Path) -> None:
    _need_recording(False)
    out = tmp_path / "f.trace"
    record(out, [str(frag3), "300", "200", "100"])
    text = vmascope("replay", str(out), "--plot", str(tmp_path / "t.svg"))
    assert text.returncode == 0, text.stderr
    assert "agreement with the real end state" in text.stdout
    assert all(len(line) <= 80 for line in text.stdout.splitlines())
    assert "stripe_protections" in text.stdout
    svg = (tmp_path / "t.svg").read_text()
    assert svg.startswith("<svg") and "stripe_protections" in svg and "<polygon" in svg
    js = vmascope("replay", str(out), "--json", "--kernel", "6.1")
    data = json.loads(js.stdout)
    assert data["kernel"] == "6.1" and data["comparison"]["agreement"] >= 99
    assert data["attribution"]["sites"][0]["site"].startswith("frag3:stripe_protections+")
    assert data["attribution"]["timeline"][-1]["map_count"] == data["map_count"]


def test_analyze_with_a_trace(frag3: Path, tmp_path: Path) -> None:
    _need_recording(False)
    out = tmp_path / "f.trace"
    record(out, [str(frag3), "300", "200", "100"])
    text = vmascope("analyze", "--trace", str(out))
    assert text.returncode == 0, text.stderr
    assert "Top call sites creating VMAs" in text.stdout
    js = json.loads(vmascope("analyze", "--trace", str(out), "--json").stdout)
    assert js["trace"]["comparison"]["agreement"] >= 99
    assert js["headroom"]["map_count"] == js["trace"]["comparison"]["real"] + 1  # vsyscall
    html = vmascope("analyze", "--trace", str(out), "--format", "html", "-o",
                    str(tmp_path / "r.html"))
    assert html.returncode == 0, html.stderr
    page = (tmp_path / "r.html").read_text()
    assert "Recorded run: where the VMAs came from" in page and "stripe_protections" in page


def test_bad_traces_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.trace"
    bad.write_text("#!vmascope-trace 1\nmprotect 0x1000 zz rw-\n")
    proc = vmascope("replay", str(bad))
    assert proc.returncode == 5 and proc.stderr.count("\n") == 1
    assert "bad.trace:2" in proc.stderr
    nofirst = tmp_path / "nofirst.trace"
    nofirst.write_text("#!vmascope-trace 1\nmmap 0x10000 0x1000 rw- private,anonymous,fixed\n")
    proc = vmascope("replay", str(nofirst))
    assert proc.returncode == 5 and "first snapshot" in proc.stderr
    proc = vmascope("record", "-o", str(tmp_path / "x"))
    assert proc.returncode == 2 and "--pid PID or -- CMD" in proc.stderr
    proc = vmascope("record", "-o", str(tmp_path / "x"), "--", str(tmp_path / "nosuch"))
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x*"))


def test_a_launcher_that_execs_the_program(frag3: Path, tmp_path: Path) -> None:
    """The command is a script that execs the real program: the trace starts again from
    the program (a new first snapshot, taken by the preloaded hook)."""
    _need_recording(False)
    script = tmp_path / "launch.sh"
    script.write_text(f"#!/bin/sh\nX=1\nexec {frag3} 300 200 100\n")
    script.chmod(0o755)
    out = tmp_path / "w.trace"
    record(out, [str(script)])
    tr = read_trace(out)
    assert tr.restarts == 1 and tr.first is not None
    assert tr.first.meta.comm == "frag3"
    agreement, keys = replayed(out)
    assert agreement >= 99.0 and ranked_functions(keys) == list(FUNCTIONS)


CHURN = """
import ctypes, mmap, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
base = libc.mmap(None, 4096 * 4000, 0, 0x22 | 0x4000, -1, 0)
print("ready", flush=True)
i = 0
end = time.time() + 60
while time.time() < end:
    libc.mprotect(ctypes.c_void_p(base + 2 * 4096 * (i % 2000)), 4096, 3)
    ctypes.memset(base + 2 * 4096 * (i % 2000), 1, 1)
    i += 1
    if i % 100 == 0:
        time.sleep(0.01)
"""


def test_record_a_running_process_for_a_duration(tmp_path: Path) -> None:
    _need_recording(False)
    from conftest import running

    with running([sys.executable, "-c", CHURN], "ready") as proc:
        out = tmp_path / "p.trace"
        res = vmascope("record", "--pid", str(proc.pid), "--duration", "2", "-o", str(out))
        assert res.returncode == 0, res.stderr
        assert "last snapshot: duration" in res.stderr
        assert proc.popen.poll() is None  # --pid leaves the process running
    tr = read_trace(out)
    assert tr.header["final"] == "duration" and tr.first is not None and tr.last is not None
    assert sum(op.kind == "mprotect" for op in tr.ops) > 100
    agreement, _keys = replayed(out)
    assert agreement >= 99.0


# -- programs nobody here wrote -------------------------------------------------------------

JAVA = """public class Alloc {
    public static void main(String[] a) throws Exception {
        Thread[] ts = new Thread[4];
        for (int t = 0; t < ts.length; t++) {
            ts[t] = new Thread(() -> {
                java.util.List<byte[]> mine = new java.util.ArrayList<>();
                for (int i = 0; i < 100000; i++) {
                    mine.add(new byte[256 + (i % 4096)]);
                    if (mine.size() > 5000) mine.subList(0, 2500).clear();
                }
            });
            ts[t].start();
        }
        for (Thread t : ts) t.join();
        System.out.println("done");
    }
}
"""
NODE = ("let a = []; for (let i = 0; i < 2e5; i++) { a.push(new Array(100).fill(i)); "
        "if (a.length > 2e4) a = []; } const b = []; "
        "for (let i = 0; i < 100; i++) b.push(Buffer.alloc(1 << 20)); console.log('done');")
PYTHON = ("import threading\n"
          "def w():\n    x = [bytearray(1000) for _ in range(20000)]\n"
          "    y = [bytes(50000) for _ in range(200)]\n"
          "t = [threading.Thread(target=w) for _ in range(8)]\n"
          "[s.start() for s in t]; [s.join() for s in t]; print('done')\n")
BDWGC = r"""#include <stddef.h>
#include <stdio.h>
void GC_init(void); void *GC_malloc(size_t); void GC_gcollect(void);
void GC_enable_incremental(void);
int main(void) {
    GC_init();
    GC_enable_incremental();
    void **keep = GC_malloc(1000 * sizeof(void *));
    for (long i = 0; i < 200000; i++) {
        void **p = GC_malloc(512);
        p[0] = keep[i % 1000];
        keep[i % 1000] = p;
        if (i % 50000 == 0) keep[(i / 7) % 1000] = NULL;
    }
    GC_gcollect();
    printf("done\n");
    return 0;
}
"""


def _program(name: str, tmp: Path) -> list[str]:
    if name in ("jvm-g1", "jvm-zgc"):
        java = need("java")
        (tmp / "Alloc.java").write_text(JAVA)
        gc = "-XX:+UseG1GC" if name == "jvm-g1" else "-XX:+UseZGC"
        return [java, "-XX:-UsePerfData", gc, "-Xmx512m", str(tmp / "Alloc.java")]
    if name == "node":
        return [need("node"), "-e", NODE]
    if name == "python-threads":
        return [os.path.realpath(sys.executable), "-c", PYTHON]
    lib = Path("/usr/lib/x86_64-linux-gnu/libgc.so.1")
    if not lib.exists():
        pytest.skip("libgc (bdwgc) is not installed")
    (tmp / "gcinc.c").write_text(BDWGC)
    subprocess.run([need("cc"), "-O1", "-o", str(tmp / "gcinc"), str(tmp / "gcinc.c"),
                    str(lib)], check=True, timeout=120)
    return [str(tmp / "gcinc")]


@pytest.mark.parametrize("name", ["jvm-g1", "jvm-zgc", "node", "python-threads",
                                  "bdwgc-incremental"])
def test_real_programs_replay(name: str, tmp_path: Path) -> None:
    _need_recording(False)
    cmd = _program(name, tmp_path)
    out = tmp_path / f"{name}.trace.zst"
    proc = record(out, cmd)
    assert "last snapshot: exit" in proc.stderr
    agreement, keys = replayed(out)
    print(f"{name}: agreement {agreement:.2f}%, top sites {keys[:3]}")
    assert agreement >= 99.0
    assert keys  # every VMA has a site (or the start)


# -- nothing outlives a recording ------------------------------------------------------------

def _ours(marker: str, pids: set[str] | None = None) -> list[str]:
    """Processes whose command line has marker (the tracee), and strace or the BPF
    loader recording one of ``pids`` (the tracee's)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True,
                         text=True).stdout
    found = []
    for line in out.splitlines()[1:]:
        words = line.split()
        if marker in line:
            found.append(line)
        elif pids and ("strace" in line or words[1].endswith("/record")) and (
                pids & set(words[2:])):
            found.append(line)
    return found


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("recorder", ["bpf", "strace"])
def test_nothing_outlives_the_recording(how: str, recorder: str, tmp_path: Path) -> None:
    _need_recording(recorder == "strace")
    marker = f"vmascope-test-{how}-{recorder}-{os.getpid()}"
    cmd = [sys.executable, "-c", "import time; time.sleep(120)", marker]
    out = tmp_path / "t.trace"
    extra = ["--strace"] if recorder == "strace" else []
    proc = subprocess.Popen([*VMASCOPE, "record", "-o", str(out), *extra, "--", *cmd],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(marker in p for p in _ours(marker)):
            time.sleep(0.2)
        assert any(marker in p for p in _ours(marker)), "the command did not start"
        pids = {line.split()[0] for line in _ours(marker) if "vmascope" not in line}
        time.sleep(1.0)  # the recorder is attached
        assert len(_ours(marker, pids)) > len(pids)  # the recorder is seen
        os.kill(proc.pid, getattr(signal, how))
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _ours(marker, pids):
            time.sleep(0.2)
        assert _ours(marker, pids) == []
        err = proc.stderr.read()
        assert "Traceback" not in err
        if how == "SIGKILL":
            assert list(tmp_path.iterdir()) == []  # not even a partial file
        else:  # Ctrl-C or SIGTERM ends the recording: a whole trace, the end state taken
            assert proc.returncode == 0, err
            tr = read_trace(out)
            assert tr.header["final"] == "interrupt" and tr.last is not None
            assert [p.name for p in tmp_path.iterdir()] == ["t.trace"]
        if how == "SIGKILL":  # its private folders go at the next start
            from vmascope.trace.record import TMP_PREFIX, reap_stale_folders

            left = list(Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}{proc.pid}.*"))
            assert sorted(reap_stale_folders()) == sorted(map(str, left))
            assert not list(Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}{proc.pid}.*"))
        if how == "SIGKILL" and recorder == "strace":
            # the next start cleans what was left (nothing, if PDEATHSIG did it)
            from vmascope.trace.strace_record import reap_stale

            assert reap_stale() == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        subprocess.run(["pkill", "-f", marker], check=False)
