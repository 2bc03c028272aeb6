"""vmascope simulate: run op scripts in the kernel VMA simulator."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..kconst import DEFAULT_MAX_MAP_COUNT

from ..errors import UsageError
from .common import add_format, add_output, add_verb, print_json


def register(subparsers: Any) -> None:
    p = add_verb(subparsers, "simulate", "run op scripts in the kernel VMA simulator",
                 "Simulate op scripts (docs/op-language.md) on a model of a kernel's VMA "
                 "bookkeeping and print the resulting VMAs, errors and faults.", run=run)
    p.add_argument("scripts", nargs="+", metavar="SCRIPT|SCENARIO",
                   help="an op script (text or JSONL), - for standard input, or a scenario: "
                   "seed, seed-hack, merge-..., exhaust (see `vmascope lab scenarios`)")
    p.add_argument("--kernel", metavar="RELEASE",
                   help="kernel release to model, e.g. 6.1, 6.12.117, 6.18, 7.2.13 "
                   "(default: the running kernel)")
    p.add_argument("--max-map-count", type=int, default=DEFAULT_MAX_MAP_COUNT, metavar="N",
                   help="vm.max_map_count of the simulated process (default %(default)s)")
    p.add_argument("--trace", action="store_true",
                   help="print the decision log: splits, merge attempts, anon_vmas")
    add_format(p, json_help="one JSON object per script per line (= --format json)")
    add_output(p)
    p.add_argument("--anon-names", action="store_true",
                   help="model a kernel built with CONFIG_ANON_VMA_NAME (Debian's cloud "
                   "kernels are not: the name op fails with EINVAL)")
    p.add_argument("--thp", choices=("always", "madvise", "never"), default=None,
                   help="transparent_hugepage/enabled of the modelled machine (read faults "
                   "on the huge-page path create an anon_vma); default: this machine's "
                   "setting for the running kernel, never otherwise")


def run(args: argparse.Namespace) -> int:
    from .. import host
    from ..kernel.sim import simulate_ops
    from ..lab.executor import ARENA_BASE
    from ..lab.scenarios import load
    from ..report.simulate import outcome_json, outcome_text

    if args.max_map_count < 1:
        raise UsageError("--max-map-count must be at least 1")
    epoch = host.epoch_for(args.kernel, anon_vma_name=True if args.anon_names else None)
    thp = args.thp or host.machine_thp(epoch.release)
    if args.scripts.count("-") > 1:
        raise UsageError("standard input (-) can be given only once")
    # Parse everything first: a bad script stops the run before any output.
    parsed = []
    for path in args.scripts:
        name = "<stdin>" if path == "-" else path
        # a scenario goes where the lab's executor puts it: the lab's simulator column
        parsed.append((name, load(path, max_map_count=args.max_map_count, base=ARENA_BASE)))
    for name, ops in parsed:
        result = simulate_ops(ops, epoch, max_map_count=args.max_map_count,
                              trace=args.trace, thp=thp, script=name)
        if args.json:
            print_json(outcome_json(result, trace=args.trace))
        else:
            sys.stdout.write(outcome_text(result, trace=args.trace))
    return 0
