"""Which files can build a model at all, decided from their syntax alone.

This module must not import torch: `archlint check` runs it on every file a pre-commit hook
passes, and a file that cannot build an nn.Module has to be skipped in milliseconds.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Iterable

_MODEL_LIBRARIES = {"torchvision", "timm", "mmdet"}


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


_SKIP_DIRS = {".git", ".hg", ".venv", "venv", "env", "__pycache__", "node_modules", "build",
              "dist", ".tox", ".archlint_cache", "site-packages"}


def expand_paths(specs: Iterable[str], skip_no_model: bool = False) -> list[tuple[str, list[str], bool]]:
    """(file, target names, given explicitly) for each `file.py`, `file.py::name` or folder.

    Files found in folders are kept only if their syntax says they might build a model. With
    `skip_no_model` (what a pre-commit hook wants: it passes every changed .py file), files named
    without `::name` are treated the same way, and count as not explicit, so a file in which no
    model is found is skipped instead of being an error."""
    result: dict[str, tuple[list[str], bool]] = {}
    for spec in specs:
        path, _, name = spec.partition("::")
        p = Path(path)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
                for f in sorted(files):
                    if f.endswith(".py"):
                        full = str(Path(root) / f)
                        if full not in result and file_might_build_model(full):
                            result[full] = ([], False)
            continue
        names, _ = result.get(path, ([], True))
        if name:
            names.append(name)
        elif skip_no_model and path not in result:
            if p.exists() and not file_might_build_model(p):
                continue
            result[path] = (names, False)
            continue
        result[path] = (names, bool(names) or not skip_no_model)
    return [(path, names, explicit) for path, (names, explicit) in result.items()]
