"""SARIF 2.1.0, for GitHub code scanning and other tools that read static-analysis results.

    archlint check models/ --format sarif -o archlint.sarif

One run; `tool.driver.rules` lists every rule archlint knows with its docs, and each result
points at a line of the repository by a path relative to its root (the git work tree around the
working folder). Where a finding's own line lies outside the repository (a torchvision layer is
built in site-packages), the result points at the other recorded line of the layer if that one is
in the repository, else at line 1 of the linted file, and says so in its message. A finding with
replacement code carries a SARIF `fix` replacing the layer's constructor call with it, but only
where that line holds exactly one torch.nn constructor call: a line that builds a whole model
(`model = resnet18()`) gets no fix, since the layer was built inside it. `partialFingerprints` hash the file, rule and module (not the line), so an alert keeps its
identity when code above it moves.
"""
from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path
from typing import Any

from archlint import __version__
from archlint.findings import Finding, Severity

from ._where import Place, place, repository_root, repository_uri, target_file

SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
_LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def _rule_descriptor(rule: type) -> dict[str, Any]:
    markdown = rule.docs_markdown()
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": " ".join(textwrap.dedent(rule.what).split())},
        "help": {
            "text": "\n\n".join(" ".join(textwrap.dedent(part).split())
                                for part in (rule.what, rule.why, rule.how_to_fix)),
            "markdown": markdown,
        },
        "defaultConfiguration": {"level": _LEVELS[rule.severity]},
        "properties": {"tags": ["pytorch", "architecture"], "precision": "high"},
    }


def _fingerprint(finding: Finding, target: str, occurrence: int) -> str:
    text = f"{target}\0{finding.code}\0{finding.module}\0{occurrence}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _indent_following(code: str, indent: str) -> str:
    lines = code.rstrip("\n").splitlines()
    return "\n".join([lines[0]] + [indent + line if line else line for line in lines[1:]])


def _fix(finding: Finding, where: Place) -> dict[str, Any] | None:
    """Replace the span the fix names (a layer's constructor call, or whole statement lines).
    None where the engine found no certain span, or the finding was moved off its own line."""
    if finding.fix is None or not finding.fix.code or finding.fix.span is None or where.moved:
        return None
    span, code = finding.fix.span, finding.fix.code
    region = {"startLine": span.start_line, "startColumn": span.start_column,
              "endLine": span.end_line, "endColumn": span.end_column}
    if span.kind == "expression":
        inserted = _indent_following(code.strip(), span.indent)
    else:
        inserted = textwrap.indent(textwrap.dedent(code).strip("\n"), span.indent) + "\n"
    return {
        "description": {"text": finding.fix.description},
        "artifactChanges": [{
            "artifactLocation": {"uri": where.uri, "uriBaseId": "SRCROOT"},
            "replacements": [{"deletedRegion": region, "insertedContent": {"text": inserted}}],
        }],
    }


def _message(finding: Finding, where: Place) -> str:
    parts = [f"{finding.module}: {finding.message}" if finding.module else finding.message]
    if where.moved and finding.location is not None:
        parts.append(f"(the layer's own line is {finding.location}, outside this repository)")
    if finding.fix is not None:
        parts.append(f"Fix: {finding.fix.description}.")
    return " ".join(parts)


def _result(finding: Finding, target: str, root: Path, rule_index: dict[str, int],
            seen: dict[tuple, int]) -> dict[str, Any]:
    where = place(finding, target, root)
    identity = (target, finding.code, finding.module)
    seen[identity] = seen.get(identity, 0) + 1
    location: dict[str, Any] = {
        "physicalLocation": {
            "artifactLocation": {"uri": where.uri, "uriBaseId": "SRCROOT"},
            "region": {"startLine": where.line, "endLine": max(where.end_line, where.line)},
        },
    }
    if finding.module:
        location["logicalLocations"] = [{"fullyQualifiedName": finding.module, "kind": "member"}]
    result: dict[str, Any] = {
        "ruleId": finding.code,
        "level": _LEVELS[finding.severity],
        "message": {"text": _message(finding, where)},
        "locations": [location],
        "partialFingerprints": {"archlintFinding/v1": _fingerprint(finding, target, seen[identity])},
        "properties": {"target": target, "module": finding.module, "evidence": finding.evidence},
    }
    if finding.code in rule_index:
        result["ruleIndex"] = rule_index[finding.code]
    fix = _fix(finding, where)
    if fix is not None:
        result["fixes"] = [fix]
    return result


def _script_notification(model: Any, root: Path) -> dict[str, Any]:
    """A file not imported because it is a script: a note on the line that makes it one."""
    path = target_file(model.target)
    line = model.script.get("line") or 1
    uri = repository_uri(path, root)
    artifact = {"uri": uri} if uri.startswith("file:") else {"uri": uri, "uriBaseId": "SRCROOT"}
    return {
        "level": "note",
        "message": {"text": f"{model.target}: {model.skip_note}"},
        "descriptor": {"id": "archlint/script"},
        "locations": [{"physicalLocation": {"artifactLocation": artifact,
                                            "region": {"startLine": line}}}],
        "properties": {"script": model.script},
    }


def to_sarif(report: Any, root: Path | None = None) -> dict[str, Any]:
    root = (root or repository_root()).resolve()
    rules = list(report.rules)
    rule_index = {rule.code: i for i, rule in enumerate(rules)}
    seen: dict[tuple, int] = {}
    results = [_result(f, model.target, root, rule_index, seen)
               for model in report.models for f in model.findings]
    notifications = [
        {"level": "error", "message": {"text": f"{model.target}: {model.error}"},
         "descriptor": {"id": f"archlint/{model.error.kind}"}}
        for model in report.errors
    ] + [{"level": "note", "message": {"text": f"{model.target}: {model.skip_note}"},
          "descriptor": {"id": "archlint/not-built"}}
         for model in report.not_built
    ] + [_script_notification(model, root) for model in report.scripts
    ] + [{"level": "warning", "message": {"text": problem}} for problem in report.problems]
    invocation: dict[str, Any] = {"executionSuccessful": not report.errors}
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "archlint", "version": __version__, "semanticVersion": __version__,
                "rules": [_rule_descriptor(rule) for rule in rules],
            }},
            "originalUriBaseIds": {"SRCROOT": {"uri": root.as_uri() + "/"}},
            "invocations": [invocation],
            "results": results,
            "columnKind": "utf16CodeUnits",
            # How much of each model the linted graph reached: a run with no results on a model
            # archlint barely saw is not a clean bill of health.
            "properties": {"coverage": {m.target: m.coverage for m in report.models
                                        if m.coverage is not None}},
        }],
    }


def render(report: Any, **_: Any) -> str:
    return json.dumps(to_sarif(report), indent=2) + "\n"
