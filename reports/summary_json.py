"""`archlint summary --format json`: {"version", "models": [{"target", "inputs", "depth",
"totals", "training", "layers": [...], "notes"}], "errors": [{"target", "message"}],
"skipped": [{"target", "message"}]} (scripts not imported, models not built).

The `layers` list holds the same rows as the text table, folded to the same depth.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

from archlint import __version__


def render(summaries: Sequence[Any], *, depth: int | None = 3,
           errors: Sequence[tuple[str, str]] = (), skipped: Sequence[tuple[str, str]] = (),
           **_: Any) -> str:
    data = {"version": __version__, "models": [s.to_dict(depth) for s in summaries],
            "errors": [{"target": t, "message": m} for t, m in errors],
            "skipped": [{"target": t, "message": m} for t, m in skipped]}
    return json.dumps(data, indent=2) + "\n"
