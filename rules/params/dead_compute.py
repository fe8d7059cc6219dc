"""P004 dead-compute: layers forward runs whose results never reach the model's output."""
from __future__ import annotations

from archlint.findings import Fix, Severity
from archlint.graph import Layer
from archlint.graph.ops import Kind
from archlint.graph.weights import has_buffers
from archlint.rule import Option, Rule

from ..helpers import human


class DeadCompute(Rule):
    code = "P004"
    name = "dead-compute"
    severity = Severity.WARNING
    summary = "Forward computes layers whose results never reach any output of the model."
    what = """
        Finds operations of the traced forward pass from which no path of data leads to any of
        the model's outputs: a branch computed and then never used, a head whose result is
        overwritten, a feature map kept in a variable nobody reads. It reports each dead branch
        once, at the first layer of it, with the multiply-accumulates and the parameters it
        wastes, when they reach `min-macs`. Operations that write a tensor in place, or whose
        output is a view of another tensor, act through that tensor and are counted as used,
        as is everything feeding them; so are modules that hold buffers (a BatchNorm's running
        statistics are updated by the call itself). Unlike P003 (weights never used), the layer
        here does run, every step.
        """
    why = """
        A dead branch costs its full compute and activation memory in every training and
        inference step for nothing; its weights get no gradient (under DistributedDataParallel
        that stops training unless find_unused_parameters=True), and the optimizer still keeps
        state for them. It is usually a bug: a result assigned to the wrong variable, a
        forgotten `return`, a concatenation that left one branch out, so the architecture that
        trains is not the one that was designed.
        """
    how_to_fix = """
        Use the result (add or concatenate the branch where it was meant to go, return it), or
        delete the computation from forward and, if nothing else uses them, its layers from
        `__init__`.
        """
    references = (
        "PyTorch docs, torch.fx: dead code elimination, Graph.eliminate_dead_code (https://pytorch.org/docs/stable/fx.html#torch.fx.Graph.eliminate_dead_code)",
        "PyTorch docs, DistributedDataParallel: find_unused_parameters (https://pytorch.org/docs/stable/generated/torch.nn.parallel.DistributedDataParallel.html)",
    )
    options = {"min-macs": Option(1, "the fewest wasted multiply-accumulates (or parameters) worth a finding")}
    bad = (
        """
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.stem = nn.Conv2d(3, 16, 3, padding=1)
                self.branch = nn.Conv2d(16, 16, 3, padding=1)
                self.head = nn.Conv2d(16, 10, 1)

            def forward(self, x):
                x = torch.relu(self.stem(x))
                y = torch.relu(self.branch(x))   # computed, never used: meant x = x + y
                return self.head(x)

        model = Net()
        example_input = torch.randn(1, 3, 16, 16)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.stem = nn.Conv2d(3, 16, 3, padding=1)
                self.branch = nn.Conv2d(16, 16, 3, padding=1)
                self.bn = nn.BatchNorm2d(16)
                self.head = nn.Conv2d(16, 10, 1)

            def forward(self, x):
                x = torch.relu(self.stem(x))
                x = x + torch.relu(self.branch(x))
                x.mul_(0.5)                      # in place: acts through x
                return self.head(self.bn(x))

        model = Net()
        example_input = torch.randn(1, 3, 16, 16)
        """,
    )

    def check(self, graph, ctx):
        if not graph.outputs:
            return
        live = live_layers(graph)
        dead = [l for l in graph if l.name not in live and l.kind not in (Kind.INPUT, Kind.ATTR, Kind.OUTPUT)]
        dead_names = {l.name for l in dead}
        live_modules = {id(l.module) for l in graph if l.name in live and l.module is not None}
        for start in dead:
            if any(p.name in dead_names for p in graph.predecessors(start)):
                continue  # inside a dead branch reported at its first layer
            region = _descendants(graph, start)
            macs = sum(l.macs for l in region)
            modules = {id(l.module): l.module for l in region if l.module is not None
                       and id(l.module) not in live_modules}
            params = sum(p.numel() for m in modules.values() for p in m.parameters())
            if max(macs, params) < ctx["min-macs"]:
                continue
            named = [l.qualname for l in region if l.kind == Kind.MODULE]
            what = start.qualname if start.kind == Kind.MODULE else f"{start.op} in {start.qualname or 'forward'}"
            frame = start.frame("call")
            line = f" (line {frame.line})" if frame is not None else ""
            yield self.finding(
                start,
                f"the result of {what}{line} reaches no output of the model: {len(region)} operations "
                f"({human(macs)} MACs, {human(params)} parameters) are computed and thrown away on every step",
                evidence={"macs": macs, "params": params, "operations": len(region),
                          "modules": named[:20]},
                fix=Fix("use the result where it was meant to go, or delete the computation",
                        f"# forward{line}: use the result of {what}, or remove it"
                        + (f" and, if unused elsewhere, {', '.join(named[:5])} from __init__" if named else "")),
                prefer="call",
            )


def live_layers(graph) -> set[str]:
    """Names of the layers whose results reach an output, directly or through a tensor they
    write in place or alias, or whose call updates buffers (BatchNorm's running statistics)."""
    live: set[str] = set()
    frontier = [l for l in graph if l.kind == Kind.OUTPUT or l.writes or
                (l.alias_of and l.alias_of != l.name) or
                (l.kind == Kind.MODULE and has_buffers(l.module))]
    while frontier:
        layer = frontier.pop()
        if layer.name in live:
            continue
        live.add(layer.name)
        frontier.extend(graph.predecessors(layer))
    return live


def _descendants(graph, start: Layer) -> list[Layer]:
    seen, frontier, out = {start.name}, [start], [start]
    while frontier:
        for nxt in graph.successors(frontier.pop()):
            if nxt.name not in seen:
                seen.add(nxt.name)
                frontier.append(nxt)
                out.append(nxt)
    return sorted(out, key=lambda l: l.index)
