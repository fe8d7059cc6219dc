"""S002 shrinking-padding: stride-1 convs padded by less than k//2, shaving pixels off the map."""
from __future__ import annotations

from archlint.findings import Fix, Severity
from archlint.graph.ops import ANY_CONV_TYPES, Kind, is_conv
from archlint.rule import Rule

from ..helpers import conv_call, conv_windows, kept_pad_text, own_padding, shape_text


class ShrinkingPadding(Rule):
    code = "S002"
    name = "shrinking-padding"
    severity = Severity.INFO
    summary = "Stride-1 convs padded by less than k//2: every layer shaves pixels off the map."
    what = """
        Finds stride-1 convolutions with an odd kernel k (dilation d) whose padding is less
        than d(k-1)/2, so their output is smaller than their input. Convs that follow one
        another (through pooling, norms and activations, with no properly padded conv between)
        form one run and are reported once, at the first conv of the run. A conv whose output
        is 1x1 (a kernel that covers the whole map, used as a head) is left alone. An explicit
        pad in front of a conv (a CycleGAN block's `nn.ReflectionPad2d(1)` before a 3x3 with
        padding 0, a TensorFlow-"SAME" `F.pad`) counts as its padding.
        """
    why = """
        Without padding a k x k conv loses k-1 pixels per axis, so the map shrinks at every
        layer: ten 3x3 convs take 20 pixels off each side's total. The border pixels are seen
        by fewer windows than the center ones, sizes stop being round numbers (which breaks
        skip connections and downsampling later), and the depth the network can have is
        capped by the input size. With stride 1, padding (k-1)/2 keeps the size, which is what
        most architectures do; the original U-Net's unpadded convs are the well-known
        exception, and it has to crop every skip connection to match.
        """
    how_to_fix = """
        Pad every conv of the run with padding=d*(k-1)//2 (`padding=k//2` without dilation), or
        pass padding="same". The fix prints each conv of the run with its padding.
        """
    references = (
        "Seed notes / CS231n: with stride 1, padding (k-1)/2 preserves the size (https://cs231n.github.io/convolutional-networks/)",
        "Ronneberger et al., U-Net (unpadded convolutions and cropped skips), MICCAI 2015",
    )
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 16, 3), nn.ReLU(),      # 32 -> 30
            nn.Conv2d(16, 16, 3), nn.ReLU(),     # 30 -> 28
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5), nn.ReLU(),     # 14 -> 10
        )
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 5, padding="same"), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 16),               # 16x16 -> 1x1: a head that covers the whole map
        )
        example_input = torch.randn(1, 3, 32, 32)
        """,
        """
        import torch
        from torch import nn

        model = nn.Sequential(                   # a CycleGAN generator's residual branch
            nn.ReflectionPad2d(1), nn.Conv2d(16, 16, 3), nn.InstanceNorm2d(16), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(16, 16, 3), nn.InstanceNorm2d(16),
        )
        example_input = torch.randn(1, 16, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        windows = {layer.name: w for layer, w in conv_windows(graph) if _shrinks(w)}
        joined: dict[str, str] = {}  # conv -> first conv of its run

        def not_a_conv(layer) -> bool:
            return layer.kind not in (Kind.INPUT, Kind.ATTR) and not isinstance(layer.module, ANY_CONV_TYPES) \
                and not is_conv(layer)

        runs: dict[str, list[str]] = {}
        for name in windows:  # execution order
            before = [p.name for p in graph.previous_layers(graph.layer(name), through=not_a_conv)]
            heads = [joined[p] for p in before if p in joined]
            head = heads[0] if heads else name
            joined[name] = head
            runs.setdefault(head, []).append(name)
        for head, names in runs.items():
            yield self._finding(graph, [graph.layer(n) for n in names], [windows[n] for n in names])

    def _finding(self, graph, convs, windows):
        first, last = windows[0], windows[-1]
        lost = [sum(w.span(a) - 1 - w.pad_before[a] - w.pad_after[a] for w in windows) for a in range(first.ndim)]
        lines = []
        for layer, w in zip(convs, windows):
            padding = own_padding(graph, w, [d * (k - 1) // 2 for k, d in zip(w.kernel, w.dilation)])
            kept = f" ({kept_pad_text(graph, w)[2:]})" if w.pad_layer else ""
            if layer.kind == Kind.MODULE:
                lines.append(f"{conv_call(layer.module, padding=padding)},  # {layer.qualname}{kept}")
            else:
                lines.append(f"F.{layer.op}(..., padding={padding}),  # in {layer.qualname or 'forward'}{kept}")
        count = len(convs)
        what = "a stride-1 conv with padding below k//2 shrinks" if count == 1 else \
            f"{count} stride-1 convs with padding below k//2 shrink"
        per_axis = f"{lost[0]} pixels per side length" if len(set(lost)) == 1 else f"{shape_text(lost)} pixels"
        return self.finding(
            convs[0],
            f"{what} the map from {shape_text(first.size_in)} to {shape_text(last.size_out)} "
            f"({per_axis} lost to missing padding{' over the run' if count > 1 else ''})",
            evidence={"layers": [c.qualname for c in convs], "size_in": list(first.size_in),
                      "size_out": list(last.size_out), "pixels_lost": lost},
            fix=Fix("pad each conv by d*(k-1)//2 (padding=k//2, or padding=\"same\") so stride-1 "
                    "convs keep the map size", "\n".join(lines)),
        )


def _shrinks(w) -> bool:
    """A stride-1 conv with an odd (dilated) kernel padded by less than half of it. An explicit
    pad in front (a CycleGAN block's ReflectionPad2d, a TensorFlow-"SAME" F.pad) is part of
    the window's padding."""
    if any(s != 1 for s in w.stride):
        return False
    if all(o == 1 for o in w.size_out):  # a conv that covers the whole map on purpose (a head)
        return False
    return any(w.span(a) % 2 == 1 and w.pad_before[a] + w.pad_after[a] < w.span(a) - 1
               for a in range(w.ndim))
