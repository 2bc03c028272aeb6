"""``vmascope lab run|verify|scenarios``: op scripts on real kernels, beside the simulator."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import add_format, add_group, add_output, print_json


def register(subparsers: Any) -> None:
    sub = add_group(subparsers, "lab",
                    "run op scripts on real kernels (host, Debian kernels in microVMs)",
                    "Run op scripts on the host kernel and on Debian kernels booted in qemu, "
                    "beside the simulator's prediction for each kernel.")

    r = sub.add_parser("run", help="run a script or a scenario on one or more kernels")
    r.add_argument("scripts", nargs="+", metavar="SCRIPT|SCENARIO",
                   help="an op script file (text or JSONL), - for stdin, or a scenario: "
                        "seed, seed-hack, merge-..., exhaust (see `vmascope lab scenarios`); "
                        "several run in the same boot of each kernel")
    r.add_argument("--kernel", default="host",
                   help="comma list of host, 6.1, 6.12, newest, or paths to a vmlinuz "
                        "(default: host)")
    r.add_argument("--max-map-count", type=int, metavar="N",
                   help="vm.max_map_count for the run (set inside microVMs; on the host it "
                        "may only be raised unless --host-sysctl; always restored)")
    r.add_argument("--host-sysctl", action="store_true",
                   help="allow --max-map-count to lower the host's vm.max_map_count "
                        "for the duration of the run")
    add_format(r, json_help="print JSON instead of tables (= --format json)")
    add_output(r)
    r.set_defaults(run=run_run)

    v = sub.add_parser("verify", help="random scripts on real kernels vs the simulator")
    v.add_argument("--kernel", default="host", help="comma list as for `lab run`")
    v.add_argument("--cases", type=int, default=200, help="random scripts per kernel")
    v.add_argument("--seed", type=int, default=1, help="random seed (same seed, same scripts)")
    v.add_argument("--minimise", type=int, default=5, metavar="K",
                   help="minimise at most K disagreements per kernel (default 5)")
    v.add_argument("--batch", type=int, default=500, help="scripts per microVM boot")
    add_format(v)
    add_output(v)
    v.set_defaults(run=run_verify)

    s = sub.add_parser("scenarios", help="list the built-in scenarios")
    s.add_argument("name", nargs="?", help="print this scenario's script")
    s.set_defaults(run=run_scenarios)


def run_scenarios(args: argparse.Namespace) -> int:
    from ..lab import scenarios

    if args.name:
        if args.name == "exhaust":
            print("# exhaust: generated for vm.max_map_count (see --max-map-count); its first lines:")
            from ..ops.language import script_text
            sys.stdout.write(script_text(scenarios.exhaust(600)[:13]))
            return 0
        sys.stdout.write(scenarios.text(args.name))
        return 0
    for name in scenarios.names():
        print(name)
    return 0


def run_run(args: argparse.Namespace) -> int:
    from ..lab import kernels, session
    from ..report.lab import print_run, run_json

    from ..report.progress import display

    loaded = [session.load_spec(spec, args.max_map_count) for spec in args.scripts]
    ks = kernels.resolve_list(args.kernel)
    with display(args.json) as bar:
        what = ", ".join(name for name, _ in loaded)
        tasks = {k.name: bar.add_task(f"{k.name}: {what}", total=None, state="waiting")
                 for k in ks}
        runs = session.run(loaded, ks, max_map_count=args.max_map_count,
                           host_sysctl=args.host_sysctl,
                           progress=lambda k, state: bar.update(tasks[k.name], state=state))
    if args.json:
        print_json(run_json(runs))
    else:
        from rich.console import Console

        print_run(runs, Console(highlight=False))
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..errors import UsageError
    from ..lab import kernels, session
    from ..report.lab import print_verdicts, verdict_json
    from ..report.progress import display

    if args.cases < 1:
        raise UsageError("--cases: expected a positive number")
    ks = kernels.resolve_list(args.kernel)
    with display(args.json, bar=True) as bar:
        tasks = {k.name: bar.add_task(f"{k.name}: random scripts vs the simulator",
                                      total=args.cases, state="") for k in ks}
        verdicts = session.verify_all(
            ks, cases=args.cases, seed=args.seed, batch=args.batch, minimise=args.minimise,
            progress=lambda k, n: bar.advance(tasks[k.name], n))
    if args.json:
        print_json([verdict_json(v) for v in verdicts])
    else:
        print_verdicts(verdicts, Console(highlight=False))
    return 0 if all(not v.disagreements for v in verdicts) else 1
