"""JSON rendering of an analysis (the keys are documented in docs/analyze.md)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..analysis import Analysis


class JsonReporter:
    def __init__(self, run_limit: int | None = 200, indent: int | None = None) -> None:
        self.run_limit = run_limit
        self.indent = indent

    def render(self, analysis: Analysis) -> str:
        out = analysis.to_json(self.run_limit)
        if analysis.trace is not None:
            from .replay import replay_json

            out["trace"] = replay_json(*analysis.trace)
        return json.dumps(out, indent=self.indent) + "\n"
