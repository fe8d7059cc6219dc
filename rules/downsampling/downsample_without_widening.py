"""D003 downsample-without-widening: a step that shrinks the map without widening the channels after it."""
from __future__ import annotations

import math

from archlint.findings import Fix, Severity
from archlint.graph.ops import (ANY_CONV_TYPES, CONCAT_FUNCTIONS, SUM_FUNCTIONS, TRANSPOSED_CONV_TYPES, Kind,
                                is_call_of, is_pool, is_upsampling)
from archlint.rule import Option, Rule

from ..helpers import as_tuple, conv_call, data_dependent, is_global, reduction, shape_text, spatial


class DownsampleWithoutWidening(Rule):
    code = "D003"
    name = "downsample-without-widening"
    severity = Severity.INFO
    summary = "A stride-2 step in the body keeps the channel count: each later layer does 4x less work."
    what = """
        Finds downsampling steps (a conv or pool with stride > 1) in the body of the network
        after which the widest layer at the new resolution has exactly as many channels as
        the narrowest tensor that fed the step. Comparing the stages on both sides, rather
        than one layer's input and output, keeps it quiet on pools followed by a widening
        conv (VGG), on depthwise convs inside inverted residual blocks that widen as a whole
        (MobileNet, EfficientNet) and on ResNet bottlenecks. Left alone: the stem (steps
        taken while the map is still larger than 1/`stem-stride` of the input, such as
        ResNet's max-pool), global pooling, steps whose output never reaches a conv with a
        kernel above 1 at the new resolution (GoogLeNet's auxiliary heads, MViT's pooled
        attention) or that are upsampled back (gates and other side branches), and steps
        that narrow on purpose (HRNet's lower-resolution branches).
        """
    why = """
        The cost of a conv layer is proportional to H x W x C_in x C_out. Halving H and W
        while keeping C divides every later layer's compute, and its capacity to represent
        features, by four: the network gets thinner exactly where its features become more
        abstract and numerous. VGG and ResNet double the channels whenever they halve the
        resolution, which keeps the time per layer roughly constant from stage to stage
        (He & Sun, Convolutional Neural Networks at Constrained Time Cost).
        """
    how_to_fix = """
        Double the channels when you halve the resolution: let the strided conv (or the first
        conv after the pool) output 2C channels, and widen the rest of the stage to match.
        """
    references = (
        "He & Sun, Convolutional Neural Networks at Constrained Time Cost, CVPR 2015 (https://arxiv.org/abs/1412.1710)",
        "He et al., Deep Residual Learning for Image Recognition, CVPR 2016: 'if the feature map size is halved, the number of filters is doubled'",
        "Simonyan & Zisserman, Very Deep Convolutional Networks (VGG), ICLR 2015",
    )
    options = {"stem-stride": Option(4, "steps taken before the map is this many times smaller than the input count as the stem")}
    bad = (
        """
        import torch
        from torch import nn

        def stage(c, stride):
            return nn.Sequential(nn.Conv2d(c, c, 3, stride=stride, padding=1), nn.BatchNorm2d(c), nn.ReLU())

        model = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=4, padding=1), nn.ReLU(),   # stem
            stage(64, 1), stage(64, 2), stage(64, 1), stage(64, 2), stage(64, 1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        def stage(c_in, c_out, stride):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())

        model = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=4, padding=1), nn.ReLU(),
            stage(64, 64, 1), stage(64, 128, 2), stage(128, 128, 1),
            nn.MaxPool2d(2), stage(128, 256, 1),  # the pool keeps 128, the stage after doubles it
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10),
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
    )

    def check(self, graph, ctx):
        image = spatial(graph.input_shapes[0]) if graph.input_shapes else None
        if image is None:
            return
        dependent = data_dependent(graph)
        for layer in graph:
            if not (is_pool(layer) or layer.is_a(*ANY_CONV_TYPES)) or is_global(layer):
                continue
            if layer.is_a(*TRANSPOSED_CONV_TYPES):
                continue
            factor = reduction(layer)
            before = spatial(layer.in_shape)
            if factor is None or len(before) != len(image):
                continue
            if max(i / b for i, b in zip(image, before)) < ctx["stem-stride"]:
                continue  # still the stem: the input is being reduced cheaply on purpose
            narrowest = _narrowest_feeding(graph, layer, dependent)
            widest, stage_end, spatial_conv = _stage_after(graph, layer)
            if narrowest is None or widest != narrowest:
                continue  # widened (or narrowed on purpose, as HRNet's lower-resolution branches)
            if not spatial_conv:
                continue  # a head or pooled attention: no conv layer works at the new size
            yield self._report(layer, factor, narrowest, widest, stage_end)

    def _report(self, layer, factor, narrowest, widest, stage_end):
        drop = math.prod(factor)
        c_in = layer.in_shape[1]
        if layer.is_a(*ANY_CONV_TYPES):
            conv = layer.module
            code = conv_call(conv, out_channels=2 * conv.out_channels)
            how = f"let this conv output {2 * conv.out_channels} channels and widen the layers after it to match"
        else:
            n = len(factor)
            code = f"nn.Conv{n}d({c_in}, {2 * c_in}, kernel_size=3, padding=1)  # first conv after the pool"
            how = f"let the first conv after the pool output {2 * c_in} channels and widen the stage to match"
        return self.finding(
            layer,
            f"{layer.op} shrinks {shape_text(spatial(layer.in_shape))} to {shape_text(spatial(layer.out_shape))} "
            f"and the layers after it stay at {widest} channels: "
            f"each later layer does {drop}x less work than one before it",
            evidence={"reduction": list(factor), "channels_before": narrowest, "widest_after": widest,
                      "compute_per_layer_drop": drop, "stage_ends_at": stage_end},
            fix=Fix(how, code),
            prefer="built" if layer.kind == Kind.MODULE else "call",
        )


def _narrowest_feeding(graph, layer, dependent: set[str]) -> int | None:
    """The fewest channels on the way into `layer` at its input resolution, walking back
    along single-input layers (an inverted residual's expansion counts from the block's
    narrow input, a bottleneck's strided 3x3 from its reduced width)."""
    size = spatial(layer.in_shape)
    widths = []
    current = layer
    for _ in range(64):  # a block is short; this only bounds a pathological walk
        producers = [p for p in graph.predecessors(current) if p.out_shapes and p.kind != Kind.ATTR
                     and p.name in dependent]
        if len(producers) != 1:
            break
        p = producers[0]
        if spatial(p.out_shape) != size or p.out_shape is None or len(p.out_shape) != len(layer.in_shape):
            break
        widths.append(p.out_shape[1])
        if len([c for c in graph.successors(p) if c.out_shapes]) > 1:
            break  # a fork: the block's input, which a shortcut also reads
        current = p
    return min(widths) if widths else None


# Merges whose output width counts for the stage: a residual sum (`out += shortcut` too), a
# concatenation.
_WIDENING_MERGES = SUM_FUNCTIONS | CONCAT_FUNCTIONS


def _stage_after(graph, start) -> tuple[int, str, bool]:
    """What follows a downsampling step at its new resolution, walking forward from it while
    the map keeps that size: the most channels a conv, pool or merge there produces, the
    last such layer, and whether any conv with a kernel above 1 is among them. A side branch
    that pools further (GhostNetV2's attention gate) leaves the walk; the trunk stays in it.
    Without a spatial conv the step feeds a head (GoogLeNet's auxiliary classifiers pool,
    then project with 1x1 convs) or pooled attention keys and values (MViT), not a stage;
    a map that is upsampled back (GhostNetV2's gate, GC ViT's global queries) is a side
    branch, and counts as having none."""
    size, ndim = spatial(start.out_shape), len(start.out_shape)
    widest, last, spatial_conv = start.out_shape[1], start, False
    seen, frontier = {start.name}, [start]
    while frontier:
        layer = frontier.pop()
        for nxt in graph.successors(layer):
            if is_upsampling(nxt) and spatial(nxt.out_shape) != size:
                return widest, "", False  # brought back up: a gate or attention side branch
            if nxt.name in seen or nxt.out_shape is None or len(nxt.out_shape) != ndim \
                    or spatial(nxt.out_shape) != size:
                continue
            seen.add(nxt.name)
            frontier.append(nxt)
            is_conv = nxt.is_a(*ANY_CONV_TYPES)
            if is_conv or is_pool(nxt) or is_call_of(nxt, _WIDENING_MERGES):
                widest = max(widest, nxt.out_shape[1])
                last = max(last, nxt, key=lambda l: l.index)
            spatial_conv |= is_conv and any(k > 1 for k in as_tuple(nxt.module.kernel_size))
    return widest, last.qualname or last.name, spatial_conv
