"""mm/mempolicy.c: mbind (do_mbind, queue_pages_range, mbind_range)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...kconst import PAGE_MASK, page_align
from ...ops.language import Op
from .mm import MM, OpFailed
from .vma import vma_modify


def do_mbind(mm: MM, op: Op) -> None:
    """mm/mempolicy.c do_mbind: a policy per VMA piece; holes are EFAULT."""
    start = op.addr
    if start & ~PAGE_MASK:
        raise OpFailed("EINVAL")
    policy = None if op.mode in (None, "default") else (op.mode, tuple(sorted(op.nodes)))
    if policy is not None and any(n >= mm.numa_nodes for n in op.nodes):
        raise OpFailed("EINVAL")
    length = page_align(op.length)
    end = start + length
    if length == 0:
        return
    # queue_pages_range: an unmapped hole anywhere in the range -> EFAULT, before
    # anything changes. MPOL_DEFAULT skips the check and resets the mapped parts
    # (6.1.176, 6.12.117, 7.2.13 and 6.18.44 all do so).
    addr = start
    v = mm.find_vma(start)
    if v is None or v.start >= end:
        raise OpFailed("EFAULT")  # no VMA in the range at all, whatever the mode
    while policy is not None and addr < end:
        if v is None or v.start > addr:
            raise OpFailed("EFAULT")
        addr = v.end
        v = v.next
    v = mm.find_vma(start)
    s = start
    while v is not None and v.start < end:
        e = min(v.end, end)
        if v.policy != policy:
            v = vma_modify(mm, v, max(s, v.start), e, policy=policy)
        s = e
        if s >= end:
            break
        v = v.next
def policy_text(policy: Any) -> str:
    """numa_maps spelling of a policy: default, bind:0-1, interleave:0,2, prefer:0."""
    if policy is None:
        return "default"
    mode, nodes = policy
    return ("prefer" if mode == "preferred" else mode) + ":" + node_list(nodes)


def node_list(nodes: Sequence[int]) -> str:
    parts: list[str] = []
    run: list[int] = []
    for n in sorted(nodes):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [n]
    if run:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(parts)


# -- results ----------------------------------------------------------------------------------
