"""The pipeline: lint one built model. Trace it whole, else in eval mode, else in parts; build
the graph; run the rules. The Python API, the `check` driver, `diff`, the corpus runner and the
tests all lint a model through `lint_model`.
"""
from __future__ import annotations

import gc
import time
from contextlib import contextmanager

from torch import nn

from . import sources
from .config import Settings
from .engine import one_per_line, run_rules, sort_key
from .errors import ArchlintError
from .graph.archgraph import ArchGraph
from .graph.build import build_graph
from .graph.coverage import measure
from .graph.weights import module_table
from .inputs import ExampleInputs
from .registry import load_rules
from .results import ModelReport
from .trace import meta_copy, trace
from .trace.meta import weights_on_meta
from .trace.parts import describe, plan_parts


def construction_of(model: nn.Module, modules: dict[str, nn.Module] | None = None) -> dict:
    """Where each module (by qualified name) was built. `modules`: the model's named modules,
    duplicates kept, if the caller has them."""
    return {name: sources.construction_frames(m) for name, m in module_table(model, modules).items()}


def analyze(model: nn.Module, inputs: ExampleInputs, construction: dict | None = None,
            owned: bool = False, modules: dict[str, nn.Module] | None = None,
            ) -> tuple[ArchGraph, dict[str, float]]:
    """Trace a model on meta tensors and build its annotated graph. `owned`: archlint built
    the model itself, so its tensors may be moved to the meta device in place. `modules`:
    its named modules, duplicates kept, if the caller has them."""
    timings = {}
    started = time.perf_counter()
    with gc_paused():
        # One table of the model's modules serves the construction sites, the meta swap, the
        # trace and the graph: each walk of a 1000-block net's modules costs ~6 ms.
        if owned:
            modules = module_table(model, modules)
        if construction is None:
            construction = construction_of(model, modules)
        meta_model = meta_copy(model, in_place=owned, modules=modules)
        try:
            traced = trace(meta_model, inputs.tensors, inputs.describe(), modules=modules)
        except ArchlintError as exc:
            if not meta_model.training or exc.kind not in ("trace", "shape"):
                raise
            traced = _trace_in_eval(meta_model, inputs, exc, modules)
        timings["trace"] = time.perf_counter() - started
        started = time.perf_counter()
        graph = build_graph(traced, [tuple(s) for s in inputs.shapes], construction)
    timings["analyze"] = time.perf_counter() - started
    return graph, timings


@contextmanager
def gc_paused():
    """Tracing and the rules make a few objects per node and free almost none of them until
    the report is done, so the cyclic collector's passes over a growing heap find nothing: a
    third of a 1000-block net's CPU time. It is paused while they run and resumes as it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _trace_in_eval(meta_model: nn.Module, inputs: ExampleInputs, in_training: ArchlintError,
                   modules: dict[str, nn.Module] | None = None):
    """Some models only run in eval mode with a batch of one (BatchNorm after global pooling
    needs two values per channel in training) or without targets (detection models). Trace
    those in eval mode and say so; if that fails too, its error is the one to show."""
    modes = {m: m.training for m in meta_model.modules()}
    meta_model.eval()
    try:
        traced = trace(meta_model, inputs.tensors, inputs.describe(), modules=modules)
    except ArchlintError:
        # The model may be the one archlint built (traced in place); its parts are linted
        # next, and rules must see each module's own mode there (a norm_eval BatchNorm).
        for module, training in modes.items():
            module.training = training
        raise
    first = in_training.message.split(". ")[0][:240]
    traced.notes.append(f"traced in eval mode: in training mode the forward failed ({first})")
    return traced


@gc_paused()
def lint_model(model: nn.Module, inputs: ExampleInputs, settings: Settings, *,
               report: ModelReport | None = None, owned: bool = False,
               modules: dict[str, nn.Module] | None = None) -> ModelReport:
    """Lint one built model into `report` (a new one named after the model's class if none).
    `modules`: its named modules, duplicates kept, if the caller has them."""
    if not owned:  # the user's own model: on meta while linted, its weights back after
        modules = module_table(model)
        with weights_on_meta(model, modules):
            return lint_model(model, inputs, settings, report=report, owned=True, modules=modules)
    report = report if report is not None else ModelReport(target=type(model).__name__)
    report.inputs, report.input_source = inputs.shapes, inputs.source
    try:
        graph, timings = analyze(model, inputs, owned=owned, modules=modules)
    except ArchlintError as exc:
        if exc.kind not in ("trace", "shape") or exc.cause == "layer-rejected-input":
            raise  # a real shape error: the user must fix it
        return lint_parts(report, model, inputs, settings, exc)  # detection: backbone, neck, heads
    report.timings.update(timings)
    report.graph, report.tracer, report.notes = graph, graph.tracer, list(graph.notes)
    graph.coverage = measure(model, [graph])
    report.coverage = graph.coverage.to_dict()
    started = time.perf_counter()
    report.findings = run_rules(graph, load_rules().rules, settings, inputs.describe(),
                                problems=report.notes)
    report.timings["rules"] = time.perf_counter() - started
    _release_reruns([graph])
    return report


def _release_reruns(graphs: list[ArchGraph]) -> None:
    """The rules are done with the graphs' reruns, and each holds the traced fx graph, whose
    nodes link to each other: kept by a report, they outlived it as cyclic garbage, and a
    loop of API lints paid a full collection of the process's heap (0.5 s) every ten or so.
    A rerun also runs the model as it was linted, on meta twins it no longer has."""
    for graph in graphs:
        graph.rerun = graph.rerun_fast = None


@gc_paused()
def lint_parts(report: ModelReport, model: nn.Module, inputs: ExampleInputs, settings: Settings,
               whole_error: ArchlintError) -> ModelReport:
    """Fill `report` from the model's traceable parts, or raise `whole_error` if none traces."""
    started = time.perf_counter()
    plan = plan_parts(model, inputs.tensors)
    report.timings["trace"] = time.perf_counter() - started
    if not plan.parts:
        raise whole_error
    construction = construction_of(model)
    rules = load_rules().rules
    report.tracer = "parts"
    report.notes = describe(plan, whole_error)
    report.parts, report.findings = [], []
    started = time.perf_counter()
    graphs = [build_graph(part.traced, part.input_shapes, construction) for part in plan.parts]
    coverage = measure(model, graphs, plan.skipped)
    report.coverage = coverage.to_dict()
    graphs[0].coverage = coverage  # the model's coverage is reported once, with the first part
    for part, graph in zip(plan.parts, graphs):
        if part.input_shapes[:1] != [tuple(s) for s in inputs.shapes[:1]]:
            # Fed feature maps, not the image: a field measured from them is not the field on
            # the image, and rules must not report it as one.
            for layer in graph:
                layer.rf = None
            graph.rerun = graph.rerun_fast = None  # nor are its inputs' first dims a batch
        report.notes.extend(f"{part.path}: {note}" for note in graph.notes)
        shapes = ", ".join("x".join(map(str, s)) for s in part.input_shapes[:4])
        report.findings.extend(run_rules(graph, rules, settings, f"{shapes} (captured for {part.path})",
                                         problems=report.notes))
        report.parts.append({"module": part.path, "tracer": graph.tracer,
                             "inputs": [list(s) for s in part.input_shapes], **graph.summary()})
    report.parts.extend({"module": path, "skipped": why} for path, why in plan.skipped)
    # The stages of a backbone linted as parts share their building lines too.
    report.findings = one_per_line(report.findings)
    report.findings.sort(key=sort_key)
    report.timings["rules"] = time.perf_counter() - started
    _release_reruns(graphs)
    return report
