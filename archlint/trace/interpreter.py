"""The interpreter: run a graph on meta tensors and record what rules need per node.

Every node gets its output shapes, the MACs FlopCounterMode counts for ops without a closed
form, whether it wrote one of its inputs in place, and which earlier node's storage its output
shares. Nothing is allocated or computed for real.
"""
from __future__ import annotations

import re
import warnings
from typing import Any, Sequence

import torch
import torch.fx as fx
from torch import nn

from ..graph import macs
from ..graph.ops import Kind, op_name
from ..graph.weights import module_table, registered
from . import shapes
from .records import Op, TensorMeta

_AUGMENTED = {"+": "add", "-": "sub", "*": "mul", "/": "truediv", "@": "matmul",
              "//": "floordiv", "%": "mod", "&": "and_", "|": "or_", "^": "xor"}
_AUGMENTED_RE = re.compile(r"^\s*[\w.\[\]\s,]+?\s*(\+|-|\*|/|@|//|%|&|\||\^)=(?!=)")



def _tensors(value: Any) -> list[torch.Tensor]:
    # Almost every value is one tensor or None: pytree's walk, needed for the rest (dicts,
    # namedtuples, ModelOutputs), cost a third of a deep net's interpretation.
    if isinstance(value, torch.Tensor):
        return [value]
    if value is None or isinstance(value, (int, float, bool, str, torch.Size)):
        return []
    found: list[torch.Tensor] = []
    torch.utils._pytree.tree_map(lambda v: found.append(v) if isinstance(v, torch.Tensor) else None, value)
    return found


def _mutable(value: Any) -> Any:
    """fx's immutable containers as plain ones; other types (namedtuples, torch.Size) kept."""
    kind = type(value)
    if kind in (list, fx.immutable_collections.immutable_list):
        return [_mutable(v) for v in value]
    if kind is tuple:
        return tuple(_mutable(v) for v in value)
    if kind in (dict, fx.immutable_collections.immutable_dict):
        return {k: _mutable(v) for k, v in value.items()}
    return value


_META = torch.device("meta")


def _to_meta_device(value: Any) -> Any:
    return _META if isinstance(value, torch.device) and value.type != "meta" else value


def _devices_to_meta(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    if any(isinstance(v, (torch.device, list, tuple, dict)) for v in (*args, *kwargs.values())):
        return torch.utils._pytree.tree_map(_to_meta_device, (args, kwargs))
    return args, kwargs


def _size_value(value: Any) -> Any:
    """A size or a shape an op returned (an int, a torch.Size, a short tuple of ints), else None."""
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return value
    if isinstance(value, (tuple, list)) and len(value) <= 16 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    return None


class NodeFailed(Exception):
    def __init__(self, node: fx.Node, inputs: list[TensorMeta], error: Exception,
                 seen: list[tuple[int, ...]] | None = None):
        super().__init__(str(error))
        self.node, self.inputs, self.error = node, inputs, error
        self.seen = seen or []  # shapes of the activations computed before the failure


class Propagator(fx.Interpreter):
    """Runs a graph on meta tensors and records, per node, what rules need to know."""

    def __init__(self, module: nn.Module, graph: fx.Graph | None = None, shapes_only: bool = False,
                 modules: dict[str, nn.Module] | None = None):
        super().__init__(module, garbage_collect_values=False, graph=graph)
        self.shapes_only = shapes_only  # a rerun at other shapes: no MACs, no storage tracking
        self.records: dict[str, dict[str, Any]] = {}
        self._owner: dict[int, str] = {}  # id(storage root tensor) -> first node that made it
        self._flop_counter = None
        self._closed_macs: int | None = None  # MACs of the running node's closed-form product
        # fx looks each layer up through one getattr per dotted part, twice per call: a tenth of
        # a deep net's interpretation. (`modules`: the caller's table of them, if it has one.)
        self._attrs: dict[str, Any] = module_table(module, modules)

    @property
    def _counter(self):
        # Made on first use: importing torch.utils.flop_counter imports triton where it is
        # installed (0.3 s), and a plain CNN has a closed form for every op.
        if self._flop_counter is None:
            from torch.utils.flop_counter import FlopCounterMode

            self._flop_counter = FlopCounterMode(display=False)
        return self._flop_counter

    def _flops(self) -> int:
        return sum(self._counter.flop_counts["Global"].values())

    def fetch_attr(self, target: str):
        found = self._attrs.get(target)
        if found is not None:
            return found
        # A weight or buffer (`blocks.0.bn.running_mean`) read from its module's tables now,
        # not from a table made before the run: a layer's forward may reassign its buffer.
        found = registered(self._attrs, target)
        return found if found is not None else super().fetch_attr(target)

    def _run_base(self, n: fx.Node):
        # fx's run_node without its current-node context (kept for fx's own error messages,
        # which NodeFailed replaces): per node, two context managers less. A flat tuple of
        # arguments (most nodes') is looked up directly, without map_arg's recursive walk.
        args = n.args
        if type(args) is tuple and all(type(a) is fx.Node or type(a) in _FLAT_ARGS for a in args):
            env = self.env
            args = tuple(env[a] if type(a) is fx.Node else a for a in args)
            kwargs = self.map_nodes_to_values(n.kwargs, n) if n.kwargs else {}
        else:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
        return getattr(self, n.op)(n.target, args, kwargs)

    def propagate(self, *args):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.run(*args)

    def _mac_key(self, n: fx.Node) -> tuple[str, Any]:
        if n.op == "call_module":
            return Kind.MODULE, self.fetch_attr(n.target)
        if n.op in ("call_function", "call_method"):
            return Kind.FUNCTION, op_name(n.target)
        return n.op, None

    def call_module(self, target, args, kwargs):
        module = self.fetch_attr(target)
        out = shapes.norm_output("call_module", module, args, kwargs)
        if out is not None:
            return out
        out = shapes.module_output(module, args, kwargs)
        if out is None and self.shapes_only:
            out = shapes.attention_output(module, args, kwargs)
        return out if out is not None else super().call_module(target, args, kwargs)

    def call_method(self, target, args, kwargs):
        if self.on_meta:  # `pos_emb.to(x.device)`: the meta-fx rung's proxies report the CPU
            args, kwargs = _devices_to_meta(args, kwargs)
        out = shapes.method_output(target, args, kwargs)
        if out is not None:
            self._closed_macs = macs.of_products(target, args, kwargs, out)
            return out
        return super().call_method(target, args, kwargs)

    def get_attr(self, target, args, kwargs):
        # A parameter passed straight into a layer (timm's attention-pool `self.q(self.latent)`)
        # trips FlopCounterMode's module tracker, which hooks the autograd graph of inputs that
        # require grad and finds none under no_grad. Shapes are all that is needed here.
        value = super().get_attr(target, args, kwargs)
        if isinstance(value, torch.Tensor) and self.on_meta and not value.is_meta:
            value = value.to(_META)  # a constant made for real while traced (meta-fx's CPU tensors)
        return value.detach() if isinstance(value, torch.Tensor) and value.requires_grad else value

    # Tensors forward creates (`x + torch.ones(4)`, `torch.zeros(10**12)`) are made on the meta
    # device beside the meta inputs: no memory, and no device mismatch. (A default-device mode
    # around the whole run would do the same, but changes how torch dispatches LSTMs on meta.)
    _FACTORIES = frozenset({torch.zeros, torch.ones, torch.empty, torch.full, torch.arange,
                            torch.rand, torch.randn, torch.randint, torch.eye, torch.linspace,
                            torch.tensor, torch.zeros_like, torch.ones_like, torch.empty_like,
                            torch.full_like, torch.rand_like, torch.randn_like})
    on_meta = False

    def call_function(self, target, args, kwargs):
        if self.on_meta:
            if target in self._FACTORIES and kwargs.get("device") is None:
                kwargs = {**kwargs, "device": _META}
            # An exported graph names the device its factories and copies ran on at export
            # time (cpu), as keyword or positional arguments.
            args, kwargs = _devices_to_meta(args, kwargs)
        out = shapes.norm_output("call_function", target, args, kwargs)
        if out is not None:
            return out
        out = shapes.function_output(target, args, kwargs)
        if out is not None:
            self._closed_macs = macs.of_products(op_name(target), args, kwargs, out)
            return out
        # fx hands lists over as immutable_list; a wrapped user function that edits its list
        # argument in place (torchvision's swin3d `_get_window_and_shift_size`) runs eagerly fine.
        return super().call_function(target, _mutable(args), _mutable(kwargs))

    def _activations(self) -> list[tuple[int, ...]]:
        computed = {m.name for m in self.graph.nodes
                    if m.op in ("call_module", "call_function", "call_method")}
        return [meta.shape for name, rec in self.records.items() if name in computed for meta in rec["out"]]

    def _run_for_shapes(self, n: fx.Node, inputs: list[torch.Tensor]):
        try:
            result = self._run_base(n)
        except Exception as exc:
            raise NodeFailed(n, [TensorMeta.of(t) for t in inputs], exc) from exc
        self.records[n.name] = {"out": [TensorMeta.of(t) for t in _tensors(result)],
                                "in": [TensorMeta.of(t) for t in inputs], "macs": 0,
                                "writes": [], "alias": None, "value": _size_value(result)}
        return result

    def run_node(self, n: fx.Node):
        inputs = [v for a in n.all_input_nodes for v in _tensors(self.env.get(a))]
        if self.shapes_only:
            return self._run_for_shapes(n, inputs)
        versions = [(t, t._version) for t in inputs]
        kind, target = self._mac_key(n)
        counted = macs.needs_counter(kind, target)
        self._closed_macs = None
        try:
            if counted:
                with self._counter:
                    result = self._run_base(n)
            else:
                result = self._run_base(n)
        except Exception as exc:
            raise NodeFailed(n, [TensorMeta.of(t) for t in inputs], exc, self._activations()) from exc
        outputs = _tensors(result)
        # FlopCounterMode starts from zero each time it is entered: its total is this node's. A
        # product given in closed form ran no op for it to count: its MACs come with the shape.
        if self._closed_macs is not None:
            work = self._closed_macs
        elif counted:
            work = self._flops() // 2
        else:
            work = macs.closed_form(kind, target, inputs, outputs)
        alias = None
        for t in outputs:
            root = t._base if t._base is not None else t
            owner = self._owner.setdefault(id(root), n.name)
            if owner != n.name and alias is None:
                alias = owner
        written_ids = {id(t) for t, v in versions if t._version != v}
        writes = [a.name for a in n.all_input_nodes
                  if any(id(v) in written_ids for v in _tensors(self.env.get(a)))] if written_ids else []
        self.records[n.name] = {
            "out": [TensorMeta.of(t) for t in outputs],
            "in": [TensorMeta.of(t) for t in inputs],
            "macs": work,
            "writes": writes,
            "alias": alias,
        }
        return result


def propagate(module: nn.Module, args: Sequence[Any], graph: fx.Graph | None = None,
              modules: dict[str, nn.Module] | None = None) -> dict[str, dict[str, Any]]:
    """Run `graph` (a GraphModule's own, by default) over `module` on `args`: per node, its
    output shapes, MACs, in-place writes and aliasing. `modules`: `module`'s named modules."""
    prop = Propagator(module, graph, modules=modules)
    prop.on_meta = any(isinstance(a, torch.Tensor) and a.is_meta for a in torch.utils._pytree.tree_leaves(args))
    with torch.no_grad():
        prop.propagate(*args)
    return prop.records


def propagate_shapes(module: nn.Module, args: Sequence[Any], graph: fx.Graph | None = None,
                     modules: dict[str, nn.Module] | None = None,
                     ) -> tuple[dict[str, dict[str, Any]], NodeFailed | None]:
    """Output shapes only (no MACs, no storage tracking: a third of the time), and, when a
    node fails at these shapes, the records up to it with the failure."""
    prop = Propagator(module, graph, shapes_only=True, modules=modules)
    prop.on_meta = any(isinstance(a, torch.Tensor) and a.is_meta for a in torch.utils._pytree.tree_leaves(args))
    try:
        with torch.no_grad():
            prop.propagate(*args)
    except NodeFailed as exc:
        return prop.records, exc
    return prop.records, None


def augmented_writes(ops: list[Op]) -> None:
    """fx records `out += x` as `out + x`; the source line tells them apart. Within one run of
    consecutive ops from the same line and module (one execution of the statement: the same
    line runs again in every block that shares the class), the last matching operator wrote
    its first argument in place, and its output is that argument's storage."""
    runs: list[list[Op]] = []
    previous = None
    for op in ops:
        frame = op.call_frames[0] if op.call_frames else None
        key = (op.scope, frame.path, frame.line) if frame is not None else None
        if key is None or key != previous:
            runs.append([])
        previous = key
        runs[-1].append(op)
    by_name = {op.name: op for op in ops}
    moved: dict[str, str] = {}  # storage owner fx saw -> the storage it really is
    operators: dict[tuple[str, int], str | None] = {}  # per line: every block repeats its lines
    for run in runs:
        frame = run[0].call_frames[0] if run[0].call_frames else None
        where = (frame.path, frame.line) if frame is not None else ("", 0)
        if where not in operators:
            found = _AUGMENTED_RE.match(frame.source()) if frame is not None else None
            operators[where] = found.group(1) if found else None
        operator = operators[where]
        if operator is None:
            continue
        matching = [op for op in run if op.kind == Kind.FUNCTION and op.inputs and op.out_metas
                    and _AUGMENTED.get(operator) == op.target
                    and op.args and op.args[0] == op.inputs[0]]
        if not matching:
            continue
        op = matching[-1]
        if op.inputs[0] not in op.writes:
            op.writes.append(op.inputs[0])
        target = by_name.get(op.inputs[0])
        root = (target.alias_of or target.name) if target is not None else op.inputs[0]
        moved[op.name] = root
        op.alias_of = root
    for op in ops:  # later views of `out` were recorded as sharing the add's (new) storage
        if op.alias_of in moved and op.name not in moved:
            op.alias_of = moved[op.alias_of]


def arg_repr(value: Any) -> Any:
    """`value` (a node's args or kwargs) with each node replaced by its name."""
    # Most nodes' args are a flat tuple of nodes and numbers (`conv(x)`, `add(x, y)`): named
    # directly, without map_arg's recursive walk, twice per node.
    if type(value) is tuple and all(type(a) is fx.Node or type(a) in _FLAT_ARGS for a in value):
        return tuple(a.name if type(a) is fx.Node else a for a in value)
    return fx.node.map_arg(value, lambda node: node.name)


_FLAT_ARGS = frozenset({int, float, bool, str, type(None)})

