"""The stages import one way: core stages never import the renderers, renderers never import
the tracer, rules never reach into tracer internals. Read from the source's import statements,
so a violation fails here before it becomes a cycle or a hidden dependency."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parts = path.relative_to(ROOT).with_suffix("").parts
    package = {"archlint": ["archlint"], "rules": ["archlint", "rules"],
               "reports": ["archlint", "reports"]}[parts[0]] + list(parts[1:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _violations(folder: str, forbidden: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for path in _files(folder):
        if path.relative_to(ROOT).as_posix() in skip:
            continue
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


def test_core_stages_do_not_import_the_renderers():
    # The CLI is the one core module that picks a renderer for the user.
    assert _violations("archlint", ("archlint.reports",), skip=("archlint/cli.py", "archlint/diff.py")) == []


def test_diff_imports_its_renderers_only_to_render():
    """diff.run renders for the CLI; its comparison does not depend on reports."""
    source = (ROOT / "archlint" / "diff.py").read_text(encoding="utf-8")
    top_level = source.split("\ndef ", 1)[0]
    assert "reports" not in top_level


def test_renderers_do_not_import_the_tracer_or_the_registry():
    assert _violations("reports", ("archlint.trace", "archlint.registry", "archlint.load",
                                   "archlint.pipeline", "torch")) == []


def test_rules_do_not_import_tracer_internals():
    assert _violations("rules", ("archlint.trace", "archlint.load", "archlint.pipeline",
                                 "archlint.driver", "archlint.cache")) == []


def test_the_trace_stage_does_not_import_later_stages():
    assert _violations("archlint/trace", ("archlint.engine", "archlint.rules", "archlint.pipeline",
                                          "archlint.driver", "archlint.graph.build",
                                          "archlint.graph.archgraph")) == []


@pytest.mark.parametrize("folder", ["archlint", "rules", "reports"])
def test_every_module_names_its_job(folder):
    undocumented = [str(p.relative_to(ROOT)) for p in _files(folder)
                    if p.stat().st_size and not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    assert undocumented == []
