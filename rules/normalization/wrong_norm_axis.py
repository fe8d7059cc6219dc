"""N005 wrong-norm-axis: a LayerNorm over the width (or height and width) of an N x C x H x W map."""
from __future__ import annotations

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph import Layer
from archlint.graph.ops import (ACTIVATION_TYPES, Kind, is_call_of, is_conv, is_dropout,
                                is_identity, is_norm, is_pool, is_upsampling)
from archlint.rule import Rule

from ..helpers import shape_text

# Calls that keep a conv map's N x C x H x W layout: elementwise math and copies.
_KEEPS_LAYOUT_FUNCTIONS = frozenset({
    "relu", "relu_", "relu6", "gelu", "silu", "silu_", "sigmoid", "tanh", "leaky_relu", "elu",
    "hardswish", "hardsigmoid", "mish", "add", "add_", "iadd", "sub", "mul", "mul_", "div",
    "contiguous", "clone", "to", "float", "half", "type", "pad", "constant_pad_nd"})


class WrongNormAxis(Rule):
    code = "N005"
    name = "wrong-norm-axis"
    severity = Severity.WARNING
    summary = "A LayerNorm on a conv's N x C x H x W map normalizes the width, not the channels."
    what = """
        Finds nn.LayerNorm layers and F.layer_norm calls whose input is a conv's (or pool's, or
        upsampler's) map in its N x C x H x W layout (N x C x L for 1-D convs), reached through
        activations, adds and other elementwise ops only, and whose normalized_shape is the
        trailing spatial sizes, (W,) or (H, W), rather than including the channels. Quiet when
        the map was permuted channels-last first (ConvNeXt's LayerNorm2d, Swin), on
        transformer tokens (N x L x D), and when the norm covers (C, H, W) as a whole.
        """
    why = """
        LayerNorm normalizes over the trailing dimensions given by normalized_shape. On an
        N x C x H x W tensor, LayerNorm(W) standardizes each row of pixels, per channel, across
        the width: every row of every channel gets mean 0 and variance 1, which erases the
        horizontal intensity differences the conv detected and treats the two image axes
        differently, and the learned scale and shift belong to column positions instead of to
        channels, so the model only accepts inputs of that exact width. The intent, as in
        ConvNeXt's LayerNorm2d, is to normalize each pixel's C features. The shapes line up
        only by chance (often C = W, or a fixed input size), so nothing fails.
        """
    how_to_fix = """
        Normalize over the channels: permute to channels-last, apply LayerNorm(C), and permute
        back (ConvNeXt's and timm's LayerNorm2d do exactly that), or use nn.GroupNorm(1, C),
        which normalizes each sample over all of C x H x W with a per-channel scale and shift and
        needs no permute. The finding's fix prints the GroupNorm.
        """
    references = (
        "PyTorch docs, LayerNorm: 'over the last D dimensions, where D is the dimension of normalized_shape' (https://pytorch.org/docs/stable/generated/torch.nn.LayerNorm.html)",
        "Liu et al., A ConvNet for the 2020s (ConvNeXt), CVPR 2022: LayerNorm over channels, channels_last (https://github.com/facebookresearch/ConvNeXt/blob/main/models/convnext.py)",
        "Wu, He, Group Normalization, ECCV 2018: GroupNorm with one group is LayerNorm over C, H, W",
    )
    options = {}
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.LayerNorm(32),              # the map is 32 wide: this normalizes each row of pixels
            nn.GELU(),
            nn.Conv2d(32, 32, 3, padding=1),
        )
        example_input = torch.randn(2, 3, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        class LayerNorm2d(nn.LayerNorm):
            def forward(self, x):
                return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            LayerNorm2d(32),               # ConvNeXt: channels-last, then LayerNorm(C)
            nn.GELU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.GroupNorm(1, 32),
        )
        example_input = torch.randn(2, 3, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        for layer in graph:
            normalized = _normalized_shape(layer)
            shape = layer.in_shape
            if normalized is None or shape is None or len(shape) < 3:
                continue
            if tuple(shape[-len(normalized):]) != normalized or len(normalized) >= len(shape) - 1:
                continue  # torch would refuse it, or the norm includes the channels
            maps = _conv_maps(graph, layer)
            if not maps:
                continue
            channels = shape[1]
            names = {3: ("L",), 4: ("H", "W"), 5: ("D", "H", "W")}.get(len(shape))
            if names is None:
                continue
            axes = names[-len(normalized):]
            code = f"nn.GroupNorm(1, {channels})"
            if layer.kind == Kind.MODULE and layer.module.elementwise_affine is False:
                code = f"nn.GroupNorm(1, {channels}, affine=False)"
            yield self.finding(
                layer,
                f"LayerNorm({', '.join(map(str, normalized))}) on the {shape_text(shape[1:])} map of "
                f"{maps[0].qualname or maps[0].op} (C x {' x '.join(names)}) "
                f"normalizes over {' x '.join(axes)}, not over the {channels} channels",
                evidence={"normalized_shape": list(normalized), "input_shape": list(shape),
                          "channels": channels, "axes": list(axes), "map_from": maps[0].qualname},
                fix=Fix(f"normalize over the channels: nn.GroupNorm(1, {channels}), or permute to "
                        f"channels-last around a LayerNorm({channels}) as ConvNeXt's LayerNorm2d does",
                        code if layer.kind == Kind.MODULE else None),
            )


def _normalized_shape(layer: Layer) -> tuple[int, ...] | None:
    if layer.kind == Kind.MODULE:
        if isinstance(layer.module, nn.LayerNorm) and type(layer.module).forward is nn.LayerNorm.forward:
            return tuple(layer.module.normalized_shape)
        return None
    if is_call_of(layer, {"layer_norm"}):
        value = layer.kwargs.get("normalized_shape", layer.args[1] if len(layer.args) > 1 else None)
        if isinstance(value, int):
            return (value,)
        if isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value):
            return tuple(value)
    return None


def _keeps_layout(layer: Layer) -> bool:
    if layer.kind == Kind.MODULE:
        return isinstance(layer.module, ACTIVATION_TYPES) or is_identity(layer) or is_dropout(layer) \
            or (is_norm(layer) and not isinstance(layer.module, nn.LayerNorm))
    return is_call_of(layer, _KEEPS_LAYOUT_FUNCTIONS) or is_dropout(layer)


def _conv_maps(graph, layer: Layer) -> list[Layer]:
    """The convs, pools or upsamplers whose N x C x ... map reaches `layer` unpermuted; empty
    when any path to it passes a reshape, permute or anything else."""
    found = graph.previous_layers(layer, through=_keeps_layout)
    data = [p for p in found if p.kind != Kind.ATTR]
    maps = [p for p in data if (is_conv(p) or is_pool(p) or is_upsampling(p)) and p.out_shape == layer.in_shape]
    return maps if maps and len(maps) == len(data) else []
