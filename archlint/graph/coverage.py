"""Coverage: how much of the model the linted graph reached, and what it did not, and why.

A linter that saw a third of a model and reports no findings is a false green. Every result
carries the share of the model's parameters and of its weighted modules (modules that own
parameters) that the graphs the rules read reached, and names the modules they did not.

A module is reached when the graph calls it, or calls a module that holds it (a torch.nn
layer is a leaf), or calls another module holding the same parameters (tied embeddings), or
when forward reads its parameters directly (a layer scale, a position embedding). A parameter read only by an op the tracer could not open (a higher-order op
under torch.export) is not reached: the rules never saw the layers that use it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from torch import nn

from ..results import percent_text
from .ops import Kind


@dataclass
class Coverage:
    params_total: int = 0
    params_reached: int = 0
    modules_total: int = 0
    modules_reached: int = 0
    # (qualified name, parameters, why), largest first: the outermost unreached modules.
    unreached: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def share(self) -> float:
        """Share of parameters reached; a model without parameters is covered by its graph."""
        return self.params_reached / self.params_total if self.params_total else 1.0

    @property
    def module_share(self) -> float:
        return self.modules_reached / self.modules_total if self.modules_total else 1.0

    def to_dict(self) -> dict:
        return {
            "params": round(self.share, 4), "params_reached": self.params_reached,
            "params_total": self.params_total, "modules": round(self.module_share, 4),
            "modules_reached": self.modules_reached, "modules_total": self.modules_total,
            "unreached": [{"module": m, "params": p, "why": w} for m, p, w in self.unreached],
        }

    @classmethod
    def from_dict(cls, data: dict | None) -> "Coverage | None":
        if not data:
            return None
        return cls(data["params_total"], data["params_reached"], data["modules_total"],
                   data["modules_reached"],
                   [(u["module"], u["params"], u["why"]) for u in data.get("unreached", [])])

    def describe(self) -> str:
        """'100% of parameters (25.6M), 161/161 weighted modules'."""
        return (f"{percent_text(self.share)} of parameters ({_human(self.params_reached)} of "
                f"{_human(self.params_total)}), {self.modules_reached}/{self.modules_total} "
                "weighted modules")


def _human(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def measure(model: nn.Module, graphs: Sequence, skipped: Iterable[tuple[str, str]] = (),
            default_why: str = "not called by the traced forward") -> Coverage:
    """Coverage of `model` by `graphs` (one whole-model graph, or the graphs of its parts).
    `skipped` names parts left out, with why; other unreached modules get `default_why`."""
    called: set[str] = set()
    read: set[str] = set()  # parameters read directly, by qualified name
    opaque_reads: dict[str, str] = {}  # parameter -> the opaque op that read it
    for graph in graphs:
        for layer in graph:
            if layer.kind == Kind.MODULE:
                called.add(layer.qualname)
            elif layer.kind == Kind.ATTR:
                users = graph.successors(layer)
                opaque = [u for u in users if getattr(u, "opaque", False)]
                if opaque and len(opaque) == len(users):
                    opaque_reads[layer.qualname] = opaque[0].op
                else:
                    read.add(layer.qualname)
    why_skipped = dict(skipped)

    def under(name: str, prefixes: set[str]) -> bool:
        # Ancestors of `name` looked up in the set: scanning the set per module was quadratic
        # (a 1000-block net spent more time here than tracing).
        if "" in prefixes or name in prefixes:
            return True
        cut = name.find(".")
        while cut != -1:
            if name[:cut] in prefixes:
                return True
            cut = name.find(".", cut + 1)
        return False

    called_ids: set[int] | None = None

    def held_by_called(tensors: list) -> bool:
        # A parameter is counted under the first module that holds it; a tied copy (T5's
        # `shared` embedding, which its encoder and decoder call as `embed_tokens`) is reached
        # when any module holding it is called. Built only when a module looks unreached.
        nonlocal called_ids
        if called_ids is None:
            called_ids = set()
            for qualname in called:
                try:
                    called_ids.update(id(t) for t in model.get_submodule(qualname).parameters())
                except AttributeError:
                    pass
        return all(id(t) in called_ids for t in tensors)

    coverage = Coverage()
    seen_params: set[int] = set()
    unreached: dict[str, list] = {}
    reached_names: set[str] = set()
    whole = len(graphs) == 1 and getattr(graphs[0], "model", None) is model
    for name, module in (graphs[0].named_modules() if whole else model.named_modules()):
        own = [(f"{name}.{p}" if name else p, t) for p, t in module._parameters.items() if t is not None]
        own = [(q, t) for q, t in own if id(t) not in seen_params]
        if not own:
            continue
        seen_params.update(id(t) for _, t in own)
        count = sum(t.numel() for _, t in own)
        coverage.modules_total += 1
        coverage.params_total += count
        # Parameters read directly count: a layer scale or a position embedding is used by
        # being read, and so are the weights torchvision's Swin hands to F.linear (the graph
        # holds those functional ops, and the rules read them).
        reached_params = sum(t.numel() for q, t in own if q in read)
        if (under(name, called) or (reached_params == count and count)
                or held_by_called([t for _, t in own])):
            reached_names.add(name)
            coverage.modules_reached += 1
            coverage.params_reached += count
            continue
        coverage.params_reached += reached_params
        why = next((f"read only by {opaque_reads[q]}, an op the tracer could not open"
                    for q, _ in own if q in opaque_reads), None)
        skipped_at = next((p for p in why_skipped if name == p or name.startswith(p + ".")), None)
        if skipped_at is not None:
            why = f"part {skipped_at} skipped: {why_skipped[skipped_at]}"
        unreached[name] = [count - reached_params, why or default_why]
    coverage.unreached = _outermost(unreached, reached_names)
    return coverage


def _outermost(unreached: dict[str, list], reached: set[str]) -> list[tuple[str, int, str]]:
    """Name each unreached module by its outermost ancestor with nothing reached below it, so
    a skipped head is one line, not its forty layers."""
    def top(name: str) -> str:
        parts = name.split(".")
        for depth in range(1, len(parts)):
            prefix = ".".join(parts[:depth])
            if not any(r == prefix or r.startswith(prefix + ".") for r in reached):
                return prefix
        return name

    folded: dict[tuple[str, str], int] = {}
    for name, (count, why) in unreached.items():
        key = (top(name), why)
        folded[key] = folded.get(key, 0) + count
    return sorted(((n, c, w) for (n, w), c in folded.items()), key=lambda t: (-t[1], t[0]))
