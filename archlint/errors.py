"""User-facing errors: each one is a paragraph that names the cause and the fix.

The CLI prints `str(error)` and exits with status 2; the traceback is shown only with --debug.
"""
from __future__ import annotations


class ArchlintError(Exception):
    """Something about the user's input (file, target, model, input shape, config) is wrong."""

    #: a short kind, used in JSON output: "load", "build", "trace", "shape", "config", "usage"
    kind = "error"

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


class ConfigError(ArchlintError):
    kind = "config"


class LoadError(ArchlintError):
    kind = "load"


class BuildError(ArchlintError):
    kind = "build"


class TraceError(ArchlintError):
    kind = "trace"


class ShapeError(ArchlintError):
    kind = "shape"
