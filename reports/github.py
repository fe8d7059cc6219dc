"""GitHub Actions workflow commands: one annotation per finding, shown on the pull request diff.

    ::warning file=models/net.py,line=12,endLine=12,title=K001 large-kernel::conv: 7x7 conv ...

Paths are relative to the repository root (the git work tree around the working folder), as
GitHub expects; a finding whose line lies outside the repository is placed as in SARIF output
(reports/_where.py). Severities map to error, warning and notice. Values are escaped as the
Actions runner reads them: `%`, CR and LF everywhere, and `:` and `,` inside properties.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from archlint.findings import Severity
from archlint.results import scripts_text

from ._where import place, repository_root, target_file

_COMMANDS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, **properties: Any) -> str:
    props = ",".join(f"{key}={escape_property(str(value))}" for key, value in properties.items()
                     if value is not None)
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


def render(report: Any, **_: Any) -> str:
    root = repository_root()
    lines = []
    for problem in report.problems:
        lines.append(command("warning", problem, title="archlint"))
    for model in report.models:
        if model.script is not None:
            # On the line that makes it a script, where the fix goes.
            lines.append(command("notice", model.skip_note, file=_in_repository(model.target, root),
                                 line=model.script.get("line") or None,
                                 title=f"archlint did not import {model.target} (a script)"))
            continue
        if model.skipped is not None:
            lines.append(command("notice", model.skip_note,
                                 title=f"archlint did not build {model.target}"))
            continue
        if model.error is not None:
            lines.append(command("error", str(model.error), file=_in_repository(model.target, root),
                                 title=f"archlint could not lint {model.target}"))
            continue
        for finding in model.findings:
            where = place(finding, model.target, root)
            message = f"{finding.module}: {finding.message}" if finding.module else finding.message
            if where.moved and finding.location is not None:
                message += f" (at {finding.location})"
            if finding.fix is not None:
                message += f"\nfix: {finding.fix.description}"
                if finding.fix.code:
                    message += "\n" + finding.fix.code.rstrip()
            lines.append(command(_COMMANDS[finding.severity], message, file=unquote(where.uri),  # a path here, not a URI
                                 line=where.line, endLine=max(where.end_line, where.line),
                                 title=f"{finding.code} {finding.name}"))
    findings = report.findings
    tail = (f"archlint: {len(findings)} finding{'' if len(findings) == 1 else 's'} in "
            f"{len(report.models) - len(report.errors) - len(report.scripts)} model(s)")
    if report.scripts:
        tail += f"; {scripts_text(len(report.scripts))} (not imported)"
    lines.append(tail)
    return "\n".join(lines) + "\n"


def _in_repository(target: str, root) -> str:
    """The target's file relative to the repository root, as GitHub places annotations."""
    path = target_file(target)
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
