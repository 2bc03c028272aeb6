"""Building vmascope's BPF tools: a CO-RE BPF program embedded in its libbpf loader.

The kernel view (``procfs/kview``) and the recorder (``trace/bpf``) are each a pair of
sources, ``NAME.bpf.c`` (the BPF program) and ``NAME.c`` (the loader), compiled on first
use into ``cache_dir(NAME, <hash of the sources>)/NAME``: the BPF program with clang
(``-target bpf``, with BTF for CO-RE), its object turned into ``NAME_obj.h`` (``static
const unsigned char NAME_obj[]``), which the loader includes; the loader is linked
statically where the static libraries are there (so that the same binary also runs as
part of a microVM's initramfs), else against the shared libbpf.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import host
from .errors import VmascopeError
from .util import cache_dir

BUILD_TIMEOUT = 180


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or ["(no output)"])[0]


def _digest(*sources: Path) -> str:
    h = hashlib.sha256()
    for path in sources:
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _compiler(name: str, fail: Callable[[str], VmascopeError]) -> str:
    """The C compiler (``$CC``, cc, gcc), or ``fail``."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise fail(f"no C compiler (cc) to build {name}")
    return cc


def _build(target: Path, steps: Callable[[Path], Path]) -> Path:
    """``target`` as ``steps(work folder)`` makes it, in a temporary folder next to the
    target that is renamed into place (atomic), unless it is built already."""
    if target.exists():
        return target
    work = Path(tempfile.mkdtemp(prefix=".build.", dir=target.parent))
    try:
        os.replace(steps(work), target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def build_bpf_tool(name: str, bpf_source: Path, loader_source: Path,
                   fail: Callable[[str], VmascopeError]) -> Path:
    """The compiled tool ``name``, built on first use. ``fail(reason)`` is the error
    raised when it cannot be built (a missing compiler or library, a compiler error)."""
    target = cache_dir_for(name, bpf_source, loader_source) / name
    if target.exists():
        return target
    problem = host.bpf_build_problem()
    if problem:
        raise fail(problem)
    clang = os.environ.get("VMASCOPE_CLANG") or shutil.which("clang") or "clang"
    cc = _compiler(name, fail)

    def steps(work: Path) -> Path:
        obj = work / f"{name}.bpf.o"
        _run([clang, "-O2", "-g", "-target", "bpf", "-c", str(bpf_source), "-o", str(obj)],
             f"compiling {bpf_source.name} with clang", fail)
        data = obj.read_bytes()
        (work / f"{name}_obj.h").write_text(
            f"static const unsigned char {name}_obj[] = {{"
            + ",".join(str(b) for b in data) + "};\n")
        out = work / name
        base = [cc, "-O2", "-I", str(work), "-o", str(out), str(loader_source)]
        try:  # static where the archives are there (libbpf, libelf, zlib)
            _run(base[:2] + ["-static"] + base[2:] + ["-lbpf", "-lelf", "-lz"], "", fail)
        except VmascopeError:
            _run(base + ["-lbpf"], f"linking {loader_source.name} with libbpf "
                 "(install libbpf-dev, libelf-dev and zlib1g-dev)", fail)
        os.chmod(out, 0o755)
        return out

    return _build(target, steps)


def build_preload(name: str, source: Path, fail: Callable[[str], VmascopeError]) -> Path:
    """A small shared object built from one C file on first use (cached by its hash)."""
    target = cache_dir_for(name, source) / f"{name}.so"
    if target.exists():
        return target
    cc = _compiler(name, fail)

    def steps(work: Path) -> Path:
        out = work / target.name
        _run([cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(source)],
             f"compiling {source.name}", fail)
        return out

    return _build(target, steps)


def cache_dir_for(name: str, *sources: Path) -> Path:
    """The cache folder of tool ``name`` built from ``sources`` (created)."""
    return cache_dir(name, _digest(*sources))


def _run(cmd: list[str], what: str, fail: Callable[[str], VmascopeError]) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise fail(f"{what} failed: {exc}") from None
    if proc.returncode != 0:
        raise fail(f"{what} failed: {_first_line(proc.stderr)}")


__all__ = ["build_bpf_tool", "build_preload", "cache_dir_for"]
