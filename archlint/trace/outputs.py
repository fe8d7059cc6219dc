"""Model outputs torch.export refuses, read as the tensors they hold.

torch.export takes an output whose pytree leaves are tensors and plain constants. A Hugging
Face model at its default config (`use_cache=True`) returns a `ModelOutput` holding a
`DynamicCache`, which is not a pytree node: export refused the whole model ("Found <class
'...DynamicCache'> in output") and archlint fell back to linting it part by part, missing the
embeddings and the head. The cache is an output like the logits: the keys and values every
attention layer computed. So the export rung traces a forward that returns such an output as
the flat tuple of its tensors. Everything inside forward is traced as the user runs it, the
cache included; only the container at the end is unpacked.

The walk is generic (pytree nodes, then a dataclass's fields or an object's attributes), so
archlint imports no library for it, and other containers (an encoder-decoder cache, a
sliding-window layer, a user's own result class) are read the same way. Outputs export takes
as they are pass unchanged, so every other model's graph stays what it was.
"""
from __future__ import annotations

import dataclasses
import functools
import types
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.utils._pytree as pytree
from torch import nn

# Leaves torch.export accepts in an output (its KNOWN_TYPES, without the internal ones).
_PLAIN = (torch.Tensor, int, float, bool, str, type(None), torch.SymInt, torch.SymFloat,
          torch.SymBool)
# Attributes that lead away from the output's own data: the model, classes, code, configs'
# callables. A cache never holds its tensors there.
_NOT_DATA = (nn.Module, type, types.FunctionType, types.MethodType, types.BuiltinFunctionType,
             types.ModuleType, torch.dtype, torch.device)
MAX_DEPTH = 8  # an encoder-decoder cache is 3 deep: cache -> self-attention cache -> layer
MAX_OBJECTS = 10_000  # objects opened at most, so an output holding a large object graph stays quick


def exportable(value: Any, tensor_types: tuple[type, ...] = (torch.Tensor,)) -> bool:
    """Whether torch.export takes `value` as an output as it is (torch.fx, with its proxies
    among `tensor_types`)."""
    return all(isinstance(leaf, (_PLAIN, tensor_types)) for leaf in pytree.tree_leaves(value))


def tensors_in(value: Any, tensor_types: tuple[type, ...] = (torch.Tensor,),
               ) -> tuple[list[torch.Tensor], list[str]]:
    """The tensors (`tensor_types`) `value` holds, in order, each once, and the names of the
    outermost non-pytree types they were read out of (`DynamicCache`, not its layers)."""
    found: list[torch.Tensor] = []
    opened: list[str] = []
    seen: set[int] = set()

    def walk(item: Any, depth: int) -> None:
        for leaf in pytree.tree_leaves(item):
            if isinstance(leaf, tensor_types):
                if id(leaf) not in seen:
                    seen.add(id(leaf))
                    found.append(leaf)
                continue
            if isinstance(leaf, _PLAIN) or isinstance(leaf, _NOT_DATA) or id(leaf) in seen:
                continue
            seen.add(id(leaf))
            if depth >= MAX_DEPTH or len(seen) > MAX_OBJECTS:
                continue
            children = _children(leaf)
            if children is None:
                continue
            name = type(leaf).__name__
            if depth == 0 and name not in opened:
                opened.append(name)
            for child in children:
                walk(child, depth + 1)

    walk(value, 0)
    return found, opened


def _children(value: Any) -> list[Any] | None:
    """A non-pytree object's contents: a dataclass's fields, else its attributes; None for an
    object without either (nothing to read)."""
    if dataclasses.is_dataclass(value):
        return [getattr(value, f.name, None) for f in dataclasses.fields(value)]
    if isinstance(value, (set, frozenset)):
        return list(value)
    attrs = getattr(value, "__dict__", None)
    values = list(attrs.values()) if isinstance(attrs, dict) else []
    for slot in getattr(type(value), "__slots__", ()):
        if isinstance(slot, str) and hasattr(value, slot):
            values.append(getattr(value, slot))
    return values or None


@dataclasses.dataclass
class Unpacked:
    """What `flat_outputs` unpacked: the outermost types export refused, and how many tensors
    the output held in all. Empty when the output was taken as it is."""

    types: list[str] = dataclasses.field(default_factory=list)
    tensors: int = 0
    tracer: str = "torch.export"

    def note(self) -> str:
        return (f"{self.tracer} does not take {' or '.join(self.types)} as an output: traced with "
                f"the {self.tensors} tensors the output holds as the graph's outputs")


@contextmanager
def flat_outputs(model: nn.Module, tensor_types: tuple[type, ...] = (torch.Tensor,),
                 tracer: str = "torch.export") -> Iterator[Unpacked]:
    """While active, `model`'s forward returns an output `tracer` refuses as the tuple of its
    tensors (`tensor_types`: torch.fx's proxies), and the `Unpacked` yielded says what it
    unpacked, for the trace's note. Patched on the instance, so module names, hooks and the
    signature export binds the inputs to are the model's own."""
    unpacked = Unpacked(tracer=tracer)
    had_own = "forward" in model.__dict__
    own = model.__dict__.get("forward")
    forward = model.forward

    @functools.wraps(forward)
    def flattening_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        if exportable(out, tensor_types):
            return out
        tensors, unpacked.types = tensors_in(out, tensor_types)
        unpacked.tensors = len(tensors)
        return tuple(tensors)

    model.forward = flattening_forward
    try:
        yield unpacked
    finally:
        if had_own:
            model.forward = own
        else:
            del model.forward
