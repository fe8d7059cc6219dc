"""Which files can build a model at all, decided from their syntax alone.

This module must not import torch: `archlint check` runs it on every file a pre-commit hook
passes, and a file that cannot build an nn.Module has to be skipped in milliseconds.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

_MODEL_LIBRARIES = {"torchvision", "timm"}


def file_might_build_model(path: str | os.PathLike) -> bool:
    """Does the file import torch (or a model zoo) and mention nn.Module or nn.Sequential, or
    import a model zoo? False means importing it cannot produce a model worth linting."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8", errors="replace"))
    except SyntaxError:
        return True  # let the import report it, with the line
    except OSError:
        return True  # a missing file gets its own error message when loaded
    names = set()
    imports = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Import):
            imports.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imports.add(node.module.split(".")[0])
            names.update(alias.name for alias in node.names)
    uses_torch = bool(imports & ({"torch"} | _MODEL_LIBRARIES))
    return uses_torch and bool({"Module", "Sequential"} & names or imports & _MODEL_LIBRARIES)
