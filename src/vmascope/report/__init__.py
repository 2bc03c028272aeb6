"""Reporters: one protocol, three renderings of the same plain data.

The analysis (``vmascope.analysis.Analysis``) is built first and is testable on its own;
a reporter only renders it:

* ``text``: rich tables that fit an 80-column terminal;
* ``json``: ``Analysis.to_json()`` (documented keys, ``schema_version``);
* ``html``: one self-contained file (inline CSS and SVG, nothing fetched).

``render(analysis, fmt)`` returns the document as text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..errors import UsageError

if TYPE_CHECKING:
    from ..analysis import Analysis

FORMATS = ("text", "json", "html")


class Reporter(Protocol):
    def render(self, analysis: Analysis) -> str: ...


def reporter(fmt: str, *, width: int = 80, color: bool = False) -> Reporter:
    if fmt == "text":
        from .text import TextReporter

        return TextReporter(width=width, color=color)
    if fmt == "json":
        from .jsonreport import JsonReporter

        return JsonReporter()
    if fmt == "html":
        from .html import HtmlReporter

        return HtmlReporter()
    raise UsageError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")


def render(analysis: Analysis, fmt: str = "text", *, width: int = 80, color: bool = False) -> str:
    return reporter(fmt, width=width, color=color).render(analysis)


__all__ = ["FORMATS", "Reporter", "render", "reporter"]
