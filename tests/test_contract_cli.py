"""The CLI's contract on bad command lines, as root and as an unprivileged user.

Each case runs the installed ``vmascope`` in a fresh process and checks: exactly one line
on stderr (``vmascope: ...``), the exit code the README documents, no traceback, and no
file left behind (the working directory and every output directory are as before).

The unprivileged user is created for the test with useradd and removed with userdel.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import zstandard

import vmascope
from conftest import need_root
from vmascope.procfs import snapfile

VMASCOPE = str(Path(sys.executable).parent / "vmascope")
USAGE, NO_PROCESS, DENIED, MALFORMED, OUTPUT = 2, 3, 4, 5, 8
MAPS = b"00400000-00401000 r--p 00000000 00:00 0 \n00401000-00402000 rw-p 00000000 00:00 0 \n"


def _snapshot(meta: dict | None = None, maps: bytes = MAPS) -> bytes:
    buf = io.BytesIO()
    w = snapfile.SnapshotWriter(buf)
    w.json_section("meta.json", meta if meta is not None else {"meta": {}, "sections": ["maps"]})
    w.section("maps", maps)
    w.json_section("end.json", {})
    w.close()
    return buf.getvalue()


def _bomb() -> bytes:
    z = zstandard.ZstdCompressor(level=19).compressobj()
    meta = b'{"meta": {}, "sections": ["maps"]}'
    out = [snapfile.HEADER.pack(snapfile.MAGIC, snapfile.FORMAT_VERSION),
           z.compress(b"S\x09\x00meta.json" + b"D" + struct.pack("<I", len(meta)) + meta),
           z.compress(b"S\x04\x00maps" + b"D" + struct.pack("<I", 64 << 20))]
    block = b"\n" * (1 << 20)
    out += [z.compress(block) for _ in range(64)]
    out.append(z.compress(b"E") + z.flush())
    return b"".join(out)


def make_inputs(d: Path) -> None:
    (d / "dump.txt").write_bytes(MAPS)
    (d / "empty.txt").write_bytes(b"")
    (d / "garbage.txt").write_bytes(b"hello world\n")
    (d / "cr-only.txt").write_bytes(MAPS.replace(b"\n", b"\r"))
    (d / "vmflags.txt").write_bytes(MAPS + b"VmFlags: rd \xff\n")
    (d / "zstd.bin").write_bytes(zstandard.ZstdCompressor().compress(b"not a maps dump\n"))
    good = _snapshot()
    (d / "good.vmasnap").write_bytes(good)
    (d / "truncated.vmasnap").write_bytes(good[: len(good) // 2])
    (d / "meta-type.vmasnap").write_bytes(_snapshot({"meta": {"max_map_count": "x"}}))
    (d / "meta-list.vmasnap").write_bytes(_snapshot([]))  # type: ignore[arg-type]
    (d / "bomb.vmasnap").write_bytes(_bomb())
    (d / "ok.ops").write_text("mmap 0 2p rw-\n")
    (d / "unknown.ops").write_text("mmap 0 2p rw-\nfrobnicate 1\n")
    (d / "float.jsonl").write_text('{"op": "munmap", "addr": 4096.5, "length": 4096}\n')
    (d / "nan.jsonl").write_text('{"op": "munmap", "addr": NaN, "length": 4096}\n')
    (d / "flags.jsonl").write_text(
        '{"op": "mmap", "addr": 0, "length": 4096, "prot": 3, "flags": "shared"}\n')
    (d / "prot.jsonl").write_text('{"op": "mmap", "addr": 0, "length": 4096, "prot": 99}\n')
    (d / "nodes.ops").write_text("mbind 0 1p bind:0-99999999\n")
    (d / "brk.ops").write_text("heap 0x10000\nbrk " + hex(1 << 80) + "\n")
    (d / "digits.ops").write_text("munmap " + "9" * 4400 + " 1p\n")
    (d / "latin1.ops").write_bytes(b"name 0 1p caf\xe9\n")
    (d / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(d / "fifo")
    (d / "adir").mkdir()
    (d / "real.txt").write_text("keep")
    (d / "link").symlink_to(d / "real.txt")
    (d / "readonly").mkdir()
    (d / "readonly").chmod(0o555)
    secret = d / "secret.txt"
    secret.write_bytes(MAPS)
    secret.chmod(0o600)  # owned by root: the unprivileged user cannot read it


def kernel_thread() -> int:
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                text = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            if int(text[text.rfind(b")") + 2:].split()[6]) & 0x00200000:
                return int(name)
    return 0


# (arguments, exit code, what the one line must contain). {d}: the input directory,
# {pid}: a live process of the user, {kthread}: a kernel thread.
CASES: list[tuple[str, int, str]] = [
    ("", USAGE, "expected a command"),
    ("frobnicate", USAGE, "invalid choice"),
    ("--frob", USAGE, "unrecognized arguments"),
    ("snapshot", USAGE, "TARGET"),
    ("snapshot --top -1 {pid}", USAGE, "--top"),
    ("snapshot --vmas {pid}", USAGE, "--vmas goes with --json"),
    ("snapshot --top x {pid}", USAGE, "invalid int value"),
    ("snapshot no-such-file", USAGE, "no such file"),
    ("snapshot 0", USAGE, "not a pid"),
    ("snapshot 99999999", NO_PROCESS, "no such process"),
    ("snapshot {kthread}", NO_PROCESS, "is a kernel thread: it has no address space"),
    ("analyze {kthread}", NO_PROCESS, "is a kernel thread"),
    ("snapshot {kthread} -o {d}/out/k.vmasnap", NO_PROCESS, "is a kernel thread"),
    ("snapshot {d}/adir", USAGE, "is a directory"),
    ("analyze /dev/zero", USAGE, "is a device"),
    ("analyze {d}/fifo", MALFORMED, "empty"),
    ("analyze {d}/empty.txt", MALFORMED, "empty.txt: expected"),
    ("analyze {d}/garbage.txt", MALFORMED, "garbage.txt:1: expected"),
    ("analyze {d}/cr-only.txt", MALFORMED, "cr-only.txt:1: expected lines ending"),
    ("analyze {d}/vmflags.txt", MALFORMED, "vmflags.txt:3: expected VmFlags"),
    ("analyze {d}/zstd.bin", MALFORMED, "zstd-compressed"),
    ("analyze {d}/truncated.vmasnap", MALFORMED, "truncated"),
    ("analyze {d}/meta-type.vmasnap", MALFORMED, "max_map_count: expected an integer"),
    ("analyze {d}/meta-list.vmasnap", MALFORMED, "meta.json: expected an object"),
    ("analyze {d}/bomb.vmasnap", MALFORMED, "times its size"),
    ("analyze --format pdf {d}/dump.txt", USAGE, "invalid choice"),
    ("analyze {d}/dump.txt --kernel nonsense", USAGE, "kernel release"),
    ("analyze {d}/dump.txt -o /dev/null", OUTPUT, "/dev/null: is a character device"),
    ("analyze {d}/dump.txt -o {d}/link", OUTPUT, "is a symbolic link"),
    ("analyze {d}/dump.txt -o {d}/fifo", OUTPUT, "is a FIFO"),
    ("analyze {d}/dump.txt -o {d}/adir", OUTPUT, "is a directory"),
    ("analyze {d}/dump.txt -o {d}/out/no/such/r.txt", OUTPUT, "cannot write here"),
    ("analyze {d}/dump.txt --format json >/dev/full", OUTPUT, "standard output: cannot write"),
    ("snapshot {pid} --json >/dev/full", OUTPUT, "standard output: cannot write"),
    ("snapshot {pid} -o /dev/null", OUTPUT, "is a character device"),
    ("snapshot {d}/dump.txt -o {d}/out/x.vmasnap", USAGE, "TARGET must be a pid"),
    ("simulate", USAGE, "SCRIPT"),
    ("simulate {d}/no-such.ops", USAGE,
     "no-such.ops: no such file (expected an op script file or a scenario's name)"),
    ("simulate {d}", USAGE, "is a directory, expected an op script file"),
    ("simulate sed", USAGE, "sed: no such script file, and an unknown scenario (did you "
     "mean seed? `vmascope lab scenarios` lists them)"),
    ("lab run merge-mprotect-unfaulted-lft", USAGE, "did you mean "
     "merge-mprotect-unfaulted-left?"),
    ("replay {d}/no-such.trace", USAGE, "no-such.trace: no such file (expected a trace file)"),
    ("simulate /dev/zero", USAGE, "is a device"),
    ("simulate {d}/unknown.ops", MALFORMED, "unknown.ops:2: unknown operation"),
    ("simulate {d}/float.jsonl", MALFORMED, "float.jsonl:1:"),
    ("simulate {d}/nan.jsonl", MALFORMED, "nan.jsonl:1:"),
    ("simulate {d}/flags.jsonl", MALFORMED, "flags of another type"),
    ("simulate {d}/prot.jsonl", MALFORMED, "PROT"),
    ("simulate {d}/nodes.ops", MALFORMED, "MAX_NUMNODES"),
    ("simulate {d}/brk.ops", MALFORMED, "brk.ops:2: brk: expected ADDR"),
    ("simulate {d}/digits.ops", MALFORMED, "digits.ops:1:"),
    ("simulate {d}/latin1.ops", MALFORMED, "not valid UTF-8"),
    ("simulate --max-map-count 0 {d}/ok.ops", USAGE, "--max-map-count"),
    ("simulate --kernel 1.0 {d}/ok.ops", USAGE, "5.15 and newer"),
    ("simulate - - <{d}/ok.ops", USAGE, "only once"),
    ("analyze - <{d}/garbage.txt", MALFORMED, "<stdin>:1: expected"),
    ("kernels frob", USAGE, "invalid choice"),
    ("lab run no-such-scenario", USAGE, "unknown scenario"),
]
# Cases only an unprivileged user meets.
USER_CASES: list[tuple[str, int, str]] = [
    ("analyze {d}/secret.txt", DENIED, "secret.txt: permission denied"),
    ("snapshot 1", DENIED, "pid 1: permission denied"),
    ("analyze 1", DENIED, "pid 1: permission denied"),
    ("snapshot {pid} -o {d}/readonly/x.vmasnap", OUTPUT, "Permission denied"),
    ("analyze {d}/dump.txt -o {d}/readonly/r.txt", OUTPUT, "Permission denied"),
]


def tree(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def run_case(args: str, code: int, needle: str, d: Path, pid: int, prefix: list[str],
             env: dict) -> None:
    cmd = args.format(d=d, pid=pid, kthread=kernel_thread())
    before = tree(d)
    line = " ".join([*map(_quote, prefix), VMASCOPE, cmd])
    proc = subprocess.run(["sh", "-c", line], cwd=d / "out", capture_output=True, text=True,
                          timeout=120, env=env)
    err = proc.stderr
    where = f"`vmascope {cmd}` as {'root' if not prefix else 'a user'}"
    assert proc.returncode == code, f"{where}: exit {proc.returncode}, expected {code}: {err!r}"
    assert "Traceback" not in err, f"{where}: {err}"
    assert err.count("\n") == 1 and err.startswith("vmascope: "), f"{where}: {err!r}"
    assert needle in err, f"{where}: {err!r} lacks {needle!r}"
    assert tree(d) == before, f"{where}: left {tree(d) - before}"


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


@pytest.fixture
def inputs(tmp_path):
    make_inputs(tmp_path)
    (tmp_path / "out").mkdir()
    yield tmp_path
    (tmp_path / "readonly").chmod(0o755)


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "300"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_enough_cases():
    assert len(CASES) + len(USER_CASES) >= 45


@pytest.mark.parametrize("args, code, needle", CASES, ids=[c[0] or "(none)" for c in CASES])
def test_bad_command_line_as_this_user(inputs, sleeper, args, code, needle):
    if "{kthread}" in args and not kernel_thread():
        pytest.skip("no kernel thread visible in this pid namespace")
    run_case(args, code, needle, inputs, sleeper, [], dict(os.environ))


@pytest.fixture(scope="module")
def unprivileged_user():
    need_root()
    name = "vmascope-t-" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        uid = int(subprocess.run(["id", "-u", name], check=True, capture_output=True,
                                 text=True).stdout)
        gid = int(subprocess.run(["id", "-g", name], check=True, capture_output=True,
                                 text=True).stdout)
        yield name, uid, gid
    finally:
        subprocess.run(["userdel", name], check=True, capture_output=True)


@pytest.fixture
def user_inputs(unprivileged_user):
    """Inputs in a directory the user can reach (pytest's own is root's, mode 0700)."""
    name, uid, gid = unprivileged_user
    d = Path(tempfile.mkdtemp(prefix="vmascope-contract-"))
    try:
        d.chmod(0o755)
        make_inputs(d)
        out = d / "out"
        out.mkdir()
        os.chown(out, uid, gid)  # the user's own working directory
        for p in d.iterdir():
            if p.name not in ("secret.txt", "readonly", "out", "link") and not p.is_symlink():
                os.chown(p, uid, gid)
        proc = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={gid}",
                                 "--clear-groups", "sleep", "300"])
        try:
            yield d, proc.pid, uid, gid
        finally:
            proc.kill()
            proc.wait()
    finally:
        (d / "readonly").chmod(0o755)
        shutil.rmtree(d)


@pytest.mark.root
@pytest.mark.parametrize("args, code, needle", CASES + USER_CASES,
                         ids=[c[0] or "(none)" for c in CASES + USER_CASES])
def test_bad_command_line_as_an_unprivileged_user(user_inputs, args, code, needle):
    d, pid, uid, gid = user_inputs
    if "{kthread}" in args and not kernel_thread():
        pytest.skip("no kernel thread visible in this pid namespace")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(d / "out"),
           "LANG": "C.UTF-8"}
    prefix = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    run_case(args, code, needle, d, pid, prefix, env)


def test_ctrl_c_leaves_no_partial_file(inputs, sleeper):
    """SIGINT while a capture is being written: exit 130, one line, no file."""
    out = inputs / "out"
    for delay in (0.05, 0.1, 0.15, 0.2, 0.3):
        proc = subprocess.Popen([VMASCOPE, "snapshot", str(sleeper), "-o", str(out / "c.vmasnap")],
                                stderr=subprocess.PIPE, text=True)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err
        if proc.returncode == 0 or (proc.returncode == -signal.SIGINT and os.listdir(out)):
            # finished (or killed as the interpreter shut down, after the rename): the
            # file is whole
            assert os.listdir(out) == ["c.vmasnap"]
            assert len(vmascope.load(out / "c.vmasnap")) > 0
            os.unlink(out / "c.vmasnap")
        elif proc.returncode == -signal.SIGINT:
            # killed while the interpreter itself started: no vmascope code had run
            assert err == "" and os.listdir(out) == []
        else:
            assert proc.returncode == 130 and err == "vmascope: interrupted\n", err
            assert os.listdir(out) == []
    assert stat.S_ISDIR(os.lstat(out).st_mode)
