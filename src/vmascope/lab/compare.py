"""Agreement between a real kernel's result and the simulator's prediction.

Both sides are the JSON shape of `vmascope simulate --json`. They agree when they have:

* the same VMA list, in order: start, end, perms, the set of VmFlags mnemonics without
  ``sd`` (soft-dirty is set on every VMA when CONFIG_MEM_SOFT_DIRTY=y and is ignored by
  merging), and the name;
* the same errors: (op index, errno name), in order;
* the same faults: (op index, address, signal), in order.

``anon_vma`` (unknowable from /proc), ``pgoff`` (maps prints 0 for anonymous VMAs),
the process-wide map count and the smaps byte counts are not compared.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from typing import Any

from ..ops.language import Op

IGNORED_FLAGS = frozenset({"sd"})


def _num(v: Any) -> int:
    return int(v, 16) if isinstance(v, str) else int(v)


def normal_vmas(result: dict[str, Any]) -> list[tuple[int, int, str, tuple[str, ...], str | None]]:
    out = []
    for v in result.get("vmas", []):
        flags = tuple(sorted(set(v.get("flags") or ()) - IGNORED_FLAGS))
        out.append((_num(v["start"]), _num(v["end"]), v["perms"], flags, v.get("name")))
    return out


def normal_errors(result: dict[str, Any]) -> list[tuple[int, str]]:
    return [(int(e["op"]), str(e["errno"])) for e in result.get("errors", [])]


def normal_faults(result: dict[str, Any]) -> list[tuple[int, int, str]]:
    return [(int(f["op"]), _num(f["addr"]), str(f["signal"])) for f in result.get("faults", [])]


def differences(real: dict[str, Any], sim: dict[str, Any]) -> list[str]:
    """What differs, one short line per aspect; empty when the two agree."""
    out = []
    rv, sv = normal_vmas(real), normal_vmas(sim)
    if rv != sv:
        if len(rv) != len(sv):
            out.append(f"VMA count: real {len(rv)}, simulator {len(sv)}")
        for i, (a, b) in enumerate(zip(rv, sv)):
            if a != b:
                out.append(f"VMA {i}: real {fmt_vma(a)}, simulator {fmt_vma(b)}")
                break
        else:
            if len(rv) != len(sv):
                extra = rv[len(sv)] if len(rv) > len(sv) else sv[len(rv)]
                side = "real" if len(rv) > len(sv) else "simulator"
                out.append(f"only {side} has {fmt_vma(extra)}")
    re_, se = normal_errors(real), normal_errors(sim)
    if re_ != se:
        out.append(f"errors: real {fmt_errors(re_)}, simulator {fmt_errors(se)}")
    rf, sf = normal_faults(real), normal_faults(sim)
    if rf != sf:
        out.append(f"faults: real {fmt_faults(rf)}, simulator {fmt_faults(sf)}")
    return out


def agree(real: dict[str, Any], sim: dict[str, Any]) -> bool:
    return (normal_vmas(real) == normal_vmas(sim) and normal_errors(real) == normal_errors(sim)
            and normal_faults(real) == normal_faults(sim))


def fmt_vma(v: tuple[int, int, str, tuple[str, ...], str | None]) -> str:
    start, end, perms, flags, name = v
    text = f"[{_pages(start)},{_pages(end)}) {perms} {' '.join(flags)}"
    return text + (f" {name}" if name else "")


def _pages(x: int) -> str:
    return f"{x // 4096}p" if x % 4096 == 0 else hex(x)


def fmt_errors(errors: list[tuple[int, str]]) -> str:
    if not errors:
        return "none"
    head = ", ".join(f"op {i} {e}" for i, e in errors[:4])
    return head + (f" (+{len(errors) - 4} more)" if len(errors) > 4 else "")


def fmt_faults(faults: list[tuple[int, int, str]]) -> str:
    if not faults:
        return "none"
    head = ", ".join(f"op {i} {s} at {_pages(a)}" for i, a, s in faults[:4])
    return head + (f" (+{len(faults) - 4} more)" if len(faults) > 4 else "")


# ---------------------------------------------------------------------------------------
# The simulator


def simulator_available() -> bool:
    try:
        mod = importlib.import_module("vmascope.kernel.simulator")
    except ImportError:
        return False
    return hasattr(mod, "simulate_ops")


@functools.lru_cache(maxsize=16)
def _epoch(version: str) -> Any:
    """The simulator's epoch for a release, worked out once (for the running kernel this
    reads /proc/config.gz, which would otherwise cost more than the simulation)."""
    from ..kernel.epochs import epoch_for

    return epoch_for(version)


def simulate(ops: Sequence[Op], version: str, *, max_map_count: int | None = None,
             script: str | None = None) -> dict[str, Any]:
    """The simulator's prediction for ``ops`` on kernel ``version`` (its JSON shape).

    The simulator is given the same absolute addresses the executor uses (the ops moved
    to the arena with ``Op.shifted``); its VMAs, faults and brk are then made relative to
    the arena again, keeping only what lies inside it, as the executor reports."""
    from .executor import ARENA_BASE, ARENA_SIZE

    mod = importlib.import_module("vmascope.kernel.simulator")
    kwargs: dict[str, Any] = {}
    if max_map_count is not None:
        kwargs["max_map_count"] = max_map_count
    result = mod.simulate_ops([op.shifted(ARENA_BASE) for op in ops], _epoch(version), **kwargs)
    data: dict[str, Any] = result.to_json()
    vmas = []
    for v in data["vmas"]:
        start, end = _num(v["start"]) - ARENA_BASE, _num(v["end"]) - ARENA_BASE
        if start >= 0 and end <= ARENA_SIZE:
            vmas.append({**v, "start": hex(start), "end": hex(end)})
    data["vmas"] = vmas
    data["map_count_total"] = data.get("map_count")
    data["map_count"] = len(vmas)
    data["faults"] = [{**f, "addr": hex(_num(f["addr"]) - ARENA_BASE)} for f in data["faults"]]
    if "brk" in data:
        data["brk"] = hex(_num(data["brk"]) - ARENA_BASE)
    data.pop("children", None)
    if script is not None:
        data["script"] = script
    return data
