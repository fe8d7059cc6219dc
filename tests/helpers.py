"""Shared test helpers: write a model file, lint a source string, pick findings."""
from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest
from torch import nn

import archlint
from archlint.api import check_paths
from archlint.config import Settings, settings_from_table


def write_model(tmp_path: Path, source: str, name: str | None = None) -> Path:
    """Write a model's source (dedented) to `name` in `tmp_path`, a fresh name by default;
    `name` may hold folders (`models/net.py`), which are made."""
    path = tmp_path / (name or f"example_{uuid.uuid4().hex[:8]}.py")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).lstrip())
    return path


def lint_source(source: str, tmp_path: Path, settings: dict | None = None, select: list[str] | None = None):
    """Write `source` to a file, lint it, and return the Report."""
    path = write_model(tmp_path, source)
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


def source_findings(source: str, tmp_path: Path, select: list[str], **settings):
    """Lint a model's source; it must load and trace. The findings."""
    report = lint_source(source, tmp_path, settings or None, select=select)
    assert not report.errors, [str(m.error) for m in report.errors]
    return report.findings


def only(findings, code: str):
    return [f for f in findings if f.code == code]


# --- linting a model object ------------------------------------------------------------------

def lint(model, shape=(1, 3, 32, 32), *, select: list[str], **options):
    """The Report for a model object, traced with an input of `shape`."""
    return archlint.lint(model, input_shape=shape, select=select, **options)


def findings(model, shape, code: str, **options):
    """Lint `model` with one rule (and its options); a bare torch.nn layer is wrapped so it is
    traced as a layer, not as the functional call its forward makes."""
    if type(model).__module__.startswith("torch.nn") and not isinstance(model, nn.Sequential):
        model = nn.Sequential(model)
    rules = {code: options} if options else {}
    return archlint.lint(model, input_shape=shape, select=[code], rules=rules).findings


def found(report, code: str | None = None):
    return [f for f in report.findings if code is None or f.code == code]


def modules(report, code: str) -> set[str]:
    return {f.module for f in report.findings if f.code == code}


def conv_bn_relu(c_in: int, c_out: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU())


def torchvision_model(name: str):
    torchvision = pytest.importorskip("torchvision")
    return getattr(torchvision.models, name)(weights=None)


def timm_model(name: str):
    timm = pytest.importorskip("timm")
    return timm.create_model(name, pretrained=False)
