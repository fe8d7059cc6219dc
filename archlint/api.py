"""The pipeline, end to end: load -> build -> trace -> graph -> rules.

`lint(model, example_input)` is the Python API; `check_paths` is what `archlint check` runs.
Each target gets a `ModelReport`; a target that cannot be loaded, built or traced gets one with
`error` set, and the others go on.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from . import load, sources
from .config import Settings, parse_shape
from .engine import run_rules
from .errors import ArchlintError, ConfigError, NoModelError, ShapeError, TraceError
from .findings import Severity
from .graph import ArchGraph, build_graph
from .registry import load_rules
from .results import ModelReport, Report  # noqa: F401  (part of the API)
from .trace import meta_copy, trace


def analyze(model: nn.Module, inputs: load.ExampleInputs, construction: dict | None = None,
            owned: bool = False) -> tuple[ArchGraph, dict[str, float]]:
    """Trace a model on meta tensors and build its annotated graph. `owned`: archlint built
    the model itself, so its tensors may be moved to the meta device in place."""
    timings = {}
    started = time.perf_counter()
    if construction is None:
        construction = {name: sources.construction_frames(m)
                        for name, m in model.named_modules(remove_duplicate=False)}
    meta_model = meta_copy(model, in_place=owned)
    try:
        traced = trace(meta_model, inputs.tensors, inputs.describe())
    except (TraceError, ShapeError) as exc:
        if not meta_model.training:
            raise
        traced = _trace_in_eval(meta_model, inputs, exc)
    timings["trace"] = time.perf_counter() - started
    started = time.perf_counter()
    graph = build_graph(traced, [tuple(s) for s in inputs.shapes], construction)
    timings["analyze"] = time.perf_counter() - started
    return graph, timings


def _trace_in_eval(meta_model: nn.Module, inputs: load.ExampleInputs, in_training: ArchlintError):
    """Some models only run in eval mode with a batch of one (BatchNorm after global pooling
    needs two values per channel in training) or without targets (detection models). Trace
    those in eval mode and say so; if that fails too, its error is the one to show."""
    meta_model.eval()
    traced = trace(meta_model, inputs.tensors, inputs.describe())
    first = str(in_training).split(". ")[0][:240]
    traced.notes.append(f"traced in eval mode: in training mode the forward failed ({first})")
    return traced


def _lint_model(report: ModelReport, model: nn.Module, inputs: load.ExampleInputs,
                settings: Settings, owned: bool = False) -> ModelReport:
    report.inputs, report.input_source = inputs.shapes, inputs.source
    try:
        graph, timings = analyze(model, inputs, owned=owned)
    except (TraceError, ShapeError) as exc:
        from .partial import lint_parts, layer_rejected_input

        if layer_rejected_input(exc):  # a real shape error: the user must fix it
            raise
        return lint_parts(report, model, inputs, settings, exc)  # detection: backbone, neck, heads
    report.timings.update(timings)
    report.graph, report.tracer, report.notes = graph, graph.tracer, list(graph.notes)
    started = time.perf_counter()
    report.findings = run_rules(graph, load_rules().rules, settings, inputs.describe(),
                                problems=report.notes)
    report.timings["rules"] = time.perf_counter() - started
    return report


def lint(model: nn.Module, example_input: torch.Tensor | Sequence[torch.Tensor] | None = None, *,
         input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None,
         settings: Settings | None = None, **options: Any) -> ModelReport:
    """Lint a model object. `example_input` may be a real tensor or a tuple of them (only its
    shape and dtype are used); `input_shape` is the alternative. Keyword options are the
    config's keys in Python spelling: select, ignore, batch_size, rules={"K001": {...}}."""
    settings = settings or Settings()
    changes = {}
    for key, value in options.items():
        if key == "rules":
            changes["rule_options"] = {k.upper(): dict(v) for k, v in value.items()}
        elif key in ("select", "ignore"):
            changes[key] = [value.upper()] if isinstance(value, str) else [v.upper() for v in value]
        elif key == "batch_size":
            changes[key] = value
        elif key == "fail_on":
            changes[key] = Severity.parse(value)
        else:
            raise TypeError(f"lint() got an unexpected option {key!r}")
    settings = settings.with_overrides(**changes)
    if example_input is not None:
        tensors = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
        inputs = load.ExampleInputs(load._meta_like(tensors), "example_input")
    elif input_shape is not None:
        shapes = [input_shape] if isinstance(input_shape[0], int) else input_shape
        inputs = load.ExampleInputs(load._from_shapes([parse_shape(s) for s in shapes]), "input_shape")
    else:
        inputs = load.example_inputs(model, None, None, settings.input_shapes)
    name = type(model).__name__
    return _lint_model(ModelReport(target=name), model, inputs, settings)


# --- files ------------------------------------------------------------------------------------

from .prefilter import expand_paths  # noqa: E402,F401  (torch-free, shared with the cache)


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
    for target in targets:
        model_report = ModelReport(target=target.name)
        model_report.timings["load"] = load_time
        try:
            started = time.perf_counter()
            model = load.build_target(target)
            model_report.timings["build"] = time.perf_counter() - started
            inputs = load.example_inputs(model, target.module, settings.cli_input_shapes,
                                         settings.input_shapes)
            _lint_model(model_report, model, inputs, settings, owned=True)
        except ArchlintError as exc:
            model_report.error = exc
        reports.append(model_report)
    return reports


def check_paths(specs: Sequence[str], settings: Settings) -> Report:
    rules = load_rules()
    report = Report(problems=list(rules.problems))
    if not specs:
        raise ConfigError("no files given. Usage: archlint check mymodel.py [file.py::Model ...]")
    for path, names, explicit in expand_paths(specs):
        report.models.extend(check_file(path, names, explicit, settings))
    return report
