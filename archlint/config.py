"""Settings for a run: `[tool.archlint]` in the nearest pyproject.toml, then CLI flags on top.

    [tool.archlint]
    select = ["K", "N001"]        # codes or prefixes; "ALL" is every rule
    ignore = ["D001"]
    fail-on = "warning"           # info | warning | error
    batch-size = 8                # per-device training batch; N001 uses it
    input-shape = [[1, 3, 224, 224]]

    exclude = ["legacy/*", "**/test_*.py"]   # globs, relative to this file's folder
    timeout = 300                 # seconds each file may take to build and trace
    memory-limit = 8192           # MB each file may use while it is built and traced
    import-scripts = ["tools/export.py"]   # scripts folder runs import anyway (true: all of them)
    worker = true                 # hand runs to the warm worker (archlint/worker/); off when CI is set
    worker-idle = 900             # seconds the worker stays without a request

    [tool.archlint.rules.K001]
    min-kernel = 7
    severity = "error"            # every rule takes this one
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError
from .findings import Severity

_KEYS = {"select", "ignore", "fail-on", "batch-size", "input-shape", "rules", "exclude", "timeout",
         "memory-limit", "import-scripts", "worker", "worker-idle"}
DEFAULT_TIMEOUT = 300.0
DEFAULT_MEMORY_LIMIT = 8192
DEFAULT_WORKER_IDLE = 900.0


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
    timeout: float = DEFAULT_TIMEOUT  # seconds per file, in its child process
    memory_limit: int = DEFAULT_MEMORY_LIMIT  # MB per file, in its child process
    # Files whose top level runs a script (archlint/script_check.py) that folder and pre-commit
    # runs import anyway: globs relative to `root`, or True for every file.
    import_scripts: bool | list[str] = field(default_factory=list)
    worker: bool = True  # may `check` hand the run to the warm worker
    worker_idle: float = DEFAULT_WORKER_IDLE  # seconds a worker this run starts stays idle
    source: str | None = None  # the pyproject.toml read, if any

    @property
    def root(self) -> str:
        """The folder `exclude` patterns are relative to: the config's, else the working one."""
        if self.source and Path(self.source).is_file():
            return str(Path(self.source).resolve().parent)
        return os.getcwd()

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
    elif isinstance(text, (list, tuple)):
        values = list(text)
        if values and isinstance(values[-1], str):
            dtype = values.pop().lower()
    else:
        values = []  # `input-shape = 5`, or a nested list of the wrong depth
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
            data = read_toml(candidate)
            tool = data.get("tool", {})
            if isinstance(tool, dict) and "archlint" in tool:
                return candidate
    return None


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """A TOML file's data, or a ConfigError naming the file and what is wrong with it."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}).", hint="Fix the file.", cause="toml") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (it is not UTF-8).",
                          hint="Point --config at a pyproject.toml.", cause="toml") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc}).", cause="unreadable") from None


def archlint_table(data: dict[str, Any], where: str) -> dict[str, Any]:
    """[tool.archlint] of a parsed pyproject.toml, checked to be a table ({} if absent)."""
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(f"{where}: `tool` must be a table ([tool.archlint]), not {type(tool).__name__}.",
                          cause="type")
    table = tool.get("archlint", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: `archlint` under [tool] must be a table ([tool.archlint]), "
                          f"not {table!r}.", cause="type")
    return table


def load_config_file(path: str | os.PathLike) -> Settings:
    """Settings from the [tool.archlint] of the file --config names."""
    return settings_from_table(archlint_table(read_toml(path), str(path)), str(path))


def _codes(value: Any, key: str, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: `{key}` takes a list of rule codes or prefixes, like [\"K001\", \"N\"].")
    return [v.strip().upper() for v in value]


def settings_from_table(table: dict[str, Any], where: str = "config") -> Settings:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [tool.archlint] must be a table, not {table!r}.", cause="type")
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
        value = table["exclude"]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: `exclude` takes a list of glob patterns, like [\"legacy/*\"], "
                              f"not {value!r}.", cause="type")
        settings.exclude = value
    if "import-scripts" in table:
        value = table["import-scripts"]
        if isinstance(value, str):
            value = [value]
        if not (isinstance(value, bool) or isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{where}: `import-scripts` takes true (import every script) or a list of "
                              f"glob patterns, like [\"tools/export.py\"], not {value!r}.", cause="type")
        settings.import_scripts = value
    if "timeout" in table:
        value = table["timeout"]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{where}: timeout must be a positive number of seconds, not {value!r}.",
                              cause="type")
        settings.timeout = float(value)
    if "memory-limit" in table:
        value = table["memory-limit"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 64:
            raise ConfigError(f"{where}: memory-limit must be a whole number of MB (at least 64), "
                              f"not {value!r}.", cause="type")
        settings.memory_limit = value
    if "worker" in table:
        if not isinstance(table["worker"], bool):
            raise ConfigError(f"{where}: worker must be true or false, not {table['worker']!r}.", cause="type")
        settings.worker = table["worker"]
    if "worker-idle" in table:
        value = table["worker-idle"]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{where}: worker-idle must be a positive number of seconds, not {value!r}.",
                              cause="type")
        settings.worker_idle = float(value)
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
        if not isinstance(shapes, list) or not shapes:
            raise ConfigError(f"{where}: input-shape takes a shape like [1, 3, 224, 224] or a list of "
                              f"them, not {shapes!r}.", cause="type")
        if all(isinstance(v, int) for v in shapes):
            shapes = [shapes]
        try:
            settings.input_shapes = [parse_shape(s) for s in shapes]
        except ConfigError as exc:
            raise ConfigError(f"{where}: input-shape: {exc.message}", cause="type") from None
    rules = table.get("rules", {})
    if not isinstance(rules, dict):
        raise ConfigError(f"{where}: [tool.archlint.rules] must be a table of rule codes.", cause="type")
    settings.rule_options = {}
    for code, opts in rules.items():
        if not isinstance(opts, dict):
            raise ConfigError(f"{where}: [tool.archlint.rules] {code} = {opts!r}: each rule takes a table of "
                              f"options, like [tool.archlint.rules.{code}] severity = \"error\".", cause="type")
        if "severity" in opts:
            try:
                Severity.parse(opts["severity"])
            except (ValueError, TypeError, AttributeError):
                raise ConfigError(f"{where}: [tool.archlint.rules.{code}] severity = {opts['severity']!r} is not "
                                  "a severity; use info, warning or error.", cause="severity") from None
        settings.rule_options[code.upper()] = dict(opts)
    return settings


def check_codes(settings: Settings, known: Sequence[str]) -> None:
    """Every code or prefix in select, ignore and the rule tables names at least one rule."""
    known = list(known)
    tables = [("select", c) for c in settings.select] + [("ignore", c) for c in settings.ignore] + \
        [("[tool.archlint.rules]", c) for c in settings.rule_options]
    for where, code in tables:
        exact = where.startswith("[")
        if code == "ALL" and not exact:
            continue
        if not any(k == code or (not exact and k.startswith(code)) for k in known):
            raise ConfigError(f"{where}: no rule {code!r}.", hint="`archlint rules` lists them all.",
                              cause="unknown-rule")


def load_settings(start: Path | None = None) -> Settings:
    path = find_pyproject(start or Path.cwd())
    if path is None:
        return Settings()
    return settings_from_table(archlint_table(read_toml(path), str(path)), str(path))


def is_selected(code: str, settings: Settings) -> bool:
    """Longest matching prefix wins; a tie goes to ignore. No select means every rule."""
    def best(prefixes: list[str]) -> int:
        lengths = [0 if p == "ALL" else len(p) for p in prefixes if p == "ALL" or code.startswith(p)]
        return max(lengths) if lengths else -1

    chosen = best(settings.select) if settings.select else 0
    ignored = best(settings.ignore)
    return chosen >= 0 and chosen > ignored
