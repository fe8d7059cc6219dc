"""Trace: turn a model and its example input into a flat list of operations with shapes.

A ladder, cheapest rung first, and the rung used is recorded:

1. ``torch.fx`` symbolic tracing with torch.nn layers as leaves (milliseconds);
2. ``torch.export.export(strict=False)`` when fx cannot follow the code (data-dependent
   control flow, shape checks); aten nodes are mapped back to the torch.nn layer that ran
   them through their ``nn_module_stack``.

Whatever the rung, one interpreter (`_Propagator`) runs the graph on meta tensors: every
node gets its output shapes, MACs (counted per aten op by torch's FlopCounterMode), whether it
wrote one of its inputs in place, and which earlier node's storage its output shares. Nothing
is allocated or computed for real.
"""
from __future__ import annotations

import copy
import math
import io
import logging
import re
import sys
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.fx as fx
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from . import macs, sources
from .errors import ShapeError, TraceError
from .sources import Frame


@dataclass
class TensorMeta:
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, t: torch.Tensor) -> "TensorMeta":
        return cls(tuple(int(d) for d in t.shape), str(t.dtype).replace("torch.", ""))


@dataclass
class Op:
    """One operation of the traced forward pass."""

    name: str  # unique within the trace
    kind: str  # "input" | "module" | "function" | "method" | "attr" | "output"
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


@dataclass
class Trace:
    ops: list[Op]
    tracer: str  # "torch.fx" | "torch.export"
    model: nn.Module  # the meta copy that was traced
    notes: list[str] = field(default_factory=list)


# --- the meta copy --------------------------------------------------------------------------

def meta_copy(model: nn.Module, in_place: bool = False) -> nn.Module:
    """The model with its parameters and buffers on the meta device. Weight sharing is kept
    (two modules that share a Parameter share its meta copy) and no weight memory is allocated.
    By default the original is not touched (the structure is deep-copied around meta tensors);
    `in_place=True`, for models archlint built itself, swaps the tensors without a copy."""
    memo: dict[int, Any] = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) in memo or tensor.device.type == "meta" and in_place:
            continue
        meta = torch.empty_like(tensor, device="meta")
        if isinstance(tensor, nn.Parameter):
            meta = type(tensor)(meta, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = meta
    if not in_place:
        return copy.deepcopy(model, memo)
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for key, tensor in table.items():
                if tensor is not None and id(tensor) in memo:
                    table[key] = memo[id(tensor)]
    return model


# --- the interpreter ------------------------------------------------------------------------

_AUGMENTED = {"+": "add", "-": "sub", "*": "mul", "/": "truediv", "@": "matmul",
              "//": "floordiv", "%": "mod", "&": "and_", "|": "or_", "^": "xor"}
_AUGMENTED_RE = re.compile(r"^\s*[\w.\[\]\s,]+?\s*(\+|-|\*|/|@|//|%|&|\||\^)=(?!=)")


def op_name(target: Any) -> str:
    """A plain name for a call target: operator.add, torch.add and aten.add.Tensor are 'add'."""
    if isinstance(target, str):
        return target
    packet = getattr(target, "overloadpacket", None)
    if packet is not None:
        return packet.__name__
    return getattr(target, "__name__", str(target))


def _tensors(value: Any) -> list[torch.Tensor]:
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


class NodeFailed(Exception):
    def __init__(self, node: fx.Node, inputs: list[TensorMeta], error: Exception,
                 seen: list[tuple[int, ...]] | None = None):
        super().__init__(str(error))
        self.node, self.inputs, self.error = node, inputs, error
        self.seen = seen or []  # shapes of the activations computed before the failure


class _Propagator(fx.Interpreter):
    """Runs a graph on meta tensors and records, per node, what rules need to know."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm, garbage_collect_values=False)
        self.records: dict[str, dict[str, Any]] = {}
        self._owner: dict[int, str] = {}  # id(storage root tensor) -> first node that made it
        self._counter = FlopCounterMode(display=False)

    def _flops(self) -> int:
        return sum(self._counter.flop_counts["Global"].values())

    def propagate(self, *args):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.run(*args)

    def _mac_key(self, n: fx.Node) -> tuple[str, Any]:
        if n.op == "call_module":
            return "module", self.fetch_attr(n.target)
        if n.op in ("call_function", "call_method"):
            return "function", op_name(n.target)
        return n.op, None

    # Normalization keeps its input's shape and does no multiply-accumulate work that MACs count,
    # yet on meta tensors it runs through Python decompositions (~4 ms a call, half of a
    # 1000-block net's trace). Its output shape is known in closed form, so it is not run.
    _SAME_SHAPE_MODULES = macs.NORMALIZATION_LAYERS
    _SAME_SHAPE_FUNCTIONS = {"batch_norm", "group_norm", "layer_norm", "instance_norm"}

    def call_module(self, target, args, kwargs):
        module = self.fetch_attr(target)
        if (isinstance(module, self._SAME_SHAPE_MODULES) and len(args) == 1 and not kwargs
                and isinstance(args[0], torch.Tensor)):
            return torch.empty_like(args[0])
        return super().call_module(target, args, kwargs)

    def get_attr(self, target, args, kwargs):
        # A parameter passed straight into a layer (timm's attention-pool `self.q(self.latent)`)
        # trips FlopCounterMode's module tracker, which hooks the autograd graph of inputs that
        # require grad and finds none under no_grad. Shapes are all that is needed here.
        value = super().get_attr(target, args, kwargs)
        return value.detach() if isinstance(value, torch.Tensor) and value.requires_grad else value

    def call_function(self, target, args, kwargs):
        if op_name(target) in self._SAME_SHAPE_FUNCTIONS and args and isinstance(args[0], torch.Tensor):
            return torch.empty_like(args[0])
        # fx hands lists over as immutable_list; a wrapped user function that edits its list
        # argument in place (torchvision's swin3d `_get_window_and_shift_size`) runs eagerly fine.
        return super().call_function(target, _mutable(args), _mutable(kwargs))

    def _activations(self) -> list[tuple[int, ...]]:
        computed = {m.name for m in self.module.graph.nodes
                    if m.op in ("call_module", "call_function", "call_method")}
        return [meta.shape for name, rec in self.records.items() if name in computed for meta in rec["out"]]

    def run_node(self, n: fx.Node):
        inputs = [v for a in n.all_input_nodes for v in _tensors(self.env.get(a))]
        versions = [(t, t._version) for t in inputs]
        kind, target = self._mac_key(n)
        counted = macs.needs_counter(kind, target)
        try:
            if counted:
                with self._counter:
                    result = super().run_node(n)
            else:
                result = super().run_node(n)
        except Exception as exc:
            raise NodeFailed(n, [TensorMeta.of(t) for t in inputs], exc, self._activations()) from exc
        outputs = _tensors(result)
        # FlopCounterMode starts from zero each time it is entered: its total is this node's.
        work = self._flops() // 2 if counted else macs.closed_form(kind, target, inputs, outputs)
        alias = None
        for t in outputs:
            root = t._base if t._base is not None else t
            owner = self._owner.setdefault(id(root), n.name)
            if owner != n.name and alias is None:
                alias = owner
        written_ids = {id(t) for t, v in versions if t._version != v}
        writes = [a.name for a in n.all_input_nodes
                  if any(id(v) in written_ids for v in _tensors(self.env.get(a)))]
        self.records[n.name] = {
            "out": [TensorMeta.of(t) for t in outputs],
            "in": [TensorMeta.of(t) for t in inputs],
            "macs": work,
            "writes": writes,
            "alias": alias,
        }
        return result


def _propagate(gm: fx.GraphModule, args: Sequence[Any]) -> dict[str, dict[str, Any]]:
    prop = _Propagator(gm)
    with torch.no_grad():
        prop.propagate(*args)
    return prop.records


def _augmented_writes(ops: list[Op]) -> None:
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
    for run in runs:
        source = run[0].call_frames[0].source() if run[0].call_frames else ""
        match = _AUGMENTED_RE.match(source)
        if not match:
            continue
        matching = [op for op in run if op.kind == "function" and op.inputs and op.out_metas
                    and _AUGMENTED.get(match.group(1)) == op.target
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


def _arg_repr(value: Any) -> Any:
    return fx.node.map_arg(value, lambda node: node.name)


# --- rung 1: torch.fx ---------------------------------------------------------------------

class _LeafTracer(fx.Tracer):
    """fx's default: torch.nn layers are leaves, everything else is traced through. Each node
    remembers the call stack that made it (file and line only: fx's own stack traces format
    every frame's source text, a third of the trace time of a deep net)."""

    def trace(self, root, concrete_args=None):
        self._outermost = sys._getframe()
        return super().trace(root, concrete_args)

    def create_node(self, *args, **kwargs):
        node = super().create_node(*args, **kwargs)
        node.meta["archlint_frames"] = sources.current_frames(stop=self._outermost)
        return node


def _call_frames(node: fx.Node) -> tuple[Frame, ...]:
    if "archlint_frames" in node.meta:
        return node.meta["archlint_frames"]
    return sources.frames_from_stack_trace(node.meta.get("stack_trace"))


def _scope(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path if isinstance(path, str) else ""


def trace_fx(model: nn.Module, inputs: Sequence[torch.Tensor]) -> Trace:
    tracer = _LeafTracer()
    graph = tracer.trace(model)
    gm = fx.GraphModule(tracer.root, graph)
    records = _propagate(gm, inputs)
    ops = []
    for n in graph.nodes:
        rec = records.get(n.name, {})
        kind = {"placeholder": "input", "call_module": "module", "call_function": "function",
                "call_method": "method", "get_attr": "attr", "output": "output"}[n.op]
        module = gm.get_submodule(n.target) if n.op == "call_module" else None
        frames = _call_frames(n)
        op = Op(
            name=n.name, kind=kind,
            target=n.target if n.op in ("call_module", "get_attr", "placeholder") else op_name(n.target),
            module=module,
            inputs=[a.name for a in n.all_input_nodes],
            args=_arg_repr(n.args), kwargs=_arg_repr(dict(n.kwargs)),
            in_metas=rec.get("in", []), out_metas=rec.get("out", []),
            macs=rec.get("macs", 0), writes=list(rec.get("writes", [])), alias_of=rec.get("alias"),
            scope=n.target if n.op == "call_module" else _scope(n),
            call_frames=frames,
        )
        ops.append(op)
    _augmented_writes(ops)
    return Trace(ops, "torch.fx", model)


# --- rung 2: torch.export -----------------------------------------------------------------

def _is_layer(module: nn.Module) -> bool:
    """A torch.nn layer, as fx's default leaf test decides."""
    kind = type(module).__module__
    return (kind.startswith("torch.nn") or kind.startswith("torch.ao.nn")) and not isinstance(
        module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    )


def _export_args(ep, model: nn.Module, inputs: Sequence[torch.Tensor]) -> list[Any]:
    from torch.export.graph_signature import InputKind

    # export takes nested inputs (a list or dict of feature maps) flattened, one per leaf.
    user = iter(torch.utils._pytree.tree_leaves(tuple(inputs)))
    args = []
    for spec in ep.graph_signature.input_specs:
        if spec.kind == InputKind.PARAMETER:
            args.append(model.get_parameter(spec.target))
        elif spec.kind == InputKind.BUFFER:
            args.append(ep.state_dict.get(spec.target, None) if spec.target in ep.state_dict
                        else model.get_buffer(spec.target))
        elif spec.kind in (InputKind.CONSTANT_TENSOR, InputKind.CUSTOM_OBJ):
            args.append(ep.constants[spec.target])
        elif spec.kind == InputKind.USER_INPUT:
            args.append(next(user, None))
        else:
            args.append(None)
    return args


@contextmanager
def _quiet_torch_logs():
    """torch.export logs failed meta kernels with full tracebacks; archlint reports the error
    itself, once, as a paragraph."""
    logging.disable(logging.ERROR)
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def trace_export(model: nn.Module, inputs: Sequence[torch.Tensor]) -> Trace:
    from torch.export.graph_signature import InputKind

    with warnings.catch_warnings(), _quiet_torch_logs():
        warnings.simplefilter("ignore")
        ep = torch.export.export(model, tuple(inputs), strict=False)
    gm = ep.graph_module
    records = _propagate(gm, _export_args(ep, model, inputs))
    weights = {spec.arg.name for spec in ep.graph_signature.input_specs
               if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)}
    weight_targets = {spec.arg.name: spec.target for spec in ep.graph_signature.input_specs}

    layer_cache: dict[str, bool] = {}

    def owning_layer(n: fx.Node) -> tuple[str, str] | None:
        """(stack key, qualified name) of the outermost torch.nn layer that issued this node."""
        for key, (path, _type) in (n.meta.get("nn_module_stack") or {}).items():
            if path not in layer_cache:
                try:
                    layer_cache[path] = _is_layer(model.get_submodule(path)) if path else False
                except AttributeError:
                    layer_cache[path] = False
            if layer_cache[path]:
                return key, path
        return None

    ops: list[Op] = []
    name_of: dict[str, str] = {}  # graph node name -> op name
    group: list[fx.Node] = []
    group_key: tuple[str, str] | None = None
    used_names: dict[str, int] = {}

    def unique(base: str) -> str:
        count = used_names.get(base, 0)
        used_names[base] = count + 1
        return base if count == 0 else f"{base}_{count}"

    def external_inputs(nodes: list[fx.Node]) -> list[fx.Node]:
        inside = {m.name for m in nodes}
        seen, out = set(), []
        for m in nodes:
            for a in m.all_input_nodes:
                if a.name not in inside and a.name not in weights and a.name not in seen:
                    seen.add(a.name)
                    out.append(a)
        return out

    def flush():
        nonlocal group, group_key
        if not group:
            return
        key, path = group_key
        inside = {m.name for m in group}
        outputs = [m for m in group if any(u.name not in inside for u in m.users)]
        last = outputs[-1] if outputs else group[-1]
        ext = external_inputs(group)
        name = unique(path.replace(".", "_"))
        for m in group:
            name_of[m.name] = name
        writes = sorted({name_of.get(w, w) for m in group for w in records[m.name]["writes"]
                         if w not in inside and w not in weights})
        ops.append(Op(
            name=name, kind="module", target=path, module=model.get_submodule(path),
            inputs=[name_of.get(a.name, a.name) for a in ext],
            in_metas=[mm for a in ext for mm in records.get(a.name, {}).get("out", [])],
            out_metas=records[last.name]["out"],
            macs=sum(records[m.name]["macs"] for m in group),
            writes=writes,
            alias_of=name_of.get(records[last.name]["alias"] or "", None),
            scope=path,
            call_frames=_call_frames(group[0]),
        ))
        group, group_key = [], None

    for n in gm.graph.nodes:
        rec = records.get(n.name, {})
        if n.op == "placeholder":
            if n.name in weights:
                continue
            name_of[n.name] = n.name
            ops.append(Op(n.name, "input", n.name, out_metas=rec.get("out", [])))
            continue
        if n.op == "output":
            flush()
            user_outputs = n.args[0][len(n.args[0]) - len(ep.graph_signature.user_outputs):] \
                if isinstance(n.args[0], (tuple, list)) else n.args[0]
            ins = _flatten_nodes(user_outputs)
            ops.append(Op(n.name, "output", "output", inputs=[name_of.get(a.name, a.name) for a in ins]))
            continue
        owner = owning_layer(n) if n.op == "call_function" else None
        if owner is not None:
            if group_key is not None and owner != group_key:
                flush()
            group_key = owner
            group.append(n)
            continue
        flush()
        ext = [a for a in n.all_input_nodes]
        for a in ext:  # a weight read by a function of the user's forward (pos_embed, cls_token)
            if a.name in weights and a.name not in name_of:
                name_of[a.name] = a.name
                ops.append(Op(a.name, "attr", weight_targets[a.name],
                              out_metas=records.get(a.name, {}).get("out", [])))
        name_of[n.name] = n.name
        ops.append(Op(
            name=n.name, kind="function", target=op_name(n.target),
            inputs=[name_of.get(a.name, a.name) for a in ext],
            args=_arg_repr(n.args), kwargs=_arg_repr(dict(n.kwargs)),
            in_metas=rec.get("in", []), out_metas=rec.get("out", []), macs=rec.get("macs", 0),
            writes=[name_of.get(w, w) for w in rec.get("writes", [])],
            alias_of=name_of.get(rec.get("alias") or "", None),
            scope=_scope(n),
            call_frames=_call_frames(n),
        ))
        if op_name(n.target).endswith("_") and ext and ext[0].name not in weights:
            ops[-1].writes = sorted(set(ops[-1].writes) | {name_of.get(ext[0].name, ext[0].name)})
    return Trace(ops, "torch.export", model)


def _flatten_nodes(value: Any) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg(value, lambda a: found.append(a))
    return found


# --- the ladder -----------------------------------------------------------------------------

def _describe_module(module: nn.Module) -> str:
    extra = module.extra_repr()
    return f"{type(module).__name__}({extra})" if extra else type(module).__name__


_MERGES = {"cat", "concat", "concatenate", "stack", "add", "add_", "iadd", "sub", "mul"}


def _merge_hint(failure: NodeFailed, inputs: Sequence[torch.Tensor]) -> str:
    """When maps that differ only in height/width fail to merge, the usual cause is an
    encoder-decoder fed an input size its downsampling does not divide: say which multiple."""
    if op_name(failure.node.target) not in _MERGES or not inputs or inputs[0].dim() < 3:
        return ""
    image, rank = tuple(inputs[0].shape[2:]), inputs[0].dim()
    sizes = sorted({tuple(m.shape[2:]) for m in failure.inputs if len(m.shape) == rank})
    if len(sizes) < 2:
        return ""
    differ = " vs ".join("x".join(map(str, s)) for s in sizes)
    maps = [tuple(s[2:]) for s in failure.seen if len(s) == rank and all(d > 1 for d in s[2:])]
    smallest = min(maps + sizes, key=math.prod)
    multiple = [2 ** round(math.log2(i / s)) if 0 < s < i else 1 for i, s in zip(image, smallest)]
    if max(multiple) < 2 or all(i % m == 0 for i, m in zip(image, multiple)):
        return f" The merged maps differ in height/width ({differ})."
    below = [i - i % m for i, m in zip(image, multiple)]
    above = [b + m for b, m in zip(below, multiple)]
    m_text = str(multiple[0]) if len(set(multiple)) == 1 else "x".join(map(str, multiple))
    return (f" The merged maps differ in height/width ({differ}): an encoder-decoder that merges "
            f"upsampled maps with skip connections needs input sides that are multiples of its "
            f"total downsampling, here {m_text} ({'x'.join(map(str, image))} is downsampled to "
            f"{'x'.join(map(str, smallest))} before this merge), such as "
            f"{'x'.join(map(str, below))} or {'x'.join(map(str, above))}.")


def _shape_error(failure: NodeFailed, gm_root: nn.Module, inputs_desc: str,
                 inputs: Sequence[torch.Tensor] = ()) -> ShapeError:
    n = failure.node
    frames = _call_frames(n)
    what = ""
    built = None
    if n.op == "call_module":
        module = gm_root.get_submodule(n.target)
        what = f"layer {n.target} ({_describe_module(module)})"
    else:
        what = f"{op_name(n.target)} in {_scope(n) or 'the model'}'s forward"
    frame = sources.pick(frames) or built
    where = f"{frame.location()}: " if frame else ""
    shapes = ", ".join("x".join(map(str, m.shape)) for m in failure.inputs) or "none"
    text = str(failure.error).strip()
    first_line = text.splitlines()[0].rstrip(".") if text else type(failure.error).__name__
    return ShapeError(
        f"{where}{what} failed on input shape(s) {shapes}: {first_line}.{_merge_hint(failure, inputs)} "
        f"The example input was {inputs_desc}. If the model is built for another input size, pass it with "
        "--input-shape (e.g. --input-shape 1,3,32,32) or set `example_input` in the file; "
        "otherwise the layer's configuration does not match what feeds it."
    )


def trace(model: nn.Module, inputs: Sequence[torch.Tensor], inputs_desc: str = "",
          prefer: str = "fx") -> Trace:
    """Trace `model` (already on the meta device) with meta `inputs`, cheapest rung first."""
    fx_problem: Exception | None = None
    if prefer == "fx":
        try:
            return trace_fx(model, inputs)
        except NodeFailed as exc:
            # fx followed the code and a layer rejected its input: a real shape error that
            # export would only repeat, slower and less precisely.
            raise _shape_error(exc, model, inputs_desc, inputs) from exc
        except Exception as exc:  # fx cannot follow this forward: climb a rung
            fx_problem = exc
    try:
        result = trace_export(model, inputs)
    except NodeFailed as exc:
        raise _shape_error(exc, model, inputs_desc, inputs) from exc
    except Exception as exc:
        if isinstance(fx_problem, NodeFailed):
            raise _shape_error(fx_problem, model, inputs_desc, inputs) from exc
        raise _export_error(exc, fx_problem, inputs_desc) from exc
    if fx_problem is not None:
        first = str(fx_problem).strip().splitlines()[0][:200] if str(fx_problem).strip() else type(fx_problem).__name__
        result.notes.append(f"torch.fx could not trace the model ({type(fx_problem).__name__}: {first}); used torch.export")
    return result


def _export_error(exc: Exception, fx_problem: Exception | None, inputs_desc: str) -> TraceError:
    import traceback

    tb = traceback.extract_tb(exc.__traceback__)
    outside_torch = [f for f in tb if not sources._is_internal(f.filename)]
    user = [f for f in outside_torch if sources.Frame(f.filename, f.lineno or 0).is_user_code]
    frame = (user or outside_torch or [None])[-1]
    where = f"{sources.display_path(frame.filename)}:{frame.lineno}: " if frame else ""
    code = f" (`{frame.line.strip()}`)" if frame is not None and frame.line else ""
    message = " ".join(str(exc).strip().split()) or type(exc).__name__
    if "data-dependent" in message or "DataDependent" in type(exc).__name__:
        return TraceError(
            f"{where}forward branches on the values of a tensor{code}, which neither torch.fx nor "
            "torch.export can follow without real data. Make the branch depend on shapes or "
            "configuration only, or lint a part of the model that has no such branch "
            "(file.py::NAME.backbone)."
        )
    raised_by_model = bool(tb) and not sources._is_internal(tb[-1].filename)
    shape_like = any(w in message for w in ("shape", "size", "dimension", "mat1", "expected"))
    if raised_by_model or shape_like:
        return ShapeError(
            f"{where}the model's forward rejected the example input {inputs_desc}: "
            f"{type(exc).__name__}: {message[:300]}. If the model expects another input size, pass "
            "it with --input-shape (e.g. --input-shape 1,3,256,256) or set `example_input` in the file."
        )
    return TraceError(
        f"{where}tracing the model with the example input {inputs_desc} failed: "
        f"{type(exc).__name__}: {message[:300]}. archlint traces with torch.fx, then "
        "torch.export(strict=False); code that neither can follow needs a traceable target: lint "
        "a submodule with file.py::NAME.backbone, or run with --debug for the full traceback."
    )
