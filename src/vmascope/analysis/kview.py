"""What the kernel view changed: the /proc-alone explanation against the certain one.

A snapshot read with the kernel view (``Snapshot.kview``) is explained twice: once with
everything (the reasons are certain) and once as /proc alone shows it (the anon_vma
reasons are inferred from smaps, anonymous offsets are unknown, one file is one file).
Every look-alike pair whose /proc-alone explanation has an inferred reason is
*confirmed* when both give the same reasons and *overturned* otherwise; pairs that
/proc explained without inference but the kernel view explains differently were a
*blind spot* of /proc (an offset moved by mremap, a file opened twice, a fork chain).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..kernel.epochs import Epoch
from ..model import Snapshot
from .explain import WhyNotMerged, why_not_merged


@dataclasses.dataclass
class KernelCheck:
    pairs: int  # look-alike pairs
    inferred: int  # pairs whose /proc-alone explanation has an inferred reason
    confirmed: int  # ... and the kernel view gives the same reasons
    overturned: int  # ... and the kernel view gives other reasons
    blind: int  # pairs explained without inference that the kernel view explains otherwise
    changes: dict[str, int]  # "inferred reasons -> certain reasons": pairs, most first

    @property
    def agreement(self) -> float | None:
        """Confirmed inferences per inference (None when nothing was inferred)."""
        return None if not self.inferred else self.confirmed / self.inferred

    def lines(self) -> list[str]:
        out = [f"kernel view: {self.inferred:,} inferred explanations checked, "
               f"{self.confirmed:,} confirmed, {self.overturned:,} overturned"]
        if self.blind:
            out.append(f"kernel view: {self.blind:,} pairs in the blind spots of /proc")
        out += [f"  {n:,}: {change}" for change, n in list(self.changes.items())[:5]]
        return out

    def to_json(self) -> dict[str, object]:
        return {"pairs": self.pairs, "inferred": self.inferred,
                "confirmed": self.confirmed, "overturned": self.overturned,
                "blind_spots": self.blind, "agreement": self.agreement,
                "changes": self.changes}


def without_kview(snap: Snapshot) -> Snapshot:
    """The same snapshot as /proc alone shows it (the columns are shared, not copied)."""
    return Snapshot(start=snap.start, end=snap.end, perms=snap.perms, offset=snap.offset,
                    dev=snap.dev, inode=snap.inode, name_id=snap.name_id, names=snap.names,
                    meta=snap.meta, smaps=snap.smaps, vmflags=snap.vmflags,
                    flag_names=snap.flag_names, policy_id=snap.policy_id,
                    policies=snap.policies)


def _codes(reasons: tuple) -> str:
    return ", ".join(sorted({str(r.code) for r in reasons})) or "none"


def kernel_check(snap: Snapshot, pairs: np.ndarray, why: WhyNotMerged, kernel: str | None,
                 epoch: Epoch | None) -> KernelCheck | None:
    """Compare ``why`` (explained with the kernel view) with /proc alone; None when the
    snapshot has no kernel view."""
    if snap.kview is None:
        return None
    plain = why_not_merged(without_kview(snap), pairs, kernel, epoch=epoch)
    n = len(why.pair_index)
    if n == 0:
        return KernelCheck(0, 0, 0, 0, 0, {})
    assert np.array_equal(plain.pair_index, why.pair_index)
    _, first, count = np.unique(plain.pair_kind * (len(why.kind_reasons) + 1)
                                    + why.pair_kind, return_index=True, return_counts=True)
    inferred = confirmed = blind = 0
    changes: dict[str, int] = {}
    for k, c in zip(first.tolist(), count.tolist()):
        before = plain.kind_reasons[int(plain.pair_kind[k])]
        after = why.kind_reasons[int(why.pair_kind[k])]
        same = _codes(before) == _codes(after)
        if any(r.confidence == "inferred" for r in before):
            inferred += c
            confirmed += c if same else 0
        elif not same:
            blind += c
        if not same:
            key = f"{_codes(before)} -> {_codes(after)}"
            changes[key] = changes.get(key, 0) + c
    changes = dict(sorted(changes.items(), key=lambda kv: -kv[1]))
    return KernelCheck(n, inferred, confirmed, inferred - confirmed, blind, changes)


__all__ = ["KernelCheck", "kernel_check", "without_kview"]
