"""Kernels for the lab: the host's, Debian cloud kernels by suite, or any vmlinuz.

Debian kernels are fetched with apt's own tools (``apt-get update``/``apt-get download``,
``apt-cache``) against a private apt state directory under the cache, so the machine's own
apt state is never touched. The mirror is read from the machine's apt sources; only the
suite changes. apt verifies the signed Release file and the package hash; vmascope keeps a
sha256 manifest of each extracted vmlinuz and checks it again on every use.

Keyring: the index of each suite is verified with the machine's Debian archive keyring.
If a suite is signed only by keys that keyring lacks (an old release looking at a newer
suite), the ``debian-archive-keyring`` package is downloaded from a suite that does verify
(apt checks its hash against that suite's signed index), and its keyring is used for the
other suite: a chain of trust from the machine's keys, never a key fetched unverified.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import KernelError
from ..util import atomic_write, cache_dir

# alias -> Debian suite
SUITES = {"5.10": "bullseye", "6.1": "bookworm", "6.12": "trixie", "stable": "trixie-backports",
          "newest": "sid", "next": "experimental"}
SUITE_ALIASES = {v: k for k, v in SUITES.items()}
META_PACKAGE = "linux-image-cloud-amd64"
SYSTEM_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCE_PARTS = Path("/etc/apt/sources.list.d")


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A kernel the lab can run scripts on."""

    name: str  # "host", "6.1", "6.12", "newest" or a path
    vmlinuz: Path | None  # None for the host
    release: str  # uname -r
    version: str  # upstream version, e.g. 6.1.170 (what the simulator is asked for)

    @property
    def is_host(self) -> bool:
        return self.vmlinuz is None


def host_kernel() -> Kernel:
    release = platform.release()
    return Kernel("host", None, release, _upstream(release))


def _upstream(text: str) -> str:
    m = re.match(r"(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else text


def vmlinuz_version(path: Path) -> tuple[str, str]:
    """(release, upstream version) from a bzImage's setup header ("HdrS" at 0x202; the
    kernel_version string pointer at 0x20E, relative to 0x200)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(0x10000)
    except OSError as exc:
        raise KernelError(f"{path}: cannot read ({exc.strerror})") from None
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        raise KernelError(f"{path}: not an x86 bzImage (no HdrS setup header)")
    off = int.from_bytes(head[0x20E:0x210], "little") + 0x200
    text = head[off:off + 256].split(b"\0", 1)[0].decode("ascii", "replace")
    release = text.split(" ", 1)[0]
    # Debian's string carries the package version: "... Debian 6.1.170-1 (2025-...)".
    m = re.search(r"Debian (\d+\.\d+(?:\.\d+)?)", text)
    return release, m.group(1) if m else _upstream(release)


def resolve(spec: str, *, fetch: bool = True) -> Kernel:
    """'host', '6.1', '6.12', 'newest', a suite name, or a path to a vmlinuz."""
    spec = spec.strip()
    if spec == "host":
        return host_kernel()
    if spec in SUITES or spec in SUITE_ALIASES:
        alias = spec if spec in SUITES else SUITE_ALIASES[spec]
        path = kernel_path(alias, fetch=fetch)
        release, version = vmlinuz_version(path)
        return Kernel(alias, path, release, version)
    if "/" in spec or os.path.exists(spec):
        path = Path(spec)
        if not path.is_file():
            raise KernelError(f"{spec}: no such kernel file")
        release, version = vmlinuz_version(path)
        return Kernel(str(path), path, release, version)
    raise KernelError(f"unknown kernel {spec!r}: expected host, "
                      + ", ".join(SUITES) + ", a suite (" + ", ".join(SUITES.values())
                      + ") or a path to a vmlinuz")


def resolve_list(text: str, *, fetch: bool = True) -> list[Kernel]:
    names = [s for s in (p.strip() for p in text.split(",")) if s]
    if names == ["all"]:
        names = ["host", *SUITES]
    if not names:
        raise KernelError("--kernel: expected a comma list such as host,6.1,6.12,newest")
    return [resolve(n, fetch=fetch) for n in names]


# ---------------------------------------------------------------------------------------
# The mirror, from the machine's apt sources


def debian_mirror(sources: Path = APT_SOURCES, parts: Path = APT_SOURCE_PARTS) -> str:
    """The URI of the first Debian 'deb' source with component main whose suite is a plain
    codename (not -security, -updates or -backports)."""
    env = os.environ.get("VMASCOPE_DEBIAN_MIRROR")
    if env:
        return env.rstrip("/")
    entries: list[tuple[str, list[str], list[str]]] = []
    files = [sources] if sources.exists() else []
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        entries += _deb822_entries(text) if f.suffix == ".sources" else _one_line_entries(text)
    for uri, suites, comps in entries:
        if "main" in comps and any(re.fullmatch(r"[a-z]+", s) for s in suites):
            if "security" not in uri:
                return uri.rstrip("/")
    raise KernelError(f"no Debian mirror in {sources} or {parts}/ (need a 'deb' source with "
                      "component main); set VMASCOPE_DEBIAN_MIRROR to a Debian mirror URI")


def _one_line_entries(text: str) -> list[tuple[str, list[str], list[str]]]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line)
        words = line.split()
        if len(words) >= 4:
            out.append((words[1], [words[2]], words[3:]))
    return out


def _deb822_entries(text: str) -> list[tuple[str, list[str], list[str]]]:
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in fields.get("types", "").split():
            continue
        for uri in fields.get("uris", "").split():
            out.append((uri, fields.get("suites", "").split(), fields.get("components", "").split()))
    return out


# ---------------------------------------------------------------------------------------
# Private apt


class _Apt:
    """apt-get / apt-cache with every state, cache and configuration path private."""

    def __init__(self, suite: str, keyring: Path, mirror: str) -> None:
        self.suite = suite
        self.root = cache_dir("kernels", "apt", suite)
        self.keyring = keyring
        self.mirror = mirror
        for d in ("lists/partial", "archives/partial", "etc/sources.list.d",
                  "etc/apt.conf.d", "etc/preferences.d", "download"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        status = self.root / "status"
        if not status.exists():
            status.touch()
        with atomic_write(self.root / "etc" / "sources.list", "w") as fh:
            fh.write(f"deb [signed-by={keyring}] {mirror} {suite} main\n")

    def options(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::State": r, "Dir::State::Lists": r / "lists", "Dir::State::status": r / "status",
            "Dir::Cache": r, "Dir::Cache::archives": r / "archives",
            "Dir::Cache::pkgcache": "", "Dir::Cache::srcpkgcache": "",
            "Dir::Etc::SourceList": r / "etc" / "sources.list",
            "Dir::Etc::SourceParts": r / "etc" / "sources.list.d",
            "Dir::Etc::Parts": r / "etc" / "apt.conf.d",
            "Dir::Etc::Preferences": r / "etc" / "preferences",
            "Dir::Etc::PreferencesParts": r / "etc" / "preferences.d",
            "APT::Architecture": "amd64", "APT::Architectures": "amd64",
            "Acquire::Languages": "none", "Acquire::Retries": "2",
            "Acquire::http::Timeout": "30", "APT::Sandbox::User": "root" if os.geteuid() == 0 else "",
            "Debug::NoLocking": "0",
        }
        out = []
        for k, v in opts.items():
            if k == "APT::Sandbox::User" and not v:
                continue
            out += ["-o", f"{k}={v}"]
        return out

    def run(self, tool: str, *args: str, cwd: Path | None = None, timeout: float = 240) -> str:
        exe = shutil.which(tool)
        if not exe:
            raise KernelError(f"{tool} not found: fetching Debian kernels needs apt")
        try:
            proc = subprocess.run([exe, "-q", *self.options(), *args], cwd=cwd,
                                  capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"})
        except subprocess.TimeoutExpired:
            raise KernelError(f"{tool} {' '.join(args)} ({self.suite}): no answer in {timeout:.0f} s") from None
        if proc.returncode != 0 or (tool == "apt-get" and args[:1] == ("update",)
                                    and re.search(r"^(W|E): ", proc.stderr, re.M)):
            lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(("E:", "W:"))]
            detail = lines[0] if lines else (proc.stderr.strip().splitlines() or ["exit " + str(proc.returncode)])[-1]
            raise _AptFailed(f"{tool} {' '.join(args)} ({self.suite}): {detail}", proc.stderr)
        return proc.stdout

    def update(self) -> None:
        self.run("apt-get", "update")

    def depends(self, package: str) -> list[str]:
        out = self.run("apt-cache", "depends", package)
        return [ln.split(":", 1)[1].strip() for ln in out.splitlines()
                if ln.strip().startswith("Depends:")]

    def show_field(self, package: str, field: str) -> str:
        out = self.run("apt-cache", "show", "--no-all-versions", package)
        for ln in out.splitlines():
            if ln.startswith(field + ":"):
                return ln.split(":", 1)[1].strip()
        raise KernelError(f"{package} ({self.suite}): no {field} in the index")

    def download(self, package: str) -> Path:
        dest = self.root / "download"
        for old in dest.glob("*.deb"):
            old.unlink()
        self.run("apt-get", "download", package, cwd=dest)
        debs = sorted(dest.glob(f"{_deb_prefix(package)}_*.deb"))
        if not debs:
            raise KernelError(f"apt-get download {package} ({self.suite}) left no .deb")
        return debs[-1]


class _AptFailed(KernelError):
    def __init__(self, message: str, stderr: str) -> None:
        super().__init__(message)
        self.stderr = stderr

    @property
    def is_signature(self) -> bool:
        return bool(re.search(r"NO_PUBKEY|EXPKEYSIG|not signed|signature|Signed-By", self.stderr))


def _deb_prefix(package: str) -> str:
    # apt names the file with ':' escaped as %3a; kernel packages have no epoch in the name.
    return package


def _extract(deb: Path, pattern: str, dest: Path) -> str:
    """Extract the first member matching ``pattern`` (regex on the path) to ``dest``."""
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|*") as tar:
                for member in tar:
                    name = member.name.lstrip("./")
                    if member.isfile() and re.fullmatch(pattern, name):
                        src = tar.extractfile(member)
                        assert src is not None
                        with atomic_write(dest) as fh:
                            shutil.copyfileobj(src, fh)
                        return name
        finally:
            proc.stdout.close()
            proc.kill()
    raise KernelError(f"{deb.name}: no file matching {pattern}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    lock = cache_dir("kernels") / f".{name}.lock"
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _manifest(alias: str) -> Path:
    return cache_dir("kernels") / f"{SUITES[alias]}.json"


def cached(alias: str) -> dict[str, str] | None:
    """The manifest of a fetched kernel, or None."""
    try:
        return json.loads(_manifest(alias).read_text())
    except (OSError, ValueError):
        return None


def kernel_path(alias: str, *, fetch: bool = True) -> Path:
    """The vmlinuz of a Debian kernel, fetched once per machine, hash re-checked."""
    with _locked(SUITES[alias]):
        info = cached(alias)
        if info is None:
            if not fetch:
                raise KernelError(f"kernel {alias} ({SUITES[alias]}) is not fetched yet: "
                                  f"run `vmascope kernels fetch {alias}`")
            info = _fetch(alias)
        path = cache_dir("kernels") / info["file"]
        if not path.exists() or _sha256(path) != info["sha256"]:
            if not fetch:
                raise KernelError(f"{path}: missing or altered (sha256 mismatch): "
                                  f"run `vmascope kernels fetch {alias}`")
            info = _fetch(alias)
            path = cache_dir("kernels") / info["file"]
    return path


def fetch(alias: str, *, force: bool = False) -> dict[str, str]:
    with _locked(SUITES[alias]):
        info = cached(alias)
        if info and not force:
            path = cache_dir("kernels") / info["file"]
            if path.exists() and _sha256(path) == info["sha256"]:
                return info
        return _fetch(alias)


def _keyring_from(suite: str, mirror: str) -> Path:
    """The debian-archive-keyring of ``suite``, verified through that suite's signed index."""
    apt = _Apt(suite, SYSTEM_KEYRING, mirror)
    apt.update()
    deb = apt.download("debian-archive-keyring")
    dest = cache_dir("kernels", "keyrings") / f"debian-archive-keyring-{suite}.gpg"
    _extract(deb, r"usr/share/keyrings/debian-archive-keyring\.(gpg|pgp)", dest)
    deb.unlink()
    return dest


def _fetch(alias: str) -> dict[str, str]:
    suite = SUITES[alias]
    mirror = debian_mirror()
    apt = _Apt(suite, SYSTEM_KEYRING, mirror)
    keyring = SYSTEM_KEYRING
    try:
        apt.update()
    except _AptFailed as exc:
        if not exc.is_signature:
            raise
        # Chain of trust: take the keyring package of a suite the machine's keys verify.
        last: KernelError = exc
        for other in ("trixie", "sid", "bookworm"):
            if other == suite:
                continue
            try:
                keyring = _keyring_from(other, mirror)
                apt = _Apt(suite, keyring, mirror)
                apt.update()
                break
            except KernelError as inner:
                last = inner
        else:
            raise KernelError(f"{suite}: the index does not verify with {SYSTEM_KEYRING} "
                              f"nor with a newer Debian keyring ({last})") from None
    image = next((d for d in apt.depends(META_PACKAGE) if d.startswith("linux-image-")), None)
    if image is None:
        raise KernelError(f"{META_PACKAGE} ({suite}): no linux-image-* dependency")
    # Newer packaging splits the image: the kernel file is in linux-binary-*.
    binary = next((d for d in apt.depends(image) if d.startswith("linux-binary-")), image)
    version = apt.show_field(binary, "Version")
    deb = apt.download(binary)
    tmp = cache_dir("kernels") / f".{suite}.vmlinuz.tmp"
    # boot/vmlinuz-RELEASE, or usr/lib/modules/RELEASE/vmlinuz in the newer packaging
    member = _extract(deb, r"boot/vmlinuz-.*|usr/lib/modules/[^/]+/vmlinuz", tmp)
    parts = Path(member).parts
    fname = f"{suite}-" + (f"vmlinuz-{parts[-2]}" if parts[-1] == "vmlinuz" else parts[-1])
    os.replace(tmp, cache_dir("kernels") / fname)
    deb.unlink()
    info = {"alias": alias, "suite": suite, "package": binary, "version": version,
            "file": fname, "sha256": _sha256(cache_dir("kernels") / fname),
            "mirror": mirror, "keyring": str(keyring)}
    with atomic_write(_manifest(alias), "w") as fh:
        json.dump(info, fh, indent=1)
    return info
