"""Diagnosis: turn a failed trace into one paragraph that names the line, layer and shapes."""
from __future__ import annotations

import math
import traceback
from typing import Sequence

import torch
from torch import nn

from .. import sources
from ..errors import ShapeError, TraceError
from ..graph.ops import MERGE_FUNCTIONS, op_name
from .fx import call_frames, scope
from .interpreter import NodeFailed


def _describe_module(module: nn.Module) -> str:
    extra = module.extra_repr()
    return f"{type(module).__name__}({extra})" if extra else type(module).__name__


def _merge_hint(failure: NodeFailed, inputs: Sequence[torch.Tensor]) -> str:
    """When maps that differ only in height/width fail to merge, the usual cause is an
    encoder-decoder fed an input size its downsampling does not divide: say which multiple."""
    if op_name(failure.node.target) not in MERGE_FUNCTIONS or not inputs or inputs[0].dim() < 3:
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


def needs_data(error: BaseException) -> bool:
    """An op that cannot run on meta tensors because its output depends on values (nonzero,
    .item(), unique): a limit of tracing without data, not a mistake in the model."""
    if isinstance(error, NotImplementedError):
        return True
    names = {cls.__name__ for cls in type(error).__mro__}
    if names & {"DataDependentOutputException", "DynamicOutputShapeException",
                "GuardOnDataDependentSymNode", "UnsupportedOperatorException"}:
        return True
    # torch raises plain RuntimeErrors for `.item()` and `.tolist()` on meta tensors: its own
    # wording is the only mark they carry.
    text = str(error)
    return any(s in text for s in ("data-dependent", "meta tensors", "Meta tensors", "nonzero()", ".item()"))


def _frame_fields(frame) -> dict:
    if frame is None:
        return {}
    location = frame.location()
    return {"path": location.path, "line": location.line}


def shape_error(failure: NodeFailed, gm_root: nn.Module, inputs_desc: str,
                inputs: Sequence[torch.Tensor] = ()) -> ShapeError:
    """A node that failed on its input: the layer, its input shapes and the example input."""
    n = failure.node
    layer = None
    if n.op == "call_module":
        layer = n.target
        what = f"layer {n.target} ({_describe_module(gm_root.get_submodule(n.target))})"
    else:
        what = f"{op_name(n.target)} in {scope(n) or 'the model'}'s forward"
    shapes = [list(m.shape) for m in failure.inputs]
    shown = ", ".join("x".join(map(str, s)) for s in shapes) or "none"
    text = str(failure.error).strip()
    first = text.splitlines()[0].rstrip(".") if text else type(failure.error).__name__
    return ShapeError(
        f"{what} failed on input shape(s) {shown}: {first}.{_merge_hint(failure, inputs)} "
        f"The example input was {inputs_desc}.",
        hint="If the model is built for another input size, pass it with --input-shape (e.g. "
             "--input-shape 1,3,32,32) or set `example_input` in the file; otherwise the layer's "
             "configuration does not match what feeds it.",
        layer=layer, shapes=shapes,
        cause="needs-data" if needs_data(failure.error) else "layer-rejected-input",
        **_frame_fields(sources.pick(call_frames(n))))


def export_error(exc: Exception, inputs_desc: str) -> TraceError:
    """torch.export failed outside any one node: name the user's line that it stopped at."""
    tb = traceback.extract_tb(exc.__traceback__)
    outside_torch = [f for f in tb if not sources.is_internal(f.filename)]
    user = [f for f in outside_torch if sources.Frame(f.filename, f.lineno or 0).is_user_code]
    frame = (user or outside_torch or [None])[-1]
    where = ({"path": sources.display_path(frame.filename), "line": frame.lineno} if frame else {})
    code = f" (`{frame.line.strip()}`)" if frame is not None and frame.line else ""
    message = " ".join(str(exc).strip().split()) or type(exc).__name__
    if needs_data(exc) and "DataDependent" in "".join(c.__name__ for c in type(exc).__mro__) \
            or "data-dependent" in message:
        return TraceError(
            f"forward branches on the values of a tensor{code}, which neither torch.fx nor "
            "torch.export can follow without real data.",
            hint="Make the branch depend on shapes or configuration only, or lint a part of the "
                 "model that has no such branch (file.py::NAME.backbone).",
            cause="data-dependent", **where)
    raised_by_model = bool(tb) and not sources.is_internal(tb[-1].filename)
    # torch's shape checks raise RuntimeError/ValueError with no type of their own.
    shape_like = any(w in message for w in ("shape", "size", "dimension", "mat1", "expected"))
    if raised_by_model or shape_like:
        return ShapeError(
            f"the model's forward rejected the example input {inputs_desc}: "
            f"{type(exc).__name__}: {message[:300]}.",
            hint="If the model expects another input size, pass it with --input-shape (e.g. "
                 "--input-shape 1,3,256,256) or set `example_input` in the file.",
            cause="forward-rejected-input", **where)
    return TraceError(
        f"tracing the model with the example input {inputs_desc} failed: "
        f"{type(exc).__name__}: {message[:300]}.",
        hint="archlint traces with torch.fx, then torch.export(strict=False); code that neither "
             "can follow needs a traceable target: lint a submodule with file.py::NAME.backbone, "
             "or run with --debug for the full traceback.",
        cause="untraceable", **where)
