"""The Python API: `lint(model, example_input)` lints a model object.

    import archlint
    report = archlint.lint(model, torch.randn(1, 3, 224, 224))

`check_paths` (the `archlint check` driver, over files) is re-exported from `archlint.driver`.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .inputs import ExampleInputs, for_target, from_shapes, meta_like
from .config import Settings, parse_shape
from .driver import check_paths  # noqa: F401  (part of the API)
from .errors import ArchlintError, too_deep
from .findings import Severity
from .pipeline import analyze, lint_model  # noqa: F401  (part of the API)
from .results import ModelReport, Report  # noqa: F401  (part of the API)


def lint(model: nn.Module, example_input: torch.Tensor | Sequence[torch.Tensor] | None = None, *,
         input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None,
         settings: Settings | None = None, **options: Any) -> ModelReport:
    """Lint a model object. `example_input` may be a real tensor or a tuple of them (only its
    shape and dtype are used); `input_shape` is the alternative. Keyword options are the
    config's keys in Python spelling: select, ignore, batch_size, rules={"K001": {...}}."""
    settings = settings or Settings()
    changes = {}
    for key, value in options.items():
        if key == "rules":
            changes["rule_options"] = {k.upper(): dict(v) for k, v in value.items()}
        elif key in ("select", "ignore"):
            changes[key] = [value.upper()] if isinstance(value, str) else [v.upper() for v in value]
        elif key == "batch_size":
            changes[key] = value
        elif key == "fail_on":
            changes[key] = Severity.parse(value)
        else:
            raise TypeError(f"lint() got an unexpected option {key!r}")
    settings = settings.with_overrides(**changes)
    if example_input is not None:
        tensors = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
        inputs = ExampleInputs(meta_like(tensors), "example_input")
    elif input_shape is not None:
        shapes = [input_shape] if isinstance(input_shape[0], int) else input_shape
        inputs = ExampleInputs(from_shapes([parse_shape(s) for s in shapes]), "input_shape")
    else:
        inputs = for_target(model, config_shapes=settings.input_shapes)
    try:
        return lint_model(model, inputs, settings)
    except RecursionError as exc:
        raise too_deep(exc) from exc
    except ArchlintError as exc:
        deep = too_deep(exc)
        if deep is None:
            raise
        raise deep from exc
