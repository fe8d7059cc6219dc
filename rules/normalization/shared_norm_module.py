"""N003 shared-norm-module: one BatchNorm module called at several places, mixing their statistics."""
from __future__ import annotations

from collections import defaultdict

from archlint.findings import Fix, Severity
from archlint.graph.ops import BATCH_NORM_TYPES, Kind
from archlint.rule import Rule

from ..helpers import norm_call


class SharedNormModule(Rule):
    code = "N003"
    name = "shared-norm-module"
    severity = Severity.ERROR
    summary = "One BatchNorm module applied to different tensors: its running statistics mix them."
    what = """
        Finds a BatchNorm module (with running statistics) that forward calls more than once on
        tensors from different places: after two different layers, or on a tensor that an earlier
        call of the same BatchNorm already fed (a loop that reuses one block at several depths).
        A module applied the same way to several inputs, as a siamese encoder runs one backbone
        on two images, is left alone: its BatchNorms see the same kind of tensor each time.
        """
    why = """
        BatchNorm keeps one running mean and variance per channel, updated at every call. Two
        call sites with different statistics (features of different layers, or of different
        depths of an unrolled loop) pull those averages back and forth, so at eval time the layer
        normalizes with a blend that matches neither site. The model then behaves differently in
        eval than in training, with no error anywhere. The learned scale and shift are shared
        too, which forces both sites to want the same affine map.
        """
    how_to_fix = """
        Give every call site its own BatchNorm. If the surrounding weights are shared on purpose
        (a recurrent block), keep them shared and create one BatchNorm per step, as recurrent
        batch normalization does. The finding's fix lists the modules to create.
        """
    references = (
        "Ioffe & Szegedy, Batch Normalization, ICML 2015 (running statistics for inference)",
        "Cooijmans et al., Recurrent Batch Normalization, ICLR 2017 (separate statistics per time step)",
    )
    bad = (
        """
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(3, 32, 3, padding=1, bias=False)
                self.conv2 = nn.Conv2d(32, 32, 3, padding=1, bias=False)
                self.bn = nn.BatchNorm2d(32)

            def forward(self, x):
                x = torch.relu(self.bn(self.conv1(x)))
                return torch.relu(self.bn(self.conv2(x)))  # the same BatchNorm again


        model = Net()
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(3, 32, 3, padding=1, bias=False)
                self.conv2 = nn.Conv2d(32, 32, 3, padding=1, bias=False)
                self.bn1 = nn.BatchNorm2d(32)
                self.bn2 = nn.BatchNorm2d(32)

            def forward(self, x):
                x = torch.relu(self.bn1(self.conv1(x)))
                return torch.relu(self.bn2(self.conv2(x)))


        model = Net()
        example_input = torch.randn(1, 3, 32, 32)
        """,
        """
        import torch
        from torch import nn


        class Siamese(nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = nn.Sequential(nn.Conv2d(3, 16, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU())

            def forward(self, a, b):
                return self.encoder(a) - self.encoder(b)  # one encoder on two images of one kind


        model = Siamese()
        example_input = (torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32))
        """,
    )

    def check(self, graph, ctx):
        calls: dict[int, list] = defaultdict(list)
        for layer in graph.modules(*BATCH_NORM_TYPES):
            if layer.module.track_running_stats:
                calls[id(layer.module)].append(layer)
        for members in calls.values():
            if len(members) < 2:
                continue
            reason = self._mixes(graph, members)
            if reason is None:
                continue
            first, module = members[0], members[0].module
            sites = [str(l.called_at) if l.called_at else l.name for l in members]
            sources = [", ".join(self._sources(graph, l)) or "?" for l in members]
            base = first.qualname.rsplit(".", 1)[-1] or "bn"
            code = "\n".join(f"self.{base}_{i + 1} = {norm_call(module)}  # for the call at {site}"
                             for i, site in enumerate(sites))
            yield self.finding(
                first,
                f"{first.op} {first.qualname} is called {len(members)} times ({reason}): its running "
                f"mean and variance average {len(members)} different distributions, and eval mode "
                f"normalizes with a blend that fits none of them",
                evidence={"calls": len(members), "call_sites": sites, "inputs_from": sources,
                          "channels": module.num_features},
                fix=Fix("create one BatchNorm per call site and call each once", code),
            )

    @staticmethod
    def _sources(graph, layer) -> list[str]:
        """The nearest modules (or graph inputs) whose output reaches this call."""
        found = graph.previous_layers(layer, through=lambda l: l.kind not in (Kind.MODULE, Kind.INPUT))
        return sorted({l.qualname if l.kind == Kind.MODULE else "input" for l in found})

    def _mixes(self, graph, members) -> str | None:
        signatures = {tuple(self._sources(graph, l)) for l in members}
        if len(signatures) > 1:
            return "on outputs of different layers"
        for a in members:
            for b in members:
                if a.index < b.index and graph.has_path(a.name, b.name):
                    return "each call feeds the next: one module at several depths"
        return None
