"""The architecture graph: the layers of one traced model, whatever tracer produced it, and
their edges, also as a networkx DiGraph (`g`) for graph algorithms.

A node is one operation of the forward pass: a torch.nn layer call, a function (`add`, `cat`,
`flatten`) or a tensor method. Each carries a `Layer`. Edges run from producer to consumer.
The rules read layers and their neighbours from lists kept as layers are added; the DiGraph
is made on first use (importing networkx is a fifth of a small model's `archlint check`).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

from torch import nn

from .layer import Layer, Shape
from .ops import CALLS, Kind
from .weights import module_table, registered



class ArchGraph:
    """The annotated graph of one traced model."""

    def __init__(self, model: nn.Module, tracer: str, input_shapes: Sequence[Shape],
                 notes: Sequence[str] = (), modules: dict[str, nn.Module] | None = None):
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
        # `modules`: the model's named modules, duplicates kept, if the trace has them.
        self._modules = module_table(model, modules)
        self._module_names = {id(m): n for n, m in self._modules.items()}

    # --- building ----------------------------------------------------------------------------
    def clear(self) -> None:
        self._g = None
        self._order: list[Layer] = []
        self._by_name: dict[str, Layer] = {}
        # Every rule asks for a layer's neighbours, most of them for every layer: kept as
        # lists when the layer is added (in execution order, so successors come sorted).
        self._predecessors: dict[str, list[Layer]] = {}
        self._successors: dict[str, list[Layer]] = {}
        self._module_calls: list[Layer] = []  # what `modules()` filters for most rules

    def add(self, layer: Layer) -> None:
        before, linked = [], set()
        for source in layer.inputs:
            if source in self._by_name:
                before.append(self._by_name[source])
                if source not in linked:
                    linked.add(source)
                    self._successors[source].append(layer)
        self._g = None
        self._predecessors[layer.name] = before
        self._successors[layer.name] = []
        self._by_name[layer.name] = layer
        self._order.append(layer)
        if layer.kind == Kind.MODULE:
            self._module_calls.append(layer)

    # --- reading -----------------------------------------------------------------------------
    @property
    def g(self):
        """The graph as a networkx DiGraph: a node per layer (its `layer` attribute), an edge
        from each producer to each of its users."""
        if self._g is None:
            import networkx as nx

            g = nx.DiGraph()
            for layer in self._order:
                g.add_node(layer.name, layer=layer)
            g.add_edges_from((name, user.name) for name, users in self._successors.items() for user in users)
            self._g = g
        return self._g

    def has(self, name: str) -> bool:
        """Whether a layer of that name is in the graph."""
        return name in self._by_name

    def has_path(self, source: str, target: str) -> bool:
        """Whether the output of layer `source` reaches layer `target`."""
        import networkx as nx

        return nx.has_path(self.g, source, target)

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
        return [l for l in self._module_calls if isinstance(l.module, types)]

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
        return list(self._module_calls)

    @property
    def params(self) -> int:
        """Unique parameters: a weight shared by two layers counts once."""
        if self._params is None:  # asked by several rules and the report; a walk of the model
            self._params = sum(p.numel() for p in self.parameters())
        return self._params

    def parameters(self) -> list[nn.Parameter]:
        """`model.parameters()` (each once, in its order) read from the graph's module table:
        nn.Module's recursive generators cost a tenth of the rules' time on a 1000-block net.
        Not kept: after the lint the modules hold the user's weights again, not the twins."""
        found: dict[int, nn.Parameter] = {}
        for module in self._modules.values():
            for param in module._parameters.values():
                if param is not None:
                    found.setdefault(id(param), param)
        return list(found.values())

    def named_modules(self) -> Iterator[tuple[str, nn.Module]]:
        """`model.named_modules()` (each module once, by its first name) from the graph's table."""
        seen: set[int] = set()
        for name, module in self._modules.items():
            if id(module) not in seen:
                seen.add(id(module))
                yield name, module

    @property
    def macs(self) -> int:
        return sum(l.macs for l in self._order)

    def parameter(self, qualname: str) -> nn.Parameter | None:
        """The model's parameter of that name (`blocks.0.bn.weight`), None if there is none:
        read from its module's table."""
        return registered(self._modules, qualname, buffers=False)

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

