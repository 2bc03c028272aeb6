"""Op scripts under tests/scripts/ with their expected outcome per kernel.

Each script carries its expectations in ``#!`` comment lines, written from the kernel
sources, the kernel's own tests (tools/testing/vma, selftests/mm/merge.c) and the real
kernel counts of the seed program, with the reasoning in the script's comments:

    #! max_map_count N                   the limit to simulate with (default 65530)
    #! expect RANGE: VMA VMA ...          the VMAs after the script
    #! errors RANGE: OP=ERRNO ...         failed ops (0-based op index); none if absent
    #! faults RANGE: OP=SIGNAL ...        bad touches; none if absent

RANGE is ``all``, ``6.12+``, ``-6.15``, ``6.1-6.11`` or one release (``5.15``), over
MAJOR.MINOR[.PATCH]. A VMA is ``START-END`` optionally followed by ``:A`` (anon_vma label:
equal letters = the same anon_vma, ``-`` = none), ``@PGOFF`` (hex pages), ``/PERMS`` and
``=NAME``. Every kernel in KERNELS must match exactly one ``expect`` line of each script.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vmascope.kernel.epochs import parse_release
from vmascope.kernel.sim import simulate

SCRIPTS = Path(__file__).parent / "scripts"
KERNELS = ("5.10", "5.15", "6.1", "6.6", "6.8", "6.12.117", "6.13", "6.16", "6.17", "6.18",
           "6.18.8", "6.18.44", "7.2.13", "7.3.4")

_VMA = re.compile(r"^(0x[0-9a-f]+)-(0x[0-9a-f]+)(?::([A-Za-z-]))?(?:@(0x[0-9a-f]+))?"
                  r"(?:/([r-][w-][x-][ps]))?(?:=(\S+))?$")


def _in_range(spec: str, release: str) -> bool:
    v = parse_release(release)

    def ver(text: str, upper: bool) -> tuple[int, int, int]:
        parts = [int(x) for x in text.split(".")]
        if len(parts) == 2:
            parts.append(10**6 if upper else 0)
        return (parts[0], parts[1], parts[2])

    spec = spec.strip()
    if spec == "all":
        return True
    if spec.endswith("+"):
        return v >= ver(spec[:-1], False)
    if spec.startswith("-"):
        return v <= ver(spec[1:], True)
    if "-" in spec:
        lo, hi = spec.split("-")
        return ver(lo, False) <= v <= ver(hi, True)
    return ver(spec, False) <= v <= ver(spec, True)


def _directives(text: str) -> tuple[int, dict[str, list[tuple[str, str]]]]:
    max_map_count = 65530
    out: dict[str, list[tuple[str, str]]] = {"expect": [], "errors": [], "faults": []}
    for line in text.splitlines():
        if not line.startswith("#!"):
            continue
        word, _, rest = line[2:].strip().partition(" ")
        if word == "max_map_count":
            max_map_count = int(rest)
            continue
        spec, _, body = rest.partition(":")
        out[word].append((spec, body.strip()))
    return max_map_count, out


def _pick(entries: list[tuple[str, str]], release: str, what: str, script: str) -> str | None:
    hits = [body for spec, body in entries if _in_range(spec, release)]
    if len(hits) > 1:
        raise AssertionError(f"{script}: {len(hits)} '{what}' lines match {release}")
    return hits[0] if hits else None


def _cases() -> list[tuple[str, str]]:
    return [(p.name, k) for p in sorted(SCRIPTS.glob("*.ops")) for k in KERNELS]


def test_scripts_exist() -> None:
    names = {p.name for p in SCRIPTS.glob("*.ops")}
    assert {"seed.ops", "seed-prefault.ops"} <= names
    assert len(names) >= 30


@pytest.mark.parametrize(("script", "kernel"), _cases())
def test_script(script: str, kernel: str) -> None:
    text = (SCRIPTS / script).read_text()
    max_map_count, d = _directives(text)
    expect = _pick(d["expect"], kernel, "expect", script)
    assert expect is not None, f"{script}: no expectation for {kernel}"
    result = simulate(text, kernel=kernel, max_map_count=max_map_count, source=script)

    want_errors = _pick(d["errors"], kernel, "errors", script) or ""
    got_errors = " ".join(f"{e.op}={e.errno}" for e in result.errors)
    assert got_errors == want_errors, f"errors on {kernel}"
    want_faults = _pick(d["faults"], kernel, "faults", script) or ""
    got_faults = " ".join(f"{f.op}={f.signal}" for f in result.faults)
    assert got_faults == want_faults, f"faults on {kernel}"

    tokens = expect.split()
    got = [(hex(v.start), hex(v.end)) for v in result.vmas]
    want = []
    for tok in tokens:
        m = _VMA.match(tok)
        assert m, f"{script}: bad VMA token {tok!r}"
        want.append((m.group(1), m.group(2)))
    assert got == want, f"VMAs on {kernel}:\n{result.maps_text()}"
    assert result.map_count == len(result.vmas)

    labels: dict[str, int | None] = {}
    for tok, v in zip(tokens, result.vmas):
        m = _VMA.match(tok)
        assert m
        label, pgoff, perms, name = m.group(3), m.group(4), m.group(5), m.group(6)
        if label == "-":
            assert v.anon_vma is None, f"{tok}: expected no anon_vma on {kernel}"
        elif label:
            assert v.anon_vma is not None, f"{tok}: expected an anon_vma on {kernel}"
            if label in labels:
                assert labels[label] == v.anon_vma, f"{tok}: anon_vma {label} differs"
            else:
                assert v.anon_vma not in labels.values(), f"{tok}: {label} reuses another"
                labels[label] = v.anon_vma
        if pgoff:
            assert v.pgoff == int(pgoff, 16), f"{tok}: pgoff {v.pgoff:#x} on {kernel}"
        if perms:
            assert v.perms == perms, f"{tok}: perms {v.perms} on {kernel}"
        if name:
            assert v.name == name, f"{tok}: name {v.name} on {kernel}"


@pytest.mark.parametrize("kernel", ["6.1.170", "6.12.117", "6.18.44", "7.2.13"])
def test_seed_counts_match_real_kernels(kernel: str) -> None:
    """DESIGN.md: the seed's program leaves 3/1 VMAs on 6.1 and 6.12, 2/1 on 6.18 and 7.2."""
    want = {"6.1.170": (3, 1), "6.12.117": (3, 1), "6.18.44": (2, 1), "7.2.13": (2, 1)}
    plain = simulate((SCRIPTS / "seed.ops").read_text(), kernel=kernel)
    hack = simulate((SCRIPTS / "seed-prefault.ops").read_text(), kernel=kernel)
    assert (len(plain.vmas), len(hack.vmas)) == want[kernel]
    assert not plain.errors and not hack.errors and not plain.faults and not hack.faults
