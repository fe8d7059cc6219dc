"""U001 checkerboard-upsampling: a transposed conv whose stride does not divide its kernel."""
from __future__ import annotations

import math

from archlint.findings import Fix, Severity
from archlint.graph.ops import TRANSPOSED_CONV_TYPES
from archlint.rule import Rule

from ..helpers import as_tuple, shape_text


class CheckerboardUpsampling(Rule):
    code = "U001"
    name = "checkerboard-upsampling"
    severity = Severity.WARNING
    summary = "A transposed conv whose kernel the stride does not divide: its output has a checkerboard pattern."
    what = """
        Finds ConvTranspose1d/2d/3d layers that upsample (stride above 1 along an axis) with a
        kernel that does not overlap evenly along that axis: the kernel taps, spaced by the
        dilation, fall unevenly on the stride's output phases. With dilation 1 that is a kernel
        the stride does not divide: 3x3 with stride 2, 1x1 with stride 2, 5x5 with stride 4.
        A 4x4 kernel with stride 2 (DCGAN's) and a 2x2 with stride 2 (U-Net's) are left alone.
        """
    why = """
        A transposed conv scatters each input pixel, weighted by the kernel, onto a stride-spaced
        grid of the output. When the kernel size is not a multiple of the stride, neighbouring
        output pixels receive different numbers of contributions: with a 3x3 kernel and stride 2,
        one pixel in four sums four taps, two sum two and one sums a single tap. Even for a
        constant input the output is then a periodic pattern, and the network has to spend its
        weights cancelling it. Stacked, the patterns compound into the checkerboard artifacts
        seen in generated images, super-resolution outputs and segmentation masks.
        """
    how_to_fix = """
        Use a kernel that is a multiple of the stride (4x4 with stride 2), with the padding and
        output_padding that keep the output size; the finding's fix prints that layer. Or
        upsample by resizing (nn.Upsample with mode "nearest" or "bilinear") and follow it with an
        ordinary conv, which Odena et al. found removes the artifacts entirely.
        """
    references = (
        "Odena, Dumoulin, Olah, Deconvolution and Checkerboard Artifacts, Distill 2016 (https://distill.pub/2016/deconv-checkerboard/)",
        "Dumoulin, Visin, A guide to convolution arithmetic for deep learning, 2016 (https://arxiv.org/abs/1603.07285)",
        "PyTorch docs, ConvTranspose2d: output size (https://pytorch.org/docs/stable/generated/torch.nn.ConvTranspose2d.html)",
    )
    options = {}
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1),  # 16 -> 32
        )
        example_input = torch.randn(1, 3, 16, 16)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.ConvTranspose2d(100, 64, 4, stride=1),              # 1 -> 4, no stride: no pattern
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),    # DCGAN: 4 is a multiple of 2
            nn.ConvTranspose2d(32, 16, 2, stride=2),               # U-Net: 2x2, stride 2
            nn.Upsample(scale_factor=2, mode="nearest"),           # resize, then conv
            nn.Conv2d(16, 3, 3, padding=1), nn.Tanh(),
        )
        example_input = torch.randn(1, 100, 1, 1)
        """,
    )

    def check(self, graph, ctx):
        for layer in graph.modules(*TRANSPOSED_CONV_TYPES):
            module = layer.module
            ndim = len(module.kernel_size)
            kernel, stride = as_tuple(module.kernel_size), as_tuple(module.stride)
            dilation = as_tuple(module.dilation)
            counts = [phase_counts(kernel[a], stride[a], dilation[a]) for a in range(ndim)]
            axes = [a for a in range(ndim) if stride[a] > 1 and min(counts[a]) != max(counts[a])]
            if not axes:
                continue
            fewest = math.prod(min(c) for c in counts)
            most = math.prod(max(c) for c in counts)
            code, new_kernel = _even_replacement(module)
            if code is not None:
                fix = Fix(f"use a {shape_text(new_kernel)} kernel, a multiple of the stride "
                          f"{shape_text(stride)}, with padding and output_padding that keep the "
                          "output size; or resize (nn.Upsample, nearest or bilinear) and follow "
                          "with a conv", code)
            else:
                fix = Fix("resize (nn.Upsample, nearest or bilinear) and follow with an ordinary "
                          "conv, or use a kernel that is a multiple of the stride",
                          _resize_code(module))
            yield self.finding(
                layer,
                f"{shape_text(kernel)} transposed conv with stride {shape_text(stride)}: the stride "
                f"does not divide the kernel, so output pixels sum between {fewest} and {most} "
                "kernel taps, a periodic checkerboard even for a constant input",
                evidence={"kernel": list(kernel), "stride": list(stride), "dilation": list(dilation),
                          "taps_per_phase": [list(c) for c in counts],
                          "fewest_taps": fewest, "most_taps": most},
                fix=fix,
            )


def phase_counts(kernel: int, stride: int, dilation: int = 1) -> tuple[int, ...]:
    """How many of the kernel's taps land on each of the stride's output phases."""
    counts = [0] * stride
    for j in range(kernel):
        counts[(j * dilation) % stride] += 1
    return tuple(counts)


def _even_replacement(module):
    """The same transposed conv with a kernel that is a multiple of the stride and the padding
    and output_padding that keep its output size: (constructor call, new kernel), or
    (None, None) when no such padding exists (or the conv is dilated)."""
    ndim = len(module.kernel_size)
    if any(d != 1 for d in module.dilation) or isinstance(module.padding, str):
        return None, None
    kernel, padding, out_pad = [], [], []
    for a in range(ndim):
        k, s = module.kernel_size[a], module.stride[a]
        p, op = module.padding[a], module.output_padding[a]
        k2 = k if k % s == 0 else s * math.ceil(k / s)
        # out = (i - 1) s - 2p + (k - 1) + op + 1: keep -2p + k + op
        delta = 2 * p - op + (k2 - k)
        p2 = max(0, math.ceil(delta / 2))
        op2 = 2 * p2 - delta
        if not 0 <= op2 < s:
            return None, None
        kernel.append(k2)
        padding.append(p2)
        out_pad.append(op2)
    parts = [str(module.in_channels), str(module.out_channels), _compact(kernel),
             f"stride={_compact(module.stride)}"]
    if any(padding):
        parts.append(f"padding={_compact(padding)}")
    if any(out_pad):
        parts.append(f"output_padding={_compact(out_pad)}")
    if module.groups != 1:
        parts.append(f"groups={module.groups}")
    if module.bias is None:
        parts.append("bias=False")
    return f"nn.{type(module).__name__}({', '.join(parts)})", tuple(kernel)


def _resize_code(module) -> str:
    ndim = len(module.kernel_size)
    conv = f"Conv{ndim}d"
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[ndim]
    scale = _compact(list(module.stride))
    bias = "" if module.bias is not None else ", bias=False"
    groups = f", groups={module.groups}" if module.groups != 1 else ""
    return (f"nn.Sequential(nn.Upsample(scale_factor={scale}, mode={mode!r}), "
            f"nn.{conv}({module.in_channels}, {module.out_channels}, 3, padding=1{groups}{bias}))")


def _compact(values) -> str:
    values = list(values)
    return str(values[0]) if len(set(values)) == 1 else str(tuple(values))
