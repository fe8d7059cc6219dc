"""Build the annotated graph from a trace: layers, parameters, windows, receptive fields.

Analysis is computed here once, before any rule runs.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..sources import Frame
from ..trace.records import Trace
from . import ops
from .archgraph import ArchGraph
from .layer import Layer, Shape
from .ops import Kind
from .receptive_field import ReceptiveField
from .weights import parameters_of
from .windows import window_of


def _spatial(shape: Shape | None, ndim: int) -> Shape | None:
    if shape is None or len(shape) != ndim + 2:
        return None
    return tuple(shape[2:])


def _per_position(layer: Layer) -> bool:
    """A linear layer over the last axis of a tensor that still has positions (ViT tokens,
    ConvNeXt's channels-last MLP) maps each position alone; over a flat (N, features) input
    it sees every position at once."""
    is_linear = isinstance(layer.module, nn.Linear) or (layer.module is None and layer.op == "linear")
    return is_linear and layer.in_shape is not None and len(layer.in_shape) >= 3


def _propagate_rf(graph: ArchGraph) -> None:
    if not graph.input_shapes:
        return
    image = graph.input_shapes[0]
    ndim = len(image) - 2
    if ndim < 1:
        return
    image_size = image[2:]
    for layer in graph:
        if layer.kind == Kind.INPUT:
            if _spatial(layer.out_shape, ndim) is not None:
                layer.rf = ReceptiveField.identity(ndim)
            continue
        incoming = [p for p in graph.predecessors(layer) if p.rf is not None]
        if not incoming:
            continue
        out = _spatial(layer.out_shape, ndim)
        first = incoming[0]
        if layer.window is not None and layer.window.ndim == ndim:
            layer.rf = layer.window.receptive_field(first.rf)
            continue
        widest = ReceptiveField.widest([p.rf for p in incoming])
        if ops.moves_values(layer) or _per_position(layer):
            layer.rf = widest
            continue
        spatial_in = [_spatial(p.out_shape, ndim) for p in incoming]
        if out is None:
            # Global pooling, a linear layer over a flat input: every output sees the whole input.
            if layer.out_shape is not None and len(layer.out_shape) >= 1:
                layer.rf = widest.whole(image_size)
            continue
        if out in spatial_in:
            layer.rf = widest
        elif all(o == 1 for o in out):
            layer.rf = widest.whole(image_size)
        elif spatial_in and spatial_in[0] and all(o % i == 0 for o, i in zip(out, spatial_in[0])):
            layer.rf = widest.scaled([o / i for o, i in zip(out, spatial_in[0])])
        elif spatial_in and spatial_in[0] and all(i % o == 0 for o, i in zip(out, spatial_in[0])):
            factors = [i // o for o, i in zip(out, spatial_in[0])]
            layer.rf = widest.through_window(factors, factors, [0] * ndim, [1] * ndim)
        # Any other change of spatial size is not one we can explain: leave the field unknown.


def _param_count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in parameters_of(module))


def build_graph(trace: Trace, input_shapes: Sequence[Shape],
                construction: dict[str, tuple[Frame, ...]] | None = None) -> ArchGraph:
    """Turn a trace into the annotated graph. `construction` maps qualified module names of
    the original model to where each module was built."""
    construction = construction or {}
    graph = ArchGraph(trace.model, trace.tracer, input_shapes, trace.notes, modules=trace.modules)
    graph.construction = dict(construction)
    graph.rerun, graph.rerun_fast = trace.rerun, trace.rerun_fast
    # A layer takes its op's lists (inputs, writes) rather than copies: the trace is dropped
    # once its graph is built.
    for index, op in enumerate(trace.ops):
        if op.kind == Kind.MODULE:
            qualname = op.target
            kind_name = type(op.module).__name__
        elif op.kind == Kind.ATTR:
            qualname, kind_name = op.target, "attr"
        else:
            qualname, kind_name = op.scope, op.target
        params = _param_count(op.module)
        if op.kind == Kind.ATTR:
            weight = graph.parameter(op.target)
            params = weight.numel() if weight is not None else 0
        built = construction.get(qualname, ()) if op.kind == Kind.MODULE else ()
        layer = Layer(
            name=op.name, index=index, kind=op.kind, op=kind_name, qualname=qualname,
            module=op.module, inputs=op.inputs, args=op.args, kwargs=op.kwargs,
            in_shapes=[m.shape for m in op.in_metas], out_shapes=[m.shape for m in op.out_metas],
            dtype=op.out_metas[0].dtype if op.out_metas else None,
            params=params, macs=op.macs, writes=op.writes, alias_of=op.alias_of,
            built_frames=built, call_frames=op.call_frames, opaque=op.opaque,
        )
        graph.add(layer)
    # After all are added: a window folds in the pad that feeds it, if the graph has any.
    pads = graph if any(ops.is_pad(layer) for layer in graph) else None
    for layer in graph:
        layer.window = window_of(layer, pads)
    _propagate_rf(graph)
    return graph
