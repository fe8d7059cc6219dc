"""Baselines: accept today's findings, report only new ones.

    archlint check models/ --write-baseline                 # writes archlint-baseline.json
    archlint check models/ --baseline archlint-baseline.json

A finding is matched on the linted target (its file, relative to the baseline's folder, and the
model name), the rule code and the qualified module name, never on line numbers: code moving
around does not bring accepted findings back, while the same problem on another layer is new.
Entries carry a count, so a second finding of the same rule on the same module is new too. The
message is stored only to make the file readable in review. Writing a baseline merges target by
target: a run over one file (or one whose other file failed) never drops the other entries.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import safe_io
from .errors import ConfigError
from .findings import Finding
from .results import Report

DEFAULT_PATH = "archlint-baseline.json"
_FORMAT = 1

Key = tuple[str, str, str]  # (target, code, module)


def _target_key(target: str, folder: Path) -> str:
    """`path/to/file.py::Name` with the path relative to the baseline's folder, in POSIX form."""
    path, sep, name = target.partition("::")
    absolute = Path(os.path.abspath(path))
    try:
        shown = Path(os.path.relpath(absolute, folder)).as_posix()
    except ValueError:  # another drive on Windows
        shown = absolute.as_posix()
    return shown + sep + name


def _keys(report: Report, folder: Path) -> list[tuple[Key, Finding]]:
    return [((_target_key(m.target, folder), f.code, f.module), f)
            for m in report.models for f in m.findings]


@dataclass
class Baseline:
    counts: Counter
    path: Path

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Baseline":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = data["findings"]
            counts = Counter({(e["target"], e["code"], e["module"]): int(e.get("count", 1))
                              for e in entries})
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such baseline. Write one with `archlint check ... "
                              f"--write-baseline --baseline {path}`.") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: not an archlint baseline ({type(exc).__name__}: {exc}). "
                              "Write it again with --write-baseline.") from None
        return cls(counts, path)

    def filter(self, report: Report) -> "BaselineResult":
        """Drop the findings the baseline accepts, in place; say how many and what went stale."""
        remaining = Counter(self.counts)
        hidden = 0
        folder = self.path.resolve().parent
        for model in report.models:
            kept = []
            for finding in model.findings:
                key = (_target_key(model.target, folder), finding.code, finding.module)
                if remaining[key] > 0:
                    remaining[key] -= 1
                    hidden += 1
                else:
                    kept.append(finding)
            model.findings = kept
        linted = {_target_key(m.target, folder) for m in report.models if m.error is None}
        # Entries of targets not linted this run (other files) are not stale, only unseen.
        stale = sum(n for key, n in remaining.items() if n > 0 and key[0] in linted)
        return BaselineResult(hidden, stale)


@dataclass
class BaselineResult:
    hidden: int  # findings the baseline accepted
    stale: int  # accepted findings that no longer occur: the baseline can shrink


@dataclass
class BaselineUpdate:
    accepted: int  # findings of this run now accepted
    added: int  # accepted findings that were not in the file before
    removed: int  # entries of linted targets that no longer occur
    kept: int  # entries of targets not linted (or failed) in this run, left as they were


def _existing_entries(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    Baseline.read(path)  # a file that is not a baseline is an error, never silently replaced
    return json.loads(path.read_text(encoding="utf-8"))["findings"]


def update(report: Report, path: str | os.PathLike, inputs: Sequence[str] = ()) -> BaselineUpdate:
    """Accept this run's findings in the baseline at `path`, target by target: the entries of
    targets linted in this run are replaced, those of other targets (and of targets that
    failed this run, whose findings are unknown) are kept."""
    path = Path(path)
    folder = path.resolve().parent
    old = _existing_entries(path)
    linted = {_target_key(m.target, folder) for m in report.models if m.error is None}
    counts: Counter = Counter()
    messages: dict[Key, str] = {}
    for key, finding in _keys(report, folder):
        if key[0] in linted:
            counts[key] += 1
            messages.setdefault(key, finding.message)
    before = Counter()
    kept_entries = []
    for e in old:
        key = (e["target"], e["code"], e["module"])
        if e["target"] in linted:
            before[key] += int(e.get("count", 1))
        else:
            kept_entries.append(e)
    entries: list[dict[str, Any]] = kept_entries + [
        {"target": t, "code": c, "module": m, "count": n, "message": messages[(t, c, m)]}
        for (t, c, m), n in counts.items()
    ]
    entries.sort(key=lambda e: (e["target"], e["code"], e["module"]))
    text = json.dumps({"archlint_baseline": _FORMAT, "findings": entries}, indent=2) + "\n"
    safe_io.write_text(path, text, inputs, what="baseline")
    added = sum(max(0, n - before[k]) for k, n in counts.items())
    removed = sum(max(0, n - counts[k]) for k, n in before.items())
    return BaselineUpdate(sum(counts.values()), added, removed,
                          sum(int(e.get("count", 1)) for e in kept_entries))


def write(report: Report, path: str | os.PathLike) -> int:
    """Accept every finding of `report` (merged target by target); returns how many."""
    return update(report, path).accepted
