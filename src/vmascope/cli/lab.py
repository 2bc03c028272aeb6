"""``vmascope lab run|verify|scenarios``: op scripts on real kernels, beside the simulator."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .common import print_json


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "lab", help="run op scripts on real kernels (host, Debian kernels in microVMs)",
        description="Run op scripts on the host kernel and on Debian kernels booted in qemu, "
                    "beside the simulator's prediction for each kernel.")
    sub = p.add_subparsers(dest="lab_cmd", metavar="COMMAND", parser_class=type(p))

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
    r.add_argument("--json", action="store_true", help="print JSON instead of tables")
    r.set_defaults(run=run_run)

    v = sub.add_parser("verify", help="random scripts on real kernels vs the simulator")
    v.add_argument("--kernel", default="host", help="comma list as for `lab run`")
    v.add_argument("--cases", type=int, default=200, help="random scripts per kernel")
    v.add_argument("--seed", type=int, default=1, help="random seed (same seed, same scripts)")
    v.add_argument("--minimise", type=int, default=5, metavar="K",
                   help="minimise at most K disagreements per kernel (default 5)")
    v.add_argument("--batch", type=int, default=500, help="scripts per microVM boot")
    v.add_argument("--json", action="store_true")
    v.set_defaults(run=run_verify)

    s = sub.add_parser("scenarios", help="list the built-in scenarios")
    s.add_argument("name", nargs="?", help="print this scenario's script")
    s.set_defaults(run=run_scenarios)
    p.set_defaults(run=lambda args: (p.print_help(sys.stderr), 2)[1])


def _load(spec: str, max_map_count: int | None) -> tuple[str, list[Any]]:
    from ..errors import UsageError
    from ..lab import scenarios
    from ..ops.language import load_script

    if spec == "-":
        return "<stdin>", load_script(sys.stdin.read(), "<stdin>")
    if os.path.exists(spec):
        try:
            with open(spec, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{spec}: cannot read ({exc})") from None
        ops = load_script(text, spec)
        if not ops:
            raise UsageError(f"{spec}: the script has no ops")
        return os.path.basename(spec), ops
    return spec, scenarios.get(spec, max_map_count=max_map_count)


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
    from ..lab import compare, kernels, procs, runner

    loaded = [_load(spec, args.max_map_count) for spec in args.scripts]
    ks = kernels.resolve_list(args.kernel)
    with procs.signal_guard():
        runs = runner.run_many(ks, [ops for _, ops in loaded], max_map_count=args.max_map_count,
                               host_sysctl=args.host_sysctl)
    have_sim = compare.simulator_available()
    docs = []
    for index, (name, ops) in enumerate(loaded):
        out = [_entry(run, index, name, ops, args.max_map_count, have_sim) for run in runs]
        docs.append({"script": name, "ops": len(ops), "kernels": out})
        if not args.json:
            _print_run(name, ops, out, have_sim)
    if args.json:
        print_json(docs[0] if len(docs) == 1 else docs)
    return 0


def _entry(run: Any, index: int, name: str, ops: list[Any], max_map_count: int | None,
           have_sim: bool) -> dict[str, Any]:
    from ..lab import compare
    from ..lab.verify import DEFAULT_MAX_MAP_COUNT, sim_kernel

    res = run.results[index]
    real = res.to_json(ops, script=name, kernel=run.release)
    entry: dict[str, Any] = {"kernel": run.kernel.name, "release": run.release,
                             "seconds": round(run.seconds, 2), "real": real,
                             "simulator": None, "agree": None, "differences": []}
    if have_sim:
        limit = max_map_count or (_host_limit() if run.kernel.is_host else DEFAULT_MAX_MAP_COUNT)
        others = max(res.process_map_count - len(res.vmas), 0)
        sim = compare.simulate(ops, sim_kernel(run.kernel), max_map_count=limit - others,
                               script=name)
        entry["simulator"] = sim
        real["epoch"] = sim.get("epoch")  # the behaviour epoch of this release
        entry["differences"] = compare.differences(real, sim)
        entry["agree"] = not entry["differences"]
    entry["first_error"] = _first_error(ops, real)
    return entry


def _host_limit() -> int:
    try:
        with open("/proc/sys/vm/max_map_count") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 65530


def _first_error(ops: list[Any], real: dict[str, Any]) -> dict[str, Any] | None:
    from ..ops.language import format_op

    if not real["errors"]:
        return None
    e = real["errors"][0]
    op = ops[e["op"]]
    return {"op": e["op"], "line": e["line"], "kind": op.kind, "text": format_op(op),
            "errno": e["errno"]}


def _vma_text(v: dict[str, Any]) -> str:
    from ..lab.compare import IGNORED_FLAGS, _pages

    flags = " ".join(f for f in v.get("flags") or () if f not in IGNORED_FLAGS)
    text = f"{_pages(int(v['start'], 16))}-{_pages(int(v['end'], 16))} {v['perms']} {flags}"
    return text + (f" {v['name']}" if v.get("name") else "")


def _print_run(name: str, ops: list[Any], out: list[dict[str, Any]], have_sim: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    summary = Table(title=f"{name}: {len(ops)} ops (real / simulator)")
    for col in ("kernel", "release", "VMAs", "errors", "faults", "verdict"):
        summary.add_column(col)
    for e in out:
        real, sim = e["real"], e["simulator"]

        def pair(key: str, count: int) -> str:
            return f"{count}" if sim is None else f"{count} / {len(sim[key])}"

        verdict = "-" if sim is None else ("[green]agree[/]" if e["agree"] else "[bold red]DIFFER[/]")
        summary.add_row(e["kernel"], e["release"], pair("vmas", real["map_count"]),
                        pair("errors", len(real["errors"])), pair("faults", len(real["faults"])),
                        verdict)
    console.print(summary)
    if not have_sim:
        console.print("[yellow]the simulator (vmascope.kernel.simulator) is not installed: "
                      "real results only[/]")
    small = all(len(e["real"]["vmas"]) <= 40 for e in out)
    if small:
        vmas = Table(title="VMAs in the arena (pages): real, and the simulator's = or ≠")
        for e in out:
            vmas.add_column(f"{e['kernel']} real")
            if have_sim:
                vmas.add_column(f"{e['kernel']} sim")
        rows = max(max(len(e["real"]["vmas"]), len((e["simulator"] or {}).get("vmas", [])))
                   for e in out)
        for i in range(rows):
            cells = []
            for e in out:
                rv = e["real"]["vmas"]
                r = _vma_text(rv[i]) if i < len(rv) else ""
                cells.append(r)
                if have_sim:
                    sv = (e["simulator"] or {}).get("vmas", [])
                    s = _vma_text(sv[i]) if i < len(sv) else ""
                    if s != r:
                        cells[-1] = f"[red]{r}[/]"
                        s = f"[bold red]≠ {s or '(none)'}[/]"
                    elif s:
                        s = "[green]=[/]"
                    cells.append(s)
            vmas.add_row(*cells)
        console.print(vmas)
    for e in out:
        fe = e["first_error"]
        if fe:
            console.print(f"{e['kernel']}: first error at op {fe['op']} (line {fe['line']}): "
                          f"{fe['text']} -> {fe['errno']}; {e['real']['map_count']} VMAs in the "
                          f"arena, {e['real']['process_map_count']} in the process")
        for d in e["differences"]:
            console.print(f"[red]{e['kernel']}: {d}[/]")


def run_verify(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..errors import UsageError
    from ..lab import compare, kernels, procs, verify

    if not compare.simulator_available():
        raise UsageError("lab verify needs the simulator (vmascope.kernel.simulator)")
    if args.cases < 1:
        raise UsageError("--cases: expected a positive number")
    ks = kernels.resolve_list(args.kernel)
    console = Console(stderr=True, highlight=False)
    import concurrent.futures

    verdicts: list[verify.KernelVerdict] = []
    with procs.signal_guard(), Progress(TextColumn("{task.description}"), BarColumn(),
                                        MofNCompleteColumn(), TimeElapsedColumn(),
                                        console=console, transient=not console.is_terminal) as bar:
        tasks = {k.name: bar.add_task(k.name, total=args.cases) for k in ks}

        def one(k: kernels.Kernel) -> verify.KernelVerdict:
            heap = not k.is_host or verify.host_can_set_brk()
            scripts = verify.random_scripts(args.cases, args.seed, heap=heap)
            return verify.verify_kernel(
                k, scripts, batch=args.batch, minimise=args.minimise,
                progress=lambda n: bar.advance(tasks[k.name], n))

        with concurrent.futures.ThreadPoolExecutor(max_workers=len(ks)) as pool:
            futures = [pool.submit(one, k) for k in ks]
            try:
                verdicts = [f.result() for f in futures]
            except BaseException:
                procs.stop()
                raise
    if args.json:
        print_json([_verdict_json(v) for v in verdicts])
    else:
        _print_verdicts(verdicts)
    return 0 if all(not v.disagreements for v in verdicts) else 1


def _verdict_json(v: Any) -> dict[str, Any]:
    from ..lab.verify import script_lines

    return {
        "kernel": v.kernel.name, "release": v.release, "cases": v.cases, "agreed": v.agreed,
        "percent": round(v.percent, 3), "seconds": round(v.seconds, 1),
        "scripts_per_minute": round(60 * v.cases / v.seconds) if v.seconds else None,
        "disagreements": len(v.disagreements),
        "minimise_seconds": round(v.minimise_seconds, 1),
        "minimised": [{"script": script_lines(d.script), "differences": d.differences,
                       "similar": d.similar, "real": d.real, "simulator": d.sim}
                      for d in v.minimised],
    }


def _print_verdicts(verdicts: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..lab.verify import script_lines

    console = Console(highlight=False)
    table = Table(title="lab verify: real kernel vs simulator")
    for col in ("kernel", "release", "cases", "agree", "%", "scripts/min"):
        table.add_column(col)
    for v in verdicts:
        rate = f"{60 * v.cases / v.seconds:.0f}" if v.seconds else "-"
        pct = f"{v.percent:.2f}"
        table.add_row(v.kernel.name, v.release, str(v.cases), str(v.agreed),
                      pct if v.agreed == v.cases else f"[bold red]{pct}[/]", rate)
    console.print(table)
    for v in verdicts:
        for i, d in enumerate(v.minimised, 1):
            console.print(f"\n[bold]{v.kernel.name} disagreement {i}[/] ({d.similar} "
                          f"script(s) of this kind; minimised from {len(d.original)} to "
                          f"{len(d.script)} ops):")
            for line in script_lines(d.script):
                console.print(f"    {line}")
            for diff in d.differences or ["(no longer disagrees when re-run)"]:
                console.print(f"  [red]{diff}[/]")
