"""The architecture graph: one networkx DiGraph of layers, whatever tracer produced it.

A node is one operation of the forward pass: a torch.nn layer call, a function (`add`, `cat`,
`flatten`) or a tensor method. Each carries a `Layer`: the small, typed view rules read. Edges
run from producer to consumer. Analysis (shapes, parameters, MACs, receptive fields, source
lines) is computed here once, before any rule runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import networkx as nx
from torch import nn

from . import sources
from .findings import Location
from .receptive_field import ReceptiveField, window_of
from .sources import Frame
from .trace import Op, Trace

Shape = tuple[int, ...]


@dataclass(eq=False)
class Layer:
    """One operation in the forward pass, as rules see it."""

    name: str  # unique node id
    index: int  # position in execution order
    kind: str  # "input" | "module" | "function" | "method" | "attr" | "output"
    op: str  # module: class name ("Conv2d"); function or method: its name ("add", "view")
    qualname: str  # module: name as in model.named_modules(); otherwise the enclosing module
    module: nn.Module | None = None
    inputs: list[str] = field(default_factory=list)
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    in_shapes: list[Shape] = field(default_factory=list)
    out_shapes: list[Shape] = field(default_factory=list)
    dtype: str | None = None
    params: int = 0  # parameters this layer owns (counted again where a module is reused)
    macs: int = 0
    rf: ReceptiveField | None = None
    writes: list[str] = field(default_factory=list)  # inputs it modifies in place
    alias_of: str | None = None
    built_frames: tuple[Frame, ...] = ()
    call_frames: tuple[Frame, ...] = ()

    # --- convenience for rules --------------------------------------------------------------
    @property
    def out_shape(self) -> Shape | None:
        return self.out_shapes[0] if self.out_shapes else None

    @property
    def in_shape(self) -> Shape | None:
        return self.in_shapes[0] if self.in_shapes else None

    @property
    def inplace(self) -> bool:
        return bool(self.writes)

    def is_a(self, *types: type) -> bool:
        return self.module is not None and isinstance(self.module, types)

    @property
    def built_frame(self) -> Frame | None:
        return sources.pick(self.built_frames)

    @property
    def call_frame(self) -> Frame | None:
        return sources.pick(self.call_frames)

    @property
    def built_at(self) -> Location | None:
        frame = self.built_frame
        return frame.location() if frame else None

    @property
    def called_at(self) -> Location | None:
        frame = self.call_frame
        return frame.location() if frame else None

    def frame(self, prefer: str = "built") -> Frame | None:
        """The line to point at: the preferred one if it is in the user's code, else the other
        if that is, else whichever exists."""
        order = [self.built_frame, self.call_frame]
        if prefer == "call":
            order.reverse()
        for frame in order:
            if frame is not None and frame.is_user_code:
                return frame
        return next((f for f in order if f is not None), None)

    def __repr__(self) -> str:
        return f"<Layer {self.qualname or self.name} {self.op} {self.out_shape}>"


class ArchGraph:
    """The annotated graph of one traced model."""

    def __init__(self, model: nn.Module, tracer: str, input_shapes: Sequence[Shape],
                 notes: Sequence[str] = ()):
        self.g = nx.DiGraph()
        self.model = model
        self.tracer = tracer
        self.input_shapes = [tuple(s) for s in input_shapes]
        self.notes = list(notes)
        # Where each module (by qualified name) was built, also for modules forward never calls.
        self.construction: dict[str, tuple[Frame, ...]] = {}
        self._order: list[Layer] = []
        self._module_names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}

    # --- building ----------------------------------------------------------------------------
    def add(self, layer: Layer) -> None:
        self.g.add_node(layer.name, layer=layer)
        for source in layer.inputs:
            if source in self.g:
                self.g.add_edge(source, layer.name)
        self._order.append(layer)

    # --- reading -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Layer]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def layer(self, name: str) -> Layer:
        return self.g.nodes[name]["layer"]

    def predecessors(self, layer: Layer) -> list[Layer]:
        return [self.layer(n) for n in layer.inputs if n in self.g]

    def successors(self, layer: Layer) -> list[Layer]:
        return sorted((self.layer(n) for n in self.g.successors(layer.name)), key=lambda l: l.index)

    def modules(self, *types: type) -> list[Layer]:
        return [l for l in self._order if l.kind == "module" and isinstance(l.module, types)]

    def functions(self, *names: str) -> list[Layer]:
        return [l for l in self._order if l.kind in ("function", "method") and l.op in names]

    @property
    def inputs(self) -> list[Layer]:
        return [l for l in self._order if l.kind == "input"]

    @property
    def outputs(self) -> list[Layer]:
        return [l for l in self._order if l.kind == "output"]

    @property
    def layers(self) -> list[Layer]:
        """Module calls only: what a person calls the model's layers."""
        return [l for l in self._order if l.kind == "module"]

    @property
    def params(self) -> int:
        """Unique parameters: a weight shared by two layers counts once."""
        return sum(p.numel() for p in self.model.parameters())

    @property
    def macs(self) -> int:
        return sum(l.macs for l in self._order)

    def name_of(self, module: nn.Module) -> str:
        return self._module_names.get(id(module), "")

    def walk(self, start: Layer, step: Callable[[Layer], list[Layer]],
             through: Callable[[Layer], bool]) -> Iterator[Layer]:
        """Layers reached from `start` by `step` (successors or predecessors), passing through
        the ones `through` accepts and yielding the first one on each path it does not."""
        seen = {start.name}
        frontier = list(step(start))
        while frontier:
            layer = frontier.pop(0)
            if layer.name in seen:
                continue
            seen.add(layer.name)
            if through(layer):
                frontier.extend(step(layer))
            else:
                yield layer

    def next_layers(self, start: Layer, through: Callable[[Layer], bool]) -> list[Layer]:
        return list(self.walk(start, self.successors, through))

    def previous_layers(self, start: Layer, through: Callable[[Layer], bool]) -> list[Layer]:
        return list(self.walk(start, self.predecessors, through))

    def is_used_later(self, tensor_of: Layer, after: Layer, exclude: Iterable[str] = ()) -> list[Layer]:
        excluded = set(exclude)
        return [l for l in self.successors(tensor_of) if l.index > after.index and l.name not in excluded]

    def summary(self) -> dict[str, Any]:
        return {"params": self.params, "macs": self.macs, "layers": len(self.layers)}


# --- construction -----------------------------------------------------------------------------

_PASS_THROUGH_SHAPES = True


def _spatial(shape: Shape | None, ndim: int) -> Shape | None:
    if shape is None or len(shape) != ndim + 2:
        return None
    return tuple(shape[2:])


def _function_window(layer: Layer, ndim: int):
    """(kernel, stride, padding, dilation) of F.conv*/F.*pool* calls, from their arguments."""
    def arg(i, key, default):
        if key in layer.kwargs:
            return layer.kwargs[key]
        return layer.args[i] if len(layer.args) > i else default

    def tup(v):
        values = tuple(v) if isinstance(v, (tuple, list)) else (v,) * ndim
        # An argument computed in forward is recorded as its producer's name: unknown here.
        if not all(isinstance(x, int) for x in values):
            raise _UnknownWindow
        return values

    try:
        return _window_from_args(layer, arg, tup)
    except _UnknownWindow:
        return None


class _UnknownWindow(Exception):
    pass


def _window_from_args(layer: Layer, arg, tup):
    if layer.op in ("conv1d", "conv2d", "conv3d", "convolution") and len(layer.in_shapes) >= 2:
        kernel = tuple(layer.in_shapes[1][2:])
        padding = arg(4, "padding", 0)
        if isinstance(padding, str):
            padding = 0
        return kernel, tup(arg(3, "stride", 1)), tup(padding), tup(arg(5, "dilation", 1))
    if layer.op in ("max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d"):
        kernel = arg(1, "kernel_size", None)
        if kernel is None:
            return None
        stride = arg(2, "stride", None) or kernel
        dilation = arg(4, "dilation", 1) if layer.op.startswith("max") else 1
        return tup(kernel), tup(stride), tup(arg(3, "padding", 0)), tup(dilation)
    return None


# Operations that move, select or pad values without combining them: each value keeps the
# field it had. (Treating them as global lost the field of every ConvNeXt block at its first
# permute, and made a flatten look like a fully connected layer.)
_MOVES_VALUES = {"view", "reshape", "_unsafe_view", "flatten", "unflatten", "permute", "transpose",
                 "t", "movedim", "contiguous", "squeeze", "unsqueeze", "getitem", "clone", "alias",
                 "detach", "expand", "expand_as", "chunk", "split", "unbind", "narrow", "slice",
                 "select", "to", "float", "half", "type", "pad", "constant_pad_nd", "roll"}
_MOVES_VALUES_MODULES = (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.padding._ConstantPadNd,
                         nn.modules.padding._ReflectionPadNd, nn.modules.padding._ReplicationPadNd)


def _moves_values(layer: Layer) -> bool:
    if layer.module is not None:
        return isinstance(layer.module, _MOVES_VALUES_MODULES)
    return layer.op in _MOVES_VALUES


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
        if layer.kind == "input":
            if _spatial(layer.out_shape, ndim) is not None:
                layer.rf = ReceptiveField.identity(ndim)
            continue
        incoming = [p for p in graph.predecessors(layer) if p.rf is not None]
        if not incoming:
            continue
        out = _spatial(layer.out_shape, ndim)
        first = incoming[0]
        window = window_of(layer.module, ndim) if layer.module is not None else _function_window(layer, ndim)
        if window is not None and out is not None:
            if isinstance(layer.module, nn.modules.conv._ConvTransposeNd):
                layer.rf = first.rf.transposed(*window)
            else:
                layer.rf = first.rf.through_window(*window)
            continue
        widest = ReceptiveField.widest([p.rf for p in incoming])
        if _moves_values(layer) or _per_position(layer):
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
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters())


def build_graph(trace: Trace, input_shapes: Sequence[Shape],
                construction: dict[str, tuple[Frame, ...]] | None = None) -> ArchGraph:
    """Turn a trace into the annotated graph. `construction` maps qualified module names of
    the original model to where each module was built."""
    construction = construction or {}
    graph = ArchGraph(trace.model, trace.tracer, input_shapes, trace.notes)
    graph.construction = dict(construction)
    for index, op in enumerate(trace.ops):
        if op.kind == "module":
            qualname = op.target
            kind_name = type(op.module).__name__
        elif op.kind == "attr":
            qualname, kind_name = op.target, "attr"
        else:
            qualname, kind_name = op.scope, op.target
        params = _param_count(op.module)
        if op.kind == "attr":
            try:
                params = trace.model.get_parameter(op.target).numel()
            except AttributeError:
                params = 0
        built = construction.get(qualname, ()) if op.kind == "module" else ()
        layer = Layer(
            name=op.name, index=index, kind=op.kind, op=kind_name, qualname=qualname,
            module=op.module, inputs=list(op.inputs), args=op.args, kwargs=op.kwargs,
            in_shapes=[m.shape for m in op.in_metas], out_shapes=[m.shape for m in op.out_metas],
            dtype=op.out_metas[0].dtype if op.out_metas else None,
            params=params, macs=op.macs, writes=list(op.writes), alias_of=op.alias_of,
            built_frames=built, call_frames=op.call_frames,
        )
        graph.add(layer)
    _propagate_rf(graph)
    return graph
