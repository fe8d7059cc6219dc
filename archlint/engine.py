"""Run the selected rules over a graph and collect their findings.

The engine never prints. It validates each rule's options, applies per-rule severity from the
config, drops findings silenced by `# archlint: disable=CODE` comments on the line that built or
called the layer, and orders the rest most severe first.
"""
from __future__ import annotations

import re

from dataclasses import replace
from typing import Iterable

from . import fixcheck, sources, spans
from .config import Settings, is_selected
from .findings import Finding, Location
from .graph import ArchGraph
from .rule import Context, Rule


def _suppressed(finding: Finding) -> bool:
    for location in (finding.built_at, finding.called_at):
        if location is not None and location.abspath:
            frame = sources.Frame(location.abspath, location.line)
            if finding.code in sources.suppressed_codes(frame):
                return True
    return False


def selected_rules(rules: Iterable[type[Rule]], settings: Settings) -> list[type[Rule]]:
    return [r for r in rules if is_selected(r.code, settings)]


def sort_key(finding: Finding):
    loc = finding.location or Location("", 0)
    return (-int(finding.severity), loc.path, loc.line, finding.code, finding.module)


def _crash_note(rule_cls: type[Rule], exc: Exception) -> str:
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    text = " ".join(str(exc).split())[:200]
    return (f"rule {rule_cls.code} ({rule_cls.name}) failed on this model and was skipped: "
            f"{type(exc).__name__}{': ' + text if text else ''}{where}. This is a bug in the rule; "
            "the other rules ran.")


def run_rules(graph: ArchGraph, rules: Iterable[type[Rule]], settings: Settings,
              input_description: str = "", problems: list[str] | None = None) -> list[Finding]:
    """Every selected rule's findings. A rule that raises is left out and, so that one broken
    rule cannot take down the run, described in `problems` instead (re-raised if none given)."""
    findings: list[Finding] = []
    for rule_cls in selected_rules(rules, settings):
        options = rule_cls.resolve_options(settings.rule_options.get(rule_cls.code))
        ctx = Context(options, settings.batch_size, input_description)
        # A severity set in the config is the user's word for every finding of the rule,
        # including those a rule raises above or below its default (D001 in generative models).
        configured = settings.rule_options.get(rule_cls.code, {}).get("severity")
        severity = settings.severity_for(rule_cls.code, rule_cls.severity) if configured else None
        try:
            found = list(rule_cls().check(graph, ctx))
        except Exception as exc:
            if problems is None:
                raise
            problems.append(_crash_note(rule_cls, exc))
            continue
        for finding in found:
            if severity is not None and finding.severity != severity:
                finding = replace(finding, severity=severity)
            if not _suppressed(finding):
                findings.append(spans.with_spans(fixcheck.check(finding, graph)))
    findings = one_per_line(findings)
    findings.sort(key=sort_key)
    return findings


def one_per_line(findings: list[Finding]) -> list[Finding]:
    """One finding per rule and building line (calling line, for a functional op): the blocks a
    loop builds share their lines, and twenty identical findings for one line are one problem.
    The first stands for the others; its evidence counts them and names their modules. Merged
    findings merge again (the parts of a model are linted one by one, then merged)."""
    groups: dict[tuple, list[Finding]] = {}
    for finding in findings:
        loc = finding.origin
        key = (finding.code, loc.abspath or loc.path, loc.line) if loc is not None else (finding.code, id(finding))
        groups.setdefault(key, []).append(finding)
    merged = []
    for group in groups.values():
        first = group[0]
        if len(group) > 1:
            modules = [m for f in group for m in f.evidence.get("modules", [f.module])]
            others = modules[1:]
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            verb = "built" if first.built_at is not None or first.called_at is None else "called"
            message = _MERGED.sub("", first.message)
            first = replace(first, message=f"{message} (also {shown}, {verb} by the same line)",
                            evidence={**first.evidence, "count": len(modules), "modules": modules})
        merged.append(first)
    return merged


_MERGED = re.compile(r" \(also .*, (built|called) by the same line\)$")
