"""Trace: turn a model and its example input into a flat list of operations with shapes.

A ladder, cheapest rung first, and the rung used is recorded:

1. ``torch.fx`` symbolic tracing with torch.nn layers as leaves (`fx`, milliseconds; a
   `*args`/`**kwargs` forward is traced through a root that takes the given inputs);
2. the same with proxies that carry meta values, when the forward branches on shapes
   (`meta_fx`, "torch.fx (meta)");
3. ``torch.export.export(strict=False)`` when fx cannot follow the code (`export`, seconds);
4. for a model none can take whole (detection post-processing), its parts (`parts`).

Whatever the rung, one interpreter (`interpreter`) runs the graph on meta tensors and records
shapes, MACs, in-place writes and aliasing. A failure becomes one paragraph (`diagnose`).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import ArchlintError, first_line
from .diagnose import export_error, shape_error
from .export import is_layer, trace_export
from .fx import trace_fx
from .interpreter import NodeFailed
from .meta import ModuleState, meta_copy
from .meta_fx import trace_meta_fx
from .records import Op, TensorMeta, Trace

__all__ = ["trace", "meta_copy", "is_layer", "Op", "TensorMeta", "Trace", "NodeFailed"]


def trace(model: nn.Module, inputs: Sequence[torch.Tensor], inputs_desc: str = "",
          modules: dict[str, nn.Module] | None = None) -> Trace:
    """Trace `model` (already on the meta device) with meta `inputs`, cheapest rung first.
    Raises an ArchlintError whose `cause` says whether a layer rejected its input
    ("layer-rejected-input": the user must fix it) or the code could not be followed.
    `modules`: the model's named modules, duplicates kept, if the caller has them."""
    # Each fx rung puts the model's attributes back itself once it has traced (`state`).
    state = ModuleState(model, modules)
    try:
        return trace_fx(model, inputs, state=state)
    except NodeFailed as exc:
        # fx followed the code and a layer rejected its input: a real shape error that
        # export would only repeat, slower and less precisely.
        raise shape_error(exc, model, inputs_desc, inputs) from exc
    except ArchlintError:
        raise
    except Exception as exc:  # fx cannot follow this forward: climb a rung
        fx_problem = exc
    try:
        result = trace_meta_fx(model, inputs, state=state)
    except Exception:  # any failure here is export's to report, as before this rung existed
        pass
    else:
        result.notes.append(f"torch.fx could not trace the model ({first_line(fx_problem, 200)}); "
                            "traced with torch.fx on meta-backed proxies")
        return result
    try:
        result = trace_export(model, inputs)
    except NodeFailed as exc:
        raise shape_error(exc, model, inputs_desc, inputs) from exc
    except Exception as exc:
        raise export_error(exc, inputs_desc) from exc
    finally:
        state.restore()
    result.notes.append(f"torch.fx could not trace the model ({first_line(fx_problem, 200)}); "
                        "used torch.export")
    return result
