"""GitHub-flavoured Markdown for a pull-request comment or `$GITHUB_STEP_SUMMARY`: the counts,
the findings as a table whose locations link to their lines, and each model's totals.

Links point at the file in the repository at the commit being checked when GitHub Actions'
variables say which (GITHUB_SERVER_URL, GITHUB_REPOSITORY, GITHUB_SHA); elsewhere they are
paths relative to the repository root, which GitHub resolves in files it renders. Locations
are placed as in SARIF output (reports/_where.py). Cell text is escaped so a `|` or a `<` in a
message cannot break the table.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from archlint.findings import Severity
from archlint.results import scripts_text

from ._where import place, repository_root
from .text import human

_ICONS = {Severity.ERROR: ":x:", Severity.WARNING: ":warning:", Severity.INFO: ":information_source:"}


def cell(text: Any) -> str:
    value = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    value = value.replace("|", "\\|").replace("`", "\\`")
    return "<br>".join(part.strip() for part in value.splitlines()) or " "


def link_base(environ: Mapping[str, str] = os.environ) -> str:
    """Where repository paths are rooted: the commit's blob URL on GitHub, else ''."""
    repo, sha = environ.get("GITHUB_REPOSITORY"), environ.get("GITHUB_SHA")
    if not repo or not sha:
        return ""
    server = environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    return f"{server}/{repo}/blob/{sha}/"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _where(finding: Any, target: str, root, base: str) -> str:
    spot = place(finding, target, root)
    if spot.uri.startswith("file:"):  # outside the repository: nothing to link to
        return cell(f"{spot.path.name}:{spot.line}")
    shown = finding.location if finding.location and not spot.moved else f"{spot.uri}:{spot.line}"
    anchor = f"#L{spot.line}" + (f"-L{spot.end_line}" if spot.end_line > spot.line else "")
    return f"[{cell(shown)}]({base}{spot.uri}{anchor})"


def render(report: Any, *, environ: Mapping[str, str] | None = None, **_: Any) -> str:
    base = link_base(os.environ if environ is None else environ)
    root = repository_root()
    findings = report.findings
    counts = {s: sum(1 for f in findings if f.severity == s) for s in Severity}
    parts = [_plural(counts[s], str(s)) for s in (Severity.ERROR, Severity.WARNING, Severity.INFO)
             if counts[s]]
    linted = len(report.models) - len(report.errors) - len(report.scripts)
    lines = ["## archlint", ""]
    head = f"**{_plural(len(findings), 'finding')}**" + (f" ({', '.join(parts)})" if parts else "")
    head += f" in {_plural(linted, 'model')}"
    if report.errors:
        head += f"; **{_plural(len(report.errors), 'target')} could not be linted**"
    if report.scripts:
        head += f"; {scripts_text(len(report.scripts))} (not imported)"
    lines += [head, ""]
    for problem in report.problems:
        lines += [f"> archlint: {cell(problem)}", ""]
    if findings:
        lines += ["| Severity | Rule | Where | Module | Finding |", "|---|---|---|---|---|"]
        for model in report.models:
            for f in sorted(model.findings, key=lambda f: -int(f.severity)):
                message = f.message + (f"\nfix: {f.fix.description}" if f.fix else "")
                lines.append(f"| {_ICONS[f.severity]} {f.severity} | `{f.code}` {cell(f.name)} | "
                             f"{_where(f, model.target, root, base)} | {cell(f.module or '(model)')} | "
                             f"{cell(message)} |")
        lines.append("")
    lines += ["| Model | Tracer | Input | Params | MACs | Layers | Findings |",
              "|---|---|---|--:|--:|--:|--:|"]
    for model in report.models:
        if model.error is not None or model.skipped is not None:
            why = (f"could not be linted: {cell(str(model.error))}" if model.error is not None
                   else f"not imported (a script): {cell(model.skipped)}" if model.script is not None
                   else f"not built: {cell(model.skipped)}")
            lines.append(f"| {cell(model.target)} | {why} | | | | | |")
            continue
        totals = model.summary
        inputs = ", ".join("x".join(map(str, s)) for s in model.inputs)
        lines.append(f"| {cell(model.target)} | {cell(model.tracer or '')} | {inputs} | "
                     f"{human(totals['params'])} | {human(totals['macs'])} | {totals['layers']} | "
                     f"{len(model.findings)} |")
    lines.append("")
    return "\n".join(lines)
