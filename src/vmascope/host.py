"""Probes of the machine vmascope runs on: the one module that reads host-wide state.

The kernel model (``vmascope.kernel``) and the analysis (``vmascope.analysis``) never read
the host: what they need of it (the running kernel's patch level and build options, THP,
``vm.max_map_count``) is read here and handed to them. Per-process files
(/proc/PID/maps and the like) are the business of ``vmascope.procfs``.

The roots can be moved (``set_roots``, or the VMASCOPE_PROC_ROOT and VMASCOPE_SYS_ROOT
environment variables), so that tests can point every probe at a fake tree.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import re
from pathlib import Path

_roots = {"proc": os.environ.get("VMASCOPE_PROC_ROOT", "/proc"),
          "sys": os.environ.get("VMASCOPE_SYS_ROOT", "/sys")}


def set_roots(*, proc: str | os.PathLike[str] | None = None,
              sys: str | os.PathLike[str] | None = None) -> None:
    """Read host files under other roots than /proc and /sys (tests use a fake tree)."""
    if proc is not None:
        _roots["proc"] = os.fspath(proc)
    if sys is not None:
        _roots["sys"] = os.fspath(sys)
    kernel_facts.cache_clear()


def proc_path(*parts: str) -> Path:
    return Path(_roots["proc"], *parts)


def sys_path(*parts: str) -> Path:
    return Path(_roots["sys"], *parts)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


# -- the kernel --------------------------------------------------------------------------


def release() -> str:
    """The running kernel's release (uname -r)."""
    text = _read(proc_path("sys", "kernel", "osrelease"))
    return text.strip() if text and text.strip() else os.uname().release


_DEBIAN_VERSION = re.compile(r" Debian (\d+)\.(\d+)\.(\d+)")


def debian_version() -> tuple[int, int, int] | None:
    """The upstream version of the running kernel when Debian built it: its uname
    (6.1.0-50-cloud-amd64) hides the stable patch level, which /proc/version names
    ("... Debian 6.1.176-1 ...")."""
    m = _DEBIAN_VERSION.search(_read(proc_path("version")) or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def kernel_config() -> dict[str, str] | None:
    """The running kernel's build options from /proc/config.gz (None if absent)."""
    try:
        with gzip.open(proc_path("config.gz"), "rt") as fh:
            text = fh.read()
    except (OSError, EOFError):
        return None
    config: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_"):
            key, _, val = line.partition("=")
            config[key] = val
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            config[line[2:].split()[0]] = "n"
    return config


@dataclasses.dataclass(frozen=True)
class KernelFacts:
    """What the host knows of the running kernel beyond its release string."""

    release: str
    debian_version: tuple[int, int, int] | None
    config: dict[str, str] | None = dataclasses.field(hash=False, compare=False)


@functools.lru_cache(maxsize=8)
def kernel_facts(release_: str) -> KernelFacts | None:
    """Facts of ``release_`` when it is the running kernel, else None."""
    if release_.strip() != release():
        return None
    return KernelFacts(release_.strip(), debian_version(), kernel_config())


def epoch_for(release_: str | None = None, **overrides: bool | None):  # type: ignore[no-untyped-def]
    """The behaviour epoch of a release (default: the running kernel), with the running
    kernel's patch level and build options when it is the one asked for."""
    from .kernel.epochs import epoch_for as pure_epoch_for

    rel = release_ or release()
    return pure_epoch_for(rel, facts=kernel_facts(rel), **overrides)


# -- vm sysctls and THP ------------------------------------------------------------------


def max_map_count() -> int | None:
    """vm.max_map_count (None if it cannot be read)."""
    text = _read(proc_path("sys", "vm", "max_map_count"))
    try:
        return int(text.strip()) if text else None
    except ValueError:
        return None


def set_max_map_count(value: int) -> None:
    """Write vm.max_map_count (OSError if not allowed)."""
    proc_path("sys", "vm", "max_map_count").write_text(f"{value}\n")


def thp_enabled() -> str:
    """transparent_hugepage/enabled: always, madvise or never ("never" if unknown)."""
    text = _read(sys_path("kernel", "mm", "transparent_hugepage", "enabled")) or ""
    if "[" in text and "]" in text:
        chosen = text[text.index("[") + 1:text.index("]")]
        if chosen in ("always", "madvise", "never"):
            return chosen
    return "never"


def machine_thp(release_: str) -> str:
    """transparent_hugepage/enabled of the machine ``release_`` runs on: this host's
    setting when it is the running kernel; otherwise "never", which is what the lab's
    microVMs have (hugepage_init switches THP off below 512 MiB of RAM, and they have
    512 MiB)."""
    if release_.strip() == release():
        return thp_enabled()
    return "never"


def machine_pku(release_: str) -> bool:
    """Whether the machine ``release_`` runs on has protection keys in use (OSPKE): this
    host's /proc/cpuinfo when it is the running kernel; otherwise True, which is what the
    lab's microVMs have had (qemu's -cpu max offers PKU and the guest kernels use it)."""
    if release_.strip() == release():
        try:
            text = proc_path("cpuinfo").read_text()
        except OSError:
            return False
        return " ospke" in text
    return True


def page_size() -> int:
    return int(os.sysconf("SC_PAGE_SIZE"))


def has_numa_maps() -> bool:
    """CONFIG_NUMA: /proc/self/numa_maps exists."""
    return proc_path("self", "numa_maps").exists()


# -- what this process may do ------------------------------------------------------------

CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24
CAP_BPF = 39


def effective_caps() -> int | None:
    """CapEff of this process (None if it cannot be read)."""
    for line in (_read(proc_path("self", "status")) or "").splitlines():
        if line.startswith("CapEff:"):
            try:
                return int(line.split()[1], 16)
            except (IndexError, ValueError):
                return None
    return None


def _has_cap(bit: int) -> bool:
    caps = effective_caps()
    return bool(caps >> bit & 1) if caps is not None else os.geteuid() == 0


def can_set_brk() -> bool:
    """prctl(PR_SET_MM) (the op language's ``heap``) needs CAP_SYS_RESOURCE; containers
    often drop it."""
    return _has_cap(CAP_SYS_RESOURCE)


def can_use_bpf() -> bool:
    """Loading BPF programs needs CAP_BPF (or CAP_SYS_ADMIN) and a kernel with BTF."""
    return (_has_cap(CAP_BPF) or _has_cap(CAP_SYS_ADMIN)) and sys_path(
        "kernel", "btf", "vmlinux").exists()


def _bpf_problem(since: tuple[int, int], what: str) -> str | None:
    """What stops a BPF program that needs kernel ``since`` (for ``what``): BPF
    privileges, the kernel's BTF, the release; None when nothing does."""
    if not (_has_cap(CAP_BPF) or _has_cap(CAP_SYS_ADMIN)):
        return "not root (BPF needs CAP_BPF or CAP_SYS_ADMIN)"
    if not sys_path("kernel", "btf", "vmlinux").exists():
        return "no kernel BTF (CONFIG_DEBUG_INFO_BTF)"
    m = re.match(r"(\d+)\.(\d+)", release())
    if m and (int(m.group(1)), int(m.group(2))) < since:
        return f"kernel {release()} {what} ({since[0]}.{since[1]}+)"
    return None


def kernel_view_problem() -> str | None:
    """Why the BPF kernel view (``procfs.kview``) cannot run here, as one line; None when
    it can. Checks what the machine offers: BPF privileges, the kernel's BTF, the
    task_vma iterator (5.12). The tools to build the reader are checked when it is
    built (:func:`bpf_build_problem`)."""
    return _bpf_problem((5, 12), "has no task_vma iterator")


def bpf_record_problem() -> str | None:
    """Why the BPF recorder (``trace.bpf``) cannot run here, as one line; None when it
    can. It knows the x86_64 system calls only, needs BPF privileges, the kernel's BTF
    and BTF tracepoints with bpf_get_current_task_btf (5.11; bpf_find_vma, 5.17, is used
    where it is there). The tools to build it are checked when it is built."""
    machine = os.uname().machine
    if machine != "x86_64":
        return f"the BPF recorder knows the x86_64 system calls only (this is {machine})"
    return _bpf_problem((5, 11), "is too old for the BPF recorder")


def bpf_build_problem() -> str | None:
    """What is missing to build the BPF reader (None if nothing)."""
    import shutil

    if not (os.environ.get("VMASCOPE_CLANG") or shutil.which("clang")):
        return "no clang (install clang)"
    if not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")):
        return "no C compiler (install build-essential)"
    if not any(Path(d, "bpf", "bpf_helpers.h").exists() for d in _INCLUDE_DIRS):
        return "no libbpf (install libbpf-dev libelf-dev zlib1g-dev)"
    return None


_INCLUDE_DIRS = ("/usr/include", "/usr/local/include")


def _ids(status: str, key: str) -> set[int]:
    """The real, effective and saved ids of a /proc/PID/status ``Uid:``/``Gid:`` line
    (not the fs id: the ptrace check compares the reader's with these three)."""
    for line in status.splitlines():
        if line.startswith(key):
            return {int(v) for v in line.split()[1:4]}
    return set()


def _user(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def read_access_advice(pid: int) -> str:
    """Why the kernel refuses this process /proc/PID/maps and what to do, for the one-line
    error. Reading another process's mappings is a ptrace *read* check (mm_access with
    PTRACE_MODE_READ_FSCREDS, kernel/ptrace.c): the reader must have the target's uid and
    gid and the target must be dumpable, or the reader needs CAP_SYS_PTRACE; then the
    security modules decide. Yama's ptrace_scope restricts attaching only, not this."""
    status = _read(proc_path(str(pid), "status")) or ""
    uids, gids = _ids(status, "Uid:"), _ids(status, "Gid:")
    elsewhere = ("a security module (SELinux, AppArmor), a sandbox or a user namespace above "
                 "this one protects it")
    if _has_cap(CAP_SYS_PTRACE):
        return f"refused even with CAP_SYS_PTRACE: {elsewhere}"
    if os.geteuid() == 0:
        return ("refused to root without CAP_SYS_PTRACE: add it (in a container: "
                f"--cap-add SYS_PTRACE), or {elsewhere}")
    if not uids or not gids:
        return "run as root, or as the process owner (the kernel's ptrace read check)"
    if uids == {os.geteuid()} and gids == {os.getegid()}:
        return ("it is not dumpable (a set-uid program, or prctl PR_SET_DUMPABLE 0): "
                "only root may read it")
    owner = _user(min(uids)) if len(uids) == 1 else "uids " + ",".join(map(str, sorted(uids)))
    return (f"it runs as {owner}: run as root or as its owner "
            "(the kernel's ptrace read check)")


def can_use_tracefs() -> bool:
    """tracefs needs root (CAP_SYS_ADMIN to mount it) and the kernel's tracing support."""
    return _has_cap(CAP_SYS_ADMIN) and sys_path("kernel", "tracing").exists()


__all__ = [
    "KernelFacts", "bpf_build_problem", "bpf_record_problem", "can_set_brk", "can_use_bpf",
    "can_use_tracefs", "debian_version", "effective_caps", "epoch_for", "has_numa_maps",
    "kernel_config", "kernel_facts", "kernel_view_problem", "machine_thp", "max_map_count",
    "page_size", "proc_path", "read_access_advice", "release", "set_max_map_count",
    "set_roots", "sys_path", "thp_enabled",
]
