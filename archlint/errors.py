"""User-facing errors: one type with fields, rendered as one paragraph in one place.

Code decides by an error's fields (`kind`, `cause`), never by reading its text. The CLI prints
`str(error)` and exits with status 2; the traceback is shown only with --debug.
"""
from __future__ import annotations

from typing import Sequence


def first_line(exc: BaseException, limit: int = 240) -> str:
    """`Type: first sentence of the message`, whitespace folded: how a cause is quoted."""
    text = " ".join(str(exc).strip().split())
    cut = text.find(". ")
    if 0 < cut < limit:
        text = text[:cut]
    text = text[:limit].rstrip(".")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ArchlintError(Exception):
    """Something about the user's input (file, target, model, input shape, config) is wrong.

    `message` says what happened; the other fields say where and what to do, and `str()` joins
    them into the paragraph users see:
      kind    "config" | "usage" | "load" | "no-model" | "build" | "trace" | "shape" | "isolation" | "output"
      path, line   the user's line the error is about
      layer   the qualified name of the layer involved
      shapes  the input shapes the layer or model received
      hint    what to do about it
      cause   a short code for what went wrong, for code that must tell errors apart
              ("data-dependent", "layer-rejected-input", "timeout", "exited", ...)
    """

    kind = "error"

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 layer: str | None = None, shapes: Sequence[Sequence[int]] | None = None,
                 hint: str = "", cause: str = "", kind: str | None = None):
        self.message = " ".join(message.split())
        self.path, self.line, self.layer = path, line, layer
        self.shapes = [list(s) for s in shapes] if shapes is not None else None
        self.hint = " ".join(hint.split())
        self.cause = cause
        if kind is not None:
            self.kind = kind
        super().__init__(self.render())

    def render(self) -> str:
        where = f"{self.path}:{self.line}: " if self.path and self.line else \
            f"{self.path}: " if self.path else ""
        text = where + self.message
        if self.hint:
            text = f"{text.rstrip()} {self.hint}" if text.rstrip().endswith((".", ")")) else \
                f"{text.rstrip()}. {self.hint}"
        return text

    def with_prefix(self, prefix: str) -> "ArchlintError":
        """The same error, its message led by `prefix` (a target name)."""
        return type(self)(f"{prefix}: {self.message}", path=None, line=None, layer=self.layer,
                          shapes=self.shapes, hint=self.hint, cause=self.cause, kind=self.kind)

    def __reduce__(self):
        # Errors cross the process boundary pickled (archlint/isolation.py); the default
        # reduction would call __init__ with the rendered text and lose the fields.
        fields = {"path": self.path, "line": self.line, "layer": self.layer, "shapes": self.shapes,
                  "hint": self.hint, "cause": self.cause, "kind": self.kind}
        return (_rebuild, (type(self), self.message, fields, getattr(self, "details", "")))

    def to_dict(self) -> dict:
        data = {"kind": self.kind, "message": str(self)}
        for key in ("path", "line", "layer", "shapes", "cause"):
            value = getattr(self, key)
            if value not in (None, "", []):
                data[key] = value
        return data


def _rebuild(cls, message, fields, details):
    error = cls(message, **fields)
    if details:
        error.details = details
    return error


class ConfigError(ArchlintError):
    kind = "config"


class LoadError(ArchlintError):
    kind = "load"


class NoModelError(LoadError):
    """The file imports but builds nothing archlint can lint: in a folder run, not an error."""

    kind = "load"  # as before in JSON output; the class tells them apart


class BuildError(ArchlintError):
    kind = "build"


class TraceError(ArchlintError):
    kind = "trace"


class ShapeError(ArchlintError):
    kind = "shape"


class IsolationError(ArchlintError):
    """The child process that built and traced a file ended without an answer: it ran past the
    time limit ("timeout"), past the memory limit ("memory"), exited by itself ("exited") or
    was killed by a signal ("killed")."""

    kind = "isolation"


def caused_by(exc: BaseException | None, kind: type) -> BaseException | None:
    """The first exception of type `kind` in `exc`'s chain (causes and contexts), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, kind):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def too_deep(exc: BaseException) -> "TraceError | None":
    """A clear error for a RecursionError anywhere in `exc`'s chain, else None."""
    found = caused_by(exc, RecursionError)
    if found is not None:
        error = TraceError("the model is nested too deeply for Python's recursion limit while "
                           "it was copied or traced.",
                           hint="Flatten deeply nested containers (nn.Sequential inside "
                                "nn.Sequential ...), or lint an inner part with file.py::NAME.sub.",
                           cause="recursion")
        error.__cause__ = found
        return error
    return None
