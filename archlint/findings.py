"""The records archlint produces: findings, their locations and their fixes.

Findings are frozen data. The engine yields them, renderers print them; nothing
downstream recomputes analysis from them.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.IntEnum):
    INFO = 1
    WARNING = 2
    ERROR = 3

    @classmethod
    def parse(cls, text: str | "Severity") -> "Severity":
        if isinstance(text, Severity):
            return text
        try:
            return cls[str(text).strip().upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r}; use info, warning or error") from None

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Location:
    """A line of source code. `path` is as the user would type it (relative when possible)."""

    path: str
    line: int
    # The absolute path, for reading the line again (suppression comments, snippets);
    # never shown or serialized, so reports do not depend on where they were made.
    abspath: str = field(default="", compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Fix:
    """What to do about a finding: one sentence, and code to paste where there is some."""

    description: str
    code: str | None = None


@dataclass(frozen=True)
class Finding:
    code: str
    name: str
    severity: Severity
    module: str  # qualified name as in model.named_modules(); "" for the model itself
    message: str
    location: Location | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    fix: Fix | None = None
    # Where the layer was built and where forward called it; `location` is whichever of the
    # two lies in the user's own code.
    built_at: Location | None = None
    called_at: Location | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "severity": str(self.severity),
            "module": self.module,
            "message": self.message,
            "location": (
                {"path": self.location.path, "line": self.location.line} if self.location else None
            ),
            "evidence": self.evidence,
            "fix": (
                {"description": self.fix.description, "code": self.fix.code} if self.fix else None
            ),
        }
