"""Graphs whose every op keeps each sample apart at dim 0: their batch flow without a rerun.

The batch flow (batch.py) runs the forward again at a batch of two, a fifth of a plain CNN's
lint (0.2 s of a 1000-block residual net). For a graph built only from ops that map every
sample alone and keep it at dim 0 (convs, pools, norms other than over the batch, activations,
elementwise arithmetic between tensors of the same rank, `flatten(1)`, a concatenation or a
reduction over other dims, linear layers), the answer is known without it: the batch stays at
dim 0 of every tensor and nothing mixes it. By induction from the inputs (each with its batch at
dim 0), each op below keeps that true; anything else (a reshape, a transpose, a product,
attention, indexing, a softmax, a factory) sends the graph to the full analysis.

BatchNorm normalizes over the batch by design: it is the rule's documented exception, and the
full analysis does not report it either.
"""
from __future__ import annotations

from torch import nn

from .ops import (ACTIVATION_TYPES, CALLS, CONCAT_FUNCTIONS, DROPOUT_TYPES, Kind, NORM_FUNCTIONS,
                  op_name)

_CONVS = (nn.modules.conv._ConvNd,)
_POOLS = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
          nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)
_SAMPLE_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
# Activations apply to each value alone; GLU halves a dim it is given (dim 0 included).
_ELEMENTWISE = tuple(t for t in ACTIVATION_TYPES if t is not nn.GLU) + DROPOUT_TYPES + (nn.Identity,)
_UNARY = frozenset({
    "relu", "relu_", "relu6", "gelu", "silu", "silu_", "sigmoid", "sigmoid_", "tanh", "tanh_",
    "hardswish", "hardsigmoid", "hardtanh", "leaky_relu", "elu", "mish", "softplus", "dropout",
    "contiguous", "clone", "detach", "neg", "abs", "exp", "sqrt", "rsqrt", "clamp", "clamp_",
    "stochastic_depth", "drop_path"})  # torchvision's and timm's: one draw per sample
_BINARY = frozenset({"add", "add_", "iadd", "sub", "sub_", "isub", "mul", "mul_", "imul",
                     "truediv", "div", "div_", "itruediv"})
_POOL_FUNCTIONS = frozenset({"max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d",
                             "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
                             "adaptive_avg_pool3d", "adaptive_max_pool2d"})
_REDUCTIONS = frozenset({"mean", "sum", "amax", "amin"})
_SIZES = frozenset({"size", "dim"})  # read a size, make no tensor


def flow_if_apart(graph, batch: int = 2):
    """The batch flow of `graph` (batch.BatchFlow, at an analysis batch of `batch`) when every
    op maps each sample alone and keeps it at dim 0, with every input's batch at dim 0; else
    None. Each tensor's batch is then its inputs' at dim 0, and the inputs are confirmed as
    batches by the first layer that reads them as one (a conv, pool, norm or linear layer)."""
    from .batch import AT, BatchDim, BatchFlow, batch_dim_of

    sources: dict[str, frozenset[str]] = {}  # data layer -> the inputs its batch comes from
    confirmed: dict[str, str] = {}
    for layer in graph:
        if layer.kind == Kind.INPUT:
            if not layer.out_shapes or any(len(s) < 2 or batch_dim_of(tuple(s)) != 0
                                           for s in layer.out_shapes):
                return None
            sources[layer.name] = frozenset({layer.name})
            continue
        if layer.kind in (Kind.ATTR, Kind.OUTPUT) or _reads_size(layer):
            continue  # an op that uses a size read here is not one of those below
        data = [n for n in layer.inputs if n in sources]
        if not data:
            return None  # a tensor made inside forward: where its batch is needs the rerun
        if not _per_sample(layer, data):
            return None
        first = sources[data[0]]
        sources[layer.name] = first if all(sources[n] == first for n in data[1:]) else frozenset().union(
            *(sources[n] for n in data))
        if layer.kind == Kind.MODULE and not isinstance(layer.module, _ELEMENTWISE):
            for name in sources[layer.name]:
                confirmed.setdefault(name, layer.name)
    flow = BatchFlow(True, "every op keeps each sample apart at dim 0", batch=batch)
    dims: dict[frozenset[str], BatchDim] = {}  # immutable: one per set of inputs serves all
    for layer in graph:
        if layer.name in sources:
            came_from = sources[layer.name]
            dim = dims.get(came_from)
            if dim is None:
                dim = dims[came_from] = BatchDim(AT, 0, sources=came_from)
            flow.values[layer.name] = (dim,) * len(layer.out_shapes)
            flow.shapes[layer.name] = [(s[0] * batch, *s[1:]) for s in layer.out_shapes]
    flow.confirmed = confirmed
    return flow


def _reads_size(layer) -> bool:
    """`x.size()`, `x.dim()`, `x.ndim`, `x.shape`, `x.dtype`, or arithmetic on such values
    (`x.ndim == 4`, timm's `_assert`): no tensor comes out."""
    if layer.kind not in CALLS:
        return False
    if not layer.in_shapes and not layer.out_shapes:
        return True
    name = op_name(layer.op)
    return name in _SIZES or (name == "getattr" and len(layer.args) > 1 and layer.args[1] in _ATTRIBUTES)


_ATTRIBUTES = frozenset({"ndim", "shape", "dtype", "device", "is_cuda"})


def _per_sample(layer, sources: list[str]) -> bool:
    shapes = layer.in_shapes
    if len(layer.out_shapes) != 1 or not shapes or len(shapes) != len(layer.inputs):
        return False
    rank = len(shapes[layer.inputs.index(sources[0])])  # the (first) data input's
    if rank < 2 or len(layer.out_shapes[0]) < 1:
        return False
    if layer.kind == Kind.MODULE:
        return len(layer.inputs) == 1 and _module_keeps_samples(layer.module, rank)
    name = op_name(layer.op)
    if name not in _BINARY and name not in CONCAT_FUNCTIONS and (
            len(sources) != 1 or layer.inputs[0] != sources[0]):
        return False  # one data input, first; the others weights (F.batch_norm's statistics)
    if name in _UNARY:
        return len(layer.inputs) == 1
    if name in _BINARY:
        # Same rank for every data operand: a lower-rank one would align its batch with a
        # feature dim of the other. Weights and constants broadcast along the batch only when
        # their first dim is 1 or they have fewer dims.
        out_rank = len(layer.out_shapes[0])
        for source, shape in zip(layer.inputs, shapes):
            if source in sources:
                if len(shape) != out_rank:
                    return False
            elif len(shape) == out_rank and shape[0] != 1:
                return False
        return True
    if name in _POOL_FUNCTIONS or name in NORM_FUNCTIONS - {"layer_norm", "native_layer_norm", "rms_norm"}:
        return rank >= 3
    if name == "flatten":
        start, end = _dim(_arg(layer, "start_dim", 1, 0), rank), _dim(_arg(layer, "end_dim", 2, -1), rank)
        return start not in (None, 0) and end not in (None, 0)
    if name in CONCAT_FUNCTIONS and name != "stack":
        dim = _dim(_arg(layer, "dim", 1, 0), rank)
        return dim not in (None, 0) and all(s in sources and len(sh) == rank for s, sh in zip(layer.inputs, shapes))
    if name in _REDUCTIONS:
        dims = _reduced(layer, rank)
        return dims is not None and 0 not in dims
    return False


def _module_keeps_samples(module: nn.Module, rank: int) -> bool:
    if isinstance(module, _CONVS + _POOLS):
        # A conv or pool given one dim less than its batched form reads dim 0 as channels.
        spatial = getattr(module, "kernel_size", None)
        if isinstance(module, (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)):
            spatial = module.output_size
        n = len(spatial) if isinstance(spatial, tuple) else _POOL_RANK.get(type(module).__name__[-2:])
        return n is not None and rank == n + 2
    if isinstance(module, _SAMPLE_NORMS):
        return rank >= 3 or isinstance(module, nn.modules.batchnorm._BatchNorm)
    if isinstance(module, nn.Linear):
        return True  # over the last dim, rank >= 2 checked
    if isinstance(module, nn.Flatten):
        return module.start_dim % rank != 0 and module.end_dim % rank != 0
    return isinstance(module, _ELEMENTWISE)


_POOL_RANK = {"1d": 1, "2d": 2, "3d": 3}


def _arg(layer, key: str, index: int, default):
    """An argument of a call given by keyword or by position (`args[0]` is the tensor)."""
    if key in layer.kwargs:
        return layer.kwargs[key]
    return layer.args[index] if len(layer.args) > index else default


def _dim(value, rank: int) -> int | None:
    return value % rank if isinstance(value, int) and not isinstance(value, bool) else None


def _reduced(layer, rank: int) -> set[int] | None:
    dim = _arg(layer, "dim", 1, None)
    dims = [dim] if isinstance(dim, int) else list(dim) if isinstance(dim, (tuple, list)) else None
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        return None
    return {d % rank for d in dims}
