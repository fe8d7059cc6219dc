"""The layer table's records: one row per module of an ArchGraph, with its output shape,
parameters (trainable and not), MACs, receptive field and saved activations, and folding of the
rows below a depth into their ancestors.

A row's numbers cover its whole subtree, so folding only hides rows and never recomputes:
`fold(summary.rows, 2)` is the table at torchinfo's `depth=2`. Totals come from the graph itself
(unique parameters, as `model.parameters()` counts them; every op's MACs), not from adding rows,
which would count a tied weight twice. Saved activations come from `archlint.memory` when the
caller measured them.

    summary = build(report.graph, target=report.target, usage=memory.measure(...))
    for row in fold(summary.rows, 3): ...
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from .graph import ArchGraph
from .memory import MemoryUsage

DEFAULT_DEPTH = 3  # torchinfo's default


@dataclass
class Row:
    name: str  # qualified name as in model.named_modules(); an op's name at the model's top
    depth: int  # 1 for the model's children
    type: str
    out_shape: list[int] | None
    params: int  # every parameter of the subtree, each tensor once
    trainable: int
    macs: int
    rf: list[int] | None  # receptive field of the subtree's last output, per spatial axis
    rf_global: bool
    saved_bytes: int | None  # saved for backward inside the subtree, at the memory's batch size
    calls: int  # how often forward called this module (0 for modules that only hold others)
    children: int = 0  # rows directly below, hidden when folded

    @property
    def non_trainable(self) -> int:
        return self.params - self.trainable

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["non_trainable"] = self.non_trainable
        return data


@dataclass
class Training:
    """Training memory at one batch size, in bytes."""

    batch_size: int
    optimizer: str
    weights: int
    buffers: int
    gradients: int
    optimizer_state: int
    saved_activations: int
    peak: int
    # torch.utils.checkpoint around the stages with the most saved activations
    checkpoint_stages: list[str] = field(default_factory=list)
    checkpoint_saved: int | None = None  # saved activations with those checkpoints
    checkpoint_recompute: int = 0  # the largest stage, alive again while backward recomputes it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Summary:
    target: str
    inputs: list[list[int]]
    rows: list[Row]
    params: int
    trainable: int
    macs: int
    # Parameters no row holds, by name: the model's own (ViT's class_token) and those of
    # modules forward never calls.
    outside: dict[str, int] = field(default_factory=dict)
    training: Training | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def non_trainable(self) -> int:
        return self.params - self.trainable

    def to_dict(self, depth: int | None = DEFAULT_DEPTH) -> dict[str, Any]:
        return {
            "target": self.target,
            "inputs": self.inputs,
            "depth": depth,
            "totals": {"params": self.params, "trainable": self.trainable,
                       "non_trainable": self.non_trainable, "macs": self.macs,
                       "outside_rows": self.outside,
                       "saved_activations": self.training.saved_activations if self.training else None},
            "training": self.training.to_dict() if self.training else None,
            "layers": [r.to_dict() for r in fold(self.rows, depth)],
            "notes": self.notes,
        }


def ancestors(qualname: str) -> list[str]:
    """'layer1.0.conv1' -> ['layer1', 'layer1.0', 'layer1.0.conv1']."""
    parts = qualname.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _unique_params(module) -> tuple[int, int]:
    params = list(module.parameters())  # nn.Module.parameters() already yields each tensor once
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def build(graph: ArchGraph, target: str = "", usage: MemoryUsage | None = None,
          optimizer: str = "adam") -> Summary:
    model = graph.model
    rows: dict[str, Row] = {}
    modules: dict[str, object] = {}
    saved = usage.saved_by_module if usage is not None else {}

    def module_row(name: str, module) -> Row:
        if name not in rows:
            if module is None:
                try:
                    module = model.get_submodule(name)
                except AttributeError:  # a scope the tracer named that is no submodule
                    module = None
            modules[name] = module
            params, trainable = _unique_params(module) if module is not None else (0, 0)
            rows[name] = Row(name=name, depth=name.count(".") + 1,
                             type=type(module).__name__ if module is not None else "",
                             out_shape=None, params=params, trainable=trainable, macs=0, rf=None,
                             rf_global=False, saved_bytes=saved.get(name, 0) if usage else None,
                             calls=0)
        return rows[name]

    for layer in graph:
        if layer.kind in ("input", "output", "attr"):
            continue
        owner = layer.qualname  # a module call's own name, or the module whose forward ran the op
        if owner:
            chain = [module_row(name, layer.module if name == owner else None)
                     for name in ancestors(owner)]
        elif layer.macs:
            # An op in the model's own forward (a matmul, an attention call) is a row of its own,
            # or the rows would not add up to the model's MACs.
            chain = [rows.setdefault(layer.name, Row(
                name=layer.name, depth=1, type=layer.op, out_shape=None, params=0, trainable=0,
                macs=0, rf=None, rf_global=False, saved_bytes=None, calls=0))]
        else:
            continue
        for row in chain:
            row.macs += layer.macs
            if layer.out_shape is not None:  # a subtree's output is its last op's
                row.out_shape = list(layer.out_shape)
                row.rf = list(layer.rf.size) if layer.rf is not None else None
                row.rf_global = bool(layer.rf is not None and layer.rf.is_global)
        if layer.kind == "module":
            chain[-1].calls += 1

    ordered = list(rows.values())  # first appearance: a module's ancestors come before it
    by_name = {r.name: r for r in ordered}
    for row in ordered:
        parent = row.name.rpartition(".")[0]
        if parent in by_name and row.depth > 1:
            by_name[parent].children += 1
    in_rows = {id(p) for row in ordered if row.depth == 1 and modules.get(row.name) is not None
               for p in modules[row.name].parameters()}
    outside = {name: p.numel() for name, p in model.named_parameters() if id(p) not in in_rows}
    total, trainable = _unique_params(model)
    summary = Summary(target=target, inputs=[list(s) for s in graph.input_shapes], rows=ordered,
                      params=total, trainable=trainable, macs=graph.macs, outside=outside)
    if usage is not None:
        summary.training = training(usage, optimizer, ordered)
    return summary


def stages(rows: Sequence[Row], usage: MemoryUsage) -> list[str]:
    """Where checkpointing pays, largest first: the blocks directly below the first module that
    does not hold most of the saved activations in one block (ViT: its 12 encoder layers,
    ResNet: layer1..layer4). Single layers are left out: recomputing one conv saves little."""
    saved = usage.saved_by_module
    parent = ""
    while True:
        blocks = [r.name for r in rows if r.children and saved.get(r.name, 0)
                  and r.name.rpartition(".")[0] == parent]
        if not blocks:
            return []
        biggest = max(blocks, key=lambda n: saved[n])
        if saved[biggest] > usage.saved_total / 2 and any(
                r.children and r.name.rpartition(".")[0] == biggest for r in rows):
            parent = biggest
            continue
        return sorted(blocks, key=lambda n: -saved[n])


def training(usage: MemoryUsage, optimizer: str, rows: Sequence[Row]) -> Training:
    record = Training(batch_size=usage.batch_size, optimizer=optimizer, weights=usage.weights,
                      buffers=usage.buffers, gradients=usage.gradients,
                      optimizer_state=usage.optimizer_state(optimizer),
                      saved_activations=usage.saved_total, peak=usage.peak(optimizer))
    chosen = stages(rows, usage)
    if chosen:
        kept, recompute = usage.checkpointed(chosen)
        # Shown only where it pays: a stage that keeps its input and is recomputed whole in
        # backward can need more than it saves (a model that is one block, a short encoder).
        if kept + recompute < usage.saved_total:
            record.checkpoint_stages = chosen
            record.checkpoint_saved, record.checkpoint_recompute = kept, recompute
    return record


def fold(rows: Sequence[Row], depth: int | None) -> list[Row]:
    """The rows at or above `depth` (None: all); deeper rows are already counted in theirs."""
    if depth is None:
        return list(rows)
    return [r for r in rows if r.depth <= depth]


def summarize(graph: ArchGraph, target: str = "", batch_size: int | None = None,
              optimizer: str = "adam", memory: bool = True) -> Summary:
    """The summary of one linted model, with its training memory measured at `batch_size`
    (default: the example input's own batch) unless `memory` is off. A model whose forward
    cannot run under fake tensors in training mode still gets its table, with a note."""
    from . import memory as measuring

    usage, notes = None, []
    if memory:
        try:
            usage = measuring.measure(graph.model, graph.input_shapes,
                                      [l.dtype for l in graph.inputs], batch_size)
        except Exception as exc:  # a user's forward can fail in any way; the table still stands
            first = " ".join(str(exc).split())[:200]
            notes.append(f"training memory not measured: the forward failed under fake tensors "
                         f"in training mode ({type(exc).__name__}: {first})")
    summary = build(graph, target, usage, optimizer)
    summary.notes.extend(notes)
    return summary
