"""The architecture graph: one networkx DiGraph of layers, whatever tracer produced it.

A node is one operation of the forward pass: a torch.nn layer call, a function (`add`, `cat`,
`flatten`) or a tensor method. Each carries a `Layer`. Edges run from producer to consumer.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

import networkx as nx
from torch import nn

from .layer import Layer, Shape
from .ops import CALLS, Kind



class ArchGraph:
    """The annotated graph of one traced model."""

    def __init__(self, model: nn.Module, tracer: str, input_shapes: Sequence[Shape],
                 notes: Sequence[str] = ()):
        self.model = model
        self.tracer = tracer
        self.input_shapes = [tuple(s) for s in input_shapes]
        self.notes = list(notes)
        # How much of the model this graph (with the other parts' graphs) reached; set by the
        # pipeline once every graph of the model is built (graph/coverage.py).
        self.coverage = None
        # Where each module (by qualified name) was built, also for modules forward never calls.
        self.construction: dict[str, tuple[Frame, ...]] = {}
        # The traced forward run again at other input shapes (trace.records.Trace.rerun), for
        # analyses that compare two shapes (graph/batch.py); None where that is not possible.
        self.rerun = None
        self.rerun_fast = None  # a cheaper first look, where `rerun` traces again
        self.clear()
        self._params: int | None = None
        self._modules = dict(model.named_modules(remove_duplicate=False))
        self._module_names = {id(m): n for n, m in self._modules.items()}

    # --- building ----------------------------------------------------------------------------
    def clear(self) -> None:
        self.g = nx.DiGraph()
        self._order: list[Layer] = []
        self._by_name: dict[str, Layer] = {}
        # Every rule asks for a layer's neighbours, most of them for every layer: kept as
        # lists when the layer is added (in execution order, so successors come sorted).
        self._predecessors: dict[str, list[Layer]] = {}
        self._successors: dict[str, list[Layer]] = {}

    def add(self, layer: Layer) -> None:
        self.g.add_node(layer.name, layer=layer)
        before = []
        for source in layer.inputs:
            if source in self.g:
                before.append(self.layer(source))
                if not self.g.has_edge(source, layer.name):
                    self.g.add_edge(source, layer.name)
                    self._successors[source].append(layer)
        self._predecessors[layer.name] = before
        self._successors[layer.name] = []
        self._by_name[layer.name] = layer
        self._order.append(layer)

    # --- reading -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Layer]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def layer(self, name: str) -> Layer:
        return self._by_name[name]

    def predecessors(self, layer: Layer) -> list[Layer]:
        return list(self._predecessors[layer.name])

    def successors(self, layer: Layer) -> list[Layer]:
        return list(self._successors[layer.name])

    def modules(self, *types: type) -> list[Layer]:
        return [l for l in self._order if l.kind == Kind.MODULE and isinstance(l.module, types)]

    def functions(self, *names: str) -> list[Layer]:
        return [l for l in self._order if l.kind in CALLS and l.op in names]

    @property
    def inputs(self) -> list[Layer]:
        return [l for l in self._order if l.kind == Kind.INPUT]

    @property
    def outputs(self) -> list[Layer]:
        return [l for l in self._order if l.kind == Kind.OUTPUT]

    @property
    def layers(self) -> list[Layer]:
        """Module calls only: what a person calls the model's layers."""
        return [l for l in self._order if l.kind == Kind.MODULE]

    @property
    def params(self) -> int:
        """Unique parameters: a weight shared by two layers counts once."""
        if self._params is None:  # asked by several rules and the report; a walk of the model
            self._params = sum(p.numel() for p in self.model.parameters())
        return self._params

    @property
    def macs(self) -> int:
        return sum(l.macs for l in self._order)

    def parameter(self, qualname: str) -> nn.Parameter | None:
        """The model's parameter of that name (`blocks.0.bn.weight`), None if there is none:
        read from its module's table (get_parameter walks the path, once per call)."""
        owner = self._modules.get(qualname.rpartition(".")[0])
        return None if owner is None else owner._parameters.get(qualname.rpartition(".")[2])

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

