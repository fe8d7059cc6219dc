"""Shared test helpers: lint a source string or a model and pick findings."""
from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

from archlint.api import check_paths
from archlint.config import Settings, settings_from_table


def lint_source(source: str, tmp_path: Path, settings: dict | None = None, select: list[str] | None = None):
    """Write `source` to a file, lint it, and return the Report."""
    path = tmp_path / f"example_{uuid.uuid4().hex[:8]}.py"
    path.write_text(textwrap.dedent(source).lstrip())
    s = settings_from_table(dict(settings or {}), "test") if settings else Settings()
    if select:
        s.select = select
    return check_paths([str(path)], s)


def codes(report_or_findings) -> list[str]:
    findings = getattr(report_or_findings, "findings", report_or_findings)
    return [f.code for f in findings]


def at(findings, code: str) -> set[str]:
    """Qualified module names a rule reported."""
    return {f.module for f in findings if f.code == code}


def write_model(tmp_path: Path, source: str, name: str | None = None) -> Path:
    """Write a model file (dedented) into `tmp_path` and return its path."""
    path = tmp_path / (name or f"model_{uuid.uuid4().hex[:8]}.py")
    path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
    return path
