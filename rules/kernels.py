"""K: kernel sizes. Small kernels stacked beat one large kernel."""
from __future__ import annotations

import dataclasses
import math

import networkx as nx
from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph.receptive_field import ReceptiveField
from archlint.rule import Option, Rule

from ._common import (conv_call, conv_weights, human, is_conv, is_standard_conv, shape_text,
                      sliding_window, square)


class LargeKernel(Rule):
    code = "K001"
    name = "large-kernel"
    severity = Severity.WARNING
    summary = "A k x k conv (k >= 5) that a stack of 3x3 convs would replace with more depth."
    what = """
        Finds standard 2-D convolutions (groups=1, dilation 1) with a square kernel of 5x5 or
        larger. Depthwise convs (one filter per channel, as in ConvNeXt and MobileNet) and
        factorized 1xk / kx1 kernels are left alone: their cost grows with k, not with k x C^2.
        So are patchify convs whose stride equals the kernel (a ViT's 16x16/16 patch
        embedding): they cut the image into tokens that do not overlap, which no stack of 3x3
        convs reproduces.
        """
    why = """
        A stack of (k-1)/2 3x3 convs sees the same k x k window as one k x k conv, but puts a
        nonlinearity between each step, so it can express more than the single linear map, and
        with C channels in and out it needs fewer weights: three 3x3 convs hold 27C^2 weights
        where one 7x7 holds 49C^2. The cost is memory for the intermediate activations during
        backpropagation. Where the input has few channels (an RGB stem) the stack can hold more
        weights than the single conv; it is still the deeper, more expressive choice (ResNet-C/D
        stems), and the finding's evidence gives both counts.
        """
    how_to_fix = """
        Replace the conv by (k-1)/2 3x3 convs with a normalization and activation between each
        (the first one carries the stride). The finding's fix prints the replacement for the
        layer's own channels and stride.
        """
    references = (
        "CS231n, Convolutional Networks: 'Prefer a stack of small filter CONV to one large receptive field CONV layer' (https://cs231n.github.io/convolutional-networks/)",
        "Simonyan & Zisserman, Very Deep Convolutional Networks (VGG), ICLR 2015",
        "He et al., Bag of Tricks for Image Classification (ResNet-C stem), CVPR 2019",
    )
    options = {"min-kernel": Option(5, "smallest square kernel side that is reported")}
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(64, 64, kernel_size=7, padding=3),
            nn.ReLU(),
        )
        example_input = torch.randn(1, 64, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 7, padding=3, groups=64),  # depthwise 7x7 is cheap: fine
            nn.Conv2d(64, 64, (1, 7), padding=(0, 3)),   # factorized: fine
            nn.Conv2d(64, 96, 8, stride=8),              # patchify: non-overlapping tokens, fine
        )
        example_input = torch.randn(1, 64, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        for layer in graph.modules(nn.Conv2d):
            conv = layer.module
            k = square(conv.kernel_size)
            if not is_standard_conv(layer) or k is None or k < ctx["min-kernel"] or square(conv.dilation) != 1:
                continue
            if square(conv.stride) == k:
                continue  # patchify (ViT's 16x16/16 embedding): windows do not overlap, nothing to stack
            depth = (k - 1 + 1) // 2  # ceil((k-1)/2) 3x3 convs span k (k odd) or k+1 (k even)
            c_in, c_out = conv.in_channels, conv.out_channels
            bias = conv.bias is not None
            now = conv_weights(k, c_in, c_out, bias=bias)
            after = conv_weights(3, c_in, c_out, bias=bias) + (depth - 1) * conv_weights(3, c_out, c_out, bias=bias)
            stride = conv.stride
            s = square(stride) or 1
            span = 3 + 2 * s * (depth - 1)  # the first 3x3 carries the stride
            steps = []
            for i in range(depth):
                first = i == 0
                call = conv_call(conv, in_channels=c_in if first else c_out, kernel_size=(3, 3),
                                 stride=stride if first else (1, 1), padding=(1, 1), dilation=(1, 1))
                steps.append(f"    {call},")
                if i < depth - 1:
                    steps.append(f"    nn.BatchNorm2d({c_out}), nn.ReLU(inplace=True),")
            code = "nn.Sequential(\n" + "\n".join(steps) + "\n)"
            yield self.finding(
                layer,
                f"{k}x{k} conv ({c_in}->{c_out} channels) applies one linear map to a {k}x{k} window; "
                f"{depth} stacked 3x3 convs see {span}x{span} with {depth - 1} "
                f"nonlinearities between ({human(now)} -> {human(after)} weights)",
                evidence={"kernel": k, "in_channels": c_in, "out_channels": c_out,
                          "params_now": now, "params_after": after, "stacked_3x3": depth,
                          "receptive_field_after": span},
                fix=Fix(f"replace the {k}x{k} conv by {depth} stacked 3x3 convs with BatchNorm+ReLU between",
                        code),
            )


def _convs(graph):
    """Forward convs (layers and functional calls, not transposed) whose window the trace
    measured."""
    for layer in graph:
        if is_conv(layer):
            window = sliding_window(layer)
            if window is not None:
                yield layer, window


def _channels(layer) -> tuple[int, int, int, bool]:
    """(in, out, groups, has bias) of a conv layer or a functional conv call."""
    if layer.kind == "module":
        conv = layer.module
        return conv.in_channels, conv.out_channels, conv.groups, conv.bias is not None
    c_in, weight = layer.in_shape[1], layer.in_shapes[1]
    return c_in, weight[0], max(1, c_in // weight[1]), len(layer.in_shapes) > 2


def _kernel_text(kernel) -> str:
    return "x".join(str(k) for k in kernel)


class EvenKernel(Rule):
    code = "K002"
    name = "even-kernel"
    severity = Severity.INFO
    summary = "A stride-1 conv with an even kernel: its output sits half a pixel off its input."
    what = """
        Finds forward convolutions that slide one step at a time along an axis whose (dilated)
        kernel has an even size: 2, 4, 6. Convs whose stride matches the kernel (a 4x4/s4
        patchify stem, a 2x2/s2 downsampler) are left alone: their windows tile the input and
        have no center to lose.
        """
    why = """
        An odd kernel has a center tap, so with padding (k-1)/2 each output pixel lines up with
        the input pixel it is computed around. An even kernel has no center: with any padding
        the output grid lands half a pixel away from the input grid, and torch has to pad one
        side more than the other (padding="same" does exactly that). The map either grows or
        shrinks by one pixel, or it keeps its size and drifts half a pixel towards a corner;
        stacked even convs add their drifts up, which hurts wherever positions matter:
        segmentation masks, keypoints, boxes, and skip connections that add maps which no
        longer line up.
        """
    how_to_fix = """
        Use an odd kernel with padding (k-1)/2 along that axis: 3 instead of 2 or 4, 5 instead
        of 6. The finding's fix prints the replacement with the same channels and stride.
        """
    references = (
        "Wu et al., Convolution with even-sized kernels and symmetric padding, NeurIPS 2019",
        "CS231n, Convolutional Networks: with stride 1, padding (F-1)/2 keeps the size (https://cs231n.github.io/convolutional-networks/)",
    )
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=4, padding=2),   # 64 -> 65, and shifted
            nn.ReLU(),
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=4, stride=4),    # patchify stem: kernel == stride
            nn.Conv2d(16, 16, 3, padding=1),
            nn.Conv2d(16, 32, kernel_size=2, stride=2),   # 2x2/s2 downsampler
            nn.Conv2d(32, 32, 2, dilation=2, padding=1),  # dilated 2-tap kernel spans 3: centered
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
    )

    def check(self, graph, ctx):
        for layer, w in _convs(graph):
            axes = [a for a in range(w.ndim) if w.stride[a] == 1 and w.span(a) % 2 == 0]
            if not axes:
                continue
            shift = [(w.span(a) - 1) / 2 - w.pad_before[a] for a in range(w.ndim)]
            kernel = list(w.kernel)
            padding = list(w.pad_before)
            for a in axes:
                # 2 grows to 3; larger kernels shrink to the odd size below, which keeps the
                # weight count down (a stack of 3x3 covers the rest, see K001)
                kernel[a] = w.kernel[a] + 1 if w.kernel[a] == 2 else w.kernel[a] - 1
                padding[a] = w.dilation[a] * (kernel[a] - 1) // 2
            c_in, c_out, groups, bias = _channels(layer)
            now = conv_weights(w.kernel, c_in, c_out, groups, bias)
            after = conv_weights(tuple(kernel), c_in, c_out, groups, bias)
            code = conv_call(layer.module, kernel_size=tuple(kernel), padding=tuple(padding)) \
                if layer.kind == "module" else None
            drift = max(abs(shift[a]) for a in axes)
            size_note = ("" if w.size_in == w.size_out else
                         f", and the map goes from {shape_text(w.size_in)} to {shape_text(w.size_out)}")
            yield self.finding(
                layer,
                f"{_kernel_text(w.kernel)} conv with stride 1 has no center tap: each output is "
                f"centered between two input pixels ({drift:g} px off the grid){size_note}",
                evidence={"kernel": list(w.kernel), "padding": list(w.pad_before),
                          "shift_px": [shift[a] for a in range(w.ndim)],
                          "size_in": list(w.size_in), "size_out": list(w.size_out),
                          "params_now": now, "params_after": after},
                fix=Fix(f"use an odd {_kernel_text(kernel)} kernel with padding "
                        f"{padding[0] if len(set(padding)) == 1 else tuple(padding)}: centered, and the size is kept",
                        code),
            )


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
        for layer, w in _convs(graph):
            if layer.kind == "module" and layer.module.padding_mode != "zeros":
                continue
            if not any(w.span(a) > w.size_in[a] for a in range(w.ndim)):
                continue
            used = [w.taps_reading_input(a) for a in range(w.ndim)]
            taps = math.prod(w.kernel)
            live = math.prod(len(u) for u in used)
            if live == taps:
                continue
            c_in, c_out, groups, _ = _channels(layer)
            per_tap = c_in // groups * c_out
            wasted = (taps - live) * per_tap
            dilated = "" if all(d == 1 for d in w.dilation) else f" (dilation {shape_text(w.dilation)})"
            yield self.finding(
                layer,
                f"{_kernel_text(w.kernel)} conv{dilated} on a {shape_text(w.size_in)} map: "
                f"{taps - live} of its {taps} taps only ever read padding "
                f"({human(wasted)} of {human(taps * per_tap)} weights never see the input)",
                evidence={"kernel": list(w.kernel), "dilation": list(w.dilation),
                          "input_size": list(w.size_in), "taps": taps, "taps_reading_input": live,
                          "weights_wasted": wasted, "weights": taps * per_tap},
                fix=self._fix(layer, w, used),
            )

    @staticmethod
    def _fix(layer, w, used) -> Fix:
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
        if min(padding) < 0:
            return Fix("feed the conv a larger map (a larger input or one downsampling fewer "
                       "before it), or lower its kernel or dilation below the map size")
        dilation = tuple(d if k > 1 else 1 for d, k in zip(w.dilation, kernel))
        code = conv_call(layer.module, kernel_size=tuple(kernel), padding=tuple(padding), dilation=dilation) \
            if layer.kind == "module" else None
        return Fix(f"use the {_kernel_text(kernel)} conv (padding {shape_text(padding)}) it really is "
                   "(same outputs; copy the kept taps' weights), or feed it a larger map", code)


_NORM_FOR = {1: "BatchNorm1d", 2: "BatchNorm2d", 3: "BatchNorm3d"}


def _elementwise(graph):
    """A test for layers that keep each value in place: one activation in, the same shape out,
    not a conv or linear layer (a norm, an activation, dropout, an identity)."""
    def test(layer) -> bool:
        if layer.kind not in ("module", "function", "method") or layer.out_shape is None:
            return False
        if isinstance(layer.module, (nn.modules.conv._ConvNd, nn.Linear)) or is_conv(layer):
            return False
        activations = [p for p in graph.predecessors(layer) if p.kind != "attr" and p.out_shapes]
        return len(activations) == 1 and layer.in_shape == layer.out_shape

    return test


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
        for layer, w in _convs(graph):
            conv = layer.module
            if layer.kind != "module" or conv.groups != 1 or min(w.kernel) < 3:
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
        return (layer.kind == "module" and is_conv(layer) and all(k == 1 for k in layer.module.kernel_size)
                and layer.module.out_channels < layer.module.in_channels)

    def _finding(self, layer, w, reduction):
        conv = layer.module
        c_in, c_out = conv.in_channels, conv.out_channels
        mid = max(1, min(c_in, c_out) // reduction)
        batch = layer.out_shape[0] if layer.out_shape else 1
        at_in, at_out = batch * math.prod(w.size_in), batch * math.prod(w.size_out)
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
        k = _kernel_text(w.kernel)
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


def _role(graph, qualname: str) -> str:
    """What a layer is within its block, when no construction line was recorded (a model
    built outside archlint): "BasicBlock.conv1" for "layer3.1.conv1"."""
    parent, _, attr = qualname.rpartition(".")
    try:
        owner = type(graph.model.get_submodule(parent)).__name__ if parent else ""
    except AttributeError:
        return qualname
    return f"{owner}.{attr}"


def _spatially_inert(graph):
    """A test for layers that neither look at neighbouring positions nor change the grid
    (norms, activations, 1x1 convs, adds, concatenations): the receptive field passes through
    them unchanged."""
    def test(layer) -> bool:
        if layer.rf is None:
            return False
        fields = [p.rf for p in graph.predecessors(layer) if p.rf is not None]
        if not fields:
            return False
        widest = ReceptiveField.widest(fields)
        return layer.rf.size == widest.size and layer.rf.jump == widest.jump

    return test


def _runs(values: list[int]) -> str:
    """[2, 2, 2, 4, 12] -> '2 (x3), 4, 12'."""
    parts, i = [], 0
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i]:
            j += 1
        parts.append(f"{values[i]} (x{j - i})" if j - i > 2 else ", ".join([str(values[i])] * (j - i)))
        i = j
    return ", ".join(parts)


def _coverage(rates: list[int], half: int | list[int]) -> tuple[int, int]:
    """(input positions one output reads, positions its span covers) along one axis for a
    stack of stride-1 convs with `half` taps each side (one number, or one per conv) at the
    given dilation rates."""
    halves = half if isinstance(half, list) else [half] * len(rates)
    offsets = {0}
    for rate, h in zip(rates, halves):
        offsets = {o + j * rate for o in offsets for j in range(-h, h + 1)}
    return len(offsets), max(offsets) - min(offsets) + 1


def hdc_rates(count: int, rate: int, half: int | list[int], total: int | None = None) -> list[int]:
    """Dilation rates for `count` stacked convs that leave no holes and share no factor
    between neighbours, spanning about as far as `count` convs at `rate` (or rates adding up to
    `total`): Wang et al.'s hybrid dilated convolution. Each rate is at most one more than the
    width covered so far, which is what keeps the stack free of holes."""
    budget = total or count * rate
    halves = half if isinstance(half, list) else [half] * count
    rates: list[int] = []
    reach = 0
    for i in range(count):
        want = max(1, -(-(budget - sum(rates)) // (count - i)))
        r = min(want, 2 * reach + 1)
        while r > 1 and rates and math.gcd(r, rates[-1]) > 1:
            r -= 1
        rates.append(r)
        reach += halves[i] * r
    ascending = sorted(rates)
    if all(math.gcd(a, b) == 1 for a, b in zip(ascending, ascending[1:])) and \
            _coverage(ascending, halves)[0] == _coverage(ascending, halves)[1]:
        return ascending
    return rates


class DilationGridding(Rule):
    code = "K005"
    name = "dilation-gridding"
    severity = Severity.WARNING
    summary = "Consecutive dilated convs whose rates share a factor: the stack only sees a grid."
    what = """
        Finds two or more stride-1 convolutions that follow one another (through norms,
        activations, 1x1 convs and residual adds, nothing that looks at neighbours) with
        dilation rates above 1 that share a common factor: 2 then 2, or 2, 4, 8. A rate of 1
        or a coprime neighbour (1, 2, 5) breaks the run.
        """
    why = """
        A conv with dilation r reads its input every r pixels. Stack a second one with the
        same rate (or a multiple) and it reads those outputs every r pixels again: the top
        unit only ever sees input positions on a grid with spacing r, and the pixels between
        never reach it. Neighbouring outputs then draw on disjoint sets of inputs, which shows
        up as checkerboard "gridding" artifacts and loses thin structures. The finding's
        evidence counts the positions inside the stack's span that reach one output.
        """
    how_to_fix = """
        Give the convs of a group rates with no common factor whose taps fill the span, such
        as 1, 2, 5 (or 1, 2, 3) for 3x3 kernels, repeated per group: hybrid dilated
        convolution. The finding's fix prints such rates for the stack, with the padding that
        keeps the map size.
        """
    references = (
        "Wang et al., Understanding Convolution for Semantic Segmentation (hybrid dilated convolution), WACV 2018",
        "Yu & Koltun, Multi-Scale Context Aggregation by Dilated Convolutions, ICLR 2016",
        "Dilated Convolutions and Kronecker Factored Convolutions (https://www.inference.vc/dilated-convolutions-and-kronecker-factorisation/)",
    )
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=2, dilation=2), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=2, dilation=2), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=2, dilation=2), nn.BatchNorm2d(32), nn.ReLU(),
        )
        example_input = torch.randn(1, 32, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1, dilation=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=5, dilation=5), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=2, dilation=2), nn.ReLU(),  # a 3x3 between breaks the run
        )
        example_input = torch.randn(1, 32, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        inert = _spatially_inert(graph)
        dilated = {layer.name: w for layer, w in _convs(graph) if self._dilated(w)}
        pairs = []  # (conv, the conv right after it), rates sharing a factor
        for name, w in dilated.items():
            for before in graph.previous_layers(graph.layer(name), through=inert):
                if before.name in dilated and self._share_factor(dilated[before.name], w):
                    pairs.append((before.name, name))
        # A conv that feeds parallel branches with different rates (an ASPP head) starts a
        # multi-scale module, not a deeper stack: the fix belongs to the stack before it.
        after_of: dict[str, list[str]] = {}
        for before, after in pairs:
            after_of.setdefault(before, []).append(after)
        branches = {(before, after) for before, afters in after_of.items() for after in afters
                    if self._parallel(graph, after, afters, dilated)}
        links: dict[str, set[str]] = {name: set() for name in dilated}
        feeds: dict[str, set[str]] = {name: set() for name in dilated}  # conv -> the convs right before it
        for before, after in pairs:
            if (before, after) not in branches:
                links[after].add(before)
                links[before].add(after)
                feeds[after].add(before)
        seen: set[str] = set()
        for name in dilated:  # execution order
            if name in seen or not links[name]:
                continue
            group = self._connected(name, links)
            seen |= group
            path = self._longest_path(group, feeds, graph)
            others = sorted((graph.layer(n) for n in group - set(path)), key=lambda l: l.index)
            stack = [graph.layer(n) for n in path]
            yield self._finding(stack, [dilated[l.name] for l in stack], others)

    @staticmethod
    def _parallel(graph, conv: str, siblings: list[str], dilated) -> bool:
        """Whether `conv` runs beside a sibling with another rate on the same input, neither
        feeding the other (ASPP branches), rather than later in the same stack (a residual
        path reaching the next block's conv too)."""
        return any(other != conv and dilated[other].dilation != dilated[conv].dilation
                   and not nx.has_path(graph.g, conv, other) and not nx.has_path(graph.g, other, conv)
                   for other in siblings)

    @staticmethod
    def _longest_path(group: set[str], feeds: dict[str, set[str]], graph) -> list[str]:
        """The longest chain of convs in the group, in execution order. Parallel branches (an
        ASPP's rates) each continue the chain; the coverage is that of one path through it."""
        length: dict[str, int] = {}
        parent: dict[str, str | None] = {}
        for name in sorted(group, key=lambda n: graph.layer(n).index):
            before = [p for p in feeds[name] if p in length]
            best = max(before, key=lambda p: length[p], default=None)
            length[name] = length[best] + 1 if best else 1
            parent[name] = best
        end = max(length, key=lambda n: (length[n], -graph.layer(n).index))
        path = [end]
        while parent[path[-1]] is not None:
            path.append(parent[path[-1]])
        return path[::-1]

    @staticmethod
    def _dilated(w) -> bool:
        return all(s == 1 for s in w.stride) and any(d > 1 and k > 1 for d, k in zip(w.dilation, w.kernel))

    @staticmethod
    def _share_factor(a, b) -> bool:
        return any(ka > 1 and kb > 1 and da > 1 and db > 1 and math.gcd(da, db) > 1
                   for ka, kb, da, db in zip(a.kernel, b.kernel, a.dilation, b.dilation))

    @staticmethod
    def _connected(start: str, links: dict[str, set[str]]) -> set[str]:
        group, frontier = set(), [start]
        while frontier:
            name = frontier.pop()
            if name not in group:
                group.add(name)
                frontier.extend(links[name] - group)
        return group

    def _finding(self, stack, windows, others):
        axis = max(range(windows[0].ndim), key=lambda a: windows[0].dilation[a])
        rates = [w.dilation[axis] for w in windows]
        halves = [max(1, (w.kernel[axis] - 1) // 2) for w in windows]
        reached, span = _coverage(rates, halves)
        share = (reached / span) ** windows[0].ndim
        suggested = hdc_rates(len(stack), max(rates), halves, total=sum(rates))
        shown = 8  # a fix for a 28-conv DeepLab backbone is a list of rates, not 28 lines
        lines = []
        for layer, w, r in list(zip(stack, windows, suggested))[:shown]:
            padding = tuple(r * (k - 1) // 2 for k in w.kernel)
            dilation = tuple(r if k > 1 else 1 for k in w.kernel)
            call = conv_call(layer.module, dilation=dilation, padding=padding) if layer.kind == "module" \
                else f"dilation={r}, padding={shape_text(padding)}"
            lines.append(f"{call},  # {layer.qualname}")
        if len(stack) > shown:
            rest = len(stack) - shown
            lines.append(f"# ... and dilation {', '.join(map(str, suggested[shown:]))} for the "
                         f"{rest} conv{'s' if rest > 1 else ''} after, with padding dilation * (k - 1) // 2")
        rate_text = _runs(rates)
        also = f" (and {len(others)} parallel conv{'s' if len(others) > 1 else ''} on the same input)" \
            if others else ""
        return self.finding(
            stack[0],
            f"{len(stack)} stacked convs with dilation rates {rate_text}{also} read the input on a grid: "
            f"one output sees {reached} of the {span} positions along each axis of its span "
            f"({share:.0%} of the window); the pixels between never reach it",
            evidence={"layers": [l.qualname for l in stack], "dilations": rates,
                      "parallel_layers": [l.qualname for l in others],
                      "positions_read": reached, "span": span, "share_of_window": round(share, 4),
                      "suggested_dilations": suggested},
            fix=Fix(f"use rates without a common factor that fill the span, e.g. "
                    f"{', '.join(map(str, suggested))} (hybrid dilated convolution)", "\n".join(lines)),
        )
