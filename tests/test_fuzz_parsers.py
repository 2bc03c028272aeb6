"""A short seeded sample of the fuzz harnesses (fuzz/harness.py; `make fuzz` runs the
100,000-input figures): every parser, fed mutated real inputs of this machine, either
accepts or raises a vmascope error, and stays within 64 x N + 64 MiB."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fuzz import harness  # noqa: E402
from vmascope.errors import VmascopeError  # noqa: E402

TARGETS = ["maps", "smaps", "numa_maps", "snapshot", "ops"]
_SEEDS: dict[str, list[bytes]] = {}


def seeds(target: str) -> list[bytes]:
    if target not in _SEEDS:
        _SEEDS[target] = [s[:32768] for s in harness.seeds(target)]
    return _SEEDS[target]


@pytest.mark.parametrize("target", TARGETS)
def test_harness_sample(target):
    res = harness.run(target, 400, seed=7, trace_every=5, timeout=20)
    assert res["failures"] == 0, res["failure_samples"]
    assert res["seeds"] >= 1 and res["inputs"] == 400
    # the sample reaches both outcomes: it is not all refused, not all accepted
    assert 0 < res["refused"] < 400


@st.composite
def mutated(draw, target: str) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds(target))))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["byte", "token", "cut", "dup"]))
        if kind == "byte" and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif kind == "token":
            data[pos:pos] = draw(st.sampled_from(harness.TOKENS))
        elif kind == "cut":
            del data[pos : pos + draw(st.integers(1, 512))]
        elif kind == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 256))] * draw(st.integers(1, 8))
    return bytes(data)


def check(target: str, data: bytes) -> None:
    tracemalloc.start()
    try:
        harness.TARGETS[target](data)
    except VmascopeError as exc:
        assert str(exc) and "\n" not in str(exc)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= 64 * len(data) + (64 << 20)


@pytest.mark.parametrize("target", TARGETS)
def test_mutated_inputs_only_raise_vmascope_errors(target):
    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutated(target))
    def prop(data: bytes) -> None:
        check(target, data)

    prop()


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.binary(max_size=2000), st.sampled_from(TARGETS))
def test_random_bytes_only_raise_vmascope_errors(data, target):
    check(target, data)


def test_big_inputs_stay_within_the_memory_bound():
    rows = harness.run_big()
    assert len(rows) >= 8
    for row in rows:
        assert row["ok"], row
