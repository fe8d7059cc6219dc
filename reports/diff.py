"""Renderers of `archlint diff`: text, JSON and a standalone HTML page.

They lay out a `ModelDiff` (archlint/diff.py compares; these only render). The page uses the
report's jinja environment: autoescape, StrictUndefined and the same filters.
"""
from __future__ import annotations

import json
from typing import Any

from archlint import __version__
from archlint.diff import ModelDiff
from archlint.findings import Finding

from .text import human


def _signed(n: int) -> str:
    return ("+" if n > 0 else "") + human(n)


def _percent(old: int, new: int) -> str:
    if old == 0:
        return ""
    return f" ({(new - old) / old * 100:+.1f}%)"


def _rf_text(rf: dict[str, Any] | None) -> str:
    if rf is None:
        return "n/a"
    return "x".join(map(str, rf["size"])) + (" (global)" if rf["global"] else "")


def _shape(shape) -> str:
    return "x".join(map(str, shape)) if shape else "?"


def _finding_line(f: Finding) -> str:
    where = f"{f.location}: " if f.location else ""
    module = f"{f.module}: " if f.module else ""
    return f"{where}{f.code} {f.severity} {module}{f.message}"


def render_text(diff: ModelDiff) -> str:
    lines = [f"archlint diff {diff.old.report.target} -> {diff.new.report.target}", ""]
    for key, label in (("params", "params"), ("macs", "MACs"), ("layers", "layers")):
        t = diff.totals[key]
        lines.append(f"  {label:<8} {human(t['old']):>9} -> {human(t['new']):<9} "
                     f"{_signed(t['delta'])}{_percent(t['old'], t['new'])}")
    rf_old, rf_new = _rf_text(diff.old_rf), _rf_text(diff.new_rf)
    lines.append(f"  {'RF':<8} {rf_old:>9} -> {rf_new}" + ("" if rf_old != rf_new else "  (unchanged)"))
    lines.append("")
    if not (diff.added or diff.removed or diff.changed):
        lines.append("layers: no layer added, removed or changed")
    for info in diff.added:
        lines.append(f"+ {info.qualname}: {info.describe()}  {human(info.params)} params, "
                     f"out {_shape(info.out_shape)}")
    for info in diff.removed:
        lines.append(f"- {info.qualname}: {info.describe()}  {human(info.params)} params")
    for change in diff.changed:
        lines.append(f"~ {change.qualname}: {change.old.describe()} -> {change.new.describe()}")
        if "params" in change.what:
            lines.append(f"    params {human(change.old.params)} -> {human(change.new.params)}")
        if "output shape" in change.what:
            lines.append(f"    out {_shape(change.old.out_shape)} -> {_shape(change.new.out_shape)}")
    lines.append("")
    lines.append(f"findings introduced: {len(diff.introduced)}")
    lines.extend("  + " + _finding_line(f) for f in diff.introduced)
    lines.append(f"findings fixed: {len(diff.fixed)}")
    lines.extend("  - " + _finding_line(f) for f in diff.fixed)
    return "\n".join(lines) + "\n"


def render_json(diff: ModelDiff) -> str:
    return json.dumps(diff.to_dict(), indent=2, default=str) + "\n"


def render_html(diff: ModelDiff) -> str:
    """A standalone page; the template only lays out what `view` computed."""
    from .html import environment

    return environment().get_template("diff.html.j2").render(view=html_view(diff))


def html_view(diff: ModelDiff) -> dict[str, Any]:
    totals = []
    for key, label in (("params", "parameters"), ("macs", "MACs"), ("layers", "layers")):
        t = diff.totals[key]
        totals.append({"label": label, "old": human(t["old"]), "new": human(t["new"]),
                       "delta": _signed(t["delta"]) + _percent(t["old"], t["new"]),
                       "sign": (t["delta"] > 0) - (t["delta"] < 0)})
    rows = []
    for info in diff.added:
        rows.append({"mark": "+", "kind": "added", "module": info.qualname, "old": "",
                     "new": info.describe(), "params": human(info.params), "out": _shape(info.out_shape)})
    for info in diff.removed:
        rows.append({"mark": "\u2212", "kind": "removed", "module": info.qualname, "old": info.describe(),
                     "new": "", "params": human(info.params), "out": _shape(info.out_shape)})
    def change(old: str, new: str) -> str:
        return old if old == new else f"{old} \u2192 {new}"

    for c in diff.changed:
        rows.append({"mark": "~", "kind": "changed", "module": c.qualname, "old": c.old.describe(),
                     "new": c.new.describe(),
                     "params": change(human(c.old.params), human(c.new.params)),
                     "out": change(_shape(c.old.out_shape), _shape(c.new.out_shape))})

    def finding_view(f: Finding) -> dict[str, Any]:
        return {"code": f.code, "name": f.name, "severity": str(f.severity), "module": f.module,
                "message": f.message, "location": str(f.location) if f.location else "",
                "fix": f.fix.description if f.fix else "", "fix_code": (f.fix.code or "") if f.fix else ""}

    return {
        "old": diff.old.report.target, "new": diff.new.report.target, "version": __version__,
        "totals": totals, "rf_old": _rf_text(diff.old_rf), "rf_new": _rf_text(diff.new_rf),
        "rows": rows,
        "introduced": [finding_view(f) for f in diff.introduced],
        "fixed": [finding_view(f) for f in diff.fixed],
    }


RENDERERS = {"text": render_text, "json": render_json, "html": render_html}
