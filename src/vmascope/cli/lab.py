"""``vmascope lab run|verify|scenarios``: op scripts on real kernels, beside the simulator."""

from __future__ import annotations

import argparse
import os
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
                   help="comma list of host, 5.10, 6.1, 6.12, stable, newest, next, or paths "
                        "to a vmlinuz; all for every one (default: host)")
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
    v.add_argument("--cases", type=int, default=200,
                   help="scripts per kernel and family (default 200)")
    v.add_argument("--family", default="random", metavar="F[,F...]",
                   help="script families: random (the default), mremap, a workload of "
                        "`lab compare --list` (dotnet-regions, jit-wx, ...), or all")
    v.add_argument("--seed", type=int, default=1, help="random seed (same seed, same scripts)")
    v.add_argument("--minimise", type=int, default=5, metavar="K",
                   help="minimise at most K disagreements per kernel (default 5)")
    v.add_argument("--batch", type=int, default=500, help="scripts per microVM boot")
    v.add_argument("--kernel-view", action="store_true",
                   help="read each arena with the BPF kernel-view reader (in the microVMs "
                   "too) and compare the anon_vma grouping as well (the same as the "
                   "setting VMASCOPE_KERNEL_VIEW=1)")
    add_format(v)
    add_output(v)
    v.set_defaults(run=run_verify)

    d = sub.add_parser("diff-kernels",
                       help="what changed between two real kernels, minimised and named",
                       description="Run the scenarios and random scripts on two kernels, "
                       "minimise every kind of difference and name the kernel change "
                       "behind it (the simulator tries one behaviour switch at a time).")
    d.add_argument("scripts", nargs="*", metavar="SCRIPT|SCENARIO",
                   help="compare these (default: every scenario but exhaust)")
    d.add_argument("--kernel", required=True, metavar="A,B",
                   help="the two kernels, as for `lab run` (older first), e.g. 6.12,host")
    d.add_argument("--cases", type=int, default=500, help="random scripts (default 500)")
    d.add_argument("--seed", type=int, default=1, help="random seed")
    d.add_argument("--minimise", type=int, default=5, metavar="K",
                   help="minimise and name at most K kinds of difference (default 5)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(run=run_diff)

    c = sub.add_parser(
        "compare", help="allocator workloads x mitigation strategies x kernels",
        description="Run allocator workloads under mitigation strategies on real kernels "
        "beside the model's prediction: VMAs left, peak map count, the op refused at a "
        "limit, memory cost, calls, which strategies vm.overcommit_memory 0/1/2 allow, "
        "and HYPOTHETICAL kernels. `--list` says what there is.")
    c.add_argument("--workload", default="all", metavar="W[,W...]",
                   help="workloads (default all)")
    c.add_argument("--strategy", default="all", metavar="S[,S...]",
                   help="strategies (default all)")
    c.add_argument("--kernel", default="host,6.1,6.12,newest",
                   help="comma list as for `lab run` (default host,6.1,6.12,newest)")
    c.add_argument("--max-map-count", type=int, metavar="N",
                   help="also run at this limit (inside microVMs; on the host inside the "
                        "process, without touching the sysctl) and say which op fails")
    c.add_argument("--size", help="a workload size preset (dotnet-regions: 0.01, 0.1, 1)")
    c.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a workload parameter (repeatable)")
    c.add_argument("--seed", type=int, default=1, help="random seed of the workloads")
    c.add_argument("--what-if", default="all", metavar="RULE[,RULE...]",
                   help="HYPOTHETICAL rules to simulate on the first and the last kernel: "
                        "anon-merge, eager-anon-vma, all (default) or none")
    c.add_argument("--no-overcommit", action="store_true",
                   help="skip the vm.overcommit_memory 1 and 2 runs")
    c.add_argument("--list", action="store_true", help="list workloads and strategies")
    add_format(c, ("text", "json", "html"))
    add_output(c)
    c.set_defaults(run=run_compare)

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
    if args.kernel_view:
        from ..errors import KernelViewUnavailable
        from ..procfs import kview

        try:
            kview.reader_path()  # built here, once, for the host and the microVMs
        except KernelViewUnavailable as exc:
            raise UsageError(f"--kernel-view: {exc}") from None
        os.environ["VMASCOPE_KERNEL_VIEW"] = "1"  # read by the backends
    from ..lab.verify import family_names

    families = family_names() if args.family == "all" else [
        f.strip() for f in args.family.split(",") if f.strip()]
    unknown = [f for f in families if f not in family_names()]
    if unknown or not families:
        bad = ",".join(unknown) or repr(args.family)
        raise UsageError(f"--family {bad}: unknown (expected "
                         f"all or a comma list of {', '.join(family_names())})")
    ks = kernels.resolve_list(args.kernel)
    with display(args.json, bar=True) as bar:
        what = (f"{families[0]} scripts" if len(families) == 1
                else f"{len(families)} families of scripts")
        tasks = {k.name: bar.add_task(f"{k.name}: {what} vs the simulator",
                                      total=args.cases * len(families), state="") for k in ks}
        verdicts = session.verify_all(
            ks, cases=args.cases, seed=args.seed, batch=args.batch, minimise=args.minimise,
            families=families, progress=lambda k, n: bar.advance(tasks[k.name], n))
    if args.json:
        print_json([verdict_json(v) for v in verdicts])
    else:
        print_verdicts(verdicts, Console(highlight=False))
    return 0 if all(not v.disagreements for v in verdicts) else 1


def run_diff(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..errors import UsageError
    from ..lab import kernels, procs
    from ..lab.diffkernels import diff_kernels
    from ..report.lab import diff_json, print_diff

    ks = kernels.resolve_list(args.kernel)
    if len(ks) != 2:
        raise UsageError("--kernel: expected exactly two kernels, e.g. 6.12,host")
    if args.cases < 0:
        raise UsageError("--cases: expected 0 or more")
    console = Console(stderr=True, highlight=False)
    from ..lab import session

    loaded = [session.load_spec(s, None)[1] for s in args.scripts] or None
    total = args.cases + (len(loaded) if loaded else len(kernels_scenarios()))
    with procs.signal_guard(), Progress(
            TextColumn(f"{ks[0].name} vs {ks[1].name}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console, transient=not console.is_terminal) as bar:
        task = bar.add_task("scripts", total=total)
        diff = diff_kernels(ks[0], ks[1], cases=args.cases, seed=args.seed,
                            minimise=args.minimise, scripts=loaded,
                            progress=lambda n: bar.advance(task, n))
    if args.json:
        print_json(diff_json(diff))
    else:
        print_diff(diff, Console(highlight=False))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..kernel.whatif import HYPOTHESES
    from ..lab import kernels, workbench
    from ..report import workbench as rw
    from ..report.progress import display
    from ..workloads import STRATEGIES, WORKLOADS, names

    known_w, known_s = names()
    if args.list:
        sys.stdout.write(rw.list_text([WORKLOADS[w] for w in known_w],
                                      [STRATEGIES[s] for s in known_s]))
        return 0
    params: dict[str, str] = {}
    for item in args.param:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--param {item!r}: expected KEY=VALUE")
        params[key] = value
    ws = workbench.parse_list(args.workload, known_w, "workload")
    ss = workbench.parse_list(args.strategy, known_s, "strategy")
    what_if = [] if args.what_if == "none" else workbench.parse_list(
        args.what_if, list(HYPOTHESES), "what-if")
    workbench.check_limit(args.max_map_count)
    try:  # the names and parameters are checked before any kernel is fetched
        scripts = workbench.scripts_for(ws, ss, seed=args.seed, size=args.size,
                                        params=params)
    except ValueError as exc:
        raise UsageError(f"--param: {exc}") from None
    ks = kernels.resolve_list(args.kernel)
    with display(args.format == "json") as bar:
        tasks = {k.name: bar.add_task(f"{k.name}: {len(ws)} x {len(ss)} scripts",
                                      total=None, state="waiting") for k in ks}
        mx = workbench.compare_matrix(
            scripts, ks, max_map_count=args.max_map_count, overcommit=not args.no_overcommit,
            progress=lambda k, state: bar.update(tasks[k.name], state=state))
    for k in {k.name: k for k in (ks[0], ks[-1])}.values():
        for rule in what_if:
            workbench.what_if(mx, k, [rule])
    if args.format == "json":
        print_json(rw.to_json(mx))
    elif args.format == "html":
        sys.stdout.write(rw.html_report(mx))
    else:
        sys.stdout.write(rw.text_report(mx))
    ok, total = mx.agreement
    return 0 if ok == total else 1


def kernels_scenarios() -> list[str]:
    from ..lab import scenarios

    return [n for n in scenarios.names() if n != "exhaust"]
