"""K003 kernel-exceeds-input: a conv whose dilated kernel is wider than its map, so some taps only read padding."""
from __future__ import annotations

import math

from archlint.findings import Fix, Severity
from archlint.graph.ops import Kind
from archlint.rule import Rule

from ..helpers import conv_call, conv_channels, conv_windows, explicit_pad, human, shape_text


class KernelExceedsInput(Rule):
    code = "K003"
    name = "kernel-exceeds-input"
    severity = Severity.WARNING
    summary = "A conv whose (dilated) kernel is wider than its input: some taps only ever read padding."
    what = """
        Finds convolutions with zero padding whose kernel, stretched by its dilation, is larger
        than the feature map it slides over, and reports the kernel taps that never reach a real
        input position for any output: a 3x3 conv on a 1x1 map, or a 3x3 conv with dilation 36
        on a 28x28 map (an ASPP branch at output stride 8). A 3x3 conv on a 2x2 map is left
        alone: every one of its taps reads a real pixel somewhere. Reflect, replicate and
        circular padding copy real pixels, so convs that use them are left alone too.
        """
    why = """
        A tap that only ever lands on zero padding contributes nothing: its weights get no
        gradient from the data and its multiplies are spent on zeros. The conv is really a
        smaller one (a 3x3 on a 1x1 map is a 1x1 conv with 9 times the weights), so the design
        pays for a receptive field it does not get. It usually means a network built for
        larger inputs is fed small ones (an ImageNet ResNet on 32x32 CIFAR images leaves its
        last stage at 1x1), or that a dilation rate outgrew the map: the DeepLabv3 paper
        measured that as the rate nears the map size, the 3x3 filter degenerates to its
        center tap.
        """
    how_to_fix = """
        Either give the conv a map it can slide over (a larger input, or one downsampling
        fewer before it), or use the smaller kernel it really is: the fix prints the conv
        that keeps only the taps that reach the input, with the padding that keeps its outputs
        exactly the same. For dilated branches, lower the rate below the map size.
        """
    references = (
        "Chen et al., Rethinking Atrous Convolution for Semantic Image Segmentation (DeepLabv3), 2017, section 3.3",
        "CS231n, Convolutional Networks: the output size (W - F + 2P)/S + 1 (https://cs231n.github.io/convolutional-networks/)",
    )
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=2, padding=1), nn.ReLU(),     # 8 -> 4
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU(),   # 4 -> 2
            nn.Conv2d(128, 256, 3, stride=2, padding=1), nn.ReLU(),  # 2 -> 1
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),            # 3x3 on 1x1
        )
        example_input = torch.randn(1, 3, 8, 8)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=2, padding=1), nn.ReLU(),     # 8 -> 4
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU(),   # 4 -> 2
            nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(),            # 3x3 on 2x2: every tap is used
            nn.Conv2d(128, 256, 1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1, padding_mode="circular"),  # wraps around: real pixels
        )
        example_input = torch.randn(1, 3, 8, 8)
        """,
    )

    def check(self, graph, ctx):
        for layer, w in conv_windows(graph):
            copies_pixels = w.pad_mode in ("reflect", "replicate", "circular")
            if copies_pixels or (layer.kind == Kind.MODULE and layer.module.padding_mode != "zeros"):
                continue
            if not any(w.span(a) > w.size_in[a] for a in range(w.ndim)):
                continue
            used = [w.taps_reading_input(a) for a in range(w.ndim)]
            taps = math.prod(w.kernel)
            live = math.prod(len(u) for u in used)
            if live == taps:
                continue
            c_in, c_out, groups, _ = conv_channels(layer)
            per_tap = c_in // groups * c_out
            wasted = (taps - live) * per_tap
            dilated = "" if all(d == 1 for d in w.dilation) else f" (dilation {shape_text(w.dilation)})"
            yield self.finding(
                layer,
                f"{shape_text(w.kernel)} conv{dilated} on a {shape_text(w.size_in)} map: "
                f"{taps - live} of its {taps} taps only ever read padding "
                f"({human(wasted)} of {human(taps * per_tap)} weights never see the input)",
                evidence={"kernel": list(w.kernel), "dilation": list(w.dilation),
                          "input_size": list(w.size_in), "taps": taps, "taps_reading_input": live,
                          "weights_wasted": wasted, "weights": taps * per_tap},
                fix=self._fix(graph, layer, w, used),
            )

    @staticmethod
    def _fix(graph, layer, w, used) -> Fix:
        """The conv that keeps only the live taps. Dropped taps multiplied zeros only, so the
        outputs are unchanged when the kept taps sit symmetrically in the old kernel; then the
        old weights can be sliced over: weight[..., first:last+1]."""
        kernel, padding = [], []
        for axis, taps in enumerate(used):
            first, last = (taps[0], taps[-1]) if taps else (0, 0)
            if first != w.kernel[axis] - 1 - last or w.pad_before[axis] != w.pad_after[axis]:
                return Fix("feed the conv a larger map (a larger input or one downsampling fewer "
                           "before it), or lower its kernel or dilation below the map size")
            kernel.append(last - first + 1)
            padding.append(w.pad_before[axis] - first * w.dilation[axis])
        # The conv keeps only its own share of the padding; an explicit pad in front stays.
        explicit = explicit_pad(graph, w)
        if explicit is not None:
            padding = [p - e for p, e in zip(padding, explicit[0])]
        if min(padding) < 0:
            return Fix("feed the conv a larger map (a larger input or one downsampling fewer "
                       "before it), or lower its kernel or dilation below the map size")
        dilation = tuple(d if k > 1 else 1 for d, k in zip(w.dilation, kernel))
        code = conv_call(layer.module, kernel_size=tuple(kernel), padding=tuple(padding), dilation=dilation) \
            if layer.kind == Kind.MODULE else None
        return Fix(f"use the {shape_text(kernel)} conv (padding {shape_text(padding)}) it really is "
                   "(same outputs; copy the kept taps' weights), or feed it a larger map", code)
