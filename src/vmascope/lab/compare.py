"""Agreement between Outcomes: a real kernel's and the simulator's, or any two backends'.

Two Outcomes agree when they have:

* the same VMA list, in order: start, end, perms, the set of VmFlags mnemonics without
  ``sd`` (soft-dirty is set on every VMA when CONFIG_MEM_SOFT_DIRTY=y and is ignored by
  merging), and the name;
* the same errors: (op index, errno name), in order;
* the same faults: (op index, address, signal), in order.

When the real side was read with the kernel view (the BPF reader, setting
VMASCOPE_KERNEL_VIEW=1) and the layouts agree, the anon_vma *grouping* is compared too:
which VMAs share one anon_vma (the identities themselves are numbered independently);
and when the other side has a kernel view as well (the simulator's model view), per VMA:

* ``pgoff``: vm_pgoff, which maps prints as 0 for anonymous memory;
* ``chain``: the length of the anon_vma chain (not when the reader capped it);
* the VMA's anon_vma's ``num_children`` and ``num_active_vmas`` (6.2+), or before 6.2
  its ``degree``, which counts the same two things in one number (mm/rmap.c, changed
  by 2555283eb40d, 6.2).

Without it, ``anon_vma`` (unknowable from /proc) is not compared; the process-wide map
count and the smaps byte counts never are.
"""

from __future__ import annotations

from ..kconst import PAGE_SIZE
from ..model import KV_CHAINMAX, KV_DEGREE, KV_NOCOUNTS
from ..outcome import IGNORED_FLAGS, Outcome

__all__ = ["IGNORED_FLAGS", "agree", "differences", "fmt_vma", "grouping", "kernel_view_diff",
           "pages"]

_Vma = tuple[int, int, str, tuple[str, ...], "str | None"]


def _errors(o: Outcome) -> list[tuple[int, str]]:
    return [(e.op, e.errno) for e in o.errors]


def _faults(o: Outcome) -> list[tuple[int, int, str]]:
    return [(f.op, f.addr, f.signal) for f in o.faults]


def grouping(o: Outcome) -> tuple[int, ...] | None:
    """Which VMAs share an anon_vma: each VMA's anon_vma renumbered in order of first
    appearance (-1: none); None when the Outcome does not know its anon_vmas."""
    ids = o.snapshot.anon_vma
    if ids is None:
        return None
    first: dict[int, int] = {}
    return tuple(-1 if a < 0 else first.setdefault(a, len(first)) for a in ids.tolist())


def _grouping_diff(real: Outcome, sim: Outcome) -> tuple[int, ...] | None:
    """The real grouping when it is known (kernel view) and differs from the other's."""
    if real.snapshot.kview is None or real.layout() != sim.layout():
        return None
    rg, sg = grouping(real), grouping(sim)
    return rg if sg is not None and rg != sg else None


def kernel_view_diff(real: Outcome, other: Outcome) -> str | None:
    """The first VMA whose vm_pgoff, chain length or anon_vma counters differ (both
    sides with a kernel view and the same layout), as "VMA i: what"; else None."""
    rk, ok = real.snapshot.kview, other.snapshot.kview
    if rk is None or ok is None:
        return None
    layout = real.layout()
    if layout != other.layout():
        return None
    for i in range(len(real.snapshot)):
        bits = int(rk["bits"][i])
        got: list[tuple[str, int, int]] = [("pgoff", int(rk["pgoff"][i]), int(ok["pgoff"][i]))]
        if not bits & KV_CHAINMAX:
            got.append(("chain", int(rk["chain"][i]), int(ok["chain"][i])))
        if int(rk["anon_vma"][i]) and not bits & KV_NOCOUNTS:
            if bits & KV_DEGREE:  # degree = VMAs + child anon_vmas (+1 self-link of a root)
                other_degree = int(ok["children"][i]) + int(ok["active"][i])
                got.append(("degree", int(rk["children"][i]), other_degree))
            else:
                got += [("num_children", int(rk["children"][i]), int(ok["children"][i])),
                        ("num_active_vmas", int(rk["active"][i]), int(ok["active"][i]))]
        diff = [f"{name} {a:#x} vs {b:#x}" if name == "pgoff" else f"{name} {a} vs {b}"
                for name, a, b in got if a != b]
        if diff:
            return f"VMA {i} {fmt_vma(layout[i])}: " + ", ".join(diff)
    return None


def fmt_grouping(g: tuple[int, ...] | None) -> str:
    if g is None:
        return "unknown"
    return " ".join("-" if a < 0 else f"av{a + 1}" for a in g[:12]) + (
        " ..." if len(g) > 12 else "")


def differences(real: Outcome, sim: Outcome, *,
                names: tuple[str, str] = ("real", "simulator")) -> list[str]:
    """What differs, one short line per aspect; empty when the two agree. ``names``: what
    to call the two sides (a real kernel and the simulator, or two kernels)."""
    ra, sa = names
    out = []
    rv, sv = real.layout(), sim.layout()
    if rv != sv:
        if len(rv) != len(sv):
            out.append(f"VMA count: {ra} {len(rv)}, {sa} {len(sv)}")
        for i, (a, b) in enumerate(zip(rv, sv)):
            if a != b:
                out.append(f"VMA {i}: {ra} {fmt_vma(a)}, {sa} {fmt_vma(b)}")
                break
        else:
            if len(rv) != len(sv):
                extra = rv[len(sv)] if len(rv) > len(sv) else sv[len(rv)]
                side = ra if len(rv) > len(sv) else sa
                out.append(f"only {side} has {fmt_vma(extra)}")
    re_, se = _errors(real), _errors(sim)
    if re_ != se:
        out.append(f"errors: {ra} {fmt_errors(re_)}, {sa} {fmt_errors(se)}")
    rf, sf = _faults(real), _faults(sim)
    if rf != sf:
        out.append(f"faults: {ra} {fmt_faults(rf)}, {sa} {fmt_faults(sf)}")
    rg = _grouping_diff(real, sim)
    if rg is not None:
        out.append(f"anon_vma grouping: {ra} {fmt_grouping(rg)}, "
                   f"{sa} {fmt_grouping(grouping(sim))}")
    kd = kernel_view_diff(real, sim)
    if kd is not None:
        out.append(f"kernel view ({ra} vs {sa}): {kd}")
    return out


def agree(real: Outcome, sim: Outcome) -> bool:
    return (real.layout() == sim.layout() and _errors(real) == _errors(sim)
            and _faults(real) == _faults(sim) and _grouping_diff(real, sim) is None
            and kernel_view_diff(real, sim) is None)


def fmt_vma(v: tuple[int, int, str, tuple[str, ...], str | None]) -> str:
    start, end, perms, flags, name = v
    text = f"[{pages(start)},{pages(end)}) {perms} {' '.join(flags)}"
    return text + (f" {name}" if name else "")


def pages(x: int) -> str:
    """An address in pages ("3p") when it is page-aligned, else in hex."""
    return f"{x // PAGE_SIZE}p" if x % PAGE_SIZE == 0 else hex(x)


def fmt_errors(errors: list[tuple[int, str]]) -> str:
    if not errors:
        return "none"
    head = ", ".join(f"op {i} {e}" for i, e in errors[:4])
    return head + (f" (+{len(errors) - 4} more)" if len(errors) > 4 else "")


def fmt_faults(faults: list[tuple[int, int, str]]) -> str:
    if not faults:
        return "none"
    head = ", ".join(f"op {i} {s} at {pages(a)}" for i, a, s in faults[:4])
    return head + (f" (+{len(faults) - 4} more)" if len(faults) > 4 else "")
