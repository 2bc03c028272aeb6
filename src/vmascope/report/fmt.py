"""Number formatting shared by the text and HTML reports."""

from __future__ import annotations

from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from ..analysis import Analysis, WhyNotMerged


def human_bytes(n: float, *, spaced: bool = False) -> str:
    """1536 -> '1.5K', 4096 -> '4K', 3 * 2**30 -> '3G' (binary units, short).

    ``spaced``: the summary lines' style, '1.5 KiB', '4.0 KiB', '3 B'."""
    if spaced:
        for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
            if abs(n) < 1024 or unit == "PiB":
                return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
            n /= 1024
    for unit in ("", "K", "M", "G", "T", "P"):
        if abs(n) < 1024 or unit == "P":
            if unit == "":
                return f"{int(n)}B"
            return f"{n:.0f}{unit}" if n == int(n) else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n}B"


def size_range(low: int, high: int | None) -> str:
    return f"{human_bytes(low)}+" if high is None else f"{human_bytes(low)}-{human_bytes(high)}"


def pct(part: float, whole: float) -> str:
    return "-" if not whole else f"{100.0 * part / whole:.1f}%"


def process_title(analysis: Analysis) -> str:
    meta = analysis.snapshot.meta
    who = []
    if meta.pid is not None:
        who.append(f"pid {meta.pid}")
    if meta.comm:
        who.append(f"({meta.comm})")
    if not who:
        who.append(meta.source)
    return " ".join(who)


_KERNEL_SOURCE = {
    "option": "from --kernel",
    "snapshot": "the snapshot's own",
    "host": "this host's: the snapshot names none",
}


def kernel_title(why: WhyNotMerged) -> str:
    src = _KERNEL_SOURCE.get(why.kernel_source, why.kernel_source)
    return f"kernel {why.kernel} ({src}; rules of {why.epoch})"
