"""Which files can build a model at all, decided from their syntax alone.

This module must not import torch: `archlint check` runs it on every file a pre-commit hook
passes, and a file that cannot build an nn.Module has to be skipped in milliseconds.
"""
from __future__ import annotations

import ast
import fnmatch
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


def split_spec(spec: str) -> tuple[str, str]:
    """(path, target name) of `file.py` or `file.py::name`. A file whose own name holds `::`
    is a path, not a target: the split is at the last `::` that leaves an existing path."""
    if "::" not in spec or os.path.exists(spec):
        return spec, ""
    path, _, name = spec.rpartition("::")
    if not os.path.exists(path):
        first, _, rest = spec.partition("::")
        if os.path.exists(first):
            return first, rest
    return path, name


def is_excluded(path: str, patterns: Iterable[str], root: str) -> bool:
    """Does a glob of `exclude` match `path` (relative to `root`, in POSIX form)? A pattern
    without a slash matches any one part ("legacy", "test_*.py"); "**/" matches any folders."""
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root)).replace(os.sep, "/")
    except ValueError:
        return False
    parts = rel.split("/")
    for pattern in patterns:
        pattern = pattern.strip().rstrip("/")
        if pattern.startswith("./"):
            pattern = pattern[2:]
        if not pattern:
            continue
        candidates = {pattern, pattern[3:] if pattern.startswith("**/") else pattern}
        for p in candidates:
            if fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel, p + "/*"):
                return True
            if "/" not in p and any(fnmatch.fnmatchcase(part, p) for part in parts):
                return True
    return False


def expand_paths(specs: Iterable[str], skip_no_model: bool = False, exclude: Iterable[str] = (),
                 exclude_root: str | None = None) -> list[tuple[str, list[str], bool]]:
    """(file, target names, given explicitly) for each `file.py`, `file.py::name` or folder.

    Files found in folders are kept only if their syntax says they might build a model. With
    `skip_no_model` (what a pre-commit hook wants: it passes every changed .py file), files named
    without `::name` are treated the same way, and count as not explicit, so a file in which no
    model is found is skipped instead of being an error. `exclude` globs (relative to
    `exclude_root`) leave out files found in folders."""
    result: dict[str, tuple[list[str], bool]] = {}
    exclude = list(exclude)
    exclude_root = exclude_root or os.getcwd()
    for spec in specs:
        path, name = split_spec(spec)
        p = Path(path)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")
                                 and not (exclude and is_excluded(os.path.join(root, d), exclude, exclude_root)))
                for f in sorted(files):
                    if f.endswith(".py"):
                        full = str(Path(root) / f)
                        if exclude and is_excluded(full, exclude, exclude_root):
                            continue
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
