"""A `ModelReport` that can cross the process boundary: pickled in the child that linted the
file, read back in the parent that never imported the user's code.

A report's graph holds the user's nn.Module objects (classes the parent cannot and must not
import) and the traced call arguments (fake tensors). The renderers need neither: the HTML
report reads each layer's record (shapes, params, MACs, receptive field, source lines) and,
for a module's heading, only the module's type name. So the portable graph keeps every layer
with `module`, `args` and `kwargs` emptied, and replaces the model with a `ModelSkeleton`:
the type names of its submodules by qualified name, and its parameter count.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from typing import Any

from .results import ModelReport

_SKELETON_TYPES: dict[str, type] = {}


class ModelSkeleton:
    """What remains of an nn.Module: its type's name, its submodules' and its parameter count.
    `type(skeleton).__name__` is the original type's name, as the HTML report reads it."""

    def __init__(self, types: dict[str, str], params: int):
        self._types, self._params = types, params

    def get_submodule(self, target: str) -> "ModelSkeleton":
        if target not in self._types:
            raise AttributeError(f"no submodule {target!r}")
        return _skeleton(self._types[target], {}, 0)

    def named_modules(self, *args: Any, **kwargs: Any):
        return iter(())

    def parameters(self, *args: Any, **kwargs: Any):
        return iter([_Count(self._params)])

    def __reduce__(self):
        return (_skeleton, (type(self).__name__, self._types, self._params))


class _Count:
    def __init__(self, n: int):
        self.n = n

    def numel(self) -> int:
        return self.n


def _skeleton(type_name: str, types: dict[str, str], params: int) -> ModelSkeleton:
    cls = _SKELETON_TYPES.get(type_name)
    if cls is None:
        cls = _SKELETON_TYPES[type_name] = type(type_name, (ModelSkeleton,), {"__reduce__": ModelSkeleton.__reduce__})
    return cls(types, params)


def _portable_graph(graph: Any) -> Any:
    model = graph.model
    types = {name: type(m).__name__ for name, m in model.named_modules(remove_duplicate=False)}
    portable = copy.copy(graph)
    portable.model = _skeleton(type(model).__name__, types, graph.params)
    portable._params = graph.params  # counted here: the portable graph has no modules to count
    portable._modules, portable._module_names = {}, {}
    portable.rerun = portable.rerun_fast = None  # they run the user's model: they stay in the child
    portable.clear()
    for layer in graph:
        portable.add(dataclasses.replace(layer, module=None, args=(), kwargs={}))
    return portable


def detach(report: ModelReport) -> ModelReport:
    """A copy of `report` that pickles without the user's classes: its graph made portable,
    and, if something else (evidence) still refers to them, its graph dropped and its
    evidence reduced to JSON values."""
    from .isolation import loads

    portable = copy.copy(report)
    if report.graph is not None:
        try:
            portable.graph = _portable_graph(report.graph)
        except Exception:
            portable.graph = None
            portable.stored_summary = report.summary
    try:
        loads(pickle.dumps(portable, protocol=pickle.HIGHEST_PROTOCOL))
        return portable
    except Exception:
        pass
    portable.stored_summary = report.summary
    portable.graph = None
    portable.findings = [dataclasses.replace(f, evidence=_plain(f.evidence)) for f in report.findings]
    portable.parts = _plain(report.parts)
    return portable


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
