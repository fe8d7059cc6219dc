"""The rule plugin API.

A rule is a class: its code, slug name, default severity, documentation (what it finds, why it
matters, how to fix it, references), options with defaults, and small example models that
must and must not trigger it. `check(graph, ctx)` yields findings; it never prints.

    class LargeKernel(Rule):
        code = "K001"
        name = "large-kernel"
        ...
        def check(self, graph, ctx):
            for layer in graph.modules(nn.Conv2d):
                if ...:
                    yield self.finding(layer, "message", evidence={...}, fix=Fix(...))

Every section of the docs is required: a rule without them fails at import, so a rule cannot
reach users undocumented. The test suite runs every rule's `bad` and `good` examples.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

from .errors import ConfigError
from .findings import Finding, Fix, Severity
from .graph import ArchGraph, Layer
from .graph.ops import Kind


@dataclass(frozen=True)
class Option:
    default: Any
    help: str
    type: type | tuple[type, ...] | None = None  # defaults to type(default)
    choices: tuple | None = None

    def validate(self, rule: str, key: str, value: Any) -> Any:
        expected = self.type or type(self.default)
        if expected is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is int):
            name = getattr(expected, "__name__", str(expected))
            raise ConfigError(f"option {key!r} of rule {rule} takes a {name}, not {value!r}.")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"option {key!r} of rule {rule} must be one of {list(self.choices)}, not {value!r}.")
        return value


@dataclass(frozen=True)
class Example:
    """A small model, as Python source, that a rule must (bad) or must not (good) fire on.
    `settings` are run settings for it, e.g. {"batch-size": 4}."""

    code: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return textwrap.dedent(self.code).strip() + "\n"


@dataclass
class Context:
    """What a rule may know besides the graph: its options and the run's settings."""

    options: dict[str, Any]
    batch_size: int | None = None
    input_description: str = ""

    def __getitem__(self, key: str) -> Any:
        return self.options[key]


_DOC_SECTIONS = ("summary", "what", "why", "how_to_fix", "references")


class Rule:
    code: ClassVar[str]
    name: ClassVar[str]
    severity: ClassVar[Severity]
    summary: ClassVar[str]  # one line, for `archlint rules`
    what: ClassVar[str]  # What it does
    why: ClassVar[str]  # Why is this bad?
    how_to_fix: ClassVar[str]  # Use instead (prose; code goes in the examples and the Fix)
    references: ClassVar[tuple[str, ...]]
    options: ClassVar[dict[str, Option]] = {}
    bad: ClassVar[tuple[Example | str, ...]] = ()
    good: ClassVar[tuple[Example | str, ...]] = ()

    def __init_subclass__(cls, abstract: bool = False, **kwargs):
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        missing = [s for s in ("code", "name", "severity", *_DOC_SECTIONS) if not getattr(cls, s, None)]
        if missing:
            raise TypeError(f"rule {cls.__name__} lacks {', '.join(missing)}")
        if not cls.bad or not cls.good:
            raise TypeError(f"rule {cls.code} needs at least one bad and one good example model")
        cls.bad = tuple(e if isinstance(e, Example) else Example(e) for e in cls.bad)
        cls.good = tuple(e if isinstance(e, Example) else Example(e) for e in cls.good)

    # --- for subclasses -------------------------------------------------------------------------
    def check(self, graph: ArchGraph, ctx: Context) -> Iterable[Finding]:
        raise NotImplementedError  # every concrete rule overrides this

    def finding(self, layer: Layer, message: str, *, evidence: dict[str, Any] | None = None,
                fix: Fix | None = None, severity: Severity | None = None,
                prefer: str = "built") -> Finding:
        """A finding about `layer`. `prefer="call"` points at the forward line that called the
        layer rather than the line that built it (for problems of data flow, not of shape)."""
        frame = layer.frame(prefer)
        # Only the building line tells blocks of a loop apart from layers of one Sequential:
        # without it (a model built before archlint watched), findings are not merged. A
        # functional op (F.avg_pool2d in a block's forward) is never built: the line that
        # calls it is the one every instance of the block shares.
        if layer.built_frames:
            innermost = layer.built_frames[0]
        elif layer.kind != Kind.MODULE and layer.call_frames:
            innermost = layer.call_frames[0]
        else:
            innermost = None
        return Finding(
            code=self.code, name=self.name, severity=severity or self.severity,
            module=layer.qualname, message=message,
            location=frame.location() if frame else None,
            evidence=evidence or {}, fix=fix,
            built_at=layer.built_at, called_at=layer.called_at,
            origin=innermost.location() if innermost is not None else None,
            layer=layer.name,
        )

    # --- for the engine ---------------------------------------------------------------------
    @classmethod
    def resolve_options(cls, given: dict[str, Any] | None) -> dict[str, Any]:
        given = dict(given or {})
        given.pop("severity", None)
        unknown = sorted(set(given) - set(cls.options))
        if unknown:
            known = ", ".join(sorted(cls.options)) or "none"
            raise ConfigError(f"rule {cls.code} has no option {unknown[0]!r} (its options: {known}).")
        return {k: (opt.validate(cls.code, k, given[k]) if k in given else opt.default)
                for k, opt in cls.options.items()}

    @classmethod
    def docs_markdown(cls) -> str:
        """The rule's full documentation, in one shape for every rule."""
        parts = [f"# {cls.code} {cls.name} ({cls.severity})", "", cls.summary, "",
                 "## What it does", "", textwrap.dedent(cls.what).strip(), "",
                 "## Why is this bad?", "", textwrap.dedent(cls.why).strip(), "",
                 "## How to fix it", "", textwrap.dedent(cls.how_to_fix).strip(), ""]
        if cls.bad:
            parts += ["## Example", "", "```python", cls.bad[0].source.rstrip(), "```", ""]
        if cls.good:
            parts += ["## Use instead", "", "```python", cls.good[0].source.rstrip(), "```", ""]
        if cls.options:
            parts += ["## Options", ""]
            parts += [f"- `{k}` (default `{o.default!r}`): {o.help}" for k, o in cls.options.items()]
            parts.append("")
        parts += ["## References", ""] + [f"- {r}" for r in cls.references]
        return "\n".join(parts) + "\n"
