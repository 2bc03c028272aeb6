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


def elide_path(text: str, width: int) -> str:
    """``text`` for a column ``width`` wide: whole when it fits; a path loses directories
    from the left ("…/x86_64-linux-gnu/libc.so.6"), never its file name: a name longer
    than the column is kept whole, to fold over lines, as is any text not a path."""
    if len(text) <= width or not text.startswith("/"):
        return text
    parts = text.split("/")
    for i in range(1, len(parts) - 1):
        tail = "…/" + "/".join(parts[i:])
        if len(tail) <= width:
            return tail
    return "…/" + parts[-1]


class PathCell:
    """A table cell holding a file path (or a label with one): whole when the column is
    wide enough, else elided from the left by :func:`elide_path`: a narrow terminal shows
    "…/libc.so.6", not a name folded in two (only a name wider than the column folds).
    A rich renderable (rich is imported only when it renders)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def _min(self) -> int:
        name = self.text.rsplit("/", 1)[-1]
        return min(len(self.text), len(name) + (2 if "/" in self.text else 0))

    def __rich_measure__(self, console: object, options: object):  # type: ignore[no-untyped-def]
        from rich.measure import Measurement

        return Measurement(self._min(), len(self.text))

    def __rich_console__(self, console: object, options: object):  # type: ignore[no-untyped-def]
        from rich.text import Text

        width = options.max_width  # type: ignore[attr-defined]
        yield Text(elide_path(self.text, width), overflow="fold")
