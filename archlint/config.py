"""Settings for a run: `[tool.archlint]` in the nearest pyproject.toml, then CLI flags on top.

    [tool.archlint]
    select = ["K", "N001"]        # codes or prefixes; "ALL" is every rule
    ignore = ["D001"]
    fail-on = "warning"           # info | warning | error
    batch-size = 8                # per-device training batch; N001 uses it
    input-shape = [[1, 3, 224, 224]]

    [tool.archlint.rules.K001]
    min-kernel = 7
    severity = "error"            # every rule takes this one
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError
from .findings import Severity

_KEYS = {"select", "ignore", "fail-on", "batch-size", "input-shape", "rules", "exclude"}


@dataclass
class Settings:
    select: list[str] = field(default_factory=list)  # empty: every rule
    ignore: list[str] = field(default_factory=list)
    fail_on: Severity = Severity.WARNING
    batch_size: int | None = None
    input_shapes: list[list[int]] | None = None  # from config
    cli_input_shapes: list[list[int]] | None = None  # from --input-shape: wins over the file
    rule_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)
    source: str | None = None  # the pyproject.toml read, if any

    def with_overrides(self, **changes: Any) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v not in (None, (), [])})

    def severity_for(self, code: str, default: Severity) -> Severity:
        value = self.rule_options.get(code, {}).get("severity")
        return Severity.parse(value) if value else default


_DTYPE_NAMES = ("float32", "float", "float16", "half", "bfloat16", "float64", "double", "int64",
                "long", "int32", "int", "int16", "int8", "uint8", "bool")


def parse_shape(text: str | Sequence[Any]) -> list[Any]:
    """`1,3,224,224` -> [1, 3, 224, 224]; `1,128:int64` -> [1, 128, "int64"] (a dtype last)."""
    dtype = None
    if isinstance(text, str):
        body, _, dtype = text.partition(":")
        dtype = dtype.strip().lower() or None
        try:
            values = [int(p) for p in body.replace("x", ",").split(",") if p.strip()]
        except ValueError:
            values = []
    else:
        values = list(text)
        if values and isinstance(values[-1], str):
            dtype = values.pop().lower()
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise ConfigError(f"input shape {text!r} is not a list of positive integers; write it as "
                          "1,3,224,224 (or 1,128:int64 for another dtype).")
    if dtype is not None:
        if dtype not in _DTYPE_NAMES:
            raise ConfigError(f"input shape {text!r}: unknown dtype {dtype!r}; use one of "
                              f"{', '.join(_DTYPE_NAMES)}.")
        return [*values, dtype]
    return values


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml above `start` that has a [tool.archlint] table."""
    start = start.resolve()
    for folder in [start, *start.parents] if start.is_dir() else start.parents:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{candidate}: not valid TOML ({exc}). Fix the file.") from exc
            if "archlint" in data.get("tool", {}):
                return candidate
    return None


def _codes(value: Any, key: str, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: `{key}` takes a list of rule codes or prefixes, like [\"K001\", \"N\"].")
    return [v.strip().upper() for v in value]


def settings_from_table(table: dict[str, Any], where: str = "config") -> Settings:
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} in [tool.archlint]; known keys: "
                          f"{', '.join(sorted(_KEYS))}.")
    settings = Settings(source=where)
    if "select" in table:
        settings.select = _codes(table["select"], "select", where)
    if "ignore" in table:
        settings.ignore = _codes(table["ignore"], "ignore", where)
    if "exclude" in table:
        settings.exclude = list(table["exclude"])
    if "fail-on" in table:
        try:
            settings.fail_on = Severity.parse(table["fail-on"])
        except ValueError as exc:
            raise ConfigError(f"{where}: fail-on: {exc}.") from None
    if "batch-size" in table:
        value = table["batch-size"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}: batch-size must be a positive integer, not {value!r}.")
        settings.batch_size = value
    if "input-shape" in table:
        shapes = table["input-shape"]
        if shapes and all(isinstance(v, int) for v in shapes):
            shapes = [shapes]
        settings.input_shapes = [parse_shape(s) for s in shapes]
    rules = table.get("rules", {})
    if not isinstance(rules, dict):
        raise ConfigError(f"{where}: [tool.archlint.rules] must be a table of rule codes.")
    settings.rule_options = {code.upper(): dict(opts) for code, opts in rules.items()}
    return settings


def load_settings(start: Path | None = None) -> Settings:
    path = find_pyproject(start or Path.cwd())
    if path is None:
        return Settings()
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return settings_from_table(data["tool"]["archlint"], str(path))


def is_selected(code: str, settings: Settings) -> bool:
    """Longest matching prefix wins; a tie goes to ignore. No select means every rule."""
    def best(prefixes: list[str]) -> int:
        lengths = [0 if p == "ALL" else len(p) for p in prefixes if p == "ALL" or code.startswith(p)]
        return max(lengths) if lengths else -1

    chosen = best(settings.select) if settings.select else 0
    ignored = best(settings.ignore)
    return chosen >= 0 and chosen > ignored
