"""Coverage-guided fuzzing (atheris, libFuzzer) of the same targets as fuzz/harness.py.

    python fuzz/atheris_fuzz.py maps --runs 100000
    python fuzz/atheris_fuzz.py snapshot --runs 20000 --max-len 65536

The seeds (live dumps of this machine, captured now) go into a temporary corpus
directory that is removed afterwards. Any exception other than a
vmascope.errors.VmascopeError, a crash, a hang (--timeout) or an RSS above --rss-limit-mb
ends the run with libFuzzer's report and a non-zero exit.

Python code is instrumented for coverage. Run alone, the C extension is not (libFuzzer
sees its effect only through the Python paths it takes); fuzz/atheris_native.sh runs
this on a clang build of the extension with coverage, ASan and UBSan.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(target: str, libfuzzer_args: list[str]) -> None:
    import atheris

    sys.path.insert(0, os.environ.get("VMASCOPE_SRC", str(ROOT / "src")))
    sys.path.insert(0, str(ROOT))
    with atheris.instrument_imports(include=["vmascope"]):
        import vmascope.kernel.sim  # noqa: F401
        import vmascope.ops.language  # noqa: F401
        import vmascope.procfs.load  # noqa: F401
        import vmascope.procfs.parse  # noqa: F401
    from fuzz.harness import TARGETS
    from vmascope.errors import VmascopeError

    fn = TARGETS[target]

    def one(data: bytes) -> None:
        try:
            fn(data)
        except VmascopeError:
            pass

    atheris.Setup([sys.argv[0], *libfuzzer_args], one)
    atheris.Fuzz()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("target", choices=["maps", "smaps", "numa_maps", "snapshot", "ops"])
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--max-len", type=int, default=65536)
    ap.add_argument("--timeout", type=int, default=20, help="seconds per input")
    ap.add_argument("--rss-limit-mb", type=int, default=0,
                    help="default: the interpreter's RSS + 64 x max-len + 64 MiB")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args.child:
        child(args.target, rest)
        return 0
    sys.path.insert(0, str(ROOT))
    from fuzz.harness import seeds

    # The interpreter with numpy and vmascope loaded takes ~65 MiB before any input; the
    # limit leaves it 160 MiB, and 64 x max-len + 64 MiB on top.
    rss = args.rss_limit_mb or (160 + (64 * args.max_len >> 20) + 64)
    with tempfile.TemporaryDirectory(prefix="vmascope-atheris-") as tmp:
        corpus = Path(tmp, "corpus")
        corpus.mkdir()
        for i, s in enumerate(seeds(args.target)):
            (corpus / f"seed-{i}").write_bytes(s[: args.max_len])
        cmd = [sys.executable, __file__, args.target, "--child", str(corpus),
               f"-runs={args.runs}", f"-max_len={args.max_len}", f"-timeout={args.timeout}",
               f"-rss_limit_mb={rss}", f"-seed={args.seed}", "-print_final_stats=1",
               f"-artifact_prefix={tmp}/", *rest]
        proc = subprocess.run(cmd, cwd=tmp)
        if proc.returncode != 0:
            # libFuzzer's artifacts (crash-*, timeout-*, oom-*): shown, and kept in
            # $VMASCOPE_KEEP_CRASHES if that names a directory
            keep = os.environ.get("VMASCOPE_KEEP_CRASHES")
            for p in Path(tmp).iterdir():
                if p.is_file() and p.name.split("-")[0] in ("crash", "timeout", "oom", "leak"):
                    print(f"{p.name}: {p.read_bytes()[:400]!r}", file=sys.stderr)
                    if keep:
                        shutil.copy(p, Path(keep) / p.name)
        return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
