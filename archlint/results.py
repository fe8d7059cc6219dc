"""What a run produces: one `ModelReport` per linted target, gathered in a `Report`.

Torch-free on purpose: reports answered from the cache (archlint/cache.py) are rebuilt and
rendered without importing torch. A cached `ModelReport` has no `graph`; its `summary` was
stored with it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import ArchlintError
from .findings import Finding, Severity

if TYPE_CHECKING:
    from .graph import ArchGraph


def percent_text(share: float) -> str:
    """A coverage share as people read it: never "100%" for a model not wholly seen, never
    "0.0%" for one seen a little."""
    value = share * 100
    if 99.95 <= value < 100:
        return "99.9%"
    if 0 < value < 0.1:
        return "<0.1%"
    return f"{value:.0f}%" if value >= 10 or value == 0 else f"{value:.1f}%"


def scripts_text(count: int) -> str:
    """The count every renderer shows: "3 files skipped as scripts"."""
    return "1 file skipped as a script" if count == 1 else f"{count} files skipped as scripts"


@dataclass
class ModelReport:
    target: str
    tracer: str | None = None
    inputs: list[list[int]] = field(default_factory=list)
    input_source: str = ""
    findings: list[Finding] = field(default_factory=list)
    graph: ArchGraph | None = None
    error: ArchlintError | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    stored_summary: dict[str, Any] | None = None  # set when the report came from the cache
    # Set when the model could not be traced whole and its parts were linted alone
    # (archlint/partial.py): {"module", "tracer", "inputs", "params", "macs", "layers"} per
    # linted part, {"module", "skipped"} per part left out.
    parts: list[dict[str, Any]] = field(default_factory=list)
    from_cache: bool = False
    # graph/coverage.py's Coverage as a dict: the share of parameters and weighted modules the
    # linted graph reached, and what it did not reach and why.
    coverage: dict[str, Any] | None = None
    # Set for a model archlint found but could not build (its constructor needs arguments):
    # listed, with why, in every output instead of being passed over.
    skipped: str | None = None
    # What the user's code wrote to stdout and stderr while the file was loaded and traced
    # (in its child process): kept off archlint's own output, shown with --debug.
    output: str = ""
    # Set for a file a folder or pre-commit run did not import because its top level runs a
    # script (archlint/script_check.py): {"line", "kind", "what", "code"}; `skipped` says why
    # and what to do, and the target is the file itself.
    script: dict[str, Any] | None = None

    @property
    def skip_note(self) -> str:
        """How renderers introduce `skipped`: a script was not imported at all, a model that
        needs constructor arguments was not built."""
        return f"{'not imported' if self.script is not None else 'not linted'}: {self.skipped}"

    @property
    def summary(self) -> dict[str, Any]:
        if self.graph is not None:
            return self.graph.summary()
        if self.parts and not self.stored_summary:
            linted = [p for p in self.parts if "skipped" not in p]
            return {k: sum(p[k] for p in linted) for k in ("params", "macs", "layers")}
        return self.stored_summary or {"params": 0, "macs": 0, "layers": 0}

    def coverage_line(self) -> str:
        """'coverage 100% of parameters (25.6M), 161/161 weighted modules', for renderers."""
        c = self.coverage
        if not c:
            return ""
        share = c["params_reached"] / c["params_total"] if c["params_total"] else 1.0
        return (f"coverage {percent_text(share)} of parameters, {c['modules_reached']}/"
                f"{c['modules_total']} weighted modules")

    def unreached_lines(self) -> list[str]:
        return [f"not reached: {u['module'] or 'the model'} ({u['params']:,} params): {u['why']}"
                for u in (self.coverage or {}).get("unreached", [])]

    def counts(self) -> dict[str, int]:
        counts = {str(s): 0 for s in (Severity.ERROR, Severity.WARNING, Severity.INFO)}
        for f in self.findings:
            counts[str(f.severity)] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "target": self.target,
            "tracer": self.tracer,
            "inputs": self.inputs,
            "input_source": self.input_source,
            "summary": self.summary,
            "findings": [f.to_dict() for f in self.findings],
        }
        if self.coverage is not None:
            data["coverage"] = self.coverage
        if self.skipped is not None:
            data["skipped"] = self.skipped
        if self.script is not None:
            data["script"] = self.script
        if self.notes:
            data["notes"] = self.notes
        if self.parts:
            data["parts"] = self.parts
        if self.error is not None:
            data["error"] = {"kind": self.error.kind, "message": str(self.error)}
        return data


@dataclass
class Report:
    models: list[ModelReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # rule packs that failed to load
    # The rule classes of the run, for renderers that document them (SARIF, HTML): handed to
    # them here so that no renderer loads the registry itself.
    rules: list[Any] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return [f for m in self.models for f in m.findings]

    @property
    def errors(self) -> list[ModelReport]:
        return [m for m in self.models if m.error is not None]

    @property
    def scripts(self) -> list[ModelReport]:
        """Files not imported because they are scripts."""
        return [m for m in self.models if m.script is not None]

    @property
    def not_built(self) -> list[ModelReport]:
        """Models found but not built (their constructors need arguments)."""
        return [m for m in self.models if m.skipped is not None and m.script is None]

    def to_dict(self) -> dict[str, Any]:
        return {"version": __version__, "models": [m.to_dict() for m in self.models]}

    def exit_code(self, fail_on: Severity) -> int:
        if self.errors:
            return 2
        return 1 if any(f.severity >= fail_on for f in self.findings) else 0
