"""`vmascope lab run|scenarios|verify` on the host, and the pieces of verify."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


from vmascope.lab import compare, scenarios, verify
from vmascope.model import Snapshot, Vma
from vmascope.ops.language import parse_script, script_text
from vmascope.outcome import Fault, OpError, Outcome


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmascope", *args], capture_output=True,
                          text=True, timeout=300, input=stdin,
                          env={**os.environ, "COLUMNS": "200"})


def test_run_seed_on_the_host_json() -> None:
    out = cli("lab", "run", "seed", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["script"] == "seed" and data["ops"] == 10
    (entry,) = data["kernels"]
    assert entry["kernel"] == "host"
    real = entry["real"]
    assert set(real) >= {"script", "kernel", "epoch", "map_count", "vmas", "errors", "faults"}
    v = real["vmas"][0]
    assert v["start"] == "0x0" and v["perms"] == "rw-p" and v["pgoff"] is None
    assert v["anon_vma"] is None and "rd" in v["flags"] and v["name"] is None
    assert real["map_count"] == len(real["vmas"]) < real["process_map_count"]
    assert entry["agree"] is True, entry["differences"]


def test_run_a_script_file_and_stdin(tmp_path: Path) -> None:
    f = tmp_path / "two.ops"
    f.write_text("mmap 0 2p rw-\ntouch 0\nmprotect 1p 1p r--\n")
    out = cli("lab", "run", str(f), "--json")
    assert out.returncode == 0, out.stderr
    vmas = json.loads(out.stdout)["kernels"][0]["real"]["vmas"]
    assert [(v["start"], v["end"], v["perms"]) for v in vmas] == [
        ("0x0", "0x1000", "rw-p"), ("0x1000", "0x2000", "r--p")]
    piped = cli("lab", "run", "-", "--json", stdin=f.read_text())
    assert json.loads(piped.stdout)["kernels"][0]["real"]["vmas"] == vmas
    # several scripts: one JSON document each, in order
    both = json.loads(cli("lab", "run", str(f), "seed", "--json").stdout)
    assert [d["script"] for d in both] == ["two.ops", "seed"]
    assert both[0]["kernels"][0]["real"]["vmas"] == vmas


def test_run_table_marks_agreement() -> None:
    out = cli("lab", "run", "seed-hack", "seed")
    assert out.returncode == 0, out.stderr
    assert "seed-hack: 12 ops" in out.stdout and "seed: 10 ops" in out.stdout
    assert "agree" in out.stdout and "DIFFER" not in out.stdout


def test_bad_script_is_one_line_naming_the_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.ops"
    f.write_text("mmap 0 2p rw-\nmprotect 0 zz rw-\n")
    out = cli("lab", "run", str(f))
    assert out.returncode == 5
    assert out.stderr.count("\n") == 1 and f"{f}:2" in out.stderr and not out.stdout


def test_unknown_scenario_and_kernel() -> None:
    out = cli("lab", "run", "no-such-scenario")
    assert out.returncode == 2 and "unknown scenario" in out.stderr
    out = cli("lab", "run", "seed", "--kernel", "host,4.19")
    assert out.returncode == 6 and "unknown kernel '4.19'" in out.stderr
    assert out.stderr.count("\n") == 1


def test_lowering_the_host_limit_needs_the_flag() -> None:
    before = Path("/proc/sys/vm/max_map_count").read_text()
    out = cli("lab", "run", "seed", "--max-map-count", "1000")
    assert out.returncode == 2 and "--host-sysctl" in out.stderr
    assert Path("/proc/sys/vm/max_map_count").read_text() == before


def test_scenarios_listing_and_text() -> None:
    out = cli("lab", "scenarios")
    assert out.stdout.split() == scenarios.names()
    text = cli("lab", "scenarios", "seed").stdout
    assert parse_script(text) == scenarios.get("seed")


# -- verify's pieces ----------------------------------------------------------------------


def test_ddmin_finds_the_two_ops_that_matter() -> None:
    ops = parse_script("".join(f"touch {i}p\n" for i in range(13)))
    culprits = {ops[3], ops[9]}
    gen = verify.ddmin(ops)
    cands = next(gen)
    rounds = 0
    try:
        while True:
            rounds += 1
            cands = gen.send([culprits <= set(c) for c in cands])
    except StopIteration as stop:
        result = stop.value
    assert result == [ops[3], ops[9]]
    assert rounds < 13


def test_random_scripts_are_reproducible_and_allocator_like() -> None:
    a = verify.random_scripts(50, seed=11)
    assert a == verify.random_scripts(50, seed=11)
    assert a != verify.random_scripts(50, seed=12)
    kinds = {op.kind for s in a for op in s}
    assert {"mmap", "mprotect", "touch", "madvise", "mremap"} <= kinds
    no_heap = verify.random_scripts(200, seed=11, heap=False)
    assert not any(op.kind in ("heap", "brk") for s in no_heap for op in s)
    # every script is valid in the language (it round-trips through its text)
    for s in a:
        assert [dataclasses_key(o) for o in parse_script(script_text(s))] == [
            dataclasses_key(o) for o in s]


def dataclasses_key(op):  # type: ignore[no-untyped-def]
    return (op.kind, op.addr, op.length, op.prot, op.flags, op.advice, op.new_len,
            op.new_addr, op.write, op.name)


def _outcome(flags: list[str], errors: list[OpError], *, anon: int | None = None,
             offset: int = 0) -> Outcome:
    vma = Vma(0, 0x2000, "rw-p", offset=offset, flags=frozenset(flags), anon_vma=anon)
    return Outcome(Snapshot.from_vmas([vma]), errors=errors)


def test_compare_rules() -> None:
    real = _outcome(["rd", "wr", "mr", "mw", "me", "ac", "sd"], [OpError(1, 2, "ENOMEM")])
    sim = _outcome(["ac", "me", "mr", "mw", "rd", "wr"], [OpError(1, 2, "ENOMEM")], anon=3,
                   offset=17 << 12)
    # sd is ignored, flag order is not significant, anon_vma and pgoff are not compared
    assert compare.agree(real, sim)
    sim.errors = [OpError(1, 2, "EAGAIN")]
    assert compare.differences(real, sim) == [
        "errors: real op 1 ENOMEM, simulator op 1 EAGAIN"]
    sim = _outcome(["me", "mr", "mw", "rd", "wr"], real.errors)
    assert not compare.agree(real, sim)
    sim = _outcome(["ac", "me", "mr", "mw", "rd", "wr"], real.errors)
    sim.faults = [Fault(3, 4, 0x1000, "SIGSEGV")]
    assert compare.differences(real, sim) == [
        "faults: real none, simulator op 3 SIGSEGV at 1p"]


def test_compare_kernel_views() -> None:
    """With a kernel view on both sides (the reader's and the model's), vm_pgoff, the
    chain length and the anon_vma counters are compared per VMA; before 6.2 the reader
    has one ``degree`` for the two counters."""
    from vmascope.kernel.epochs import epoch_for
    from vmascope.kernel.sim import MM, outcome_of, run_ops
    from vmascope.model import KV_DEGREE as DEGREE

    ops = parse_script("mmap 0x100000 4p rw- private,anonymous,fixed\n"
                       "touch 0x100000 write\nfork\n", "s")

    def run(view: bool = True) -> Outcome:
        mm = MM(epoch_for("6.12"))
        errors, faults = run_ops(mm, ops)
        return outcome_of(mm, errors, faults, kernel_view=view)

    real, sim = run(), run()
    kv = real.snapshot.kview
    assert kv is not None and compare.agree(real, sim)
    # a new root anon_vma: its self-link and the fork child's anon_vma; one VMA uses it
    assert (kv["pgoff"][0], kv["chain"][0], kv["children"][0], kv["active"][0]) == (
        0x100, 1, 2, 1)
    kv["chain"][0] = 2
    (line,) = compare.differences(real, sim)
    assert line == ("kernel view (real vs simulator): VMA 0 [256p,260p) rw-p ac me mr mw "
                    "rd wr: chain 2 vs 1")
    kv["chain"][0] = 1
    kv["pgoff"][0] = 0x180
    assert compare.differences(real, sim)[0].endswith("pgoff 0x180 vs 0x100")
    kv["pgoff"][0] = 0x100
    kv["bits"][0] |= DEGREE
    kv["children"][0], kv["active"][0] = 3, 0  # degree = 2 children + 1 VMA
    assert compare.agree(real, sim)
    kv["children"][0] = 4
    assert compare.differences(real, sim)[0].endswith("degree 4 vs 3")
    # without the model's view (or the reader's) there is nothing to compare
    assert compare.agree(real, run(view=False))


def test_verify_on_the_host_agrees() -> None:
    out = cli("lab", "verify", "--kernel", "host", "--cases", "300", "--seed", "5", "--json")
    data = json.loads(out.stdout)
    (v,) = data
    assert v["cases"] == 300
    assert v["disagreements"] == 0, json.dumps(v["minimised"][:3], indent=1)[:3000]
    assert out.returncode == 0


def test_every_merge_script_is_a_scenario_with_its_expectation() -> None:
    files = sorted(p.stem for p in scenarios.MERGE_DIR.glob("*.ops"))
    assert files == sorted(scenarios.MERGE) == sorted(scenarios.MERGE_EXPECT_616)


def test_simulate_takes_the_lab_s_scenarios_and_matches_the_real_kernel() -> None:
    """`vmascope simulate NAME` runs a scenario where the lab's executor puts it: its VMAs
    are those the running kernel made for `lab run NAME` (arena-relative there)."""
    from vmascope.lab.executor import ARENA_BASE

    names = ["seed", "seed-hack", *scenarios.MERGE]
    lab = cli("lab", "run", *names, "--json")
    assert lab.returncode == 0, lab.stderr
    real = {run["script"]: run["kernels"][0]["real"] for run in json.loads(lab.stdout)}
    sim = cli("simulate", *names, "--json")
    assert sim.returncode == 0, sim.stderr
    docs = [json.loads(line) for line in sim.stdout.splitlines()]
    assert [d["script"] for d in docs] == names

    def shape(vmas: list[dict], base: int) -> list[tuple[int, int, str]]:
        return [(int(v["start"], 16) - base, int(v["end"], 16) - base, v["perms"])
                for v in vmas]

    for d in docs:
        r = real[d["script"]]
        assert shape(d["vmas"], ARENA_BASE) == shape(r["vmas"], 0), d["script"]
        assert [e["errno"] for e in d["errors"]] == [e["errno"] for e in r["errors"]]
    # a file of the same text is absolute: the seed's mprotects miss its mapping
    out = cli("simulate", "-", "--json", stdin=scenarios.text("seed"))
    assert out.returncode == 0 and json.loads(out.stdout)["errors"], out.stdout
