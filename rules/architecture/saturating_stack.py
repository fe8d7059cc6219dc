"""A005 saturating-stack: many weighted layers in a row activated by sigmoid or tanh, with no norm or skip."""
from __future__ import annotations

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph import Layer
from archlint.graph.ops import (ACTIVATION_TYPES, Kind, is_call_of, is_norm, is_softmax,
                                is_weighted)
from archlint.rule import Option, Rule

from ..helpers import conv_call, data_dependent, tensor_inputs

_SATURATING_TYPES = (nn.Sigmoid, nn.Tanh)
_SATURATING_FUNCTIONS = frozenset({"sigmoid", "sigmoid_", "tanh", "tanh_"})
# Other activations, as calls: they end a saturating chain.
_OTHER_ACTIVATION_FUNCTIONS = frozenset({
    "relu", "relu_", "relu6", "gelu", "silu", "silu_", "leaky_relu", "leaky_relu_", "elu", "selu",
    "celu", "hardswish", "mish", "softplus", "prelu", "glu"})


class SaturatingStack(Rule):
    code = "A005"
    name = "saturating-stack"
    severity = Severity.WARNING
    summary = "A deep chain of layers activated by sigmoid or tanh, with no normalization or skip: gradients vanish."
    what = """
        Finds chains of at least `min-depth` (6) convolutions or Linear layers that run one
        after another, each activated by a Sigmoid or Tanh, with no normalization, no other
        activation, and no residual addition, concatenation or other merge anywhere along the
        chain. Reshapes, dropout and pooling do not break a chain. Gates (a sigmoid multiplied
        into another branch, as in squeeze-and-excitation or an LSTM cell) are merges and are
        left alone.
        """
    why = """
        The derivative of the sigmoid is at most 0.25 and that of tanh at most 1, below 1 as
        soon as a unit leaves zero. Backpropagation multiplies one such factor per layer, so
        the gradient reaching the first layers shrinks geometrically with depth: with PyTorch's
        default initialization, an 8-deep tanh MLP's first layer gets a gradient more than ten
        times smaller than its last, and a sigmoid one a million times smaller. The first layers
        barely learn. Glorot and Bengio traced the difficulty of training deep sigmoid and tanh
        networks to exactly this saturation; ReLU-family activations, normalization layers and
        skip connections are the fixes that made deep networks trainable.
        """
    how_to_fix = """
        Use a non-saturating activation (ReLU, GELU, SiLU) in the hidden layers; or put a
        normalization layer (LayerNorm for Linear stacks, BatchNorm for convs) between each
        weighted layer and its activation; or add residual connections. If tanh must stay,
        initialize with nn.init.xavier_uniform_ and a tanh gain. The finding's fix shows the
        last layer of the chain followed by its norm.
        """
    references = (
        "Glorot, Bengio, Understanding the difficulty of training deep feedforward neural networks, AISTATS 2010 (https://proceedings.mlr.press/v9/glorot10a.html)",
        "Hochreiter, The vanishing gradient problem during learning recurrent neural nets and problem solutions, 1998",
        "Ioffe, Szegedy, Batch Normalization, ICML 2015 (https://arxiv.org/abs/1502.03167)",
        "PyTorch docs, torch.nn.init.calculate_gain: tanh 5/3 (https://pytorch.org/docs/stable/nn.init.html)",
    )
    options = {"min-depth": Option(6, "the shortest chain of sigmoid/tanh-activated weighted layers reported")}
    bad = (
        """
        import torch
        from torch import nn

        layers = [nn.Flatten()]
        widths = [784, 256, 256, 256, 256, 256, 256, 256]
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        model = nn.Sequential(*layers, nn.Linear(256, 10))
        example_input = torch.randn(2, 1, 28, 28)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        layers = [nn.Flatten()]
        widths = [784, 256, 256, 256, 256, 256, 256, 256]
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.Tanh()]   # normalized before the tanh
        model = nn.Sequential(*layers, nn.Linear(256, 10))
        example_input = torch.randn(2, 1, 28, 28)
        """,
    )

    def check(self, graph, ctx):
        limit = ctx["min-depth"]
        for count, first, last in saturating_chains(graph):
            if count >= limit:
                yield self._report(count, first, last, limit)

    def _report(self, count: int, first: Layer, last: Layer, limit: int):
        code = _normed_code(last)
        return self.finding(
            last,
            f"{count} weighted layers from {first.qualname} to {last.qualname} are each activated by "
            f"sigmoid or tanh with no normalization or skip between them (reported from {limit}): the "
            "gradient shrinks at every layer and the first ones barely learn",
            evidence={"saturating_depth": count, "min_depth": limit, "first": first.qualname,
                      "last": last.qualname},
            fix=Fix("put a norm between each weighted layer and its sigmoid/tanh (shown for the "
                    "last one), use ReLU or GELU, or add residual connections", code),
        )


def _state_after(layer: Layer) -> str:
    """What a layer does to a chain: 'weighted', 'saturate', 'break' or 'pass'."""
    if is_weighted(layer):
        return "weighted"
    if layer.kind == Kind.MODULE:
        if isinstance(layer.module, _SATURATING_TYPES):
            return "saturate"
        if isinstance(layer.module, ACTIVATION_TYPES) or is_norm(layer):
            return "break"
        return "pass"
    if is_call_of(layer, _SATURATING_FUNCTIONS):
        return "saturate"
    if is_call_of(layer, _OTHER_ACTIVATION_FUNCTIONS) or is_norm(layer) or is_softmax(layer):
        return "break"
    return "pass"


def saturating_chains(graph) -> list[tuple[int, Layer, Layer]]:
    """(layers, first, last) of the longest chain of sigmoid/tanh-activated weighted layers
    from each chain start, in one pass in execution order: a layer with one data input carries
    its producer's chain on, a merge starts afresh."""
    dependent = data_dependent(graph)
    # name -> (count, first, last confirmed, weighted layer awaiting its activation)
    state: dict[str, tuple[int, Layer | None, Layer | None, Layer | None]] = {}
    best: dict[str, tuple[int, Layer, Layer]] = {}
    empty = (0, None, None, None)
    for layer in graph:
        if layer.name not in dependent:
            continue
        producers = tensor_inputs(graph, layer, dependent)
        count, first, last, pending = state.get(producers[0].name, empty) if len(producers) == 1 else empty
        step = _state_after(layer)
        if step == "weighted":
            if pending is not None:  # two weighted layers with no activation: start over here
                count, first, last = 0, None, None
            pending = layer
        elif step == "saturate":
            if pending is not None:
                count, first, last, pending = count + 1, first or pending, pending, None
        elif step == "break":
            count, first, last, pending = empty
        state[layer.name] = (count, first, last, pending)
        if first is not None and count > best.get(first.name, (0,))[0]:
            best[first.name] = (count, first, last)
    return sorted(best.values(), key=lambda item: -item[0])


def _normed_code(layer: Layer) -> str | None:
    module = layer.module
    if isinstance(module, nn.Linear):
        return f"nn.Sequential(nn.Linear({module.in_features}, {module.out_features}), nn.LayerNorm({module.out_features}))"
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        n = len(module.kernel_size)
        return f"nn.Sequential({conv_call(module, bias=False)}, nn.BatchNorm{n}d({module.out_channels}))"
    return None
