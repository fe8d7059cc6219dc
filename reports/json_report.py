"""JSON output: {"version", "models": [{"target", "tracer", "inputs", "summary", "findings"}]}.

The field names are a public contract; other tools parse them.
"""
from __future__ import annotations

import json
from typing import Any


def render(report: Any, **_: Any) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False) + "\n"
