"""Rung 2: torch.export(strict=False), its aten nodes mapped back to torch.nn layers.

Nodes issued inside one torch.nn layer (found through their `nn_module_stack`) are grouped into
one module op, so rules see `layer1.0.conv1`, not its aten decomposition.
"""
from __future__ import annotations

import io
import logging
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import Any, Sequence

import torch
import torch.fx as fx
from torch import nn

from ..graph.ops import Kind, op_name
from .fx import call_frames, retrace, scope
from .interpreter import propagate, propagate_shapes
from .meta import fake_cpu_inputs, fake_cpu_weights, fake_mode
from .outputs import flat_outputs
from .records import Op, Trace


def is_layer(module: nn.Module) -> bool:
    """A torch.nn layer, as fx's default leaf test decides."""
    kind = type(module).__module__
    return (kind.startswith("torch.nn") or kind.startswith("torch.ao.nn")) and not isinstance(
        module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    )


def _export_args(ep, model: nn.Module, inputs: Sequence[torch.Tensor]) -> list[Any]:
    """The exported graph's inputs, read on the meta `model`: its weights, then the user's."""
    from torch.export.graph_signature import InputKind

    def on_meta(value: Any) -> Any:
        # Lifted constants were made under export's fake mode; the run is on meta tensors.
        if isinstance(value, torch.Tensor) and not value.is_meta:
            return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
        return value

    # export takes nested inputs (a list or dict of feature maps) flattened, one per leaf.
    user = iter(torch.utils._pytree.tree_leaves(tuple(inputs)))
    args = []
    for spec in ep.graph_signature.input_specs:
        if spec.kind == InputKind.PARAMETER:
            args.append(model.get_parameter(spec.target))
        elif spec.kind == InputKind.BUFFER:
            try:
                args.append(model.get_buffer(spec.target))
            except AttributeError:
                args.append(on_meta(ep.state_dict.get(spec.target)))
        elif spec.kind in (InputKind.CONSTANT_TENSOR, InputKind.CUSTOM_OBJ):
            args.append(on_meta(ep.constants[spec.target]))
        elif spec.kind == InputKind.USER_INPUT:
            args.append(next(user, None))
        else:
            args.append(None)
    return args


class _Context:
    """What a custom autograd.Function's forward may call on its ctx; nothing is kept."""

    needs_input_grad = ()

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def mark_dirty(self, *args):
        pass

    def mark_non_differentiable(self, *args):
        pass

    def set_materialize_grads(self, value):
        pass


@contextmanager
def _inline_autograd_functions():
    """Run the user's own autograd.Functions' forward inline. A checkpoint written as one
    (improved-diffusion's `CheckpointFunction.apply(self.net, x, *params)`) otherwise hides the
    layers it runs from the module stack, and the rules never see them. Tracing needs the
    forward only; torch's own Functions are left alone."""
    function = torch.autograd.Function
    original = function.__dict__["apply"]

    def apply(cls, *args, **kwargs):
        if cls.__module__.startswith("torch.") or "setup_context" in vars(cls):
            return original.__get__(None, cls)(*args, **kwargs)
        return cls.forward(_Context(), *args, **kwargs)

    function.apply = classmethod(apply)
    try:
        yield
    finally:
        function.apply = original


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


def trace_export(model: nn.Module, inputs: Sequence[torch.Tensor], shapes_only: bool = False) -> Trace:
    """`shapes_only`: a retrace for another input shape, which needs no MACs or storage."""
    from torch.export.graph_signature import InputKind

    # Exported with fake CPU tensors, so device checks in forward take the CPU path. The graph
    # is then run on `model`, the meta copy (same structure), where fused CPU kernels such as
    # LSTM's decompose into the matrix products MACs are counted from.
    mode = fake_mode()
    # Under no_grad throughout, a `with torch.no_grad():` in forward changes nothing, so export
    # does not wrap that region into a higher-order op whose layers the graph cannot show.
    with warnings.catch_warnings(), _quiet_torch_logs(), _inline_autograd_functions(), \
            torch.no_grad(), fake_cpu_weights(model, mode) as fake_model, \
            flat_outputs(fake_model) as unpacked:
        warnings.simplefilter("ignore")
        ep = torch.export.export(fake_model, fake_cpu_inputs(tuple(inputs), mode), strict=False)
    gm = ep.graph_module
    if shapes_only:
        records, failure = propagate_shapes(gm, _export_args(ep, model, inputs))
        if failure is not None:
            raise failure
    else:
        records = propagate(gm, _export_args(ep, model, inputs))
    weights = {spec.arg.name for spec in ep.graph_signature.input_specs
               if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)}
    weight_targets = {spec.arg.name: spec.target for spec in ep.graph_signature.input_specs}

    layer_cache: dict[str, bool] = {}

    def owning_layer(n: fx.Node) -> tuple[str, str] | None:
        """(stack key, qualified name) of the outermost torch.nn layer that issued this node."""
        for key, (path, _type) in (n.meta.get("nn_module_stack") or {}).items():
            if path not in layer_cache:
                try:
                    layer_cache[path] = is_layer(model.get_submodule(path)) if path else False
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
            name=name, kind=Kind.MODULE, target=path, module=model.get_submodule(path),
            inputs=[name_of.get(a.name, a.name) for a in ext],
            in_metas=[mm for a in ext for mm in records.get(a.name, {}).get("out", [])],
            out_metas=records[last.name]["out"],
            macs=sum(records[m.name]["macs"] for m in group),
            writes=writes,
            alias_of=name_of.get(records[last.name]["alias"] or "", None),
            scope=path,
            call_frames=call_frames(group[0]),
        ))
        group, group_key = [], None

    for n in gm.graph.nodes:
        rec = records.get(n.name, {})
        if n.op == "placeholder":
            if n.name in weights:
                continue
            name_of[n.name] = n.name
            ops.append(Op(n.name, Kind.INPUT, n.name, out_metas=rec.get("out", [])))
            continue
        if n.op == "output":
            flush()
            user_outputs = n.args[0][len(n.args[0]) - len(ep.graph_signature.user_outputs):] \
                if isinstance(n.args[0], (tuple, list)) else n.args[0]
            ins = _flatten_nodes(user_outputs)
            ops.append(Op(n.name, Kind.OUTPUT, "output", inputs=[name_of.get(a.name, a.name) for a in ins]))
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
                ops.append(Op(a.name, Kind.ATTR, weight_targets[a.name],
                              out_metas=records.get(a.name, {}).get("out", [])))
        name_of[n.name] = n.name
        ops.append(Op(
            name=n.name, kind=Kind.FUNCTION, target=op_name(n.target),
            inputs=[name_of.get(a.name, a.name) for a in ext],
            # Arguments name ops, as `inputs` do: a node inside a grouped layer is that layer.
            args=_named(n.args, name_of), kwargs=_named(dict(n.kwargs), name_of),
            in_metas=rec.get("in", []), out_metas=rec.get("out", []), macs=rec.get("macs", 0),
            writes=[name_of.get(w, w) for w in rec.get("writes", [])],
            alias_of=name_of.get(rec.get("alias") or "", None),
            scope=scope(n),
            call_frames=call_frames(n),
            opaque=isinstance(n.target, torch._ops.HigherOrderOperator), value=rec.get("value"),
        ))
        if op_name(n.target).endswith("_") and ext and ext[0].name not in weights:
            ops[-1].writes = sorted(set(ops[-1].writes) | {name_of.get(ext[0].name, ext[0].name)})
    result = Trace(ops, "torch.export", model)
    if unpacked.types:
        result.notes.append(unpacked.note())
    # Export records the sizes it saw (`view(1, -1)` for `view(B, -1)`): another shape is
    # another export.
    result.rerun = lambda transform: retrace(trace_export, model, inputs, transform)
    return result


def _named(value: Any, name_of: dict[str, str]) -> Any:
    return fx.node.map_arg(value, lambda node: name_of.get(node.name, node.name))


def _flatten_nodes(value: Any) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg(value, lambda a: found.append(a))
    return found
