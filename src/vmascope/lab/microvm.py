"""Run op scripts on another kernel in a qemu microVM.

The initramfs is written here (newc cpio, no distro): the static executor as ``/init``,
the scripts as ``/scripts.txt``, and the device nodes the executor needs. ``/init`` mounts
/proc, sets vm.max_map_count if asked, runs the scripts, writes the results to the second
serial port (a file on the host, so kernel messages on the console cannot mix with them)
between markers, and powers the VM off. qemu runs in its own process group under a strict
time limit and is killed on timeout, on any exception and on SIGINT/SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import LabError
from ..util import atomic_write, cache_dir
from . import procs
from .executor import executor_path
from .rundir import run_dir

BEGIN = "@@VMASCOPE-BEGIN"
END = "@@VMASCOPE-END"
KVM_PROBE_TIMEOUT = 15.0


def _newc(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
          ino: int = 0) -> bytes:
    namez = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(namez), 0]
    head = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
    out = head + namez
    out += b"\0" * (-len(out) % 4)
    out += data + b"\0" * (-len(data) % 4)
    return out


def build_initramfs(scripts_input: str, path: Path, kview: Path | None = None,
                    extra: dict[str, bytes] | None = None) -> None:
    """Write a newc cpio archive with /init (the executor) and /scripts.txt, with
    ``kview`` (the static kernel-view reader) as /kview, and ``extra`` executables
    (name -> contents) in /."""
    exe = executor_path().read_bytes()
    entries = [
        _newc("dev", 0o040755, ino=1),
        _newc("dev/console", 0o020600, rdev=(5, 1), ino=2),
        _newc("dev/ttyS0", 0o020600, rdev=(4, 64), ino=3),
        _newc("dev/ttyS1", 0o020600, rdev=(4, 65), ino=4),
        _newc("proc", 0o040555, ino=5),
        _newc("init", 0o100755, exe, ino=6),
        _newc("scripts.txt", 0o100644, scripts_input.encode(), ino=7),
    ]
    if kview is not None:
        entries.append(_newc("kview", 0o100755, kview.read_bytes(), ino=8))
    for k, (name, data) in enumerate(sorted((extra or {}).items())):
        entries.append(_newc(name, 0o100755, data, ino=16 + k))
    entries += [
        _newc("TRAILER!!!", 0),
    ]
    with atomic_write(path) as fh:
        for e in entries:
            fh.write(e)


def qemu_binary() -> str:
    exe = shutil.which("qemu-system-x86_64")
    if not exe:
        raise LabError("qemu-system-x86_64 not found (Debian package qemu-system-x86)")
    return exe


def _kvm_state_file() -> Path:
    return cache_dir("lab") / "kvm.json"


_probe_lock = threading.Lock()


def kvm_usable(vmlinuz: Path | None = None) -> bool:
    """Whether KVM can boot a microVM here. Probed once per machine (behind a short
    timeout, because nested KVM has hung at boot on some hosts) and remembered in the
    cache; VMASCOPE_KVM=0|1 overrides."""
    if os.environ.get("VMASCOPE_KVM") in ("0", "1"):
        return os.environ["VMASCOPE_KVM"] == "1"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with _probe_lock:
        try:
            return bool(json.loads(_kvm_state_file().read_text())["ok"])
        except (OSError, ValueError, KeyError):
            if vmlinuz is None:
                return False
            return probe_kvm(vmlinuz)


def probe_kvm(vmlinuz: Path) -> bool:
    """Boot ``vmlinuz`` once with KVM behind a short timeout and remember the answer."""
    ok = False
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        try:
            out = boot(vmlinuz, "A 0 4096\n", kvm=True, timeout=KVM_PROBE_TIMEOUT)
            ok = BEGIN in out.raw
        except LabError:
            ok = False
    with atomic_write(_kvm_state_file(), "w") as fh:
        json.dump({"ok": ok, "time": time.time()}, fh)
    return ok


class BootOutput:
    def __init__(self, raw: str, console: str, seconds: float) -> None:
        self.raw = raw
        self.console = console
        self.seconds = seconds

    @property
    def body(self) -> str:
        start = self.raw.find(BEGIN)
        end = self.raw.find(END, start)
        if start < 0 or end < 0:
            return ""
        return self.raw[start + len(BEGIN):end]

    @property
    def release(self) -> str | None:
        for line in self.body.splitlines():
            if line.startswith("K "):
                return line[2:].strip()
        return None


def boot(vmlinuz: Path, scripts_input: str, *, kvm: bool | None = None,
         timeout: float = 120.0, smp: int = 1, memory_mb: int = 512,
         kview: Path | None = None, extra: dict[str, bytes] | None = None) -> BootOutput:
    """Boot ``vmlinuz`` with the executor as /init, run ``scripts_input``, return the output.
    ``kview``: the kernel-view reader to put in the initramfs as /kview; ``extra``:
    more executables for it (name -> contents)."""
    if kvm is None:
        kvm = kvm_usable(vmlinuz)
    qemu = qemu_binary()
    with run_dir() as t:
        build_initramfs(scripts_input, t / "initrd", kview, extra)
        console, out = t / "console.txt", t / "out.txt"
        argv = [qemu, "-cpu", "host" if kvm else "max", "-m", str(memory_mb), "-smp", str(smp),
                "-kernel", str(vmlinuz), "-initrd", str(t / "initrd"),
                "-append", "console=ttyS0 panic=-1 quiet",
                "-nographic", "-no-reboot", "-monitor", "none",
                # no NIC: loading its option ROM (iPXE) costs about a second of boot
                "-net", "none",
                "-serial", f"file:{console}", "-serial", f"file:{out}"]
        if kvm:
            argv.insert(1, "-enable-kvm")
        else:
            argv[1:1] = ["-accel", "tcg,thread=multi"] if smp > 1 else []
        t0 = time.monotonic()
        with procs.managed(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT) as proc:
            try:
                qout, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise LabError(f"{vmlinuz.name}: the microVM did not finish within "
                               f"{timeout:.0f} s{_console_tail(console)}") from None
        seconds = time.monotonic() - t0
        raw = out.read_text(errors="replace") if out.exists() else ""
        cons = console.read_text(errors="replace") if console.exists() else ""
        if proc.returncode != 0:
            msg = qout.decode(errors="replace").strip().splitlines()
            raise LabError(f"{vmlinuz.name}: qemu exited with {proc.returncode}: "
                           f"{msg[-1] if msg else ''}")
        if END not in raw:
            raise LabError(f"{vmlinuz.name}: the microVM stopped before its results were "
                           f"complete{_console_tail(console)}")
        return BootOutput(raw.replace("\r", ""), cons, seconds)


def _console_tail(console: Path) -> str:
    try:
        lines = [ln for ln in console.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f" (console: {lines[-1].strip()[:160]})" if lines else ""


def probe(vmlinuz: Path, program: Path, arg: str, *, kview: Path,
          timeout: float = 180.0) -> tuple[list[str], dict[int, Any]]:
    """Run a static ``program`` with ``arg`` inside a microVM of ``vmlinuz`` (the
    executor's ``x`` record): the lines it printed, and for each "PAIR NAME ADDR PID"
    line the Snapshot of process PID (its smaps) with the kernel view when the kernel
    has the task_vma iterator."""
    from .executor import parse_probe

    out = boot(vmlinuz, f"k /kview\nx /probe {arg}\n", kview=kview, timeout=timeout,
               extra={"probe": program.read_bytes()})
    return parse_probe(out.body, out.release, f"{vmlinuz.name}: {program.name}")
