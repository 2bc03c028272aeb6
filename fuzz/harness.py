"""vmascope's own fuzz harness: mutated inputs for every parser, checked against the contract.

Targets (each takes bytes):

* ``maps``, ``smaps`` -- the /proc text parser (C extension), fed in 1 to 3 chunks;
  seeded with /proc/PID/maps or smaps of live processes of this machine.
* ``numa_maps`` -- the same parser in numa_maps mode; seeded with live numa_maps.
* ``snapshot`` -- the snapshot file loader (container, zstd, JSON schema, text); seeded
  with snapshot files captured from live processes at start-up.
* ``ops`` -- the op-script reader (text and JSONL), and the simulator on every script
  that reads: whatever passes validation must simulate without an exception.

The contract, per input: the target returns or raises a :class:`vmascope.errors.VmascopeError`;
any other exception is a failure. Memory: the Python heap's peak (tracemalloc, on every
``--trace-every``-th input) and the process's peak RSS (which also counts the C
extension's malloc) stay below 64 x N + 64 MiB for an input of N bytes. An input that
takes longer than ``--timeout`` seconds ends the run (faulthandler prints where).

    python fuzz/harness.py --n 100000             # every target, 100,000 inputs each
    python fuzz/harness.py --target ops --n 2000  # one target
    python fuzz/harness.py --json                 # figures as JSON

Exits 1 if any input broke the contract.
"""

from __future__ import annotations

import argparse
import faulthandler
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# VMASCOPE_SRC: another copy of the package (fuzz/sanitizers.sh: a sanitizer build)
SRC = os.environ.get("VMASCOPE_SRC", str(ROOT / "src"))
if SRC not in sys.path:
    sys.path.insert(0, SRC)

from vmascope.errors import VmascopeError  # noqa: E402

MB = 1 << 20
# Under AddressSanitizer (fuzz/sanitizers.sh) RSS holds the sanitizer's quarantine and
# shadow memory: the RSS bound is checked on normal builds only.
CHECK_RSS = not os.environ.get("VMASCOPE_SANITIZED")
BOUND_PER_BYTE = 64
BOUND_SLACK = 64 * MB
MAX_SEED_BYTES = 256 << 10  # seeds are cut to this (a fuzz input stays small and fast)

# -- targets ------------------------------------------------------------------------------


def _chunks(data: bytes) -> list[bytes]:
    if len(data) < 4:
        return [data]
    a = (data[0] * 7919) % len(data)
    b = (data[-1] * 104729) % len(data)
    a, b = sorted((a, b))
    return [data[:a], data[a:b], data[b:]]


def target_text(data: bytes) -> None:
    from vmascope.procfs.parse import TextParser, snapshot_from_result

    p = TextParser("fuzz")
    for c in _chunks(data):
        p.feed(c)
    res = p.finish()
    snap = snapshot_from_result(res)
    snap.backing_counts()
    snap.headroom()


def target_numa(data: bytes) -> None:
    from vmascope.procfs.parse import TextParser

    p = TextParser("fuzz", kind="numa")
    for c in _chunks(data):
        p.feed(c)
    p.finish()


def target_snapshot(data: bytes) -> None:
    from vmascope.procfs.load import load_stream

    snap = load_stream(io.BytesIO(data), "fuzz.vmasnap")
    snap.backing_counts()
    snap.to_json(vmas=False)


def target_ops(data: bytes) -> None:
    from vmascope.errors import ParseError
    try:  # the simulator's package (kernel/sim) or its older single module
        from vmascope.kernel.sim import simulate_ops
    except ImportError:
        from vmascope.kernel.simulator import simulate_ops  # type: ignore[no-redef]
    from vmascope.ops.language import load_script

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("fuzz", None, "expected UTF-8") from None  # as the CLI does
    ops = load_script(text, "fuzz")
    simulate_ops(ops[:200], "6.12", max_map_count=1000, script="fuzz")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "maps": target_text,
    "smaps": target_text,
    "numa_maps": target_numa,
    "snapshot": target_snapshot,
    "ops": target_ops,
}

# -- seeds --------------------------------------------------------------------------------


def _readable_pids(limit: int = 12) -> list[int]:
    pids = []
    for name in sorted(os.listdir("/proc"), key=lambda s: (len(s), s)):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/maps", "rb") as fh:
                if fh.read(1):
                    pids.append(int(name))
        except OSError:
            continue
        if len(pids) >= limit:
            break
    return pids or [os.getpid()]


def _proc_file(pid: int, name: str) -> bytes | None:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as fh:
            return fh.read()[:MAX_SEED_BYTES]
    except OSError:
        return None


def _cut_at_line(data: bytes) -> bytes:
    end = data.rfind(b"\n")
    return data[: end + 1] if end >= 0 else data


def seeds(target: str) -> list[bytes]:
    """Real inputs of this machine (live processes), captured now; nothing is stored."""
    out: list[bytes] = []
    pids = _readable_pids()
    if target in ("maps", "smaps", "numa_maps"):
        for pid in pids:
            data = _proc_file(pid, target)
            if data:
                out.append(_cut_at_line(data))
        if target == "numa_maps" and not out:
            # a kernel without CONFIG_NUMA has no numa_maps: the format of mm/mempolicy.c
            out.append(b"55d0c0a00000 default file=/usr/bin/cat mapped=8 mapmax=2 N0=8 "
                       b"kernelpagesize_kB=4\n7f0000000000 bind:0-1 anon=3 dirty=3 N0=2 "
                       b"N1=1 kernelpagesize_kB=4\n7f0000400000 prefer (many)=static:0-1 "
                       b"heap anon=1 dirty=1 active=0 N0=1 kernelpagesize_kB=4\n"
                       b"7f0000800000 weighted interleave:0-1 stack anon=2 N0=2\n")
        if target == "smaps":
            # a small smaps sample too: mutations of short inputs reach more states
            out += [_cut_at_line(d[:4096]) for d in out[:4]]
    elif target == "snapshot":
        from vmascope.procfs.capture import capture

        with tempfile.TemporaryDirectory(prefix="vmascope-fuzz-") as tmp:
            for i, pid in enumerate([os.getpid(), *pids[:3]]):
                for smaps in (True, False):
                    path = Path(tmp, f"{i}-{smaps}.vmasnap")
                    try:
                        capture(pid, path, smaps=smaps)
                    except VmascopeError:
                        continue
                    data = path.read_bytes()
                    if len(data) <= MAX_SEED_BYTES:
                        out.append(data)
    elif target == "ops":
        from vmascope.lab import scenarios

        for name in scenarios.names():
            if name != "exhaust":
                out.append(scenarios.text(name).encode())
        for p in sorted((ROOT / "tests" / "scripts").glob("*.ops")):
            out.append(p.read_bytes())
        from vmascope.ops.language import load_script

        for text in out[:6]:
            ops = load_script(text.decode())
            out.append("".join(json.dumps(o.to_json()) + "\n" for o in ops).encode())
    return [s for s in out if s]


# -- mutation -----------------------------------------------------------------------------

TOKENS = [
    b"\n", b"\r", b"\r\n", b"\x00", b"\xff", b" ", b"\t", b"-", b":", b"kB", b"VmFlags:",
    b"Size:", b"0", b"ffffffffffffffff", b"7fffffffffff", b"99999999999999999999", b"rw-p",
    b"---s", b"[heap]", b" (deleted)", b"\\012", b"=", b"N0=", b"bind:0-1023", b"default",
    b"prefer (many)", b"weighted interleave", b"{", b"}", b"[", b"]", b'"', b"NaN", b"1e400",
    b"-1", b"true", b"null", b'"flags"', b'"addr"', b"0x", b"p", b"G", b"mmap ", b"munmap ",
    b"mprotect ", b"madvise ", b"mremap ", b"brk ", b"heap ", b"mbind ", b"touch ", b"fork",
    b"name ", b"private,fixed", b"shared", b"#", b"meta.json", b"end.json", b"smaps",
]


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 4, 8))):
        op = rng.randrange(10)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # random byte
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 2:  # insert a token
            buf[pos:pos] = rng.choice(TOKENS)
        elif op == 3 and buf:  # delete a range
            end = min(len(buf), pos + rng.choice((1, 2, 8, 64, 512)))
            del buf[pos:end]
        elif op == 4 and buf:  # duplicate a range (repeated lines, fields)
            end = min(len(buf), pos + rng.choice((16, 64, 512, 4096)))
            buf[pos:pos] = buf[pos:end] * rng.choice((1, 2, 16))
        elif op == 5:  # truncate
            del buf[pos:]
        elif op == 6 and corpus:  # splice another seed
            other = rng.choice(corpus)
            a = rng.randrange(len(other) + 1)
            buf[pos:] = other[a : a + rng.randrange(1, 4096)]
        elif op == 7 and buf:  # swap two line ends for CR
            i = buf.find(b"\n", pos)
            if i >= 0:
                buf[i] = 13
        elif op == 8:  # an interesting number
            buf[pos:pos] = str(rng.choice((0, 1, 4095, 4096, 2**47, 2**63, 2**64, -1,
                                           10**30))).encode()
        elif op == 9 and buf:  # overwrite with a token
            t = rng.choice(TOKENS)
            buf[pos : pos + len(t)] = t
    return bytes(buf)


def mutate_snapshot(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    """Half the time mutate the decompressed records and compress them again (reaching
    the schema and the text parser), else the raw file (reaching zstd and the framing)."""
    import zstandard

    from vmascope.procfs import snapfile

    if rng.random() < 0.5 or len(data) < snapfile.HEADER.size:
        return mutate(rng, data, corpus)
    try:
        body = zstandard.ZstdDecompressor().decompressobj().decompress(
            data[snapfile.HEADER.size :])
    except zstandard.ZstdError:
        return mutate(rng, data, corpus)
    body = mutate(rng, body, [])
    z = zstandard.ZstdCompressor(level=1, write_checksum=rng.random() < 0.9)
    return data[: snapfile.HEADER.size] + z.compress(body)


# -- the run --------------------------------------------------------------------------------


def _maxrss() -> int:
    """Peak RSS of this address space (VmHWM: unlike ru_maxrss, not inherited from the
    parent across fork and exec)."""
    with open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(target: str, n: int, seed: int = 1, *, trace_every: int = 10, timeout: float = 20.0,
        verbose: bool = False) -> dict:
    """Run ``n`` mutated inputs through ``target``; the figures as a dict."""
    fn = TARGETS[target]
    corpus = seeds(target)
    if not corpus:
        raise SystemExit(f"{target}: no seeds on this machine")
    rng = random.Random(seed)
    mut = mutate_snapshot if target == "snapshot" else mutate
    for s in corpus:  # the seeds themselves must load (or be refused cleanly)
        try:
            fn(s)
        except VmascopeError:
            pass
    base_rss = _maxrss()
    failures: list[dict] = []
    max_n = max_py_ratio = 0.0
    peak_py = 0
    refused = 0
    t0 = time.monotonic()
    for i in range(n):
        data = mut(rng, rng.choice(corpus), corpus)
        max_n = max(max_n, len(data))
        trace = trace_every and i % trace_every == 0
        if trace:
            tracemalloc.start()
        faulthandler.dump_traceback_later(timeout, exit=True)
        try:
            fn(data)
        except VmascopeError:
            refused += 1
        except Exception as exc:  # noqa: BLE001 - the contract is broken: record it
            failures.append({"input": data[:2000].hex(), "size": len(data),
                             "error": f"{type(exc).__name__}: {exc}"[:500],
                             "traceback": traceback.format_exc()[-2000:]})
            if verbose:
                print(failures[-1]["traceback"], file=sys.stderr)
        finally:
            faulthandler.cancel_dump_traceback_later()
            if trace:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                peak_py = max(peak_py, peak)
                if peak > BOUND_PER_BYTE * len(data) + BOUND_SLACK:
                    failures.append({"input": data[:2000].hex(), "size": len(data),
                                     "error": f"Python heap peak {peak} bytes over the bound"})
                max_py_ratio = max(max_py_ratio, peak / max(len(data), 1))
        rss = _maxrss() - base_rss
        if CHECK_RSS and rss > BOUND_PER_BYTE * max_n + BOUND_SLACK:
            failures.append({"input": data[:2000].hex(), "size": len(data),
                             "error": f"peak RSS grew by {rss} bytes, over the bound"})
            break
    return {
        "target": target,
        "inputs": n,
        "seeds": len(corpus),
        "refused": refused,
        "accepted": n - refused - len(failures),
        "failures": len(failures),
        "failure_samples": failures[:5],
        "largest_input": int(max_n),
        "peak_python_heap": peak_py,
        "peak_rss_growth": max(0, _maxrss() - base_rss),
        "bound_for_largest": int(BOUND_PER_BYTE * max_n + BOUND_SLACK),
        "seconds": round(time.monotonic() - t0, 1),
    }


# -- large inputs, each in a fresh process ------------------------------------------------------

_PROBE = r"""
import io, os, resource, sys
sys.path.insert(0, sys.argv[1])
from fuzz.harness import TARGETS, _maxrss
from vmascope.errors import VmascopeError
target, path = sys.argv[2], sys.argv[3]
data = open(path, "rb").read()
try:
    TARGETS[target](b"")  # imports every module the target uses: not the input's cost
except VmascopeError:
    pass
base = _maxrss()
try:
    TARGETS[target](data)
    outcome = "accepted"
except VmascopeError as exc:
    outcome = "refused: " + str(exc)[:120]
print(len(data), _maxrss() - base, outcome)
"""


def big_inputs() -> list[tuple[str, str, bytes]]:
    """Inputs built to use memory or time: (name, target, bytes)."""
    import struct

    import zstandard

    from vmascope.procfs import snapfile

    out = []
    head = b"00400000-00401000 r--p 00000000 00:00 0\n"
    wide = head + b"".join(b"F%d: 4 kB\n" % i for i in range(128))
    out.append(("128 smaps fields + 20 MB of bare mapping lines", "smaps",
                wide + b"0-1 ---p 0 0:0 0\n" * (20_000_000 // 17)))
    out.append(("20 MB of one maps line per 4 KiB page", "maps", b"".join(
        b"%x-%x rw-p 0 0:0 0\n" % (i << 12, (i + 1) << 12) for i in range(1, 700_000))))
    out.append(("20 MB of CR-only line ends", "maps", b"".join(
        b"%x-%x rw-p 0 0:0 0\r" % (i << 12, (i + 1) << 12) for i in range(1, 700_000))))
    out.append(("20 MB of numa_maps lines", "numa_maps", b"".join(
        b"%x default anon=1 N0=1\n" % (i << 12) for i in range(1, 700_000))))

    def bomb(section: bytes, total: int, fill: bytes) -> bytes:
        z = zstandard.ZstdCompressor(level=19).compressobj()
        parts = [snapfile.HEADER.pack(snapfile.MAGIC, snapfile.FORMAT_VERSION)]
        meta = b'{"meta": {}, "sections": ["maps"]}'
        parts.append(z.compress(b"S\x09\x00meta.json" + b"D" + struct.pack("<I", len(meta))
                                + meta))
        parts.append(z.compress(b"S" + struct.pack("<H", len(section)) + section))
        block = fill * (1 << 20)
        left = total
        while left:
            k = min(left, snapfile.MAX_DATA)
            parts.append(z.compress(b"D" + struct.pack("<I", k)))
            for _ in range(k // len(block)):
                parts.append(z.compress(block))
            parts.append(z.compress(block[: k % len(block)]))
            left -= k
        parts.append(z.compress(b"E") + z.flush())
        return b"".join(parts)

    out.append(("1 GiB of newlines in a maps section", "snapshot", bomb(b"maps", 1 << 30, b"\n")))
    out.append(("1 GiB in a status section", "snapshot", bomb(b"status", 1 << 30, b"x")))
    out.append(("200 MiB of bare mapping lines in a snapshot", "snapshot",
                bomb(b"maps", 200 << 20, b"0-1 ---p 0 0:0 0\n" * 4)))
    out.append(("mbind bind:0-99999999", "ops", b"mbind 0 1p bind:0-99999999\n"))
    out.append(("a 4,400-digit number", "ops", b"munmap " + b"9" * 4400 + b" 1p\n"))
    out.append(("100,000 mmap ops", "ops", b"".join(
        b"mmap %dp 1p rw- private,fixed\n" % (2 * i) for i in range(100_000))))
    return out


def run_big(verbose: bool = False) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="vmascope-fuzz-") as tmp:
        for name, target, data in big_inputs():
            path = Path(tmp, "input")
            path.write_bytes(data)
            t = time.monotonic()
            proc = subprocess.run([sys.executable, "-c", _PROBE, str(ROOT), target, str(path)],
                                  capture_output=True, text=True, timeout=300,
                                  cwd=str(ROOT))
            seconds = time.monotonic() - t
            if proc.returncode != 0:
                rows.append({"input": name, "target": target, "size": len(data),
                             "ok": False, "error": proc.stderr[-1000:]})
                continue
            size, grew, outcome = proc.stdout.split(" ", 2)
            bound = BOUND_PER_BYTE * int(size) + BOUND_SLACK
            rows.append({"input": name, "target": target, "size": int(size),
                         "rss_growth": int(grew), "bound": bound,
                         "ok": int(grew) <= bound, "outcome": outcome.strip(),
                         "seconds": round(seconds, 2)})
            if verbose:
                print(rows[-1], file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    ap.add_argument("--n", type=int, default=100_000, help="inputs per target")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--trace-every", type=int, default=10,
                    help="measure the Python heap on every Nth input (0: never)")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per input")
    ap.add_argument("--big", action="store_true",
                    help="also run the large inputs, each in a fresh process")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    names = list(TARGETS) if args.target == "all" else [args.target]
    results = []
    if not args.json:
        from vmascope.procfs import _fastparse

        print(f"parser extension: {_fastparse.__file__}", flush=True)
    for name in names:
        res = run(name, args.n, args.seed, trace_every=args.trace_every,
                  timeout=args.timeout, verbose=args.verbose)
        results.append(res)
        if not args.json:
            print(f"{name:10} {res['inputs']:>8} inputs  {res['failures']} failures  "
                  f"{res['refused']} refused  largest {res['largest_input']} B  "
                  f"peak heap {res['peak_python_heap'] / MB:.1f} MiB  "
                  f"RSS +{res['peak_rss_growth'] / MB:.1f} MiB  {res['seconds']} s",
                  flush=True)
    big = run_big(args.verbose) if args.big else []
    if not args.json:
        for row in big:
            if "rss_growth" in row:
                print(f"big: {row['input']}: {row['size']} B, RSS +{row['rss_growth'] / MB:.0f}"
                      f" MiB (bound {row['bound'] / MB:.0f} MiB), {row['seconds']} s, "
                      f"{row['outcome'][:70]}")
            else:
                print(f"big: {row['input']}: FAILED {row['error']}")
    else:
        print(json.dumps({"targets": results, "big": big}, indent=1))
    bad = sum(r["failures"] for r in results) + sum(not r["ok"] for r in big)
    for r in results:
        for f in r["failure_samples"]:
            print(f"FAIL {r['target']}: {f['error']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
