"""S001 dropped-pixels: a conv or pool whose last window stops short of the last input row or column."""
from __future__ import annotations

import math
from dataclasses import replace

from archlint.findings import Fix, Severity
from archlint.graph.ops import Kind, is_conv
from archlint.graph.windows import per_axis, resized
from archlint.rule import Rule

from ..helpers import conv_call, human, kept_pad_text, pool_call, shape_text


_AXIS_NAMES = {1: ("position",), 2: ("row", "column"), 3: ("slice", "row", "column")}


class DroppedPixels(Rule):
    code = "S001"
    name = "dropped-pixels"
    severity = Severity.WARNING
    summary = "A strided conv or pool whose last window stops short of the last input row/column."
    what = """
        Finds convolutions and pooling layers (layers or functional calls) whose windows are
        at least as wide as their stride, yet whose last window ends before the last real row
        or column of the input: those pixels are read by no window at all. Padding left over
        at the end does not count: a 3x3/s2/p1 conv on an even size, or the 3x3/s2/p1 max-pool
        of a ResNet stem on 112x112, leave only padding unread and are fine. The measured
        output size is used, so `ceil_mode=True` pools are judged by what they really do.
        An explicit pad in front of the layer (`nn.ReflectionPad2d`, `nn.ZeroPad2d`, `F.pad`)
        is its padding, so its pixels are not input that could be dropped.
        Strides larger than the kernel (a strided 1x1 conv) skip pixels by design and are not
        this rule's business.
        """
    why = """
        The output size formula floors (in + 2p - k)/s: when the division is not exact, the
        remainder at the end of the input is silently cut off. A 3x3/s2 conv without padding
        on a 56x56 map never looks at the last row and column; MaxPool2d(2) on 25x25 drops row
        and column 24. The information there is lost to every later layer, the outputs are no
        longer centered on the input, and the loss repeats at each downsampling, so objects at
        the bottom and right edges are seen worse than the rest.
        """
    how_to_fix = """
        Pad so the windows reach the end (a conv's padding, or `ceil_mode=True` on a pool,
        which lets the last window hang over the edge), or feed the layer a size where
        (in + 2p - k) divides by the stride. The finding prints the changed layer and the
        nearest input sizes that need no change.
        """
    references = (
        "Seed notes / CS231n: out = (in + 2p - k)/s + 1 (https://cs231n.github.io/convolutional-networks/)",
        "PyTorch docs, MaxPool2d: ceil_mode uses ceil instead of floor to compute the output shape",
    )
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),   # 56 -> 27: row and column 55 never read
        )
        example_input = torch.randn(1, 3, 56, 56)
        """,
        """
        import torch
        from torch import nn

        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(2))  # 25 -> 12
        example_input = torch.randn(1, 3, 25, 25)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),   # 56 -> 28: every pixel read
        )
        example_input = torch.randn(1, 3, 56, 56)
        """,
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 16, 7, stride=2, padding=3), nn.ReLU(),   # 64 -> 32, only padding left over
            nn.MaxPool2d(3, stride=2, padding=1),                  # 32 -> 16
            nn.Conv2d(16, 32, 3, stride=2, padding=1),             # even size: fine
            nn.Conv2d(32, 64, 1, stride=2),                        # 1x1/s2: skips by design
            nn.MaxPool2d(2, ceil_mode=True),                       # 4 -> 2
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
        """
        import torch
        from torch import nn

        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(2, ceil_mode=True))  # 25 -> 13
        example_input = torch.randn(1, 3, 25, 25)
        """,
        """
        import torch
        import torch.nn.functional as F
        from torch import nn


        class Downsample(nn.Module):  # TensorFlow-"SAME" padding by hand, as ported models do it
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 16, 3, stride=2)

            def forward(self, x):
                return self.conv(F.pad(x, (1, 1, 1, 1)))  # the pad is the conv's padding


        model = Downsample()
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        for layer in graph:
            w = layer.window
            if w is None or w.transposed:
                continue
            # A window narrower than its stride skips pixels by design (a strided 1x1 conv).
            dropped = {a: list(range(w.size_in[a] - w.unread(a), w.size_in[a]))
                       for a in range(w.ndim) if w.span(a) >= w.stride[a] and w.unread(a)}
            if dropped:
                yield self._finding(graph, layer, w, dropped)

    def _finding(self, graph, layer, w, dropped):
        names = _AXIS_NAMES.get(w.ndim, tuple(f"axis {a}" for a in range(w.ndim)))
        parts = [f"{names[a]}{'s' if len(idx) > 1 else ''} {_indices(idx)}" for a, idx in dropped.items()]
        total = math.prod(w.size_in)
        read = math.prod(w.size_in[a] - len(dropped.get(a, ())) for a in range(w.ndim))
        lost = total - read
        fits = {names[a]: self._fitting_sizes(w, a) for a in dropped}
        return self.finding(
            layer,
            f"{_window_text(layer, w)} on {shape_text(w.size_in)} never reads {_listed(parts)}: "
            f"its last window ends before the input does ({human(lost)} of {human(total)} "
            f"input positions, {lost / total:.1%}, are dropped)",
            evidence={"input_size": list(w.size_in), "output_size": list(w.size_out),
                      "kernel": list(w.kernel), "stride": list(w.stride), "padding": list(w.pad_before),
                      "dropped": {names[a]: idx for a, idx in dropped.items()},
                      "positions_dropped": lost, "positions": total, "sizes_that_fit": fits},
            fix=self._fix(graph, layer, w, fits),
            prefer="built" if layer.kind == Kind.MODULE else "call",
        )

    @staticmethod
    def _fitting_sizes(w, axis: int) -> list[int]:
        """The nearest input sizes, below and above, where (in + 2p - k) divides by the stride."""
        s = w.stride[axis]
        rest = (w.size_in[axis] + w.pad_before[axis] + w.pad_after[axis] - w.span(axis)) % s
        below = w.size_in[axis] - rest
        return [below, below + s]

    def _fix(self, graph, layer, w, fits) -> Fix:
        sizes = "; ".join(f"{name}s: {a} or {b}" for name, (a, b) in fits.items())
        module = layer.module
        if layer.kind == Kind.MODULE and is_conv(layer) and not isinstance(module.padding, str):
            extra = self._padding_that_reaches(w)
            if extra is not None:
                # The conv takes the extra padding itself; an explicit pad in front stays as it is.
                padding = tuple(p + e for p, e in zip(per_axis(module.padding, w.ndim), extra))
                grown = resized(w, pad_before=[p + e for p, e in zip(w.pad_before, extra)],
                                pad_after=[p + e for p, e in zip(w.pad_after, extra)])
                return Fix(f"pad the conv by {self._one(padding)}{kept_pad_text(graph, w)} so the last "
                           f"window reaches the last pixel (output {shape_text(w.size_out)} -> "
                           f"{shape_text(grown.size_out)}), or feed it a size that fits ({sizes})",
                           conv_call(module, padding=padding))
        if layer.kind == Kind.MODULE and hasattr(module, "ceil_mode") and not module.ceil_mode:
            out = [self._ceil_out(w, a) for a in range(w.ndim)]
            return Fix(f"use ceil_mode=True so the last window hangs over the edge and reads the "
                       f"rest (output {shape_text(w.size_out)} -> {shape_text(out)}), or feed it a "
                       f"size that fits ({sizes})", pool_call(module, ceil_mode=True))
        return Fix(f"pad the input so the last window reaches the end (or ceil_mode=True on a "
                   f"pool), or feed a size that fits ({sizes})")

    @staticmethod
    def _padding_that_reaches(w) -> list[int] | None:
        """The least padding to add on both sides of each axis so the last window reaches the
        last pixel, or None when even a kernel's worth does not."""
        extra = []
        for a in range(w.ndim):
            e = 0
            while resized(w, pad_before=[p + (e if i == a else 0) for i, p in enumerate(w.pad_before)],
                          pad_after=[p + (e if i == a else 0) for i, p in enumerate(w.pad_after)]).unread(a):
                e += 1
                if w.pad_before[a] + e >= w.span(a):
                    return None
            extra.append(e)
        return extra

    @staticmethod
    def _ceil_out(w, a: int) -> int:
        """Output size with ceil_mode=True, as torch computes it: the last window must start
        inside the input or its left padding."""
        out = replace(w, ceil_mode=True).expected_out(a)
        if (out - 1) * w.stride[a] >= w.size_in[a] + w.pad_before[a]:
            out -= 1
        return out

    @staticmethod
    def _one(values) -> str:
        return str(values[0]) if len(set(values)) == 1 else str(tuple(values))


def _indices(values: list[int]) -> str:
    """[24] -> '24'; [54, 55] -> '54-55'."""
    if len(values) == 1:
        return str(values[0])
    return f"{values[0]}-{values[-1]}"


def _listed(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _window_text(layer, w) -> str:
    kind = layer.op if layer.kind == Kind.MODULE else f"{layer.op}()"
    k = "x".join(map(str, w.kernel))
    s = w.stride[0] if len(set(w.stride)) == 1 else shape_text(w.stride)
    p = w.pad_before[0] if len(set(w.pad_before)) == 1 else shape_text(w.pad_before)
    return f"{kind} {k}/s{s}/p{p}"
