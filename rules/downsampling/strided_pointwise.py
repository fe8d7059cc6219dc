"""D002 strided-pointwise: a 1x1 conv with stride > 1, which reads one of every stride^2 positions."""
from __future__ import annotations

import math

from archlint.findings import Fix, Severity
from archlint.graph.ops import (ANY_CONV_TYPES, ATTENTION_FUNCTIONS, LINEAR_FUNCTIONS,
                                MATMUL_FUNCTIONS, SUM_FUNCTIONS, TRANSPOSED_CONV_TYPES, Kind,
                                is_call_of, keeps_linearity)
from archlint.rule import Rule

from ..helpers import as_tuple, conv_call, spatial, square


class StridedPointwise(Rule):
    code = "D002"
    name = "strided-pointwise"
    severity = Severity.WARNING
    summary = "A 1x1 conv with stride > 1 reads only one of every stride^2 input positions."
    what = """
        Finds convolutions whose kernel is 1 along every axis and whose stride is above 1,
        typically the projection shortcut of a ResNet stage (`downsample.0`). The finding
        counts how many input positions the layer never looks at. A strided 1x1 branch that
        is summed with a kxk conv of the same input and stride (RepVGG, MobileOne) is left
        alone: it is the centre tap of that kernel, and the two fold into one kxk conv. So is
        a strided query projection in attention (HaloNet), whose keys and values read every
        position.
        """
    why = """
        A 1x1 kernel with stride 2 samples the grid: it reads the top-left value of each 2x2
        cell and ignores the other three, so 75% of the activations reaching it contribute
        nothing to its output and get no gradient through it. In a ResNet this is the only
        path from one stage to the next that is not a stack of convolutions, so the shortcut
        carries a quarter of the information it could. He et al. (Bag of Tricks, ResNet-D)
        average-pool before the 1x1 conv instead, which raised ResNet-50's ImageNet top-1
        accuracy (by about 0.3%, on top of their other stem and block tweaks) for a
        negligible amount of extra compute.
        """
    how_to_fix = """
        Average-pool with the stride first, then apply the 1x1 conv with stride 1 (ResNet-D);
        or make the conv 3x3 with the same stride so its windows cover every input position.
        """
    references = (
        "He et al., Bag of Tricks for Image Classification with Convolutional Neural Networks (ResNet-D), CVPR 2019 (https://arxiv.org/abs/1812.01187)",
        "timm resnet50d: avg_down=True shortcut (https://github.com/huggingface/pytorch-image-models)",
    )
    options = {}
    bad = (
        """
        import torch
        from torch import nn

        class Block(nn.Module):
            def __init__(self, c_in, c_out):
                super().__init__()
                self.body = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                    nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                )
                self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out))

            def forward(self, x):
                return torch.relu(self.body(x) + self.shortcut(x))

        model = Block(32, 64)
        example_input = torch.randn(1, 32, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        class Block(nn.Module):
            def __init__(self, c_in, c_out):
                super().__init__()
                self.body = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                    nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                )
                self.shortcut = nn.Sequential(  # ResNet-D: pool, then project
                    nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False),
                    nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
                )

            def forward(self, x):
                return torch.relu(self.body(x) + self.shortcut(x))

        model = Block(32, 64)
        example_input = torch.randn(1, 32, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        for layer in graph.modules(*ANY_CONV_TYPES):
            conv = layer.module
            if isinstance(conv, TRANSPOSED_CONV_TYPES):
                continue
            kernel, stride = as_tuple(conv.kernel_size), as_tuple(conv.stride)
            if any(k != 1 for k in kernel) or all(s == 1 for s in stride):
                continue
            size = spatial(layer.in_shape)
            if size is not None and all(s == 1 for s in size):
                continue  # a 1x1 map has nothing to skip
            if _reparameterizable(graph, layer) or _is_attention_query(graph, layer):
                continue
            n = len(kernel)
            step = math.prod(stride)
            pool_stride = square(conv.stride) if square(conv.stride) is not None else tuple(stride)
            code = (f"nn.Sequential(\n    nn.AvgPool{n}d({pool_stride}, {pool_stride}, ceil_mode=True, "
                    f"count_include_pad=False),\n    {conv_call(conv, stride=(1,) * n)},\n)")
            yield self.finding(
                layer,
                f"1x1 conv with stride {_compact(stride)} ({conv.in_channels}->{conv.out_channels} channels) "
                f"reads 1 of every {step} input positions and ignores the other {step - 1} "
                f"({1 - 1 / step:.0%} of its input)",
                evidence={"stride": list(stride), "in_channels": conv.in_channels,
                          "out_channels": conv.out_channels, "positions_read": round(1 / step, 4),
                          "positions_ignored": round(1 - 1 / step, 4),
                          "in_size": list(size) if size else None},
                fix=Fix("average-pool with the stride, then apply the 1x1 conv with stride 1 (ResNet-D); "
                        "or use a 3x3 kernel with the same stride", code),
            )


def _data_producers(graph, layer) -> set[str]:
    return {p.name for p in graph.predecessors(layer) if p.out_shapes and p.kind != Kind.ATTR}


def _reparameterizable(graph, pointwise) -> bool:
    """A strided 1x1 branch summed with a strided kxk conv of the same input (RepVGG,
    MobileOne, FastViT): the 1x1 is the kxk kernel's centre tap, the pair folds into one kxk
    conv at inference, and that conv reads every position."""
    source = _data_producers(graph, pointwise)
    stride = as_tuple(pointwise.module.stride)
    frontier, seen = [pointwise], set()
    for _ in range(8):  # the branches meet within a few adds
        merges = [l for start in frontier for l in graph.next_layers(start, through=keeps_linearity)
                  if is_call_of(l, SUM_FUNCTIONS) and l.name not in seen]
        if not merges:
            return False
        for merge in merges:
            seen.add(merge.name)
            for other in graph.predecessors(merge):
                candidates = [other] if not keeps_linearity(other) else \
                    graph.previous_layers(other, through=keeps_linearity)
                for conv in candidates:
                    if (conv is not pointwise and conv.is_a(*ANY_CONV_TYPES)
                            and any(k > 1 for k in as_tuple(conv.module.kernel_size))
                            and as_tuple(conv.module.stride) == stride
                            and _data_producers(graph, conv) & source):
                        return True
        frontier = merges
    return False


# The products of two activations that attention computes (a Linear's addmm is not one).
_ATTENTION_PRODUCTS = (MATMUL_FUNCTIONS - LINEAR_FUNCTIONS) | ATTENTION_FUNCTIONS


def _is_attention_query(graph, pointwise) -> bool:
    """A strided 1x1 projection that reshapes into an attention product (HaloNet's strided
    queries): it picks which positions ask; the keys and values read every position."""
    reached = graph.next_layers(pointwise, through=keeps_linearity)
    return any(is_call_of(l, _ATTENTION_PRODUCTS) for l in reached)


def _compact(stride) -> str:
    return str(stride[0]) if len(set(stride)) == 1 else str(tuple(stride))
