"""The trace's records: one `Op` per operation of the forward pass, gathered in a `Trace`.

Whatever tracer produced it, a trace is this flat list in execution order; the graph stage
turns it into the annotated graph rules read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..graph.ops import Kind
from ..sources import Frame


@dataclass(slots=True)
class TensorMeta:
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, t: torch.Tensor) -> "TensorMeta":
        # Made for every input and output of every node: map() and a dtype table halve its cost.
        name = _DTYPE_NAMES.get(t.dtype)
        if name is None:
            name = _DTYPE_NAMES[t.dtype] = str(t.dtype).replace("torch.", "")
        return cls(tuple(map(int, t.shape)), name)


_DTYPE_NAMES: dict[torch.dtype, str] = {}


@dataclass(slots=True)
class Op:
    """One operation of the traced forward pass."""

    name: str  # unique within the trace
    kind: Kind
    target: str  # module: qualified name; function/method: its name ("add", "cat", "view")
    module: nn.Module | None = None
    inputs: list[str] = field(default_factory=list)  # producing ops of tensor arguments, in order
    args: tuple = ()  # positional arguments, tensors replaced by producer names
    kwargs: dict = field(default_factory=dict)
    in_metas: list[TensorMeta] = field(default_factory=list)
    out_metas: list[TensorMeta] = field(default_factory=list)
    macs: int = 0
    writes: list[str] = field(default_factory=list)  # inputs this op modified in place
    alias_of: str | None = None  # earliest op whose storage this op's output shares
    scope: str = ""  # qualified name of the module whose forward issued the op
    call_frames: tuple[Frame, ...] = ()
    # A higher-order op (torch.export's wrapper of a checkpoint, grad-mode or cond region):
    # the layers inside it are not in the trace.
    opaque: bool = False
    # What a rerun's op returned when that is a size, not a tensor (`x.size(0) // 2`).
    value: Any = None


@dataclass
class Rerun:
    """The same forward run again at other input shapes: its ops, as far as it got, and the op
    that failed (with torch's message) when it did not get through."""

    ops: list[Op]
    failed: str | None = None
    error: str = ""


@dataclass
class Trace:
    ops: list[Op]
    tracer: str  # "torch.fx" | "torch.export"
    model: nn.Module  # the meta copy that was traced
    notes: list[str] = field(default_factory=list)
    # Runs the traced forward again on the example inputs mapped through a function (each
    # tensor to a meta tensor of another shape), for analyses that need a second shape, such
    # as where the batch goes (graph/batch.py). None where the trace cannot be repeated
    # (a model linted in parts). Nothing calls it unless such an analysis runs.
    rerun: Optional[Callable[[Callable[[torch.Tensor], Any]], Rerun]] = None
    # A cheaper rerun that runs this trace's graph again although it holds the traced sizes:
    # right where those sizes do not depend on the input's, possibly wrong elsewhere. Only for
    # a first look whose findings `rerun` then checks.
    rerun_fast: Optional[Callable[[Callable[[torch.Tensor], Any]], Rerun]] = None
    # The model's named modules, duplicates kept, where the rung has them (one walk of a big
    # model serves the trace and the graph).
    modules: Optional[dict[str, nn.Module]] = None
