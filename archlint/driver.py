"""The driver of `archlint check` over paths: expand them, load each file, build each target,
lint it through the pipeline, and gather one `Report`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from . import load, sources
from .config import Settings
from .errors import ArchlintError, ConfigError, NoModelError
from .inputs import check_arity, for_target
from .pipeline import lint_model
from .prefilter import expand_paths
from .registry import load_rules
from .results import ModelReport, Report


def check_file(path: str, names: Sequence[str], explicit: bool, settings: Settings) -> list[ModelReport]:
    """Lint the models one file builds (or the named ones). A file found by walking a folder
    that turns out to build no model yields no report at all."""
    started = time.perf_counter()
    try:
        targets = load.load_targets(path, names)
    except NoModelError as exc:
        if not explicit:
            return []
        return [ModelReport(target=sources.display_path(str(Path(path).resolve()))
                            + ("::" + ",".join(names) if names else ""), error=exc)]
    except ArchlintError as exc:
        return [ModelReport(target=sources.display_path(str(Path(path).resolve()))
                            + ("::" + ",".join(names) if names else ""), error=exc)]
    load_time = time.perf_counter() - started
    reports = []
    if explicit and all(t.not_built for t in targets):
        listed = "; ".join(f"{t.name.rsplit('::', 1)[1]}: {t.not_built}" for t in targets)
        shown = sources.display_path(str(Path(path).resolve()))
        return [ModelReport(target=shown, error=NoModelError(f"{shown}: no model built. {listed}."))]
    for target in targets:
        if target.not_built:
            reports.append(ModelReport(target=target.name, skipped=target.not_built))
            continue
        model_report = ModelReport(target=target.name)
        model_report.timings["load"] = load_time
        try:
            started = time.perf_counter()
            model = load.build_target(target)
            model_report.timings["build"] = time.perf_counter() - started
            name = target.name.split("::", 1)[-1]
            inputs = for_target(model, target.module, name, settings.cli_input_shapes,
                                settings.input_shapes)
            check_arity(model, inputs, target.name)
            lint_model(model, inputs, settings, report=model_report, owned=True)
        except ArchlintError as exc:
            model_report.error = exc
        reports.append(model_report)
    return reports


def check_paths(specs: Sequence[str], settings: Settings) -> Report:
    rules = load_rules()
    report = Report(problems=list(rules.problems), rules=list(rules.rules))
    if not specs:
        raise ConfigError("no files given. Usage: archlint check mymodel.py [file.py::Model ...]")
    for path, names, explicit in expand_paths(specs):
        report.models.extend(check_file(path, names, explicit, settings))
    return report
