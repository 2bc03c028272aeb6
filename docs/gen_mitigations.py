"""Regenerate the measured parts of docs/mitigations.md and its plots.

    .venv/bin/python docs/gen_mitigations.py [--kernels host,6.1,6.12,newest]

Runs the default `lab compare` matrix and the seed's table (dotnet-regions at three
sizes) on real kernels beside the model, writes the plots to docs/mitigations/ and the
tables between the GENERATED markers of docs/mitigations.md. Needs root, qemu and the
Debian kernels (fetched on first use).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from vmascope.kernel.whatif import HYPOTHESES  # noqa: E402
from vmascope.lab import kernels, workbench  # noqa: E402
from vmascope.report import workbench as rw  # noqa: E402
from vmascope.workloads import names  # noqa: E402

DOC = HERE / "mitigations.md"
PLOTS = HERE / "mitigations"
BEGIN, END = "<!-- GENERATED: begin -->", "<!-- GENERATED: end -->"
SEED_SIZES = ("0.01", "0.1", "1")
SEED_PAPER = {"0.01": "222/787", "0.1": "476/1363", "1": "35106/35825"}


def matrix_tables(mx: workbench.Matrix) -> list[str]:
    out = []
    for w in mx.workloads:
        out += [f"#### {w}", "",
                "| strategy | " + " | ".join(mx.kernels) + " | RSS MiB | commit MiB | calls |",
                "| --- | " + " | ".join("---:" for _ in mx.kernels) + " | ---: | ---: | ---: |"]
        for s in mx.strategies:
            cells = [mx.cell(w, s, k) for k in mx.kernels]
            first = cells[0]
            assert first is not None
            m = first.measured
            out.append(f"| {s} | " + " | ".join(rw._vmas(c) for c in cells)
                       + f" | {m.resident_kb / 1024:.1f} | {m.committed_kb / 1024:.1f} "
                       f"| {m.syscalls} |")
        out += ["", f"![map count over the ops of {w}, per strategy, on {mx.kernels[0]}]"
                f"(mitigations/{w}.png)", ""]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernels", default="host,6.1,6.12,newest")
    args = ap.parse_args()
    ks = kernels.resolve_list(args.kernels)
    ws, ss = names()
    print("the default matrix ...", flush=True)
    mx = workbench.compare_matrix(workbench.scripts_for(ws, ss), ks, max_map_count=300)
    for k in {k.name: k for k in (ks[1] if len(ks) > 1 else ks[0], ks[-1])}.values():
        for h in HYPOTHESES:
            workbench.what_if(mx, k, [h])
    PLOTS.mkdir(exist_ok=True)
    for w in ws:
        (PLOTS / f"{w}.png").write_bytes(rw.plot_png(mx, w, ks[0].name))
    print("the seed's table ...", flush=True)
    seed = {}
    for size in SEED_SIZES:
        seed[size] = workbench.compare_matrix(
            workbench.scripts_for(["dotnet-regions"], ["mprotect", "prefault"], size=size),
            ks, overcommit=False)
    ok, total = mx.agreement
    lines = [BEGIN, "",
             f"Measured with `vmascope lab compare --kernel {args.kernels} "
             f"--max-map-count 300` (regenerate: `python docs/gen_mitigations.py`). The "
             f"model's prediction equals the measurement in **{ok} of {total} runs**; a "
             "cell would read `measured≠predicted` otherwise. `!` marks a run in which an "
             "op failed.", "",
             "### VMAs each strategy leaves, per workload and kernel", "",
             "RSS (smaps Anonymous), commit (VM_ACCOUNT bytes) and calls are those on "
             f"{ks[0].name}.", ""]
    lines += matrix_tables(mx)
    lines += ["### vm.overcommit_memory: which strategies are possible at all", "", "```"]
    lines += rw._overcommit_text(mx) + ["```", "",
                                        "### At vm.max_map_count 300", "", "```"]
    lines += rw._limit_text(mx) + ["```", "", "### HYPOTHETICAL kernels", "", "```"]
    lines += rw._hypothetical_text(mx) + ["```", "",
                                          "### The seed's table, reproduced", "",
                                          "dotnet-regions at the seed's three live-data "
                                          "sizes (scaled by its `scale` parameter, 0.25): "
                                          "the reservation's VMAs / the whole process's, "
                                          "measured (the model agreed in every run: "
                                          "see the check column).", "",
                                          "| live data | the seed's post, GC/total | "
                                          + " | ".join(k.name for k in ks)
                                          + " | with prefault, " + ks[0].name
                                          + " | check |",
                                          "| --- | --- | " + " | ".join("---" for _ in ks)
                                          + " | --- | --- |"]
    for size in SEED_SIZES:
        sm = seed[size]
        row = []
        for k in ks:
            c = sm.cell("dotnet-regions", "mprotect", k.name)
            assert c is not None
            row.append(f"{c.measured.vmas}/{c.measured.map_count}")
        hack = sm.cell("dotnet-regions", "prefault", ks[0].name)
        assert hack is not None
        sok, stotal = sm.agreement
        lines.append(f"| {size} GB | {SEED_PAPER[size]} | " + " | ".join(row)
                     + f" | {hack.measured.vmas}/{hack.measured.map_count} "
                     f"| {sok}/{stotal} agree |")
    lines += ["", END]
    text = DOC.read_text()
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    DOC.write_text(text[:start] + "\n".join(lines) + text[stop:])
    print(f"wrote {DOC} and {len(ws)} plots in {PLOTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
