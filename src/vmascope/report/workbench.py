"""``lab compare`` output: text tables (80 columns), JSON, and HTML with a plot of the
map count over the ops per strategy."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..lab.workbench import Cell, Matrix, Setting


def _vmas(c: Cell | None) -> str:
    if c is None:
        return "-"
    m, p = c.measured.vmas, c.predicted.vmas
    text = str(m) if c.agree else f"{m}≠{p}"
    return text + ("!" if c.measured.failure else "")


def _mib(kb: int) -> str:
    return f"{kb / 1024:.1f}"


def text_report(mx: Matrix) -> str:
    """The matrix as plain text, at most 80 columns wide."""
    ok, total = mx.agreement
    out = [f"lab compare: {len(mx.workloads)} workload(s) x {len(mx.strategies)} "
           f"strategies x {len(mx.kernels)} kernel(s), {total} runs",
           f"prediction = measurement in {ok} of {total} runs"
           + ("" if ok == total else "  (≠: measured≠predicted, listed at the end)"),
           "VMAs at the end, per kernel (! = an op failed); RSS and commit (MiB) and",
           f"system calls on {mx.kernels[0]}.", ""]
    kn = mx.kernels
    width = max(7, *(len(k) for k in kn))
    for w in mx.workloads:
        out.append(w)
        head = f"  {'strategy':<13}" + "".join(f"{k:>{width + 1}}" for k in kn)
        out.append(head + f"{'RSS':>7}{'commit':>8}{'calls':>7}")
        for s in mx.strategies:
            row = f"  {s:<13}" + "".join(f"{_vmas(mx.cell(w, s, k)):>{width + 1}}" for k in kn)
            first = mx.cell(w, s, kn[0])
            if first is not None:
                row += (f"{_mib(first.measured.resident_kb):>7}"
                        f"{_mib(first.measured.committed_kb):>8}{first.measured.syscalls:>7}")
            out.append(row)
        out.append("")
    out += _default_limit_text(mx) + _limit_text(mx) + _overcommit_text(mx)
    out += _hypothetical_text(mx)
    bad = [c for c in mx.cells if not c.agree]
    if bad:
        out.append("measured ≠ predicted:")
        for c in bad[:20]:
            out.append(f"  {c.workload} {c.strategy} on {c.kernel} ({c.setting.label}): "
                       f"{c.differences[0]}")
        if len(bad) > 20:
            out.append(f"  ... and {len(bad) - 20} more (see --json)")
    return "\n".join(out).rstrip() + "\n"


def _default_limit_text(mx: Matrix) -> list[str]:
    hit = [c for c in mx.cells if c.setting == mx.settings[0] and c.measured.enomem is not None]
    if not hit:
        return ["at the default vm.max_map_count (65530) no op was refused with ENOMEM", ""]
    out = ["at the default vm.max_map_count, the first op refused with ENOMEM:"]
    out += [f"  {c.workload} / {c.strategy} on {c.kernel}: op {c.measured.enomem}"
            + ("" if c.agree else " (≠ predicted)") for c in hit]
    return out + [""]


def _limit_text(mx: Matrix) -> list[str]:
    limits = [s for s in mx.settings if s.limit is not None]
    out: list[str] = []
    for st in limits:
        out.append(f"at vm.max_map_count {st.limit}: the first op refused with ENOMEM "
                   "(- = none); the peak")
        out.append(f"map count at the default limit on {mx.kernels[0]}")
        for w in mx.workloads:
            out.append(f"  {w}")
            for s in mx.strategies:
                parts = []
                for k in mx.kernels:
                    c = mx.cell(w, s, k, st)
                    if c is None:
                        continue
                    op = "-" if c.measured.enomem is None else f"op {c.measured.enomem}"
                    mark = "" if c.agree else "≠"
                    parts.append(f"{k} {op}{mark}")
                c0 = mx.cell(w, s, mx.kernels[0])
                peak = c0.measured.peak if c0 is not None else None
                out.append(f"    {s:<13}" + ", ".join(parts) + f"; peak {peak}")
        out.append("")
    return out


def _overcommit_text(mx: Matrix) -> list[str]:
    modes = [s for s in mx.settings if s.overcommit is not None]
    if not modes:
        return []
    vm_kernels = sorted({c.kernel for c in mx.cells if c.setting.overcommit is not None})
    if not vm_kernels:
        return ["overcommit: microVM kernels only (the host's setting is left alone)", ""]
    out = [f"vm.overcommit_memory 0, 1, 2 (on {', '.join(vm_kernels)}): what fails"]
    failing = 0
    for w in mx.workloads:
        for s in mx.strategies:
            fails = []
            for st in [mx.settings[0], *modes]:
                mode = 0 if st.overcommit is None else st.overcommit
                cs = [mx.cell(w, s, k, st) for k in vm_kernels]
                bad = [c for c in cs if c is not None and c.measured.failure]
                if bad:
                    fails.append(f"mode {mode}: {bad[0].measured.failure}")
            if fails:
                failing += 1
                out.append(f"  {w} / {s}:")
                out += [f"    {f}" for f in fails]
    if not failing:
        out.append("  nothing: every strategy is possible under all three")
    else:
        out.append("  every other workload and strategy is possible under all three")
    return out + [""]


def _hypothetical_text(mx: Matrix) -> list[str]:
    if not mx.hypothetical:
        return []
    out = ["HYPOTHETICAL kernels (simulated only, no released kernel has these rules):"]
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for h in mx.hypothetical:
        by.setdefault((h["hypothesis"], h["kernel"]), []).append(h)
    for (name, _), rows in by.items():
        out.append(f"  {name} on {rows[0]['kernel']} ({rows[0]['release']}): VMAs now -> "
                   "with the rule")
        changed = [r for r in rows if r["saved"]]
        for r in changed:
            sign = "saves" if r["saved"] > 0 else "costs"
            out.append(f"    {r['workload']:<15}{r['strategy']:<13}{r['vmas']:>6} ->"
                       f"{r['vmas_hypothetical']:>6}  {sign} {abs(r['saved'])}")
        if not changed:
            out.append("    no change for any workload and strategy")
    return out + [""]


def plot_png(mx: Matrix, workload: str, kernel: str, setting: Setting | None = None,
             *, title: str | None = None) -> bytes:
    """The process's map count over the ops, one line per strategy (measured), with the
    prediction dotted where it differs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setting = setting or mx.settings[0]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    for s in mx.strategies:
        c = mx.cell(workload, s, kernel, setting)
        if c is None or not c.measured.samples:
            continue
        xs = [i for i, _ in c.measured.samples]
        ys = [n for _, n in c.measured.samples]
        (line,) = ax.plot(xs, ys, label=s, lw=1.4)
        if c.predicted.samples != c.measured.samples:
            ax.plot([i for i, _ in c.predicted.samples], [n for _, n in c.predicted.samples],
                    ":", color=line.get_color(), label=f"{s} (predicted)")
    if setting is not None and setting.limit is not None:
        ax.axhline(setting.limit, color="black", lw=0.8, label="vm.max_map_count")
    ax.set_xlabel("op")
    ax.set_ylabel("map count (process)")
    ax.set_title(title or f"{workload} on {kernel}")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def html_report(mx: Matrix) -> str:
    ok, total = mx.agreement
    parts = ["<!doctype html>\n<html><head><meta charset=\"utf-8\">",
             "<title>vmascope lab compare</title><style>body{font-family:sans-serif;"
             "max-width:60em;margin:auto}table{border-collapse:collapse}"
             "td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #ddd}"
             "td:first-child,th:first-child{text-align:left}.bad{color:#c00}</style>"
             "</head><body>",
             "<h1>Mitigation workbench</h1>",
             f"<p>Prediction = measurement in {ok} of {total} runs. Kernels: "
             f"{html.escape(', '.join(mx.kernels))}.</p>"]
    for w in mx.workloads:
        parts.append(f"<h2>{html.escape(w)}</h2><table><tr><th>strategy</th>"
                     + "".join(f"<th>{html.escape(k)}</th>" for k in mx.kernels)
                     + "<th>RSS MiB</th><th>commit MiB</th><th>calls</th></tr>")
        for s in mx.strategies:
            cells = [mx.cell(w, s, k) for k in mx.kernels]
            row = "".join(f"<td class=\"{'' if c is None or c.agree else 'bad'}\">"
                          f"{html.escape(_vmas(c))}</td>" for c in cells)
            first = cells[0]
            extra = "" if first is None else (
                f"<td>{_mib(first.measured.resident_kb)}</td>"
                f"<td>{_mib(first.measured.committed_kb)}</td>"
                f"<td>{first.measured.syscalls}</td>")
            parts.append(f"<tr><td>{html.escape(s)}</td>{row}{extra}</tr>")
        parts.append("</table>")
        for k in mx.kernels:
            png = base64.b64encode(plot_png(mx, w, k)).decode()
            parts.append(f"<img alt=\"map count over ops, {html.escape(w)} on "
                         f"{html.escape(k)}\" src=\"data:image/png;base64,{png}\">")
    rest = _limit_text(mx) + _overcommit_text(mx) + _hypothetical_text(mx)
    if rest:
        parts.append("<pre>" + html.escape("\n".join(rest)) + "</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def to_json(mx: Matrix) -> dict[str, Any]:
    return mx.to_json()


def list_text(workloads: Sequence[Any], strategies: Sequence[Any]) -> str:
    import textwrap

    out = ["workloads (--workload; --param KEY=VALUE overrides a parameter):"]
    for w in workloads:
        out.append(f"  {w.name}")
        out += textwrap.wrap(w.title, 76, initial_indent="    ", subsequent_indent="    ")
        params = ", ".join(f"{k}={v}" for k, v in w.defaults.items())
        out += textwrap.wrap(params, 76, initial_indent="    params: ",
                             subsequent_indent="      ")
        if w.sizes:
            out.append(f"    sizes (--size): {', '.join(w.sizes)}")
    out.append("strategies (--strategy):")
    for s in strategies:
        out.append(f"  {s.name}")
        out += textwrap.wrap(s.title, 76, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(out) + "\n"
