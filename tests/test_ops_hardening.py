"""Op scripts that used to pass validation and break later (issue: op-script fields
validated against the kernel's own ranges)."""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest

from vmascope.errors import ParseError
from vmascope.kernel.epochs import epoch_for
from vmascope.kernel.sim import simulate_ops
from vmascope.ops.language import MAX_NUMNODES, TASK_SIZE, load_script, parse_script


def jsonl(*objs: object) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


@pytest.mark.parametrize("line, needle", [
    ('{"op": "mmap", "addr": 4096.0, "length": 4096, "prot": 3}', "not an integer"),
    ('{"op": "munmap", "addr": NaN, "length": 4096}', "NaN"),
    ('{"op": "munmap", "addr": Infinity, "length": 4096}', "Infinity"),
    ('{"op": "munmap", "addr": ' + "9" * 4400 + ', "length": 1}', "more than 40 digits"),
    ('{"op": "brk", "addr": ' + str(1 << 80) + "}", "ADDR an integer from 0"),
    ('{"op": "mmap", "addr": 0, "length": 4096, "prot": 3, "flags": "shared"}',
     "flags of another type"),
    ('{"op": "mmap", "addr": 0, "length": 4096, "prot": 3, "flags": ["shared", 1]}',
     "flags as a list of names"),
    ('{"op": "mmap", "addr": 0, "length": 4096, "prot": 99}', "PROT of the read"),
    ('{"op": "mmap", "addr": 0, "length": 4096, "prot": true}', "prot of another type"),
    ('{"op": "mmap", "addr": 0, "length": 4096, "prot": 3, "flags": ["private", "shared"]}',
     "private or shared"),
    ('{"op": "madvise", "addr": 0, "length": 4096, "advice": "frobnicate"}', "ADVICE, one of"),
    ('{"op": "madvise", "addr": 0, "length": 4096}', "ADVICE with madvise only"),
    ('{"op": "munmap", "addr": 0, "length": 4096, "advice": "free"}', "fields addr, length"),
    ('{"op": "munmap", "addr": -4096, "length": 4096}', "ADDR an integer from 0"),
    ('{"op": "munmap", "addr": 0, "length": ' + str(1 << 64) + "}", "LEN an integer"),
    ('{"op": "mbind", "addr": 0, "length": 4096, "mode": "bind", "nodes": [1024]}',
     "below MAX_NUMNODES"),
    ('{"op": "mbind", "addr": 0, "length": 4096, "mode": "bind", "nodes": []}', "MODE"),
    ('{"op": "touch", "addr": 0, "write": 1}', "write of another type"),
    ('{"op": "name", "addr": 0, "length": 4096, "name": 5}', "name of another type"),
    ('{"op": "fork", "x": 1}', "fork: fields index"),
    ('{"op": 5}', '"op": one of'),
    ('{"op": "mmap", "addr": 0, "length": 1, "prot": 3, "x": ' + "[" * 5000 + "]" * 5000
     + "}", "nested too deeply"),
])
def test_bad_jsonl_fields_are_a_parse_error_naming_the_line(line, needle):
    with pytest.raises(ParseError) as err:
        load_script(jsonl({"op": "fork"}, line), "s.jsonl")
    assert str(err.value).startswith("s.jsonl:2: "), str(err.value)
    assert needle in str(err.value)


@pytest.mark.parametrize("line, needle", [
    ("brk " + hex(1 << 80), "ADDR an integer from 0"),
    ("heap " + hex(TASK_SIZE), "ADDR an integer from 0"),
    ("munmap " + "9" * 4400 + " 1p", "as a number"),
    ("mbind 0 1p bind:0-99999999", "below MAX_NUMNODES"),
    ("mbind 0 1p bind:5-2", "LO <= HI"),
    (f"mbind 0 1p interleave:{MAX_NUMNODES}", "below MAX_NUMNODES"),
    ("mremap 0 1p 2p " + hex(1 << 47) + " maymove,fixed", "NEWADDR"),
])
def test_bad_text_fields_are_a_parse_error_naming_the_line(line, needle):
    with pytest.raises(ParseError) as err:
        parse_script("fork\n" + line + "\n", "s.ops")
    assert str(err.value).startswith("s.ops:2: "), str(err.value)
    assert needle in str(err.value)


def test_a_node_range_costs_nothing_when_refused():
    tracemalloc.start()
    t = time.monotonic()
    with pytest.raises(ParseError):
        parse_script("mbind 0 1p bind:0-99999999\n")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20 and time.monotonic() - t < 1


def test_the_highest_valid_values_simulate_without_exceptions():
    # Everything that passes validation runs in the simulator (errors are errnos).
    top = TASK_SIZE - 4096
    script = jsonl(
        {"op": "heap", "addr": top},
        {"op": "brk", "addr": TASK_SIZE - 1},
        {"op": "mmap", "addr": top, "length": (1 << 64) - 1, "prot": 7,
         "flags": ["shared", "fixed"]},
        {"op": "munmap", "addr": top, "length": (1 << 64) - 1},
        {"op": "mprotect", "addr": 0, "length": (1 << 64) - 1, "prot": 0},
        {"op": "madvise", "addr": top, "length": (1 << 64) - 1, "advice": "guard_install"},
        {"op": "mremap", "addr": top, "length": 4096, "new_len": (1 << 64) - 1,
         "new_addr": top, "flags": ["maymove", "fixed"]},
        {"op": "mbind", "addr": 0, "length": 1 << 40, "mode": "interleave",
         "nodes": list(range(MAX_NUMNODES))},
        {"op": "touch", "addr": TASK_SIZE - 1, "write": False},
        {"op": "name", "addr": 0, "length": 4096, "name": "x" * 4096},
    )
    ops = load_script(script, "top.jsonl")
    result = simulate_ops(ops, epoch_for("6.12"), max_map_count=65530, script="top.jsonl")
    assert all(v.end <= TASK_SIZE for v in result.vmas)
    assert result.errors  # the kernel refuses most of these; the simulator says so
