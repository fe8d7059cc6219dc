"""Where the batch goes: for every tensor of the forward pass, which dim carries the samples of
the batch, and which ops mixed samples into it.

Traced with a batch of one, every size-1 dim could be the batch. So the forward is run again
on meta tensors with a batch of two (`ArchGraph.rerun`: the fx graph re-propagated, or, for
rungs whose graph holds the traced sizes, traced again), and the batch is followed op by op
from the inputs (`batch_ops`). A tensor's batch is one of:

- `free`: it does not depend on the samples (weights, constants, `torch.zeros(B, ...)`);
- `at`: dim `dim` carries it, possibly merged with other positions: along that dim, index
  `(o * B + b) * inner + r` belongs to sample `b` (multi-head attention's `(B*H, N, D)` has
  inner H; `torch.cat([x, x])` has outer 2);
- `gone`: it depends on the samples but has no batch axis (reduced over it);
- `scrambled`: a reshape spread samples over dims so that no dim holds them apart;
- `unknown`: anything else; analyses stay quiet about it.

An op that combines values of several samples (a softmax, reduction, norm or contraction over
a dim that carries the batch) is recorded as a `Mixing`, and the samples it mixed travel with
the tensors after it. Whether dim 0 of the input really is a batch is `confirmed` by the layers
that read it as one (a conv, pool or norm's N, a batch-first attention or RNN, a batched matmul,
`x.flatten(1)`); BatchNorm, which mixes the batch by design, is not a mixing. Computed once per
graph, on first use, and only then does it cost the rerun.

    flow = batch_flow(graph)
    flow.of(layer)      # (BatchDim, ...) per output tensor of the layer
    flow.events         # {layer name: Mixing}
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .ops import Kind

FREE, AT, GONE, SCRAMBLED, UNKNOWN = "free", "at", "gone", "scrambled", "unknown"


@dataclass(frozen=True)
class BatchDim:
    """Where one tensor keeps the batch (see the module's docstring)."""

    state: str
    dim: int | None = None
    inner: int = 1
    outer: int = 1
    home: int = 0  # the dim the input carried the batch in
    mixed: tuple[str, ...] = ()  # the Mixing ops whose results reach this tensor
    moved: str | None = None  # the op that last took the batch off its own dim or merged it
    sources: frozenset[str] = frozenset()  # the inputs whose batch this is
    flat: int = 0  # scrambled: the batch index is (flat index // flat) % B, row-major

    @property
    def at(self) -> bool:
        return self.state == AT

    @property
    def proper(self) -> bool:
        """One dim holds exactly the batch, sample b at index b."""
        return self.state == AT and self.inner == 1 and self.outer == 1

    @property
    def displaced(self) -> bool:
        return self.state == AT and not (self.proper and self.dim == self.home)

    def but(self, **changes) -> "BatchDim":
        return replace(self, **changes)


NO_BATCH = BatchDim(FREE)


@dataclass(frozen=True)
class Mixing:
    """An op that combines the values of several samples."""

    layer: str  # the op's name (a graph layer)
    kind: str  # softmax, reduce, normalize, contract, conv, pool, attend, recur, sort, cumulate, loss
    dim: int  # the dim of its input it mixes along, which carries the batch
    what: str  # how to say it: "softmax over dim 0"
    moved: str | None = None  # the op that had moved the batch into that dim
    merged: bool = False  # that dim holds the batch merged with other positions
    sources: frozenset[str] = frozenset()
    implicit: bool = False  # a softmax whose dim was left to PyTorch's legacy default


@dataclass(frozen=True)
class Failure:
    """The forward failed at the analysis batch where it ran at the traced one."""

    layer: str
    error: str
    culprit: str | None  # the op that merged the batch into what the failing op reads
    dim: int | None = None


@dataclass
class BatchFlow:
    """The batch of every tensor of one graph, at an analysis batch of `batch`."""

    available: bool
    reason: str = ""
    batch: int = 2
    values: dict[str, tuple[BatchDim, ...]] = field(default_factory=dict)
    shapes: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)  # at `batch`
    events: dict[str, Mixing] = field(default_factory=dict)
    deliberate: set[str] = field(default_factory=set)  # mixings concatenated as extra features
    confirmed: dict[str, str] = field(default_factory=dict)  # input -> the layer that read it as a batch
    failure: Failure | None = None
    unknown_ops: list[str] = field(default_factory=list)  # ops the analysis could not follow

    def of(self, layer) -> tuple[BatchDim, ...]:
        return self.values.get(layer.name if not isinstance(layer, str) else layer, ())

    def returned(self, graph) -> list[tuple[BatchDim, tuple[int, ...]]]:
        """The batch and shape of every tensor the model returns."""
        found = []
        for out in graph.outputs:
            pairs = list(zip(self.of(out), self.shapes.get(out.name, [])))
            if not pairs:  # an output node without shapes (torch.export's): read its inputs
                pairs = [p for name in out.inputs for p in zip(self.of(name), self.shapes.get(name, []))]
            found.extend((value, tuple(shape)) for value, shape in pairs)
        return found

    def is_confirmed(self, sources) -> bool:
        return bool(sources) and all(s in self.confirmed for s in sources)


_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def batch_flow(graph) -> BatchFlow:
    """The graph's batch flow, computed on first use: without the rerun where every op keeps
    each sample apart at dim 0 (batch_apart.py), where the flow has nothing to follow."""
    if graph not in _cache:
        from .batch_apart import flow_if_apart

        apart = flow_if_apart(graph) if graph.rerun is not None else None
        _cache[graph] = apart if apart is not None else _analyze(graph)
    return _cache[graph]


# --- the inputs ------------------------------------------------------------------------------

def batch_dim_of(shape: tuple[int, ...], second: bool = False) -> int | None:
    """The dim of an example input that holds its batch: dim 0, or dim 1 for a sequence-first
    (L, 1, E) or (L, 1) input whose first dim is not 1. `second`: the other reading of a
    (1, 1, ...) input, dim 1 (a forward that iterates dim 0, as StyleGAN2's over its styles)."""
    if not shape:
        return None
    if len(shape) in (2, 3) and shape[0] != 1 and shape[1] == 1:
        return 1
    if second and len(shape) >= 2 and shape[0] == shape[1] == 1:
        return 1
    return 0


def _example_batch(graph) -> tuple[int | None, list[tuple[int, ...]]]:
    shapes = [s for layer in graph.inputs for s in layer.out_shapes]
    for shape in shapes:
        dim = batch_dim_of(shape)
        if dim is not None:
            return shape[dim], shapes
    return None, shapes


# --- the analysis ----------------------------------------------------------------------------

@dataclass
class Step:
    """One op as the analysis reads it, at the analysis batch."""

    name: str
    kind: Kind
    op: str  # calls: the function's plain name; modules: the class name
    module: Any
    inputs: list[str]
    args: tuple
    kwargs: dict
    out_shapes: list[tuple[int, ...]]
    writes: list[str]
    value: Any = None  # a size it returned, when the rerun recorded one


def _steps_from_layers(graph) -> list[Step]:
    return [Step(l.name, l.kind, l.op, l.module, list(l.inputs), l.args, dict(l.kwargs),
                 [tuple(s) for s in l.out_shapes], list(l.writes)) for l in graph]


def _steps_from_rerun(graph, ops) -> list[Step] | None:
    """The rerun's ops as steps, or None when the rerun took another path through forward."""
    layers = list(graph)
    if len(ops) > len(layers):
        return None
    steps = []
    for op, layer in zip(ops, layers):
        op_kind = op.target if op.kind in (Kind.FUNCTION, Kind.METHOD) else layer.op
        # fx numbers the tensor constants a forward makes on from the last trace's
        constant = op.kind == layer.kind == Kind.ATTR and op.name.startswith("_tensor_constant") \
            and layer.name.startswith("_tensor_constant")
        if not constant and (op.name != layer.name or op.kind != layer.kind or op_kind != layer.op):
            return None
        steps.append(Step(op.name, op.kind, layer.op, layer.module, list(op.inputs), op.args,
                          dict(op.kwargs), [tuple(m.shape) for m in op.out_metas], list(layer.writes),
                          op.value))
    return steps


def _analyze(graph) -> BatchFlow:
    """The flow at a batch of two. Where the rerun traces again (the graph holds the traced
    sizes), running the traced graph first is cheaper, and enough when it shows nothing to
    report: a size it holds wrongly can hide a mixing, not invent one. Anything it does show
    is taken from the second trace."""
    if graph.rerun is None:
        return BatchFlow(False, "the graph cannot be run again at another batch size")
    if graph.rerun_fast is not None:
        first = _analyze_with(graph, graph.rerun_fast)
        if first.available and _nothing_to_report(first, graph):
            return first
    return _analyze_with(graph, graph.rerun)


def _nothing_to_report(flow: BatchFlow, graph) -> bool:
    """Nothing mixed, nothing failed, and every output holds the batch as it came in (a
    batch the first look lost could hide what the second trace would show)."""
    if flow.events or flow.failure is not None:
        return False
    returned = flow.returned(graph)
    return bool(returned) and all(v.proper or v.state == FREE for v, _ in returned)


def _analyze_with(graph, run) -> BatchFlow:
    example, input_shapes = _example_batch(graph)
    if example is None:
        return BatchFlow(False, "no input has a batch dim")
    reference = None  # the traced shapes, when the analysis runs at another batch
    if example >= 2:
        batch, steps, second = example, _steps_from_layers(graph), False
        failed, error = None, ""
    else:
        batch = 2
        rerun, steps, second = None, None, False
        for second in (False, True):
            if second and not any(len(shape) >= 2 and shape[:2] == (1, 1) for shape in input_shapes):
                break
            rerun = _rerun(run, example, batch, second)
            if isinstance(rerun, BatchFlow):
                return rerun
            steps = _steps_from_rerun(graph, rerun.ops)
            if steps is not None and (rerun.failed is None or rerun.ops):
                break
        if rerun.failed is not None and not rerun.ops:
            return BatchFlow(False, f"at batch {batch} the forward fails: {rerun.error}")
        if steps is None:
            return BatchFlow(False, f"at batch {batch} the forward takes another path")
        failed, error = rerun.failed, rerun.error
        reference = {l.name: [tuple(s) for s in l.out_shapes] for l in graph}

    from .batch_ops import Interpreter

    flow = BatchFlow(True, batch=batch)
    Interpreter(flow, steps, example, reference, second).run()
    if failed:
        flow.failure = _failure(flow, graph, failed, error)
    return flow


def _rerun(run, example: int, batch: int, second: bool):
    """The forward at `batch`, every input's batch dim widened; a BatchFlow saying why not."""

    def widen(t: torch.Tensor) -> torch.Tensor:
        dim = batch_dim_of(tuple(t.shape), second)
        if dim is None or t.shape[dim] != example:
            return t
        shape = list(t.shape)
        shape[dim] = batch
        return torch.empty(shape, dtype=t.dtype, device="meta")

    try:
        return run(widen)
    except Exception as exc:  # the analysis must never take the lint down
        return BatchFlow(False, f"the forward could not be run at batch {batch}: {type(exc).__name__}")


def _failure(flow: BatchFlow, graph, failed: str, error: str) -> Failure:
    """Who is to blame when the forward fails at the analysis batch: an op that merged the batch
    into the dims the failing op reads as features (`x.view(-1)` before a Linear)."""
    from .batch_layers import feature_dims

    try:
        layer = graph.layer(failed)
    except KeyError:
        return Failure(failed, error, None)
    for name in layer.inputs:
        for value, shape in zip(flow.values.get(name, ()), flow.shapes.get(name, ())):
            if value.moved is None:
                continue
            if value.state == SCRAMBLED:
                return Failure(failed, error, value.moved)
            if value.state == AT and value.displaced and value.dim in feature_dims(layer, len(shape)):
                return Failure(failed, error, value.moved, value.dim)
    return Failure(failed, error, None)


# --- reshapes: where the batch lands when the row-major order is read in another shape --------

def reshaped(value: BatchDim, before: tuple[int, ...], after: tuple[int, ...], batch: int,
             by: str) -> BatchDim:
    """The batch of `value` (a tensor of shape `before`) after a view or reshape to `after`."""
    if value.state not in (AT, SCRAMBLED):
        return value
    if value.state == AT:
        stride = value.inner * math.prod(before[value.dim + 1:])
    else:
        stride = value.flat
    block = stride * batch
    for q, size in enumerate(after):
        below = math.prod(after[q + 1:])
        if size > 1 and stride % below == 0 and (size * below) % block == 0:
            inner, outer = stride // below, size * below // block
            moved = value.moved
            if (q, inner, outer) != (value.dim, value.inner, value.outer) or value.state != AT:
                moved = None if (inner, outer, q) == (1, 1, value.home) else by
            return value.but(state=AT, dim=q, inner=inner, outer=outer, moved=moved, flat=0)
    return value.but(state=SCRAMBLED, dim=None, flat=stride, moved=by)


# --- values: tensor arguments and how elementwise ops combine them -----------------------------

@dataclass(frozen=True)
class T:
    """A tensor argument: its batch and its shape at the analysis batch."""

    value: BatchDim
    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)


def combine(tensors: list[T], out: tuple[int, ...]) -> BatchDim:
    """The batch of an elementwise result of `tensors`, broadcast to `out`."""
    live = [t for t in tensors if isinstance(t, T) and t.value.state != FREE]
    if not live:
        return NO_BATCH
    values = [t.value for t in live]
    if any(v.state in (UNKNOWN, SCRAMBLED) for v in values):
        return unknown_like(values)
    carried = [t for t in live if t.value.state == AT]
    mixed = union(v.mixed for v in values)
    sources = frozenset().union(*(v.sources for v in values))
    if not carried:
        return values[0].but(mixed=mixed, sources=sources)
    placed = []
    for t in carried:
        d = t.value.dim + len(out) - t.ndim
        if d < 0 or (out and t.shape[t.value.dim] != out[d]):
            return unknown_like(values)
        placed.append(t.value.but(dim=d) if d != t.value.dim else t.value)
    first = placed[0]
    if any((p.dim, p.inner, p.outer) != (first.dim, first.inner, first.outer) for p in placed):
        return unknown_like(values)  # samples set against other samples: every pair
    moved = next((p.moved for p in placed if p.moved), None) if first.displaced else None
    return first.but(mixed=mixed, sources=sources, moved=moved)


def union(groups) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for group in groups:
        for name in group:
            seen.setdefault(name, None)
    return tuple(seen)


def merge_meta(value: BatchDim, others: list[BatchDim]) -> BatchDim:
    return value.but(mixed=union([value.mixed] + [o.mixed for o in others]),
                     sources=value.sources.union(*(o.sources for o in others)))


def unknown_like(values) -> BatchDim:
    values = [v for v in values if v is not None]
    return BatchDim(UNKNOWN, mixed=union(v.mixed for v in values),
                    sources=frozenset().union(*(v.sources for v in values)) if values else frozenset())


def dims_text(dims: list[int], ndim: int) -> str:
    if len(dims) == ndim:
        return "every dim"
    return f"dim {dims[0]}" if len(dims) == 1 else "dims (" + ", ".join(map(str, dims)) + ")"
