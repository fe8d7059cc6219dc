"""Fix checks: a fix's code is built and run before it is shown.

An expression fix (`nn.Sequential(nn.Conv2d(...), ...)`, a layer's replacement) is built on the
meta device and run on the offending layer's input shape and dtype:
- same output shape: a drop-in replacement ("runs");
- another output shape: shown as changing the output from A to B, with what must follow
  ("changes-output");
- it does not build or does not run on that input: its code is dropped, the advice stays.
Statement fixes (class definitions, a list of constructors, one per layer) are compiled and
their definitions executed ("builds"); constructor lists are built one by one. Prose-only
advice (comments) is "advice".
"""
from __future__ import annotations

import re
import warnings
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from .findings import Finding, Fix
from .graph.ops import Kind
from .spans import is_expression as _is_expression
from .trace import shapes


def _namespace() -> dict:
    return {"torch": torch, "nn": nn, "F": F}


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def _only_comments(code: str) -> bool:
    return all(not line.strip() or line.strip().startswith("#") for line in code.splitlines())


def _layer_for(graph, finding: Finding):
    """The layer a finding is about: its own node, else the first call of its module that has
    shapes."""
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
        return shapes.run(module, torch.empty(tuple(shape), dtype=dtype, device="meta"))


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


def _check_expression(fix: Fix, layer, graph) -> Fix:
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
