"""Terminal output, one finding per block, as compilers print:

    path/to/model.py:12: K001 warning features.0: 11x11 conv ...
        fix: replace it by 5 stacked 3x3 convs ...
            nn.Sequential(...)
"""
from __future__ import annotations

from typing import Any

import click

from archlint.findings import Severity
from archlint.results import scripts_text

_COLORS = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def human(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def render(report: Any, *, color: bool = False, statistics: bool = False, quiet: bool = False,
           **_: Any) -> str:
    def style(text: str, **kw: Any) -> str:
        return click.style(text, **kw) if color else text

    lines: list[str] = []
    for problem in report.problems:
        lines.append(style("archlint: ", bold=True) + problem)
    for model in report.models:
        if model.skipped is not None:
            lines.append(style(model.target, bold=True) + f"  {model.skip_note}")
            continue
        if model.error is not None:
            lines.append(style(f"{model.target}: error: ", fg="red", bold=True) + str(model.error))
            continue
        if not quiet:
            inputs = ", ".join("x".join(map(str, s)) for s in model.inputs)
            summary = model.summary
            lines.append(style(model.target, bold=True) + f"  traced with {model.tracer}, input "
                         f"{inputs} ({model.input_source}); {human(summary['params'])} params, "
                         f"{human(summary['macs'])} MACs, {summary['layers']} layers"
                         + (f"; {model.coverage_line()}" if model.coverage else ""))
            for line in model.unreached_lines():
                lines.append(f"  {line}")
            for note in model.notes:
                lines.append(f"  note: {note}")
        for f in model.findings:
            where = f"{f.location}: " if f.location else ""
            sev = style(str(f.severity), fg=_COLORS[f.severity], bold=True)
            module = f"{f.module}: " if f.module else ""
            lines.append(f"{where}{style(f.code, bold=True)} {sev} {module}{f.message}")
            if f.fix and not quiet:
                note = f.fix.check_note()
                lines.append(f"    fix: {f.fix.description}" + (f" [{note}]" if note else ""))
                if f.fix.code:
                    lines.extend("        " + line for line in f.fix.code.rstrip().splitlines())
    findings = report.findings
    counts = {s: sum(1 for f in findings if f.severity == s) for s in Severity}
    if statistics and findings:
        lines.append("")
        by_code: dict[tuple[str, str], int] = {}
        for f in findings:
            by_code[(f.code, f.name)] = by_code.get((f.code, f.name), 0) + 1
        for (code, name), n in sorted(by_code.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"{n:5d}  {code}  {name}")
    parts = [_plural(counts[s], str(s)) for s in (Severity.ERROR, Severity.WARNING, Severity.INFO) if counts[s]]
    errors = len(report.errors)
    not_built, scripts = len(report.not_built), len(report.scripts)
    models = len(report.models) - errors - not_built - scripts
    tail = f"{_plural(len(findings), 'finding')}" + (f" ({', '.join(parts)})" if parts else "")
    tail += f" in {_plural(models, 'model')}"
    if errors:
        tail += f"; {_plural(errors, 'target')} could not be linted"
    if not_built:
        tail += f"; {_plural(not_built, 'model')} not built (constructor arguments)"
    if scripts:
        tail += f"; {scripts_text(scripts)} (not imported)"
    lines.append(style(tail, bold=True))
    return "\n".join(lines) + "\n"
