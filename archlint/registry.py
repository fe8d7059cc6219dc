"""Finding rules: the built-in pack and third-party packs, loaded one way.

A pack is a module (or package) holding Rule subclasses, or a Rule class itself. The built-in
pack is `archlint.rules`; other packs register under the `archlint.rules` entry-point group:

    [project.entry-points."archlint.rules"]
    mypack = "mypack.rules"

A pack that fails to load is reported, not fatal.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Iterable

from .rule import Rule

ENTRY_POINT_GROUP = "archlint.rules"
BUILTIN_PACK = "archlint.rules"


@dataclass
class RuleSet:
    rules: list[type[Rule]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # packs that failed to load

    def by_code(self) -> dict[str, type[Rule]]:
        return {r.code: r for r in self.rules}


def rules_in(obj: object) -> list[type[Rule]]:
    """The Rule classes a pack provides: a Rule class, or every one defined in a module and,
    for a package, in its submodules."""
    if inspect.isclass(obj) and issubclass(obj, Rule):
        return [obj]
    if not isinstance(obj, ModuleType):
        return []
    modules: list[ModuleType] = [obj]
    if hasattr(obj, "__path__"):
        for info in pkgutil.walk_packages(obj.__path__, obj.__name__ + "."):
            modules.append(importlib.import_module(info.name))
    found = []
    for module in modules:
        for value in vars(module).values():
            if (inspect.isclass(value) and issubclass(value, Rule) and value is not Rule
                    and value.__module__ == module.__name__ and "code" in vars(value)):
                found.append(value)
    return found


def _packs() -> Iterable[tuple[str, callable]]:
    yield BUILTIN_PACK, lambda: importlib.import_module(BUILTIN_PACK)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value != BUILTIN_PACK:
            yield ep.value, ep.load


_cache: RuleSet | None = None


def load_rules() -> RuleSet:
    global _cache
    if _cache is not None:
        return _cache
    result = RuleSet()
    seen: dict[str, str] = {}
    for label, load in _packs():
        try:
            rules = rules_in(load())
        except Exception as exc:  # a broken plugin must not take archlint down
            result.problems.append(f"rule pack {label} failed to load: {type(exc).__name__}: {exc}")
            continue
        for rule in rules:
            if rule.code in seen and seen[rule.code] != rule.__qualname__:
                result.problems.append(f"rule {rule.code} from {label} clashes with a rule already loaded; skipped")
                continue
            if rule.code not in seen:
                seen[rule.code] = rule.__qualname__
                result.rules.append(rule)
    result.rules.sort(key=lambda r: r.code)
    _cache = result
    return result
