"""Writes, odd inputs and signals that used to end in a traceback, a hang, a replaced
device node or a wrong exit code."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import need_root
from vmascope.errors import OutputError
from vmascope.output import safe_write

VMASCOPE = str(Path(sys.executable).parent / "vmascope")
DUMP = ("00400000-00401000 r--p 00000000 00:00 0 \n"
        "00401000-00402000 rw-p 00000000 00:00 0 \n")


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([VMASCOPE, *args], capture_output=True, text=True, timeout=60, **kw)


def one_line_error(proc: subprocess.CompletedProcess, code: int, needle: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("vmascope: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr, proc.stderr


@pytest.fixture
def dump(tmp_path: Path) -> Path:
    p = tmp_path / "dump.txt"
    p.write_text(DUMP)
    return p


# -- the safe writer ---------------------------------------------------------------------


def test_a_symlink_target_is_refused_and_left_alone(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(OutputError, match="is a symbolic link, not a regular file"):
        with safe_write(link) as fh:
            fh.write(b"x")
    assert link.is_symlink() and real.read_text() == "keep"
    assert sorted(os.listdir(tmp_path)) == ["link", "real"]


def test_a_fifo_target_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="is a FIFO"):
        with safe_write(fifo):
            pass
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_dev_null_is_not_replaced(dump: Path) -> None:
    before = os.lstat("/dev/null")
    proc = run("analyze", str(dump), "-o", "/dev/null")
    one_line_error(proc, 8, "/dev/null: is a character device")
    after = os.lstat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


def test_a_directory_target_is_refused(dump: Path, tmp_path: Path) -> None:
    proc = run("analyze", str(dump), "-o", str(tmp_path))
    one_line_error(proc, 8, "is a directory")


def test_a_regular_file_is_replaced_whole(dump: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    out.write_text("old")
    proc = run("analyze", str(dump), "--format", "json", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().startswith("{")
    assert sorted(os.listdir(tmp_path)) == ["dump.txt", "report.json"]


def test_stdout_on_dev_full_is_exit_8_one_line(dump: Path) -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.run([VMASCOPE, "analyze", str(dump), "--format", "json"],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    one_line_error(proc, 8, "standard output: cannot write: No space left on device")


def test_a_full_filesystem_is_exit_8_and_leaves_nothing(tmp_path: Path) -> None:
    need_root()
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)], check=True)
    try:
        filler = mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:  # take every block
            with pytest.raises(OSError):
                while True:
                    os.write(fd, b"x" * 4096)
        finally:
            os.close(fd)
        dump = tmp_path / "dump.txt"
        dump.write_text(DUMP)
        proc = run("analyze", str(dump), "--format", "json", "-o", str(mnt / "r.json"))
        one_line_error(proc, 8, f"{mnt / 'r.json'}: cannot write: No space left on device")
        proc = run("snapshot", str(os.getpid()), "-o", str(mnt / "s.vmasnap"))
        one_line_error(proc, 8, f"{mnt / 's.vmasnap'}: cannot write: No space left on device")
        assert os.listdir(mnt) == ["filler"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# -- inputs ------------------------------------------------------------------------------


def test_an_unreadable_file_is_exit_4(dump: Path, tmp_path: Path) -> None:
    dump.chmod(0o600)
    if os.geteuid() == 0:
        # root reads anything: read it as nobody
        tmp_path.chmod(0o755)
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", VMASCOPE,
               "analyze", str(dump)]
    else:
        dump.chmod(0)
        cmd = [VMASCOPE, "analyze", str(dump)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    one_line_error(proc, 4, f"{dump}: permission denied")


def test_a_fifo_with_no_writer_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t = time.monotonic()
    proc = run("analyze", str(fifo))
    assert time.monotonic() - t < 30
    one_line_error(proc, 5, "found an empty file")


def test_a_fifo_with_a_writer_is_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen([VMASCOPE, "snapshot", str(fifo), "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with open(fifo, "w") as w:
        w.write(DUMP)
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert '"map_count":2' in out


def test_a_device_is_not_an_input() -> None:
    one_line_error(run("analyze", "/dev/zero"), 2, "/dev/zero: is a device")
    one_line_error(run("simulate", "/dev/zero"), 2, "/dev/zero: is a device")


def _kernel_thread() -> int | None:
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat_text = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            flags = int(stat_text[stat_text.rfind(b")") + 2:].split()[6])
            if flags & 0x00200000:
                return int(name)
    return None


def test_a_kernel_thread_is_exit_3_not_zero_mappings(tmp_path: Path) -> None:
    pid = _kernel_thread()
    if pid is None:
        pytest.skip("no kernel thread visible in this pid namespace")
    msg = f"pid {pid} is a kernel thread: it has no address space"
    one_line_error(run("snapshot", str(pid)), 3, msg)
    one_line_error(run("analyze", str(pid)), 3, msg)
    one_line_error(run("snapshot", str(pid), "-o", str(tmp_path / "k.vmasnap")), 3, msg)
    assert os.listdir(tmp_path) == []


# -- signals -----------------------------------------------------------------------------


def entry_started(pid: int) -> bool:
    """Whether vmascope's entry point has run in ``pid``: it is what catches SIGTERM
    (Python itself leaves SIGTERM at its default), so SigCgt has that bit from then on."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def test_sigint_during_start_up_is_never_a_traceback(dump: Path) -> None:
    # From the moment vmascope's entry point runs (before it, the interpreter itself is
    # starting: docs/reliability.md has that window) to past the end of the command.
    for i in range(16):
        proc = subprocess.Popen([VMASCOPE, "analyze", str(dump)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not entry_started(proc.pid) and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.0005)
        time.sleep(i * 0.015)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, (i, err)
        assert err.count("\n") <= 1, (i, err)
        # finished first (0) or handled (130)
        assert proc.returncode in (0, 130), (i, proc.returncode, err)
        assert proc.returncode == 0 or err == "vmascope: interrupted\n"


def test_sigterm_while_writing_a_report_leaves_the_whole_file_or_nothing(dump: Path,
                                                                          tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    for i in range(8):
        proc = subprocess.Popen([VMASCOPE, "analyze", str(dump), "--format", "html", "-o",
                                 str(out / "r.html")], stderr=subprocess.PIPE, text=True)
        try:
            proc.wait(timeout=0.05 + i * 0.08)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err and err.count("\n") <= 1, err
        assert proc.returncode in (0, 143, -signal.SIGTERM), (proc.returncode, err)
        left = os.listdir(out)
        assert left in ([], ["r.html"]), left
        if left:
            assert (out / "r.html").read_text().rstrip().endswith("</html>")
            os.unlink(out / "r.html")
