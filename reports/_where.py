"""Where a finding goes for tools that live in a repository (SARIF, GitHub annotations).

Those tools place a finding on a file of the repository, by a path relative to its root. A
finding's own location may lie outside it (a torchvision layer built in site-packages); then the
other recorded line (where forward called the layer, or where it was built) is used if that one is
in the repository, else the first line of the linted file itself.
"""
from __future__ import annotations

import ast
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from archlint.findings import Finding, Location


def repository_root(start: str | os.PathLike | None = None) -> Path:
    """The git work tree holding `start` (default: the working folder), else that folder."""
    here = Path(start or os.getcwd()).resolve()
    for folder in [here, *here.parents]:
        if (folder / ".git").exists():
            return folder
    return here


@dataclass(frozen=True)
class Place:
    uri: str  # relative to the root, with forward slashes; absolute file URI when outside it
    path: Path  # absolute
    line: int
    end_line: int
    moved: bool  # not the finding's own location (that one lies outside the repository)


def _absolute(loc: Location) -> Path:
    return Path(loc.abspath or os.path.abspath(loc.path)).resolve()


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return path.is_file()


def _uri(path: Path, root: Path) -> str:
    try:
        # A URI reference (RFC 3986): spaces, %, #, ?, commas, colons and newlines percent-encoded.
        return quote(path.relative_to(root).as_posix(), safe="/")
    except ValueError:
        return path.as_uri()


def target_file(target: str) -> Path:
    return Path(target.split("::", 1)[0]).resolve()


def place(finding: Finding, target: str, root: Path) -> Place:
    own = finding.location
    candidates = [own, finding.called_at, finding.built_at]
    for loc in candidates:
        if loc is not None and _inside(_absolute(loc), root):
            path = _absolute(loc)
            return Place(_uri(path, root), path, loc.line, region_end(str(path), loc.line),
                         moved=loc != own)
    path = target_file(target)
    return Place(_uri(path, root), path, 1, 1, moved=True)


@functools.lru_cache(maxsize=64)
def _tree(path: str) -> ast.Module | None:
    try:
        return ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None


def region_end(path: str, line: int) -> int:
    """Last line of what starts on `line`: the layer's constructor call if there is one (it may
    span lines), else the innermost statement."""
    call = call_at(path, line)
    if call is not None and call.end_lineno:
        return call.end_lineno
    return statement_end(path, line)


def statement_end(path: str, line: int) -> int:
    """Last line of the innermost statement that starts on `line`."""
    tree = _tree(path)
    if tree is None:
        return line
    best = None
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and node.lineno == line:
            end = node.end_lineno or line
            best = end if best is None else min(best, end)
    return best or line


def call_at(path: str, line: int) -> ast.Call | None:
    """The one torch.nn layer constructor call (`nn.Conv2d(...)`, `torch.nn.Conv2d(...)`, or a
    name imported from torch.nn) starting on `line`, if there is exactly one: the expression a
    fix's replacement code takes the place of. A line that builds a whole model (`resnet18()`,
    `MyNet()`) has none: the layer was built inside it, elsewhere."""
    tree = _tree(path)
    if tree is None:
        return None
    modules, names = _torch_nn_names(tree)
    calls = [node for node in ast.walk(tree)
             if isinstance(node, ast.Call) and node.lineno == line and _is_nn_layer(node.func, modules, names)]
    return calls[0] if len(calls) == 1 else None


def _torch_nn_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(names bound to the torch.nn module, names imported from it)."""
    modules, names = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "torch.nn" and alias.asname:
                    modules.add(alias.asname)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            for alias in node.names:
                if node.module == "torch" and alias.name == "nn":
                    modules.add(alias.asname or "nn")
                elif node.module == "torch.nn" or node.module.startswith("torch.nn.modules"):
                    if alias.name[:1].isupper():
                        names.add(alias.asname or alias.name)
    return modules, names


def _is_nn_layer(func: ast.expr, modules: set[str], names: set[str]) -> bool:
    if isinstance(func, ast.Name):
        return func.id in names
    if not isinstance(func, ast.Attribute) or not func.attr[:1].isupper():
        return False
    owner = func.value
    if isinstance(owner, ast.Name):
        return owner.id in modules
    return (isinstance(owner, ast.Attribute) and owner.attr == "nn"
            and isinstance(owner.value, ast.Name) and owner.value.id == "torch")
