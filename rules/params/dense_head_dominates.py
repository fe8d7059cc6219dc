"""P001 dense-head-dominates: a fully connected layer on a flattened map that holds most of the weights."""
from __future__ import annotations

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph import Layer
from archlint.graph.ops import FLATTEN_FUNCTIONS, is_call_of, is_dropout, is_identity
from archlint.rule import Option, Rule

from ..helpers import data_dependent, human, shape_text, tensor_inputs


class DenseHeadDominates(Rule):
    code = "P001"
    name = "dense-head-dominates"
    severity = Severity.WARNING
    summary = "A Linear layer on a flattened feature map holds most of the model's parameters."
    what = """
        Finds a fully connected layer whose input is a flattened C x H x W feature map (not
        one pooled to C values first) and which holds more than `max-share` of all the
        model's parameters.
        """
    why = """
        Flattening a 512 x 7 x 7 map gives 25,088 inputs, so a Linear layer to 4,096 units
        needs 103M weights: three quarters of VGG-16 sits in that one layer. Those weights
        memorize where on the map a feature appeared, which is what overfits, and they tie the
        model to one input size. Network in Network and GoogLeNet average each channel over
        the map first (global average pooling): the head then needs H x W times fewer weights,
        accepts any input size, and lost no accuracy in their experiments (GoogLeNet reports
        +0.6% top-1 from the switch).
        """
    how_to_fix = """
        Pool globally before the classifier: nn.AdaptiveAvgPool2d(1), nn.Flatten(), then a
        Linear from C features. The finding gives the replacement with this layer's sizes and
        the parameter count after.
        """
    references = (
        "Lin et al., Network In Network, ICLR 2014 (global average pooling) (https://arxiv.org/abs/1312.4400)",
        "Szegedy et al., Going Deeper with Convolutions (GoogLeNet), CVPR 2015",
        "CS231n, Convolutional Networks: case studies, VGGNet parameter count (https://cs231n.github.io/convolutional-networks/)",
    )
    options = {"max-share": Option(0.5, "largest share of all parameters one flattened-input Linear may hold")}
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 16 * 16, 256), nn.ReLU(),
            nn.Linear(256, 10),
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(64, 256), nn.ReLU(),
            nn.Linear(256, 10),
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
    )

    def check(self, graph, ctx):
        total = graph.params
        if not total:
            return
        for layer in graph.modules(nn.Linear):
            share = layer.params / total
            if share <= ctx["max-share"]:
                continue
            flatten = _flattened_map(graph, layer)
            if flatten is None:
                continue
            linear = layer.module
            channels = flatten.in_shape[1]
            bias = linear.bias is not None
            head_after = channels * linear.out_features + (linear.out_features if bias else 0)
            total_after = total - layer.params + head_after
            n = len(flatten.in_shape) - 2
            code = (f"nn.AdaptiveAvgPool{n}d(1),\nnn.Flatten(),\n"
                    f"nn.Linear({channels}, {linear.out_features}{'' if bias else ', bias=False'}),")
            yield self.finding(
                layer,
                f"Linear on a flattened {shape_text(flatten.in_shape[1:])} map holds {human(layer.params)} "
                f"weights, {share:.0%} of the model; pooling to {channels} features first needs "
                f"{human(head_after)} (model: {human(total)} -> {human(total_after)})",
                evidence={"params": layer.params, "share": round(share, 4), "model_params": total,
                          "flattened": list(flatten.in_shape[1:]), "params_after": head_after,
                          "model_params_after": total_after},
                fix=Fix(f"average-pool the map globally before the classifier and feed {channels} "
                        f"features to the Linear", code),
            )


def _flattened_map(graph, layer: Layer) -> Layer | None:
    """The flatten (or view/reshape) that turned a feature map into this Linear's input,
    walking back over dropout and identities: None when the input was pooled first."""
    dependent = data_dependent(graph)
    current = layer
    for _ in range(8):
        producers = tensor_inputs(graph, current, dependent)
        if len(producers) != 1:
            return None
        p = producers[0]
        flattens = p.is_a(nn.Flatten) or is_call_of(p, FLATTEN_FUNCTIONS)
        if flattens:
            shape = p.in_shape
            if shape is None or len(shape) < 3 or _positions(shape) <= 1:
                return None
            return p
        if not (is_dropout(p) or is_identity(p)):
            return None
        current = p
    return None


def _positions(shape) -> int:
    total = 1
    for s in shape[2:]:
        total *= s
    return total
