"""Kernels: the mirror from apt sources, bzImage versions, fetching with the real apt."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmascope.errors import KernelError
from vmascope.lab import kernels


def test_mirror_from_deb822_skips_security_and_disabled(tmp_path: Path) -> None:
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "a.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\n"
        "Enabled: no\n\n"
        "Types: deb deb-src\n# comment\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main contrib\n")
    (parts / "b.list.disabled").write_text("deb http://never.example/debian sid main\n")
    assert kernels.debian_mirror(tmp_path / "none", parts) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources(tmp_path: Path) -> None:
    src = tmp_path / "sources.list"
    src.write_text("# deb http://commented.example/debian sid main\n"
                   "deb-src http://src.example/debian bookworm main\n"
                   "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n")
    assert kernels.debian_mirror(src, tmp_path / "nothing") == "http://one.example/debian"


def test_no_mirror_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VMASCOPE_DEBIAN_MIRROR", raising=False)
    with pytest.raises(KernelError, match="no Debian mirror"):
        kernels.debian_mirror(tmp_path / "none", tmp_path / "none.d")


def _bzimage(path: Path, version: str) -> None:
    data = bytearray(0x1000)
    data[0x202:0x206] = b"HdrS"
    off = 0x800
    data[0x20E:0x210] = (off - 0x200).to_bytes(2, "little")
    text = version.encode() + b"\0"
    data[off:off + len(text)] = text
    path.write_bytes(bytes(data))


def test_vmlinuz_version_from_the_setup_header(tmp_path: Path) -> None:
    k = tmp_path / "vmlinuz"
    _bzimage(k, "6.1.0-50-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP "
                "PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-01-01)")
    assert kernels.vmlinuz_version(k) == ("6.1.0-50-cloud-amd64", "6.1.176")
    _bzimage(k, "6.18.44-custom (me@host) #3 SMP")
    assert kernels.vmlinuz_version(k) == ("6.18.44-custom", "6.18.44")
    k.write_bytes(b"\0" * 4096)
    with pytest.raises(KernelError, match="not an x86 bzImage"):
        kernels.vmlinuz_version(k)


def test_resolve_names_and_errors(tmp_path: Path) -> None:
    assert kernels.resolve("host").is_host
    with pytest.raises(KernelError, match="unknown kernel"):
        kernels.resolve("5.4")
    with pytest.raises(KernelError, match="no such kernel file"):
        kernels.resolve(str(tmp_path / "missing" / "vmlinuz"))
    k = tmp_path / "vmlinuz-x"
    _bzimage(k, "6.6.1 (x) #1")
    got = kernels.resolve(str(k))
    assert got.vmlinuz == k and got.version == "6.6.1"


# -- the real apt ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fetched() -> dict[str, dict[str, str]]:
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        pytest.skip("needs apt-get and dpkg-deb")
    return {alias: kernels.fetch(alias) for alias in kernels.SUITES}


def test_fetch_gives_the_suites_kernels(fetched: dict[str, dict[str, str]]) -> None:
    def major_minor(v: str) -> tuple[int, int]:
        m = re.match(r"(\d+)\.(\d+)", v)
        assert m, v
        return int(m.group(1)), int(m.group(2))

    assert major_minor(fetched["6.1"]["version"]) == (6, 1)
    assert major_minor(fetched["6.12"]["version"]) == (6, 12)
    assert major_minor(fetched["newest"]["version"]) > (6, 12)
    assert major_minor(fetched["5.10"]["version"]) == (5, 10)
    # trixie-backports and experimental carry kernels newer than trixie's own
    assert major_minor(fetched["stable"]["version"]) > (6, 12)
    assert major_minor(fetched["next"]["version"]) > (6, 12)
    for alias, info in fetched.items():
        path = kernels.kernel_path(alias, fetch=False)
        assert kernels._sha256(path) == info["sha256"]
        release, version = kernels.vmlinuz_version(path)
        assert info["version"].startswith(version), (alias, info["version"], version)
        assert info["package"].startswith(("linux-image-", "linux-binary-"))
        # the mirror came from the machine's apt sources, not from this code
        assert info["mirror"] == kernels.debian_mirror()


def test_fetch_happens_once(fetched: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    def no_apt(alias: str) -> dict[str, str]:
        raise AssertionError("fetched again although cached")

    monkeypatch.setattr(kernels, "_fetch", no_apt)
    t0 = time.monotonic()
    for alias in kernels.SUITES:
        assert kernels.fetch(alias) == fetched[alias]
    assert time.monotonic() - t0 < 5


def test_an_altered_kernel_is_refused(fetched: dict[str, dict[str, str]], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    info = fetched["6.1"]
    src = kernels.kernel_path("6.1", fetch=False)
    monkeypatch.setenv("VMASCOPE_CACHE", str(tmp_path))
    dest = tmp_path / "kernels"
    dest.mkdir()
    shutil.copy(src, dest / info["file"])
    (dest / "bookworm.json").write_text(json.dumps(info))
    assert kernels.kernel_path("6.1", fetch=False) == dest / info["file"]
    with open(dest / info["file"], "r+b") as fh:
        fh.seek(0x10000)
        fh.write(b"tampered")
    with pytest.raises(KernelError, match="sha256 mismatch"):
        kernels.kernel_path("6.1", fetch=False)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmascope", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})


def test_kernels_cli(fetched: dict[str, dict[str, str]]) -> None:
    rows = json.loads(_cli("kernels", "list", "--json").stdout)
    assert [r["name"] for r in rows] == ["host", "5.10", "6.1", "6.12", "stable", "newest",
                                         "next"]
    assert all(r["fetched"] for r in rows)
    out = _cli("kernels", "path", "6.12")
    assert out.returncode == 0
    assert Path(out.stdout.strip()) == kernels.kernel_path("6.12", fetch=False)
    bad = _cli("kernels", "path", "5.4")
    # an unknown kernel is exit 6 (kernel not available), as in `lab run --kernel 5.4`
    assert bad.returncode == 6 and bad.stderr.count("\n") == 1 and "unknown kernel" in bad.stderr


def test_keyring_chain_for_a_suite_the_local_keys_cannot_verify(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine whose keyring verifies trixie but not sid: the newer Debian keyring is
    taken from trixie's debian-archive-keyring package (hash-checked through trixie's
    signed index) and then verifies sid."""
    if not shutil.which("gpg") or not shutil.which("apt-get"):
        pytest.skip("needs gpg and apt-get")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    only = tmp_path / "only-trixie-release-key.gpg"
    # "Debian Stable Release Key (13/trixie)" signs trixie's Release, not sid's
    key = "41587F7DB8C774BCCF131416762F67A0B2C39DE4"
    with open(only, "wb") as fh:
        subprocess.run(["gpg", "--homedir", str(home), "--no-default-keyring", "--keyring",
                        str(kernels.SYSTEM_KEYRING), "--export", key], stdout=fh, check=True,
                       stderr=subprocess.DEVNULL, timeout=30)
    if only.stat().st_size == 0:
        pytest.skip("this machine's keyring has no trixie release key")
    monkeypatch.setenv("VMASCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(kernels, "SYSTEM_KEYRING", only)
    info = kernels.fetch("newest")
    assert info["keyring"].endswith("debian-archive-keyring-trixie.gpg")
    assert kernels.kernel_path("newest", fetch=False).exists()
