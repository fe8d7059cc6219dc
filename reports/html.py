"""HTML output: one self-contained page per run, for a reviewer's browser.

    archlint check mymodel.py --format html -o report.html

The page is built in two steps, as coverage.py and pytest-html build theirs: `html_view` turns
the Report into plain data, then jinja2 (autoescape on) renders the templates in
`reports/templates/`. CSS and the small script are inlined and every graphic is inline SVG, so
the file works offline, with JavaScript off, and fetches nothing.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import jinja2

from . import html_view

TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = lambda v: f"{v:.1f}".rstrip("0").rstrip(".")
    return env


def render(report: Any, *, rules: Sequence[type] | None = None, **_: Any) -> str:
    view = html_view.page(report, rules)
    return environment().get_template("report.html.j2").render(page=view)
