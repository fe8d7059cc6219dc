"""K004 missing-bottleneck: a wide k x k conv that no 1x1 conv narrows first."""
from __future__ import annotations

import dataclasses
import math

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph.ops import ANY_CONV_TYPES, CALLS, Kind, is_conv
from archlint.rule import Option, Rule

from ..helpers import conv_call, conv_weights, conv_windows, human, shape_text, spatial


_NORM_FOR = {1: "BatchNorm1d", 2: "BatchNorm2d", 3: "BatchNorm3d"}


class MissingBottleneck(Rule):
    code = "K004"
    name = "missing-bottleneck"
    severity = Severity.INFO
    summary = "A wide k x k conv (256+ channels in and out) that no 1x1 conv narrows first."
    what = """
        Finds standard convolutions (groups=1) with a kernel of at least 3 on every side whose
        input and output both have at least `min-channels` channels, when what feeds them
        (through norms and activations) is not a 1x1 conv that reduces the channels.
        Same-shaped convs built by one line (the conv of a block class repeated through a
        stage) are reported once, with the others named in the message and the evidence.
        """
    why = """
        A k x k conv costs k*k*C_in*C_out weights and as many multiply-adds per output
        position, so at 256 channels and up the spatial convs dominate the model. A 1x1 conv
        that first narrows the channels (by 4 in ResNet), a k x k conv at the narrow width,
        and a 1x1 conv that widens back (the bottleneck block of ResNet-50 and deeper, and the
        1x1 reductions in front of Inception's 3x3 and 5x5 branches) keeps the same input
        and output width and receptive field for a fraction of the cost, and adds two
        nonlinearities. The price is a narrower k x k stage; networks of moderate depth
        (ResNet-18/34, VGG) trade that the other way on purpose, which is why this is only
        information.
        """
    how_to_fix = """
        Replace the conv by 1x1 reduce -> k x k -> 1x1 expand with a norm and activation between
        them; the k x k keeps the stride, padding and dilation. The finding's fix prints the
        block for the layer's channels; its evidence gives weights and multiply-adds before and
        after. The `reduction` option sets the narrowing factor.
        """
    references = (
        "He et al., Deep Residual Learning for Image Recognition (bottleneck blocks), CVPR 2016",
        "Szegedy et al., Going Deeper with Convolutions (1x1 reductions in Inception), CVPR 2015",
        "Seed notes: a 1x1 convolution as a bottleneck layer reduces or increases the number of feature maps",
    )
    options = {
        "min-channels": Option(256, "smallest input and output width reported"),
        "reduction": Option(4, "how much the suggested 1x1 conv narrows the channels"),
    }
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
        )
        example_input = torch.randn(1, 256, 16, 16)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(256, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 256, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
            nn.Conv2d(256, 1024, 1, bias=False), nn.BatchNorm2d(1024), nn.ReLU(),
            nn.Conv2d(1024, 256, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1, bias=False),  # wide, but after a 1x1 reduction
            nn.Conv2d(256, 256, 3, padding=1, groups=256),  # depthwise: cheap
        )
        example_input = torch.randn(1, 256, 16, 16)
        """,
    )

    def check(self, graph, ctx):
        wide = ctx["min-channels"]
        # Convs built by the same line with the same shape (a block class repeated through a
        # stage, a layer called at every pyramid level) get one finding: the fix is one edit.
        groups: dict[tuple, list] = {}
        for layer, w in conv_windows(graph):
            conv = layer.module
            if layer.kind != Kind.MODULE or conv.groups != 1 or min(w.kernel) < 3:
                continue
            if conv.in_channels < wide or conv.out_channels < wide:
                continue
            feeders = graph.previous_layers(layer, through=_elementwise(graph))
            if any(self._reduces(f) for f in feeders):
                continue
            site = layer.built_at or _role(graph, layer.qualname)
            key = (str(site), conv.in_channels, conv.out_channels, w.kernel, conv.stride)
            groups.setdefault(key, []).append((layer, w))
        for members in groups.values():
            layer, w = members[0]
            finding = self._finding(layer, w, ctx["reduction"])
            others = list(dict.fromkeys(m.qualname for m, _ in members[1:] if m.qualname != layer.qualname))
            if others:
                shown = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
                finding = dataclasses.replace(
                    finding, message=f"{finding.message} (also {shown}, built by the same line)",
                    evidence={**finding.evidence, "same_convs": others})
            yield finding

    @staticmethod
    def _reduces(layer) -> bool:
        return (layer.kind == Kind.MODULE and is_conv(layer) and all(k == 1 for k in layer.module.kernel_size)
                and layer.module.out_channels < layer.module.in_channels)

    def _finding(self, layer, w, reduction):
        conv = layer.module
        c_in, c_out = conv.in_channels, conv.out_channels
        mid = max(1, min(c_in, c_out) // reduction)
        batch = layer.out_shape[0] if layer.out_shape else 1
        # The 1x1 reduce reads what the conv reads: after any explicit pad in front of it.
        at_in, at_out = batch * math.prod(spatial(layer.in_shape)), batch * math.prod(w.size_out)
        bias = conv.bias is not None
        now = conv_weights(w.kernel, c_in, c_out, bias=bias)
        after = (conv_weights(1, c_in, mid, bias=False) + conv_weights(w.kernel, mid, mid, bias=False)
                 + conv_weights(1, mid, c_out, bias=bias))
        macs_now = math.prod(w.kernel) * c_in * c_out * at_out
        macs_after = c_in * mid * at_in + math.prod(w.kernel) * mid * mid * at_out + mid * c_out * at_out
        norm = _NORM_FOR.get(w.ndim, "BatchNorm2d")
        ones = (1,) * w.ndim
        zeros = (0,) * w.ndim
        code = "\n".join([
            "nn.Sequential(",
            f"    {conv_call(conv, out_channels=mid, kernel_size=ones, stride=ones, padding=zeros, dilation=ones, bias=False)},",
            f"    nn.{norm}({mid}), nn.ReLU(inplace=True),",
            f"    {conv_call(conv, in_channels=mid, out_channels=mid, bias=False)},",
            f"    nn.{norm}({mid}), nn.ReLU(inplace=True),",
            f"    {conv_call(conv, in_channels=mid, kernel_size=ones, stride=ones, padding=zeros, dilation=ones)},",
            ")",
        ])
        k = shape_text(w.kernel)
        return self.finding(
            layer,
            f"{k} conv runs at full width ({c_in}->{c_out} channels, {human(now)} weights, "
            f"{human(macs_now)} MACs); a 1x1 reduce to {mid} / {k} / 1x1 expand block needs "
            f"{human(after)} weights and {human(macs_after)} MACs",
            evidence={"kernel": list(w.kernel), "in_channels": c_in, "out_channels": c_out,
                      "bottleneck_channels": mid, "params_now": now, "params_after": after,
                      "macs_now": macs_now, "macs_after": macs_after},
            fix=Fix(f"narrow to {mid} channels with a 1x1 conv first and widen back after "
                    f"(1x1 / {k} / 1x1, as in ResNet's bottleneck block)", code),
        )


def _elementwise(graph):
    """A test for layers that keep each value in place: one activation in, the same shape out,
    not a conv or linear layer (a norm, an activation, dropout, an identity)."""
    def test(layer) -> bool:
        if layer.kind not in (Kind.MODULE, *CALLS) or layer.out_shape is None:
            return False
        if isinstance(layer.module, (*ANY_CONV_TYPES, nn.Linear)) or is_conv(layer):
            return False
        activations = [p for p in graph.predecessors(layer) if p.kind != Kind.ATTR and p.out_shapes]
        return len(activations) == 1 and layer.in_shape == layer.out_shape

    return test


def _role(graph, qualname: str) -> str:
    """What a layer is within its block, when no construction line was recorded (a model
    built outside archlint): "BasicBlock.conv1" for "layer3.1.conv1"."""
    parent, _, attr = qualname.rpartition(".")
    try:
        owner = type(graph.model.get_submodule(parent)).__name__ if parent else ""
    except AttributeError:
        return qualname
    return f"{owner}.{attr}"
