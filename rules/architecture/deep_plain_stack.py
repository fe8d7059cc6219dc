"""A003 deep-plain-stack: a long chain of weighted layers with no skip connection."""
from __future__ import annotations

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph import Layer
from archlint.graph.ops import Kind, is_merge, is_weighted
from archlint.rule import Option, Rule

from ..helpers import data_dependent, is_depthwise, tensor_inputs


class DeepPlainStack(Rule):
    code = "A003"
    name = "deep-plain-stack"
    severity = Severity.WARNING
    summary = "More than 20 weighted layers in a row with no skip connection or merge."
    what = """
        Finds the longest chains of convolutions and Linear layers through which the data
        flows one layer after the other, with no residual addition, concatenation or other
        merge of two branches along the way, and reports a chain longer than
        `max-plain-depth` weighted layers (VGG-16's 16 are allowed). Normalization,
        activation, pooling and reshapes do not count as layers and do not break a chain; a
        depthwise conv and the pointwise conv after it count as one layer.
        """
    why = """
        Plain networks get worse as they get deeper past a point, and not from overfitting:
        He et al. found a 56-layer plain network had higher *training* error than a 20-layer
        one, with batch normalization in both, so not from vanishing gradients either: the
        deeper plain stack is harder to optimize. A skip connection gives every block an
        identity path, so extra blocks only have to learn a correction (or nothing) rather
        than a whole mapping; ResNets train well at 152 layers and beyond.
        """
    how_to_fix = """
        Group the layers into residual blocks (y = x + F(x), with a 1x1 projection on the
        shortcut where shapes change), or make the stack shallower.
        """
    references = (
        "He et al., Deep Residual Learning for Image Recognition, CVPR 2016 (https://arxiv.org/abs/1512.03385)",
        "AI Summer, Intuitive Explanation of Skip Connections in Deep Learning (https://theaisummer.com/skip-connections/)",
    )
    options = {"max-plain-depth": Option(20, "longest allowed chain of weighted layers with no skip or merge")}
    bad = (
        """
        import torch
        from torch import nn

        layers = [nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()]
        for _ in range(24):
            layers += [nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()]
        model = nn.Sequential(*layers)
        example_input = torch.randn(1, 3, 16, 16)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        class Residual(nn.Module):
            def __init__(self, c):
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                          nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))

            def forward(self, x):
                return torch.relu(x + self.body(x))

        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), *[Residual(16) for _ in range(12)])
        example_input = torch.randn(1, 3, 16, 16)
        """,
    )

    def check(self, graph, ctx):
        limit = ctx["max-plain-depth"]
        for count, first, last in longest_plain_chains(graph):
            if count > limit and not _global_residual(graph, first, last):
                yield self._report(graph, count, first, last, limit)

    def _report(self, graph, count, first, last, limit):
        code = _residual_code(first)
        return self.finding(
            last,
            f"{count} weighted layers run in series from {first.qualname} to {last.qualname} with no skip "
            f"connection or merge (limit {limit}): deep plain stacks train worse than shallow ones",
            evidence={"plain_depth": count, "limit": limit, "first": first.qualname, "last": last.qualname},
            fix=Fix("wrap groups of two or three layers in residual blocks (y = x + F(x))", code),
        )


def _sources(graph, layer: Layer) -> set[str]:
    """The nearest weighted layers or inputs at or above `layer`."""
    if is_weighted(layer) or layer.kind == Kind.INPUT:
        return {layer.name}
    return {l.name for l in graph.previous_layers(layer, through=lambda l: not is_weighted(l) and l.kind != Kind.INPUT)}


def _global_residual(graph, first: Layer, last: Layer) -> bool:
    """The whole plain chain is one residual branch: its output is merged (added) with the
    tensor it started from (VDSR, SRVGGNetCompact: out = body(x) + upsample(x)), so the
    gradient reaches every layer through the identity too."""
    start = set()
    for p in graph.predecessors(first):
        start |= _sources(graph, p)
    if not start:
        return False
    merges = [l for l in graph.next_layers(last, through=lambda l: not is_merge(l) and not is_weighted(l)
                                          and l.kind != Kind.OUTPUT) if is_merge(l)]
    for merge in merges:
        for p in graph.predecessors(merge):
            src = _sources(graph, p)
            if src and last.name not in src and src <= start:
                return True
    return False


def _counts_as_layer(layer: Layer) -> bool:
    """Convs and Linear layers; a depthwise conv and the pointwise conv after it count once,
    as the one factorized conv they are (MobileNet)."""
    return is_weighted(layer) and not (layer.kind == Kind.MODULE and is_depthwise(layer.module))


def longest_plain_chains(graph) -> list[tuple[int, Layer, Layer]]:
    """(weighted layers, first, last) of the longest plain chain starting at each chain
    start, found in one pass in execution order: a layer with one data input extends its
    producer's chain, a merge (two or more data inputs) starts a new one."""
    dependent = data_dependent(graph)
    state: dict[str, tuple[int, Layer | None, Layer | None]] = {}
    best: dict[str, tuple[int, Layer, Layer]] = {}
    for layer in graph:
        if layer.name not in dependent:
            continue
        producers = tensor_inputs(graph, layer, dependent)
        count, first, last = state.get(producers[0].name, (0, None, None)) if len(producers) == 1 else (0, None, None)
        if _counts_as_layer(layer):
            count, first, last = count + 1, first or layer, layer
        state[layer.name] = (count, first, last)
        if first is not None and count > best.get(first.name, (0,))[0]:
            best[first.name] = (count, first, last)
    return sorted(best.values(), key=lambda item: -item[0])


def _residual_code(first: Layer) -> str:
    shape = first.out_shape
    if isinstance(first.module, nn.Linear) or not shape or len(shape) < 3:
        width = first.module.out_features if isinstance(first.module, nn.Linear) else 64
        body = "nn.Linear(c, c), nn.ReLU(inplace=True),\n            nn.Linear(c, c)"
    else:
        width, n = shape[1], len(shape) - 2
        body = (f"nn.Conv{n}d(c, c, 3, padding=1, bias=False), nn.BatchNorm{n}d(c), nn.ReLU(inplace=True),\n"
                f"            nn.Conv{n}d(c, c, 3, padding=1, bias=False), nn.BatchNorm{n}d(c)")
    return (
        "class Residual(nn.Module):\n"
        "    def __init__(self, c):\n"
        "        super().__init__()\n"
        f"        self.body = nn.Sequential(\n            {body},\n        )\n\n"
        "    def forward(self, x):\n"
        "        return torch.relu(x + self.body(x))\n\n"
        f"# replace each pair of {width}-wide layers in the chain by Residual({width})"
    )
