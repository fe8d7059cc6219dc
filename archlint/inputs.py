"""Example inputs: what each target is traced with, and where that came from.

First match wins, and the report says which:
1. `--input-shape` (repeat it for several inputs; `1,128:int64` sets a dtype);
2. a module-level `example_inputs = {"Generator": x, "Discriminator": (a, b)}`, by target name;
3. the model's own `example_input_array` (the Lightning convention);
4. a module-level `example_input` (a tensor or a tuple of them), for every model in the file;
5. `input-shape` in the config;
6. a timm model's `pretrained_cfg["input_size"]`;
7. integer token ids for a model whose first layer is an `nn.Embedding`;
8. else 1x3x224x224.
Only shapes and dtypes are used: tracing runs on meta tensors, so values are never read.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Sequence

import torch
from torch import nn

from . import sources
from .errors import ShapeError

DEFAULT_INPUT_SHAPE = (1, 3, 224, 224)
TOKEN_IDS_SHAPE = (1, 16)

DTYPES = {
    "float32": torch.float32, "float": torch.float32, "float16": torch.float16,
    "half": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
    "double": torch.float64, "int64": torch.int64, "long": torch.int64, "int32": torch.int32,
    "int": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8,
    "bool": torch.bool,
}


@dataclass
class ExampleInputs:
    tensors: tuple[torch.Tensor, ...]
    source: str  # where they came from, for the report

    @property
    def shapes(self) -> list[list[int]]:
        return [list(t.shape) for t in self.tensors]

    def describe(self) -> str:
        def one(t: torch.Tensor) -> str:
            shape = "x".join(str(d) for d in t.shape)
            return shape if t.dtype == torch.float32 else f"{shape}:{str(t.dtype).removeprefix('torch.')}"

        return f"{', '.join(one(t) for t in self.tensors)} ({self.source})"


def meta_like(tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.empty(t.shape, dtype=t.dtype, device="meta") for t in tensors)


def from_shapes(shapes: Sequence[Sequence[Any]]) -> tuple[torch.Tensor, ...]:
    """Meta tensors for shapes as config.parse_shape gives them: ints, then maybe a dtype name."""
    tensors = []
    for shape in shapes:
        dims = [d for d in shape if isinstance(d, int)]
        names = [d for d in shape if isinstance(d, str)]
        dtype = DTYPES[names[0]] if names else torch.float32
        tensors.append(torch.empty(tuple(dims), dtype=dtype, device="meta"))
    return tuple(tensors)


def _as_tensors(value: Any) -> tuple[torch.Tensor, ...] | None:
    if isinstance(value, torch.Tensor):
        return (value,)
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return tuple(value)
    return None


def _first_layer(model: nn.Module) -> nn.Module | None:
    """The first module, in the order it was built, that holds parameters of its own."""
    return next((m for m in model.modules() if any(True for _ in m.parameters(recurse=False))), None)


def for_target(model: nn.Module, module: ModuleType | None = None, name: str | None = None,
               cli_shapes: Sequence[Sequence[Any]] | None = None,
               config_shapes: Sequence[Sequence[Any]] | None = None) -> ExampleInputs:
    """The input to trace `model` with. `module` is the file that built it and `name` its name
    there (the part after `::`), for the file's `example_inputs` table."""
    if cli_shapes:
        return ExampleInputs(from_shapes(cli_shapes), "--input-shape")
    table = getattr(module, "example_inputs", None) if module is not None else None
    if isinstance(table, dict) and name is not None:
        found = _as_tensors(table.get(name, table.get(name.split(".")[0])))
        if found:
            return ExampleInputs(meta_like(found), f"example_inputs[{name.split('.')[0]!r}] in the file")
    found = _as_tensors(getattr(model, "example_input_array", None))
    if found:
        return ExampleInputs(meta_like(found), "model.example_input_array")
    if module is not None:
        found = _as_tensors(getattr(module, "example_input", None))
        if found:
            return ExampleInputs(meta_like(found), getattr(module, "__archlint_input_source__",
                                                           "example_input in the file"))
    if config_shapes:
        return ExampleInputs(from_shapes(config_shapes), "input-shape in pyproject.toml")
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("input_size"), (tuple, list)):
        return ExampleInputs(from_shapes([(1, *cfg["input_size"])]), "the model's pretrained_cfg")
    if isinstance(_first_layer(model), nn.Embedding):
        ids = torch.empty(TOKEN_IDS_SHAPE, dtype=torch.long, device="meta")
        return ExampleInputs((ids,), "token ids for the model's nn.Embedding; set --input-shape 1,N:int64")
    return ExampleInputs(from_shapes([DEFAULT_INPUT_SHAPE]), "default; set --input-shape")


def check_arity(model: nn.Module, inputs: ExampleInputs, target: str) -> None:
    """A forward that takes another number of inputs than were found: say which it takes and
    how to give each, at forward's own line (not inside torch or inspect)."""
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return
    params = [p for p in signature.parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in signature.parameters.values()):
        return
    required = [p for p in params if p.default is inspect.Parameter.empty]
    given = len(inputs.tensors)
    if len(required) <= given <= len(params):
        return
    names = ", ".join(p.name for p in params) or "no inputs"
    where = {}
    try:
        code = inspect.unwrap(model.forward).__code__
        if sources.Frame(code.co_filename, code.co_firstlineno).is_user_code:
            where = {"path": sources.display_path(code.co_filename), "line": code.co_firstlineno}
    except AttributeError:
        pass
    short = target.split("::")[-1]
    example = " ".join(f"--input-shape {'1,3,64,64' if i == 0 else '1,10'}" for i in range(max(len(required), 1)))
    raise ShapeError(
        f"{type(model).__name__}.forward takes {len(required)}"
        f"{'' if len(required) == len(params) else f' to {len(params)}'} input(s) ({names}), but "
        f"archlint found {given}: {inputs.describe()}.",
        hint=f"Give each input: repeat --input-shape ({example}), set `example_input = (a, b)` in "
             f"the file, or `example_inputs = {{{short!r}: (a, b)}}` for this model alone.",
        shapes=inputs.shapes, cause="input-count", **where)
