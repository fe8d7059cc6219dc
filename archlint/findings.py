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
    # The last line of what starts here (a constructor call may span lines); 0 when unknown.
    end_line: int = field(default=0, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "abspath": self.abspath, "end_line": self.end_line}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "Location | None":
        if data is None:
            return None
        return cls(data["path"], data["line"], data.get("abspath", ""), data.get("end_line", 0))


@dataclass(frozen=True)
class Span:
    """The source a fix's code replaces: lines and columns 1-based, the end column exclusive.
    `kind` is "expression" (a layer's constructor call) or "statement" (whole lines, the end
    line exclusive); `indent` is the start line's leading whitespace, for the replacement."""

    path: str
    start_line: int
    start_column: int
    end_line: int
    end_column: int
    kind: str = "expression"
    indent: str = ""
    abspath: str = field(default="", compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("path", "start_line", "start_column", "end_line",
                                              "end_column", "kind", "indent", "abspath")}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "Span | None":
        return None if data is None else cls(**data)


@dataclass(frozen=True)
class Fix:
    """What to do about a finding: one sentence, and code to paste where there is some, with
    the span of source it replaces where that is certain."""

    description: str
    code: str | None = None
    span: Span | None = field(default=None, compare=False)
    # What archlint did with the code before showing it (archlint/fixcheck.py): "runs" (built
    # and run on the layer's input, output shape kept), "changes-output", "builds",
    # "compiles", "advice" (comments only); "" while unchecked. `checked_on`: that input.
    checked: str = field(default="", compare=False)
    checked_on: str = field(default="", compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"description": self.description, "code": self.code,
                "span": self.span.to_json() if self.span else None,
                "checked": self.checked, "checked_on": self.checked_on}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "Fix | None":
        if not data:
            return None
        return cls(data["description"], data.get("code"), Span.from_json(data.get("span")),
                   data.get("checked", ""), data.get("checked_on", ""))

    def check_note(self) -> str:
        """How the code was checked, for renderers."""
        return {
            "runs": f"built and run on {self.checked_on}: output shape kept",
            "changes-output": f"built and run on {self.checked_on}: changes the output shape",
            "builds": "built by archlint",
            "compiles": "compiles; runs in your forward",
        }.get(self.checked, "")


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
    # The innermost line that built the layer, library code included: the blocks
    # a loop or a helper builds share it, so findings are merged by it (engine.one_per_line).
    origin: Location | None = field(default=None, compare=False, repr=False)
    # The graph node the finding is about: a forward that calls F.max_pool2d twice has one
    # qualname for both calls, and a fix must be checked on the right call's shapes.
    layer: str = field(default="", compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """Everything, for the cache and the child process (`to_dict` is the user's JSON)."""
        return {
            "code": self.code, "name": self.name, "severity": str(self.severity),
            "module": self.module, "message": self.message, "evidence": self.evidence,
            "location": self.location.to_json() if self.location else None,
            "fix": self.fix.to_json() if self.fix else None,
            "built_at": self.built_at.to_json() if self.built_at else None,
            "called_at": self.called_at.to_json() if self.called_at else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Finding":
        return cls(
            code=data["code"], name=data["name"], severity=Severity.parse(data["severity"]),
            module=data["module"], message=data["message"],
            location=Location.from_json(data.get("location")), evidence=data.get("evidence") or {},
            fix=Fix.from_json(data.get("fix")), built_at=Location.from_json(data.get("built_at")),
            called_at=Location.from_json(data.get("called_at")),
        )

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
                {"description": self.fix.description, "code": self.fix.code,
                 "checked": self.fix.checked} if self.fix else None
            ),
        }
