"""D001 pool-downsampling: a pooling layer that downsamples where a strided conv could learn to."""
from __future__ import annotations

import math

from archlint.findings import Fix, Severity
from archlint.graph.ops import ANY_CONV_TYPES, Kind, is_avg_pool, is_pool
from archlint.rule import Option, Rule

from ..helpers import (as_tuple, conv_weights, human, is_generative, is_global, norm_and_activation, reduction, shape_text,
                       spatial)


class PoolDownsampling(Rule):
    code = "D001"
    name = "pool-downsampling"
    severity = Severity.INFO
    summary = "A pooling layer shrinks the feature map where a learned strided conv could."
    what = """
        Finds max, average and adaptive pooling that makes the feature map smaller (a stride
        above 1). Global pooling to one position per channel (a classifier head) is left
        alone, and so is an average pool that feeds straight into a 1x1 conv (the ResNet-D
        shortcut, the fix D002 recommends). In a generative model the finding is a warning:
        one with an upsampling decoder (transposed convs, or nn.Upsample/interpolate with a
        conv after) whose input is a latent code or whose output has the input's channels
        and size (GAN generators, autoencoders, VAEs, image-to-image models). Segmentation
        models, which decode to class maps, stay at information.
        """
    why = """
        A pooling layer throws away a fixed share of what it sees (three of every four values
        for a 2x2 max-pool) by a rule nobody trained. Springenberg et al. replaced every
        pooling layer by a conv with stride 2 and matched or beat the pooled networks on
        CIFAR-10 and CIFAR-100: the network learns how to summarize a neighbourhood instead
        of being told. In generative models (GANs, VAEs,
        decoders) the difference is larger: max-pooling sends gradient to one input in four,
        and DCGAN-style models train more stably with strided convs throughout. In a
        classifier this is a matter of taste, hence only information.
        """
    how_to_fix = """
        Replace the pool by a 3x3 conv with stride 2 (with its norm and activation), or give
        the conv before the pool the stride and delete the pool. The strided conv costs
        parameters (9C^2 for C channels); the evidence gives the count.
        """
    references = (
        "Springenberg et al., Striving for Simplicity: The All Convolutional Net, ICLR 2015 workshop (https://arxiv.org/abs/1412.6806)",
        "CS231n, Convolutional Networks: 'Getting rid of pooling' (https://cs231n.github.io/convolutional-networks/)",
        "Radford et al., Unsupervised Representation Learning with Deep Convolutional GANs (DCGAN), ICLR 2016",
    )
    options = {"warn-in-decoders": Option(True, "report as a warning in generative models (autoencoders, VAEs, generators)")}
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
        """
        import torch
        from torch import nn

        class AutoEncoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.encode = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
                self.decode = nn.Sequential(nn.ConvTranspose2d(32, 3, 2, stride=2), nn.Sigmoid())

            def forward(self, x):
                return self.decode(self.encode(x))

        model = AutoEncoder()
        example_input = torch.randn(1, 3, 64, 64)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),  # global pooling: fine
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
    )

    def check(self, graph, ctx):
        generative = ctx["warn-in-decoders"] and is_generative(graph)
        for layer in graph:
            if not is_pool(layer) or is_global(layer):
                continue
            factor = reduction(layer)
            if factor is None:
                continue
            if is_avg_pool(layer) and _feeds_only_pointwise(graph, layer):
                continue
            n = _dims(layer)
            c = layer.in_shape[1]
            stride = max(factor)
            norm, act = norm_and_activation(graph, layer)
            conv_params = conv_weights(_strided_window(factor)[0], c, c, bias=norm is None)
            where = "in a generative model (it decodes back to an image)" if generative else ""
            yield self.finding(
                layer,
                f"{layer.op} shrinks {shape_text(spatial(layer.in_shape))} to "
                f"{shape_text(spatial(layer.out_shape))} by a fixed rule {where}".rstrip()
                + f"; a stride-{stride} conv would learn the downsampling (+{human(conv_params)} weights)",
                evidence={"pool": layer.op, "channels": c, "reduction": list(factor),
                          "in_size": list(spatial(layer.in_shape)), "out_size": list(spatial(layer.out_shape)),
                          "values_kept": round(1 / math.prod(factor), 3),
                          "params_added": conv_params, "generative_model": generative},
                fix=Fix(f"replace the pool by a {stride}x-strided conv (or move the stride into the conv "
                        "before it and delete the pool)",
                        _strided_conv(n, c, tuple(factor), norm, act)),
                severity=Severity.WARNING if generative else None,
                prefer="built" if layer.kind == Kind.MODULE else "call",
            )


def _dims(layer) -> int:
    return len(spatial(layer.in_shape) or (0, 0))


def _feeds_only_pointwise(graph, layer) -> bool:
    """An average pool whose only consumer is a 1x1 conv: the ResNet-D projection shortcut,
    which is exactly what D002 recommends."""
    after = graph.successors(layer)
    return (len(after) == 1 and after[0].is_a(*ANY_CONV_TYPES)
            and all(k == 1 for k in as_tuple(after[0].module.kernel_size)))


def _strided_window(factor: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Kernel and padding of a conv that downsamples by `factor` per axis: 3x3 with padding
    1 for a factor of 2 (overlapping windows, as in ResNet), a non-overlapping patch otherwise."""
    kernel = tuple(3 if f == 2 else f for f in factor)
    padding = tuple(1 if f == 2 else 0 for f in factor)
    return kernel, padding


def _strided_conv(n: int, c: int, factor: tuple[int, ...], norm: str | None, act: str) -> str:
    """The strided conv, with the norm and activation the model uses after its own convs (none
    in a norm-free net such as LeNet: then the conv keeps its bias)."""
    kernel, padding = _strided_window(factor)
    one = lambda v: str(v[0]) if len(set(v)) == 1 else str(tuple(v))  # noqa: E731
    conv = (f"nn.Conv{n}d({c}, {c}, kernel_size={one(kernel)}, stride={one(factor)}, "
            f"padding={one(padding)}{', bias=False' if norm else ''})")
    return "nn.Sequential(\n" + "".join(f"    {part},\n" for part in (conv, norm, act) if part) + ")"
