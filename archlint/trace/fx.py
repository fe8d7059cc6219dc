"""Rung 1: torch.fx symbolic tracing with torch.nn layers as leaves (milliseconds)."""
from __future__ import annotations

import inspect
import sys
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Sequence

import torch
import torch.fx as fx
from torch import nn

from .. import sources
from ..errors import first_line
from ..graph.ops import Kind, op_name
from ..graph.weights import module_table
from ..sources import Frame
from . import leaves
from .interpreter import NodeFailed, arg_repr, augmented_writes, propagate, propagate_shapes
from .meta import ModuleState
from .outputs import flat_outputs
from .records import Op, Rerun, Trace


_KINDS = {"placeholder": Kind.INPUT, "call_module": Kind.MODULE, "call_function": Kind.FUNCTION,
          "call_method": Kind.METHOD, "get_attr": Kind.ATTR, "output": Kind.OUTPUT}


class LeafTracer(fx.Tracer):
    """fx's default: torch.nn layers are leaves, everything else is traced through. Each node
    remembers the call stack that made it (file and line only: fx's own stack traces format
    every frame's source text, a third of the trace time of a deep net). Libraries' own fx
    registries (timm's) add leaves and functions not to trace into."""

    def __init__(self):
        super().__init__(autowrap_functions=leaves.autowrap_functions())
        self._extra_leaves = leaves.leaf_types()
        self._norm_acts = leaves.norm_act_types()
        # fx copies the module stack into every node and the scope into every module call
        # with copy.copy, which finds no __copy__ on either and goes through __reduce_ex__:
        # a tenth of a deep net's trace. The same contents, copied directly.
        self.module_stack = _ModuleStack()
        self.scope = _Scope(self.scope.module_path, self.scope.module_type)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (super().is_leaf_module(m, module_qualified_name)
                or leaves.is_extra_leaf(m, self._extra_leaves)
                or (self._norm_acts and leaves.is_norm_act(m, self._norm_acts)))

    def call_module(self, m, forward, args, kwargs):
        out = super().call_module(m, forward, args, kwargs)
        if self._norm_acts and leaves.is_norm_act(m, self._norm_acts):
            # The fused norm was recorded as its norm: then its parts, but for those that are
            # an Identity (drop unless drop_layer was given, act with apply_act=False), which
            # do nothing worth a layer.
            for part in (m.drop, m.act):
                if type(part) is not nn.Identity:
                    out = part(out)
        return out

    def trace(self, root, concrete_args=None):
        self._stacks = sources.CallStacks(stop=sys._getframe())
        self._tensor_names: dict[bool, dict[int, tuple[str, torch.Tensor]]] = {}
        try:
            return super().trace(root, concrete_args)
        finally:
            # Held frames hold their callers' locals, the trace among them, and so a cycle:
            # the trace's every record waited for the cyclic collector (a fifteenth of a
            # 1000-block net's lint) rather than being freed with the report.
            self._stacks = None

    # fx finds the name of every weight a forward touches by walking all of the root's
    # parameters or buffers (once per use: quadratic, half of timm's EfficientNet trace, whose
    # norm layers pass their buffers to F.batch_norm). One table per trace instead; a tensor not
    # in it (reassigned while traced) gets fx's own search.
    def _name_of(self, tensor: torch.Tensor) -> str | None:
        is_param = isinstance(tensor, nn.Parameter)
        table = self._tensor_names.get(is_param)
        if table is None:
            named = self.root.named_parameters() if is_param else self.root.named_buffers()
            table = self._tensor_names[is_param] = {}
            for name, t in named:
                table.setdefault(id(t), (name, t))
        entry = table.get(id(tensor))
        return entry[0] if entry is not None and entry[1] is tensor else None

    def create_arg(self, a):
        if isinstance(a, torch.Tensor):
            if hasattr(self, "root"):
                name = self._name_of(a)
                if name is not None:
                    return self.create_node("get_attr", name, (), {})
            return super().create_arg(a)
        # fx's own table of the common argument types (a Proxy, a number, a tuple), which
        # its Tracer consults only after checks meant for tensors and modules: most of the
        # arguments of most nodes. (A plain torch.Tensor is in that table too, as itself:
        # handled above, where fx would make it a constant.)
        handler = _ARG_TYPES.get(type(a))
        if handler is not None:
            return handler(self, a)
        return super().create_arg(a)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if isinstance(attr_val, nn.Parameter) or (
                self.proxy_buffer_attributes and isinstance(attr_val, torch.Tensor)):
            name = self._name_of(attr_val)
            if name is not None:
                if name not in parameter_proxy_cache:
                    factory = None if not self.param_shapes_constant else (
                        lambda node: fx.proxy.ParameterProxy(self, node, name, attr_val))
                    parameter_proxy_cache[name] = self.create_proxy(
                        "get_attr", name, (), {}, proxy_factory_fn=factory)
                return parameter_proxy_cache[name]
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    # A retrace at another shape (shapes_only) reports no locations: no call stacks, a quarter
    # of a Hugging Face model's trace, whose stacks are deep.
    record_frames = True

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        # The arguments are set after the node is made: fx's Graph.create_node walks them with
        # pytree to warn of raw SymInts (a fifth of a deep net's trace), which a trace on
        # concrete shapes never makes. Setting them does the same bookkeeping of users.
        node = super().create_node(kind, target, (), {}, name, type_expr)
        if args:
            node.args = args
        if kwargs:
            node.kwargs = kwargs
        if self.record_frames:
            node.meta["archlint_frames"] = self._stacks.here()
        return node


_ARG_TYPES = getattr(fx.proxy, "_create_arg_bypass", {})


class _ModuleStack(OrderedDict):
    def __copy__(self):
        return _ModuleStack(self)


class _Scope(fx.proxy.Scope):
    def __copy__(self):
        return _Scope(self.module_path, self.module_type)


def call_frames(node: fx.Node) -> tuple[Frame, ...]:
    if "archlint_frames" in node.meta:
        return node.meta["archlint_frames"]
    return sources.frames_from_stack_trace(node.meta.get("stack_trace"))


def scope(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path if isinstance(path, str) else ""


def defaults_beyond(model: nn.Module, n_inputs: int) -> dict[str, Any]:
    """forward's parameters past the given inputs, at their defaults: `mask=None` is None. Traced
    as constants, so `if mask is not None:` takes the branch the call without a mask takes
    (timm's Hiera), where a placeholder would take the other and fail when run."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    extra = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][n_inputs:]
    return {p.name: p.default for p in extra if p.default is not inspect.Parameter.empty}


_POSITIONAL_FORWARD = "_archlint_positional_forward"


def _takes_var_args(model: nn.Module) -> bool:
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


@contextmanager
def positional_forward(model: nn.Module, n_inputs: int):
    """A root forward taking exactly the given inputs, for a forward with `*args` or `**kwargs`
    (every Hugging Face model): fx rewrites such a forward's code object to trace it, which
    fails on Python 3.11 ("co_varnames is too small"), and the model went to torch.export,
    ten times slower. The wrapper lives on the model's class only while it is traced; forward's
    other parameters take their defaults, as they do when the model is called with the
    inputs alone. Yields the wrapper's name and what the output unpacked (outputs.Unpacked),
    or None, None where forward needs no wrapper."""
    if not _takes_var_args(model):
        yield None, None
        return
    names = [f"input_{i}" for i in range(n_inputs)]
    namespace: dict[str, Any] = {}
    exec(f"def {_POSITIONAL_FORWARD}(self, {', '.join(names)}):\n"
         f"    return self.forward({', '.join(names)})\n", namespace)
    cls = type(model)
    try:
        setattr(cls, _POSITIONAL_FORWARD, namespace[_POSITIONAL_FORWARD])
    except (TypeError, AttributeError):  # a class that takes no new attributes: fx as it is
        yield None, None
        return
    try:
        # A key/value cache in the output (use_cache=True) is no value fx can record: the
        # output is then the tensors it holds, as on the export rung (outputs.py).
        with flat_outputs(model, (torch.Tensor, fx.Proxy), "torch.fx") as unpacked:
            yield _POSITIONAL_FORWARD, unpacked
    finally:
        delattr(cls, _POSITIONAL_FORWARD)


def trace_fx(model: nn.Module, inputs: Sequence[torch.Tensor], tracer: LeafTracer | None = None,
             concrete_args: dict | None = None, shapes_only: bool = False,
             state: ModuleState | None = None) -> Trace:
    """`shapes_only`: a retrace for another input shape, which needs no MACs or storage.
    `state`: the model's attributes as the caller saved them before anything ran forward
    (a snapshot of every module costs a few ms per thousand)."""
    tracer = tracer or LeafTracer()
    tracer.record_frames = not shapes_only
    # Symbolic tracing runs tensor factories with constant sizes for real (`torch.zeros(10**11)`,
    # `torch.ones(4)`): made on meta they cost nothing and meet the meta inputs.
    state = state or ModuleState(model)
    constants = {}
    try:
        with torch.device("meta"), positional_forward(model, len(inputs)) as (wrapper, unpacked):
            if wrapper is not None:
                tracer.traced_func_name = wrapper
            elif concrete_args is None:
                concrete_args = defaults_beyond(model, len(inputs)) or None
            graph = tracer.trace(model, concrete_args)
        # Tensors forward made (`x + torch.ones(4)`) are kept on the root as fx's constants,
        # which the restore below would drop with the attributes forward assigned.
        constants = {n.target: getattr(tracer.root, n.target) for n in graph.nodes
                     if n.op == "get_attr" and n.target.startswith("_tensor_constant")}
    finally:
        state.restore()  # the attributes forward assigned while traced are dropped
    for name, value in constants.items():
        setattr(tracer.root, name, value)
    # No GraphModule: the interpreter runs the graph over the root, and a GraphModule's
    # generated code (a sixth of a deep net's trace) would never run.
    root = tracer.root
    modules = state.modules  # for the runs, the ops and the graph (tracing adds no modules)
    if shapes_only:
        records, failure = propagate_shapes(root, inputs, graph, modules)
        if failure is not None:
            raise failure
        return Trace(ops_of(root, graph, records, modules), "torch.fx", model, modules=modules)
    ops = ops_of(root, graph, propagate(root, inputs, graph, modules), modules)
    augmented_writes(ops)
    result = Trace(ops, "torch.fx", model, modules=modules)
    if unpacked is not None and unpacked.types:
        result.notes.append(unpacked.note())
    result.rerun = lambda transform: rerun_graph(root, graph, inputs, transform, modules)
    return result


def ops_of(root: nn.Module, graph: fx.Graph, records: dict,
           modules: dict[str, nn.Module] | None = None) -> list[Op]:
    """One Op per node of `graph` (traced over `root`), with what the interpreter recorded.
    `modules`: root's named modules, duplicates kept, if the caller has them."""
    ops = []
    modules = module_table(root, modules)
    for n in graph.nodes:
        rec = records.get(n.name, {})
        kind = _KINDS[n.op]
        module = None
        if n.op == "call_module":  # an empty container is falsy: compared with None, not `or`
            module = modules.get(n.target)
            if module is None:
                module = root.get_submodule(n.target)
        op = Op(
            name=n.name, kind=kind,
            target=n.target if n.op in ("call_module", "get_attr", "placeholder") else op_name(n.target),
            module=module,
            inputs=[a.name for a in n.all_input_nodes],
            args=arg_repr(n.args), kwargs=arg_repr(dict(n.kwargs)),
            in_metas=rec.get("in", []), out_metas=rec.get("out", []),
            macs=rec.get("macs", 0), writes=list(rec.get("writes", [])), alias_of=rec.get("alias"),
            scope=n.target if n.op == "call_module" else scope(n),
            call_frames=call_frames(n), value=rec.get("value"),
        )
        ops.append(op)
    return ops


def rerun_graph(root: nn.Module, graph: fx.Graph, inputs: Sequence[Any], transform,
                modules: dict[str, nn.Module] | None = None) -> Rerun:
    """The traced graph run again on `inputs` mapped through `transform`. A plain fx graph
    reads sizes at run time (`x.size(0)` is a node), so the same graph serves any shape."""
    records, failure = propagate_shapes(root, torch.utils._pytree.tree_map(
        lambda v: transform(v) if isinstance(v, torch.Tensor) else v, tuple(inputs)), graph, modules)
    ops = [op for op in ops_of(root, graph, records, modules) if op.name in records]
    if failure is None:
        return Rerun(ops)
    return Rerun(ops, failure.node.name, first_line(failure.error, 300))


def retrace(tracer, model: nn.Module, inputs: Sequence[Any], transform) -> Rerun:
    """`tracer` (a rung whose graph holds the traced sizes) run again on `inputs` mapped
    through `transform`."""
    state = ModuleState(model)
    new = torch.utils._pytree.tree_map(lambda v: transform(v) if isinstance(v, torch.Tensor) else v,
                                       tuple(inputs))
    try:
        return Rerun(tracer(model, new, shapes_only=True).ops)
    except NodeFailed as exc:
        return Rerun([], exc.node.name, first_line(exc.error, 300))
    except Exception as exc:  # the rung cannot follow the forward at this shape
        return Rerun([], "", first_line(exc, 300))
    finally:
        state.restore()
