"""The HTML report's view model: a Report turned into plain data the template only prints.

Everything the page shows is decided here (what a finding's snippet is, how a number is
written, where a node sits); the jinja2 template holds no analysis. Nothing here reads the
clock or shows an absolute path, so two reports of the same model are byte-identical.
"""
from __future__ import annotations

import linecache
import textwrap
from dataclasses import dataclass, field
from typing import Any, Sequence

from archlint import __version__
from archlint.findings import Finding, Severity
from archlint.results import scripts_text

from . import html_graph, html_plots
from .text import human

SEVERITIES = (Severity.ERROR, Severity.WARNING, Severity.INFO)
SNIPPET_CONTEXT = 3


@dataclass
class Count:
    severity: str
    count: int


@dataclass
class Header:
    target: str
    tracer: str
    inputs: str
    input_source: str
    params: str
    params_exact: str
    macs: str
    macs_exact: str
    layers: int
    operations: int
    receptive_field: str
    counts: list[Count]
    notes: list[str]
    coverage: str = "n/a"
    unreached: list[str] = field(default_factory=list)


@dataclass
class SnippetLine:
    number: int
    text: str
    current: bool


@dataclass
class Evidence:
    key: str
    value: str


@dataclass
class FindingView:
    id: str
    code: str
    name: str
    severity: str
    module: str
    location: str
    snippet: list[SnippetLine]
    message: str
    evidence: list[Evidence]
    fix_description: str
    fix_code: str
    docs_href: str | None
    graph_href: str


@dataclass
class LayerRow:
    index: int
    module: str
    kind: str
    type: str
    shape: str
    params: int
    macs: int
    rf: str
    rf_sort: int
    finding_codes: str
    severity: str | None

    @property
    def params_text(self) -> str:
        return human(self.params) if self.params else "–"

    @property
    def macs_text(self) -> str:
        return human(self.macs) if self.macs else "–"


@dataclass
class PartRow:
    """A part of a model that could not be traced whole, linted on its own (archlint/partial.py)."""

    module: str
    tracer: str = ""
    inputs: str = ""
    params: str = ""
    macs: str = ""
    layers: int = 0
    skipped: str = ""


@dataclass
class ModelView:
    id: str
    target: str
    error: str | None = None
    error_kind: str = ""
    header: Header | None = None
    findings: list[FindingView] = field(default_factory=list)
    rows: list[LayerRow] = field(default_factory=list)
    graph: html_graph.Level | None = None
    plots: html_plots.Plots | None = None
    counts: list[Count] = field(default_factory=list)
    parts: list[PartRow] = field(default_factory=list)
    # Not linted, and no error: a script not imported, a model its constructor's arguments
    # keep from being built. `skip_kind` heads the note.
    skipped: str | None = None
    skip_kind: str = ""


@dataclass
class RuleOptionView:
    name: str
    default: str
    help: str


@dataclass
class RuleDoc:
    code: str
    name: str
    severity: str
    anchor: str
    summary: str
    what: list[str]
    why: list[str]
    how_to_fix: list[str]
    bad: str
    good: str
    options: list[RuleOptionView]
    references: list[str]
    open: bool = False  # rules with findings in this run show their docs unfolded


@dataclass
class Page:
    title: str
    version: str
    models: list[ModelView]
    rules: list[RuleDoc]
    problems: list[str]
    counts: list[Count]
    skipped_note: str = ""  # "3 files skipped as scripts (not imported)", for the page header


# --- pieces ---------------------------------------------------------------------------------------

def _counts(findings: Sequence[Finding]) -> list[Count]:
    return [Count(str(s), sum(1 for f in findings if f.severity == s)) for s in SEVERITIES]


def _paragraphs(text: str) -> list[str]:
    body = textwrap.dedent(text).strip()
    return [" ".join(p.split()) for p in body.split("\n\n") if p.strip()]


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "×".join(_value(v) for v in value) if all(isinstance(v, int) for v in value) \
            else ", ".join(_value(v) for v in value)
    return str(value)


def snippet(finding: Finding, context: int = SNIPPET_CONTEXT) -> list[SnippetLine]:
    """The source lines around the finding's line, read from the file (never shown by its
    absolute path)."""
    loc = finding.location
    if loc is None or not loc.abspath or loc.line < 1:
        return []
    lines = []
    for number in range(max(1, loc.line - context), loc.line + context + 1):
        text = linecache.getline(loc.abspath, number)
        if not text:
            break
        lines.append(SnippetLine(number, text.rstrip("\n").expandtabs(4), number == loc.line))
    return lines if any(l.current for l in lines) else []


def rule_docs(rules: Sequence[type]) -> list[RuleDoc]:
    docs = []
    for rule in sorted(rules, key=lambda r: r.code):
        docs.append(RuleDoc(
            code=rule.code, name=rule.name, severity=str(rule.severity), anchor=f"rule-{rule.code}",
            summary=" ".join(rule.summary.split()), what=_paragraphs(rule.what), why=_paragraphs(rule.why),
            how_to_fix=_paragraphs(rule.how_to_fix),
            bad=rule.bad[0].source.rstrip() if rule.bad else "",
            good=rule.good[0].source.rstrip() if rule.good else "",
            options=[RuleOptionView(k, repr(o.default), o.help) for k, o in rule.options.items()],
            references=[" ".join(r.split()) for r in rule.references]))
    return docs


def _finding_view(f: Finding, fid: str, documented: set[str], graph_href: str) -> FindingView:
    return FindingView(
        id=fid, code=f.code, name=f.name, severity=str(f.severity), module=f.module or "(model)",
        location=str(f.location) if f.location else "", snippet=snippet(f), message=f.message,
        evidence=[Evidence(k, _value(v)) for k, v in f.evidence.items()],
        fix_description=f.fix.description if f.fix else "", fix_code=(f.fix.code or "").rstrip() if f.fix else "",
        docs_href=f"#rule-{f.code}" if f.code in documented else None, graph_href=graph_href)


def _rf_text(layer) -> tuple[str, int]:
    rf = layer.rf
    if rf is None:
        return "", -1
    text = "×".join(map(str, rf.size)) + (" (global)" if rf.is_global else "")
    return text, max(rf.size) + (1 << 30 if rf.is_global else 0)


def _row_name(layer) -> str:
    if layer.kind in ("module", "attr"):
        return layer.qualname
    if layer.kind == "input":
        return f"input {layer.name}"
    return f"{layer.qualname} › {layer.op}" if layer.qualname else layer.op


def layer_rows(graph, findings_at: dict[str, list[Finding]]) -> list[LayerRow]:
    rows = []
    for layer in graph:
        if layer.kind == "output":
            continue
        found = findings_at.get("L:" + layer.name, [])
        rf, rf_sort = _rf_text(layer)
        rows.append(LayerRow(
            index=layer.index, module=_row_name(layer), kind=layer.kind,
            type=layer.op if layer.kind != "input" else "input",
            shape=html_graph.shape_text(layer.out_shape) if layer.kind != "input" else "×".join(map(str, layer.out_shape or ())),
            params=layer.params, macs=layer.macs, rf=rf, rf_sort=rf_sort,
            finding_codes=" ".join(dict.fromkeys(f.code for f in found)),
            severity=str(max(f.severity for f in found)) if found else None))
    return rows


# --- the page -------------------------------------------------------------------------------------

def _part_row(part: dict[str, Any]) -> PartRow:
    if "skipped" in part:
        return PartRow(part["module"], skipped=str(part["skipped"]))
    return PartRow(part["module"], part.get("tracer") or "", html_plots.sizes_of(part.get("inputs") or []),
                   human(part.get("params", 0)), human(part.get("macs", 0)), part.get("layers", 0))


def _sorted_findings(findings: Sequence[Finding]) -> list[Finding]:
    # The engine already orders findings; sorting again (stably) keeps the page right for
    # reports assembled by other means.
    return sorted(findings, key=lambda f: -int(f.severity))


def model_view(model: Any, index: int, documented: set[str]) -> ModelView:
    mid = f"m{index}"
    view = ModelView(id=mid, target=model.target, counts=_counts(model.findings))
    if model.skipped is not None:
        view.skipped = model.skipped
        view.skip_kind = "not imported (a script)" if model.script is not None else "not built"
        return view
    if model.error is not None:
        view.error = str(model.error)
        view.error_kind = getattr(model.error, "kind", type(model.error).__name__)
        return view
    graph = model.graph
    findings = _sorted_findings(model.findings)
    ids = {id(f): f"{mid}-f{i}" for i, f in enumerate(findings)}
    summary = model.summary
    view.header = Header(
        target=model.target, tracer=model.tracer or "", inputs=html_plots.sizes_of(model.inputs),
        input_source=model.input_source, params=human(summary["params"]), params_exact=f"{summary['params']:,}",
        macs=human(summary["macs"]), macs_exact=f"{summary['macs']:,}", layers=summary["layers"],
        operations=len(graph) if graph is not None else 0,
        receptive_field=html_plots.rf_summary(graph) if graph is not None else "n/a",
        counts=view.counts, notes=list(model.notes),
        coverage=model.coverage_line().removeprefix("coverage ") or "n/a",
        unreached=model.unreached_lines())
    view.parts = [_part_row(p) for p in getattr(model, "parts", None) or []]
    if graph is None:  # linted part by part, or read back from a cache: no graph to draw
        view.findings = [_finding_view(f, ids[id(f)], documented, "") for f in findings]
        return view
    builder = html_graph.GraphBuilder(graph, findings, mid, ids)
    view.graph = builder.build()
    view.findings = [_finding_view(f, ids[id(f)], documented, "#" + builder.level_of_finding(f)) for f in findings]
    view.rows = layer_rows(graph, builder.findings_at)
    marked = {k[2:] for k in builder.findings_at if k.startswith("L:")}
    view.plots = html_plots.build_plots(graph, marked)
    return view


def page(report: Any, rules: Sequence[type] | None = None) -> Page:
    """The whole page. `rules` are the rule classes whose docs the page carries (default: the
    report's)."""
    if rules is None:
        rules = report.rules
    docs = rule_docs(rules)
    found = {f.code for f in report.findings}
    for doc in docs:
        doc.open = doc.code in found
    documented = {d.code for d in docs}
    models = [model_view(m, i, documented) for i, m in enumerate(report.models)]
    targets = [m.target for m in report.models]
    title = "archlint: " + (targets[0] if len(targets) == 1 else f"{len(targets)} models")
    scripts = len(report.scripts) if hasattr(report, "scripts") else 0
    return Page(title=title, version=__version__, models=models, rules=docs,
                problems=list(report.problems), counts=_counts(report.findings),
                skipped_note=f"{scripts_text(scripts)} (not imported)" if scripts else "")
