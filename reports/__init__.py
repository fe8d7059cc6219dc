"""Renderers: each turns a Report into one output format. They render; they never analyze.

Every renderer is a module here with `render(report, **options) -> str`; `FORMATS` maps the
`--format` names to them.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

FORMATS = {
    "text": "archlint.reports.text",
    "json": "archlint.reports.json_report",
    "sarif": "archlint.reports.sarif",
    "github": "archlint.reports.github",
    "html": "archlint.reports.html",
    "markdown": "archlint.reports.markdown",
}


def renderer(name: str) -> Callable[..., str]:
    return importlib.import_module(FORMATS[name]).render


def render(name: str, report: Any, **options: Any) -> str:
    return renderer(name)(report, **options)
