"""K002 even-kernel: a stride-1 conv with an even kernel, whose output sits half a pixel off its input."""
from __future__ import annotations

from archlint.findings import Fix, Severity
from archlint.graph.ops import CALLS, Kind
from archlint.rule import Rule

from ..helpers import (conv_call, conv_channels, conv_weights, conv_windows, kept_pad_text,
                       own_padding, shape_text)


class EvenKernel(Rule):
    code = "K002"
    name = "even-kernel"
    severity = Severity.INFO
    summary = "A stride-1 conv with an even kernel: its output sits half a pixel off its input."
    what = """
        Finds forward convolutions that slide one step at a time along an axis whose (dilated)
        kernel has an even size: 2, 4, 6. Convs whose stride matches the kernel (a 4x4/s4
        patchify stem, a 2x2/s2 downsampler) are left alone: their windows tile the input and
        have no center to lose. So are convs with a single output position (a discriminator's
        final 4x4 conv on a 4x4 map) and functional convs whose weight is a fixed buffer, not a
        parameter (StyleGAN's 4x4 blur / FIR kernels: the half-pixel shift is what the
        resampling filter is designed for).
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
        for layer, w in conv_windows(graph):
            axes = [a for a in range(w.ndim) if w.stride[a] == 1 and w.span(a) % 2 == 0]
            if not axes:
                continue
            if all(n == 1 for n in w.size_out):
                continue  # one output position (a discriminator's 4x4 conv on a 4x4 map): no grid to be off
            if _fixed_filter(graph, layer):
                continue  # a fixed blur / FIR kernel (a buffer, not trained): its even size is the design
            shift = [(w.span(a) - 1) / 2 - w.pad_before[a] for a in range(w.ndim)]
            kernel = list(w.kernel)
            padding = list(w.pad_before)
            for a in axes:
                # 2 grows to 3; larger kernels shrink to the odd size below, which keeps the
                # weight count down (a stack of 3x3 covers the rest, see K001)
                kernel[a] = w.kernel[a] + 1 if w.kernel[a] == 2 else w.kernel[a] - 1
                padding[a] = w.dilation[a] * (kernel[a] - 1) // 2
            c_in, c_out, groups, bias = conv_channels(layer)
            now = conv_weights(w.kernel, c_in, c_out, groups, bias)
            after = conv_weights(tuple(kernel), c_in, c_out, groups, bias)
            padding = own_padding(graph, w, padding)  # an explicit pad in front stays
            code = conv_call(layer.module, kernel_size=tuple(kernel), padding=padding) \
                if layer.kind == Kind.MODULE else None
            drift = max(abs(shift[a]) for a in axes)
            size_note = ("" if w.size_in == w.size_out else
                         f", and the map goes from {shape_text(w.size_in)} to {shape_text(w.size_out)}")
            yield self.finding(
                layer,
                f"{shape_text(w.kernel)} conv with stride 1 has no center tap: each output is "
                f"centered between two input pixels ({drift:g} px off the grid){size_note}",
                evidence={"kernel": list(w.kernel), "padding": list(w.pad_before),
                          "shift_px": [shift[a] for a in range(w.ndim)],
                          "size_in": list(w.size_in), "size_out": list(w.size_out),
                          "params_now": now, "params_after": after},
                fix=Fix(f"use an odd {shape_text(kernel)} kernel with padding "
                        f"{padding[0] if len(set(padding)) == 1 else tuple(padding)}{kept_pad_text(graph, w)}: "
                        "centered, and the size is kept",
                        code),
            )


def _fixed_filter(graph, layer) -> bool:
    """A functional conv whose weight is built only from buffers (no trained parameter)."""
    if layer.kind == Kind.MODULE or len(layer.inputs) < 2:
        return False
    try:
        weight = graph.layer(layer.inputs[1])
    except (KeyError, IndexError):
        return False
    if weight.kind == Kind.ATTR:
        found = [weight]
    elif weight.kind in CALLS:
        found = graph.previous_layers(weight, through=lambda l: l.kind in CALLS)
    else:
        return False
    return bool(found) and all(l.kind == Kind.ATTR and not l.params for l in found)
