"""Fix checks: a fix's code is built and run before it is shown.

An expression fix (`nn.Sequential(nn.Conv2d(...), ...)`, a layer's replacement) is built on the
meta device and run on the offending layer's input shape and dtype; a replacement for a
function or method call in forward is written on `x`, the call's input (`x.flatten(1)`), and
run on a meta tensor of that input's shape:
- same output shape: a drop-in replacement ("runs");
- another output shape: shown as changing the output from A to B, with what must follow
  ("changes-output");
- it does not build or does not run on that input: its code is dropped, the advice stays.
Statement fixes (class definitions, a list of constructors, one per layer) are compiled and
their definitions executed ("builds"); constructor lists are built one by one. Prose-only
advice (comments) is "advice".
"""
from __future__ import annotations

import ast
import re
import warnings
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from .findings import Finding, Fix
from .graph.ops import CALLS, Kind
from .spans import is_expression as _is_expression
from .trace import shapes


def _namespace() -> dict:
    return {"torch": torch, "nn": nn, "F": F}


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def _only_comments(code: str) -> bool:
    return all(not line.strip() or line.strip().startswith("#") for line in code.splitlines())


def _layer_for(graph, finding: Finding):
    """The layer a finding is about: the op its evidence names (`node`), else its own node,
    else the first call of its module that has shapes."""
    node = finding.evidence.get("node")
    if isinstance(node, str) and graph.has(node):
        return graph.layer(node)
    fallback = None
    for layer in graph:
        if finding.layer and layer.name == finding.layer and layer.in_shapes and layer.out_shapes:
            return layer
    for layer in graph:
        if layer.qualname == finding.module and layer.in_shapes and layer.out_shapes:
            if layer.kind == Kind.MODULE:
                return layer
            fallback = fallback or layer
    return fallback


def _build(code: str) -> object:
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return eval(compile(code.strip(), "<fix>", "eval"), _namespace())  # noqa: S307 (archlint's own code)


def _run(module: nn.Module, shape, dtype=torch.float32):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = torch.empty(tuple(shape), dtype=dtype, device="meta")
        if isinstance(module, nn.MultiheadAttention):
            return module(x, x, x)  # run as self-attention on the layer's input
        return shapes.run(module, x)


def _constructor_lines(code: str) -> list[str] | None:
    """A list of constructors, one per line (`nn.Conv2d(...),  # 3`): the expressions, or None."""
    lines = [re.sub(r",?\s*(#.*)?$", "", line).strip() for line in code.splitlines()]
    lines = [line for line in lines if line]
    if lines and all(line.startswith(("nn.", "torch.nn.")) and _is_expression(line) for line in lines):
        return lines
    return None


def check(finding: Finding, graph) -> Finding:
    """The finding with its fix checked (`Fix.checked`), or its unusable code dropped."""
    fix = finding.fix
    if fix is None or not fix.code or fix.checked:
        return finding
    code = fix.code
    if _only_comments(code):
        return replace(finding, fix=replace(fix, checked="advice"))
    if _is_expression(code):
        return replace(finding, fix=_check_expression(fix, _layer_for(graph, finding), graph))
    lines = _constructor_lines(code)
    try:
        if lines is not None:
            for line in lines:
                _build(line)
        else:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exec(compile(code, "<fix>", "exec"), _namespace())  # noqa: S102 (archlint's own code)
    except NameError:
        # Statements about the user's own variables (`x = x / 255`): they run in the user's
        # forward, not here. Checked as code that compiles.
        return replace(finding, fix=replace(fix, checked="compiles"))
    except Exception as exc:
        return replace(finding, fix=replace(fix, code=None, checked="",
                                            description=f"{fix.description} (archlint's code for "
                                                        f"this did not build: {type(exc).__name__})"))
    return replace(finding, fix=replace(fix, checked="builds"))


def _inputs_to_try(graph, layer):
    """Where the replacement may start: the layer's own input, then the inputs of the layers
    feeding it in a single chain (a fix that replaces a conv together with the norm and
    activation before it); last, its output, for code that is added after the layer."""
    chain, current = [], layer
    for _ in range(4):
        if len(current.in_shapes) != 1:
            break
        chain.append(("in", current))
        feeding = graph.predecessors(current)
        if len(feeding) != 1 or feeding[0].kind == Kind.INPUT:
            break
        current = feeding[0]
    return chain + [("out", layer)]


def _names(code: str) -> set[str]:
    try:
        tree = ast.parse(code.strip(), mode="eval")
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def _check_call(fix: Fix, layer, graph) -> Fix:
    """A call's replacement on `x`, the call's first input: run on a meta tensor of its shape."""
    shape = tuple(layer.in_shapes[0])
    producer = graph.layer(layer.inputs[0]) if layer.inputs and graph.has(layer.inputs[0]) else None
    dtype = getattr(torch, producer.dtype, torch.float32) if producer is not None and producer.dtype else torch.float32
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = eval(compile(fix.code.strip(), "<fix>", "eval"),  # noqa: S307 (archlint's own code)
                       {**_namespace(), "x": torch.empty(shape, dtype=dtype, device="meta")})
    except Exception as exc:
        return replace(fix, code=None, checked="",
                       description=f"{fix.description} (archlint's code for this did not run on the "
                                   f"call's input {_shape(shape)}: {type(exc).__name__})")
    after = tuple(layer.out_shapes[0]) if layer.out_shapes else None
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if got == after:
        return replace(fix, checked="runs", checked_on=_shape(shape))
    shown = _shape(got) if got is not None else "a non-tensor"
    return replace(fix, checked="changes-output", checked_on=_shape(shape),
                   description=f"{fix.description}; this changes the output from {_shape(after or ())} "
                               f"to {shown}, so the layers after it must take the new size")


def _check_expression(fix: Fix, layer, graph) -> Fix:
    if layer is not None and layer.kind in CALLS and layer.in_shapes and "x" in _names(fix.code):
        return _check_call(fix, layer, graph)
    try:
        built = _build(fix.code)
    except Exception as exc:
        return replace(fix, code=None, description=f"{fix.description} (archlint's code for this "
                                                   f"did not build: {type(exc).__name__})")
    if not isinstance(built, nn.Module) or layer is None or len(layer.in_shapes) != 1:
        return replace(fix, checked="builds")
    after = tuple(layer.out_shapes[0])
    first_fit = None
    for where, start in _inputs_to_try(graph, layer):
        shape_in = start.in_shapes[0] if where == "in" else after
        try:
            out = _run(built, shape_in)
        except Exception:
            continue
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            out = out[0]  # an RNN's (output, state), an attention's (output, weights)
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        if where == "in" and shape == after:
            return replace(fix, checked="runs", checked_on=_shape(shape_in))
        first_fit = first_fit or (where, shape_in, shape)
    if first_fit is None:
        # Built, but it fits nowhere around the layer: not something to paste there.
        return replace(fix, code=None, checked="",
                       description=f"{fix.description} (archlint's replacement did not run on the "
                                   f"layer's input {_shape(layer.in_shapes[0])}, so no code is offered)")
    where, shape_in, shape = first_fit
    shown = _shape(shape) if shape is not None else "a non-tensor"
    added = " when added after the layer" if where == "out" else ""
    return replace(fix, checked="changes-output", checked_on=_shape(shape_in),
                   description=f"{fix.description}; this changes the output from {_shape(after)} "
                               f"to {shown}{added}, so the layers after it must take the new size")
