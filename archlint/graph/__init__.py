"""The graph stage: the annotated architecture graph rules read.

- `ops`: the op table (node kinds, op families, the predicates rules use)
- `windows`: one model of a conv/pool window (padding and explicit pads folded in)
- `receptive_field`: how far one output position sees
- `macs`: multiply-accumulates per op
- `layer`, `archgraph`, `build`: the records, the graph, and building it from a trace

Names are imported on first use, so the tracer can read the op table without building the
graph module first.
"""
from __future__ import annotations

_LAZY = {"ArchGraph": "archgraph", "Layer": "layer", "Shape": "layer", "build_graph": "build",
         "Kind": "ops", "Window": "windows", "ReceptiveField": "receptive_field"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'archlint.graph' has no attribute {name!r}")
