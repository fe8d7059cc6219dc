"""Spans: where in the user's source a finding's line ends and what a fix's code replaces.

Computed once, by the engine, from the file's syntax tree, so renderers (SARIF, the HTML page,
a later `--fix`) read spans off the findings and never parse the user's source themselves.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import replace
from pathlib import Path

from .findings import Finding, Location, Span


@functools.lru_cache(maxsize=64)
def _tree(path: str) -> ast.Module | None:
    try:
        return ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None


@functools.lru_cache(maxsize=64)
def _lines(path: str) -> tuple[str, ...]:
    try:
        return tuple(Path(path).read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError):
        return ()


@functools.lru_cache(maxsize=64)
def _index(path: str) -> tuple[dict[int, int], dict[int, list[ast.Call]]] | None:
    """Per line of the file: the last line of the innermost statement starting there, and the
    torch.nn layer constructor calls starting there. One walk of the tree per file: a walk per
    finding was two thirds of resnet50's rules (three findings in torchvision's resnet.py)."""
    tree = _tree(path)
    if tree is None:
        return None
    modules, names = _torch_nn_names(tree)
    ends: dict[int, int] = {}
    calls: dict[int, list[ast.Call]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt):
            end = node.end_lineno or node.lineno
            ends[node.lineno] = min(end, ends.get(node.lineno, end))
        elif isinstance(node, ast.Call) and _is_nn_layer(node.func, modules, names):
            calls.setdefault(node.lineno, []).append(node)
    return ends, calls


def statement_end(path: str, line: int) -> int:
    """Last line of the innermost statement that starts on `line`."""
    index = _index(path)
    return index[0].get(line, line) if index is not None else line


def region_end(path: str, line: int) -> int:
    """Last line of what starts on `line`: the layer's constructor call if there is one (it may
    span lines), else the innermost statement."""
    call = call_at(path, line)
    if call is not None and call.end_lineno:
        return call.end_lineno
    return statement_end(path, line)


def call_at(path: str, line: int) -> ast.Call | None:
    """The one torch.nn layer constructor call (`nn.Conv2d(...)`, `torch.nn.Conv2d(...)`, or a
    name imported from torch.nn) starting on `line`, if there is exactly one: the expression a
    fix's replacement code takes the place of. A line that builds a whole model (`resnet18()`,
    `MyNet()`) has none: the layer was built inside it, elsewhere."""
    index = _index(path)
    calls = index[1].get(line, []) if index is not None else []
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


def is_expression(code: str) -> bool:
    """Code that is one expression (a layer's replacement), not statements."""
    try:
        ast.parse(code.strip(), mode="eval")
    except SyntaxError:
        return False
    return True


def fix_span(location: Location, code: str) -> Span | None:
    """What `code` replaces at `location`: the layer's constructor call for an expression, the
    statement's whole lines for statements; None where that is not certain."""
    path = location.abspath
    lines = _lines(path) if path else ()
    if not lines or location.line > len(lines):
        return None
    text = lines[location.line - 1]
    if not text.isascii():
        return None  # SARIF columns count UTF-16 units, ast counts UTF-8 bytes; skip the rare case
    indent = text[: len(text) - len(text.lstrip())]
    if is_expression(code):
        call = call_at(path, location.line)
        if call is None or call.end_lineno is None or call.end_col_offset is None:
            return None
        return Span(location.path, call.lineno, call.col_offset + 1, call.end_lineno,
                    call.end_col_offset + 1, "expression", indent, path)
    return Span(location.path, location.line, 1, statement_end(path, location.line) + 1, 1,
                "statement", indent, path)


def _ended(location: Location | None) -> Location | None:
    if location is None or not location.abspath or location.end_line:
        return location
    return replace(location, end_line=region_end(location.abspath, location.line))


def with_spans(finding: Finding) -> Finding:
    """The finding with its lines' ends and its fix's span filled in."""
    changes = {"location": _ended(finding.location), "built_at": _ended(finding.built_at),
               "called_at": _ended(finding.called_at)}
    fix = finding.fix
    if fix is not None and fix.code and fix.span is None and finding.location is not None:
        changes["fix"] = replace(fix, span=fix_span(finding.location, fix.code))
    return replace(finding, **changes)
