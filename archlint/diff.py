"""`archlint diff OLD NEW`: what a change did to a model, for review.

    archlint diff git:HEAD~1:models/net.py models/net.py      # OLD first, then NEW
    archlint diff git:main:models/net.py models/net.py --format html -o diff.html

Each side is a file (optionally `file.py::Name`) or `git:REV:path`, the file as it was at a git
revision. For a revision, every .py file of the repository at that revision is written to a
temporary folder first, so the old file imports the old versions of its project modules too.

Layers are matched by qualified module name (as in `named_modules()`): a layer only in NEW is
added, only in OLD removed, and in both changed when its type, configuration (`extra_repr()`),
parameter count or output shape differ. Totals (parameters, MACs, layers), the receptive field of
the output, and the findings introduced and fixed (matched on rule and module, as baselines are)
complete the picture. The exit status is 1 when a finding at or above `--fail-on` (default
warning) is introduced.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from . import __version__
from .config import Settings
from .errors import LoadError
from .findings import Finding, Location, Severity
from .results import ModelReport

GIT_PREFIX = "git:"


# --- getting each side ----------------------------------------------------------------------

@dataclass
class Side:
    spec: str  # as the user wrote it
    report: ModelReport


def _git(args: list[str], cwd: Path) -> bytes:
    try:
        return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True).stdout
    except FileNotFoundError:
        raise LoadError("git is not installed; `git:REV:path` needs it.") from None
    except subprocess.CalledProcessError as exc:
        message = exc.stderr.decode(errors="replace").strip()
        raise LoadError(f"git {' '.join(args)} failed: {message}") from None


def _split_git_spec(spec: str) -> tuple[str, str, str]:
    """`git:REV:path[::Name]` -> (rev, path, name)."""
    rest = spec[len(GIT_PREFIX):]
    rev, sep, path = rest.partition(":")
    if not sep or not rev or not path:
        raise LoadError(f"{spec!r}: write a file at a revision as git:REV:path, e.g. git:HEAD~1:models/net.py.")
    path, _, name = path.partition("::")
    return rev, path, name


@contextmanager
def materialized(spec: str) -> Iterator[tuple[str, list[str]]]:
    """(file path, target names) for a spec; a git revision is written out to a temporary tree."""
    if not spec.startswith(GIT_PREFIX):
        path, _, name = spec.partition("::")
        yield path, [name] if name else []
        return
    rev, path, name = _split_git_spec(spec)
    wanted = Path(path) if Path(path).is_absolute() else Path.cwd() / path
    root = Path(_git(["rev-parse", "--show-toplevel"], Path.cwd()).decode().strip()).resolve()
    try:
        inside = wanted.resolve().relative_to(root).as_posix()
    except ValueError:
        raise LoadError(f"{spec}: {path} is not inside the git repository at {root}.") from None
    _git(["cat-file", "-e", f"{rev}:{inside}"], root)  # a clear error if the file did not exist
    with tempfile.TemporaryDirectory(prefix="archlint-diff-") as tmp:
        files = _git(["ls-tree", "-r", "-z", "--name-only", rev], root).decode().split("\0")
        for name_in_repo in files:
            if name_in_repo.endswith(".py"):
                target = Path(tmp) / name_in_repo
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(_git(["show", f"{rev}:{name_in_repo}"], root))
        try:
            yield str(Path(tmp) / inside), [name] if name else []
        finally:
            real = os.path.realpath(tmp)
            sys.path[:] = [p for p in sys.path if not os.path.realpath(p or ".").startswith(real)]


def _forget_project_modules(before: set[str]) -> None:
    """Unload the project modules the previous side imported, so the next side imports its own
    versions of them (the old `blocks.py`, not the new one)."""
    from .cache import is_project_file

    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        # The file of an old revision is already gone with its temporary folder.
        if is_project_file(getattr(module, "__file__", None), must_exist=False):
            del sys.modules[name]


def lint_side(spec: str, settings: Settings) -> Side:
    from . import driver

    before = set(sys.modules)
    try:
        with materialized(spec) as (path, names):
            reports = driver.check_file(path, names, True, settings)
    finally:
        _forget_project_modules(before)
    if len(reports) != 1:
        found = ", ".join(r.target for r in reports)
        raise LoadError(f"{spec}: the file builds {len(reports)} models ({found}); name the one to "
                        "compare: file.py::Name.")
    report = reports[0]
    if report.error is not None:
        raise report.error.with_prefix(spec)
    if spec.startswith(GIT_PREFIX):
        report.target = spec
        report.findings = [_at_revision(f, spec) for f in report.findings]
    return Side(spec, report)


def _at_revision(finding: Finding, spec: str) -> Finding:
    """Findings of a revision point into a temporary folder that is gone by now: show them as
    `REV:path:line` instead."""
    rev = _split_git_spec(spec)[0]
    temp = os.path.realpath(tempfile.gettempdir()) + os.sep + "archlint-diff-"

    def moved(loc: Location | None) -> Location | None:
        if loc is None or not os.path.realpath(loc.abspath or loc.path).startswith(temp):
            return loc
        inside = os.path.realpath(loc.abspath or loc.path)[len(temp):].split(os.sep, 1)[-1]
        return Location(f"{rev}:{Path(inside).as_posix()}", loc.line)

    return replace(finding, location=moved(finding.location), built_at=moved(finding.built_at),
                   called_at=moved(finding.called_at))


# --- comparing --------------------------------------------------------------------------------

@dataclass
class LayerInfo:
    qualname: str
    op: str
    config: str
    params: int
    macs: int
    out_shape: tuple | None
    calls: int

    def describe(self) -> str:
        return f"{self.op}({self.config})"

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.qualname, "type": self.op, "config": self.config,
                "params": self.params, "macs": self.macs,
                "out_shape": list(self.out_shape) if self.out_shape else None, "calls": self.calls}


def layer_table(report: ModelReport) -> dict[str, LayerInfo]:
    """One entry per called module, in execution order; a module called twice sums its MACs."""
    table: dict[str, LayerInfo] = {}
    for layer in report.graph.layers:
        info = table.get(layer.qualname)
        if info is None:
            config = layer.module.extra_repr() if layer.module is not None else ""
            table[layer.qualname] = LayerInfo(layer.qualname, layer.op, config, layer.params,
                                              layer.macs, layer.out_shape, 1)
        else:
            info.macs += layer.macs
            info.calls += 1
    return table


def output_receptive_field(report: ModelReport) -> dict[str, Any] | None:
    from .graph.receptive_field import ReceptiveField

    graph = report.graph
    fields = [l.rf for l in graph.outputs if l.rf is not None] or [l.rf for l in graph if l.rf is not None]
    if not fields:
        return None
    rf = ReceptiveField.widest(fields)
    return {"size": list(rf.size), "global": rf.is_global}


@dataclass
class LayerChange:
    qualname: str
    old: LayerInfo
    new: LayerInfo
    what: list[str]  # "type", "config", "params", "output shape"

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.qualname, "changed": self.what, "old": self.old.to_dict(),
                "new": self.new.to_dict()}


@dataclass
class ModelDiff:
    old: Side
    new: Side
    added: list[LayerInfo] = field(default_factory=list)
    removed: list[LayerInfo] = field(default_factory=list)
    changed: list[LayerChange] = field(default_factory=list)
    introduced: list[Finding] = field(default_factory=list)
    fixed: list[Finding] = field(default_factory=list)
    old_rf: dict[str, Any] | None = None
    new_rf: dict[str, Any] | None = None

    @property
    def totals(self) -> dict[str, dict[str, int]]:
        old, new = self.old.report.summary, self.new.report.summary
        return {key: {"old": old[key], "new": new[key], "delta": new[key] - old[key]}
                for key in ("params", "macs", "layers")}

    def exit_code(self, fail_on: Severity) -> int:
        return 1 if any(f.severity >= fail_on for f in self.introduced) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "old": self.old.report.target, "new": self.new.report.target,
            "totals": self.totals,
            "receptive_field": {"old": self.old_rf, "new": self.new_rf},
            "layers": {
                "added": [l.to_dict() for l in self.added],
                "removed": [l.to_dict() for l in self.removed],
                "changed": [c.to_dict() for c in self.changed],
            },
            "findings": {
                "introduced": [f.to_dict() for f in self.introduced],
                "fixed": [f.to_dict() for f in self.fixed],
            },
        }


def _finding_delta(before: list[Finding], after: list[Finding]) -> list[Finding]:
    """Findings of `after` not matched (on rule and module, counted) by one in `before`."""
    left = Counter((f.code, f.module) for f in before)
    result = []
    for f in after:
        if left[(f.code, f.module)] > 0:
            left[(f.code, f.module)] -= 1
        else:
            result.append(f)
    return result


def compare(old: Side, new: Side) -> ModelDiff:
    before, after = layer_table(old.report), layer_table(new.report)
    diff = ModelDiff(old, new)
    diff.added = [info for name, info in after.items() if name not in before]
    diff.removed = [info for name, info in before.items() if name not in after]
    for name, info in after.items():
        if name not in before:
            continue
        was = before[name]
        what = [label for label, changed in (
            ("type", was.op != info.op),
            ("config", was.op == info.op and was.config != info.config),
            ("params", was.params != info.params),
            ("output shape", was.out_shape != info.out_shape),
        ) if changed]
        if what:
            diff.changed.append(LayerChange(name, was, info, what))
    diff.introduced = _finding_delta(old.report.findings, new.report.findings)
    diff.fixed = _finding_delta(new.report.findings, old.report.findings)
    diff.old_rf, diff.new_rf = output_receptive_field(old.report), output_receptive_field(new.report)
    return diff


def diff_specs(old_spec: str, new_spec: str, settings: Settings) -> ModelDiff:
    old = lint_side(old_spec, settings)
    new = lint_side(new_spec, settings)
    return compare(old, new)


def run(old_spec: str, new_spec: str, settings: Settings, fmt: str = "text") -> tuple[str, ModelDiff]:
    """Compare the two sides and render the result in `fmt` (text, json or html)."""
    from .reports import diff as render_diff

    diff = diff_specs(old_spec, new_spec, settings)
    return render_diff.RENDERERS[fmt](diff), diff
