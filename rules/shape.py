"""S: feature-map sizes. Windows that miss pixels, padding that shrinks maps, inputs that do not
divide evenly through an encoder-decoder."""
from __future__ import annotations

import math

from torch import nn

from archlint.findings import Fix, Severity
from archlint.rule import Rule

from ._common import (conv_call, human, is_conv, is_upsampling, pool_call, shape_text,
                      sliding_window, spatial)

_AXIS_NAMES = {1: ("position",), 2: ("row", "column"), 3: ("slice", "row", "column")}


def _indices(values: list[int]) -> str:
    """[24] -> '24'; [54, 55] -> '54-55'."""
    if len(values) == 1:
        return str(values[0])
    return f"{values[0]}-{values[-1]}"


def _listed(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _window_text(layer, w) -> str:
    kind = layer.op if layer.kind == "module" else f"{layer.op}()"
    k = "x".join(map(str, w.kernel))
    s = w.stride[0] if len(set(w.stride)) == 1 else shape_text(w.stride)
    p = w.pad_before[0] if len(set(w.pad_before)) == 1 else shape_text(w.pad_before)
    return f"{kind} {k}/s{s}/p{p}"


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
    )

    def check(self, graph, ctx):
        for layer in graph:
            w = sliding_window(layer)
            if w is None:
                continue
            dropped = {}
            for a in range(w.ndim):
                if w.span(a) < w.stride[a]:
                    continue
                last = w.last_read(a)
                if last < w.size_in[a] - 1:
                    dropped[a] = list(range(last + 1, w.size_in[a]))
            if dropped:
                yield self._finding(layer, w, dropped)

    def _finding(self, layer, w, dropped):
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
            fix=self._fix(layer, w, dropped, fits),
            prefer="built" if layer.kind == "module" else "call",
        )

    @staticmethod
    def _fitting_sizes(w, axis: int) -> list[int]:
        """The nearest input sizes, below and above, where (in + 2p - k) divides by the stride."""
        s = w.stride[axis]
        rest = (w.size_in[axis] + w.pad_before[axis] + w.pad_after[axis] - w.span(axis)) % s
        below = w.size_in[axis] - rest
        return [below, below + s]

    def _fix(self, layer, w, dropped, fits) -> Fix:
        sizes = "; ".join(f"{name}s: {a} or {b}" for name, (a, b) in fits.items())
        module = layer.module
        if layer.kind == "module" and is_conv(layer) and not isinstance(module.padding, str):
            padding = self._padding_that_reaches(w)
            if padding is not None:
                out = [(w.size_in[a] + 2 * padding[a] - w.span(a)) // w.stride[a] + 1 for a in range(w.ndim)]
                return Fix(f"pad the conv by {self._one(padding)} so the last window reaches the last "
                           f"pixel (output {shape_text(w.size_out)} -> {shape_text(out)}), or feed it "
                           f"a size that fits ({sizes})", conv_call(module, padding=tuple(padding)))
        if layer.kind == "module" and hasattr(module, "ceil_mode") and not module.ceil_mode:
            out = [self._ceil_out(w, a) for a in range(w.ndim)]
            return Fix(f"use ceil_mode=True so the last window hangs over the edge and reads the "
                       f"rest (output {shape_text(w.size_out)} -> {shape_text(out)}), or feed it a "
                       f"size that fits ({sizes})", pool_call(module, ceil_mode=True))
        return Fix(f"pad the input so the last window reaches the end (or ceil_mode=True on a "
                   f"pool), or feed a size that fits ({sizes})")

    @staticmethod
    def _padding_that_reaches(w) -> list[int] | None:
        padding = []
        for a in range(w.ndim):
            p = w.pad_before[a]
            while True:
                out = (w.size_in[a] + 2 * p - w.span(a)) // w.stride[a] + 1
                if (out - 1) * w.stride[a] - p + w.span(a) - 1 >= w.size_in[a] - 1:
                    break
                p += 1
                if p >= w.span(a):
                    return None
            padding.append(p)
        return padding

    @staticmethod
    def _ceil_out(w, a: int) -> int:
        """Output size with ceil_mode=True, as torch computes it: the last window must start
        inside the input or its left padding."""
        s, p = w.stride[a], w.pad_before[a]
        out = -(-(w.size_in[a] + 2 * p - w.span(a)) // s) + 1
        if (out - 1) * s >= w.size_in[a] + p:
            out -= 1
        return out

    @staticmethod
    def _one(values) -> str:
        return str(values[0]) if len(set(values)) == 1 else str(tuple(values))


def _padded_before(graph, layer):
    """The input size before an explicit pad that feeds the conv (F.pad, nn.ZeroPad2d: how
    TensorFlow-style "same" convs pad), or None."""
    sources = [p for p in graph.predecessors(layer) if p.kind != "attr" and p.out_shapes]
    if len(sources) != 1:
        return None
    pad = sources[0]
    is_pad = (pad.kind in ("function", "method") and pad.op in ("pad", "constant_pad_nd")) or \
        isinstance(pad.module, (nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
                                nn.modules.padding._ReplicationPadNd))
    return spatial(pad.in_shape) if is_pad else None


def _shrinks(graph, layer, w) -> bool:
    """A stride-1 conv with an odd (dilated) kernel padded by less than half of it."""
    if not is_conv(layer) or any(s != 1 for s in w.stride):
        return False
    if all(o == 1 for o in w.size_out):  # a conv that covers the whole map on purpose (a head)
        return False
    before_pad = _padded_before(graph, layer)
    if before_pad is not None and all(o >= i for o, i in zip(w.size_out, before_pad)):
        return False
    return any(w.span(a) % 2 == 1 and w.pad_before[a] + w.pad_after[a] < w.span(a) - 1
               for a in range(w.ndim))


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
        is 1x1 (a kernel that covers the whole map, used as a head) is left alone.
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
    )

    def check(self, graph, ctx):
        windows = {}
        for layer in graph:
            if is_conv(layer):
                w = sliding_window(layer)
                if w is not None and _shrinks(graph, layer, w):
                    windows[layer.name] = w
        joined: dict[str, str] = {}  # conv -> first conv of its run

        def not_a_conv(layer) -> bool:
            return layer.kind not in ("input", "attr") and not isinstance(layer.module, nn.modules.conv._ConvNd) \
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
            padding = tuple(d * (k - 1) // 2 for k, d in zip(w.kernel, w.dilation))
            if layer.kind == "module":
                lines.append(f"{conv_call(layer.module, padding=padding)},  # {layer.qualname}")
            else:
                lines.append(f"F.{layer.op}(..., padding={padding}),  # in {layer.qualname or 'forward'}")
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


# --- S003 ------------------------------------------------------------------------------------

_MERGES = {"cat", "concat", "concatenate", "stack", "add", "add_", "iadd"}
_CROPS_AND_PADS = {"pad", "constant_pad_nd", "getitem", "narrow", "slice", "center_crop", "crop"}


def _tensor_inputs(graph, layer, ndim):
    return [p for p in graph.predecessors(layer) if p.kind != "attr" and spatial(p.out_shape) is not None
            and len(p.out_shape) == ndim + 2]



# One U-Net serves both S003 examples: only the input size decides.
_UNET = """\
import torch
import torch.nn.functional as F
from torch import nn


def block(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU())


class UNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc1, self.enc2, self.enc3 = block(3, 16), block(16, 32), block(32, 64)
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(64, 32, 2, stride=2)
        self.dec2 = block(64, 32)
        self.up1 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec1 = block(32, 16)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        u2 = self.up2(e3)
        u2 = F.pad(u2, [0, e2.shape[3] - u2.shape[3], 0, e2.shape[2] - u2.shape[2]])
        d2 = self.dec2(torch.cat([u2, e2], dim=1))
        u1 = self.up1(d2)
        u1 = F.pad(u1, [0, e1.shape[3] - u1.shape[3], 0, e1.shape[2] - u1.shape[2]])
        return self.dec1(torch.cat([u1, e1], dim=1))


model = UNet()

"""

class InputMultiple(Rule):
    code = "S003"
    name = "input-multiple"
    severity = Severity.WARNING
    summary = "An encoder-decoder fed an input size that its downsampling does not divide evenly."
    what = """
        Finds encoder-decoders (U-Net, FPN-style decoders) that upsample a map and then merge it
        with a skip connection (cat or add), when the example input is not a multiple of the
        encoder's total downsampling. It looks for the symptom in the graph: an upsampled map
        whose size differs from the skip it is merged with, so that the forward has to pad,
        crop or resize it first (F.pad, slicing, interpolate to the skip's size). The total
        downsampling is the stride of the map that is upsampled. When the sizes do not match and
        nothing pads them, the model cannot be traced at all, and archlint's load error says
        so and names the multiple.
        """
    why = """
        Each stride-2 step floors odd sizes: 116 -> 58 -> 29 -> 14. Upsampling 14 gives 28,
        which no longer matches the 29x29 skip, so the decoder must pad, crop or resize, and
        whichever it does, the merged maps are misaligned by up to a pixel at that level and
        more below it, with padded borders treated like image content. The model works only
        when every encoder level has an even size, which is when the input is a multiple of
        2^(number of downsamplings): 16 for four, 32 for five. Training on crops of one size and
        predicting on another size hides this until deployment.
        """
    how_to_fix = """
        Feed inputs whose sides are multiples of the stated number: resize or crop in the data
        pipeline, or pad the image up to the next multiple before the model and crop the
        output back. The fix prints a helper that does the padding.
        """
    references = (
        "Ronneberger et al., U-Net: Convolutional Networks for Biomedical Image Segmentation, MICCAI 2015 (input sizes chosen so every 2x2 pooling sees an even size)",
        "Seed notes / CS231n: out = (in - k)/s + 1 for pooling (https://cs231n.github.io/convolutional-networks/)",
    )
    bad = (_UNET + "example_input = torch.randn(1, 3, 30, 30)  # 30 -> 15 -> 7: not a multiple of 4\n",)
    good = (_UNET + "example_input = torch.randn(1, 3, 32, 32)  # a multiple of 4: the pads add nothing\n",)

    def check(self, graph, ctx):
        if not graph.input_shapes or len(graph.input_shapes[0]) < 3:
            return
        image = graph.input_shapes[0][2:]
        ndim = len(image)
        mended = []  # (merge, the layer that changed a size, its size before, after)
        upsamplers = []
        for merge in graph:
            if merge.kind not in ("function", "method") or merge.op not in _MERGES:
                continue
            if len(_tensor_inputs(graph, merge, ndim)) < 2:
                continue
            ups = self._upsamplers(graph, merge, ndim)
            if not ups:
                continue
            upsamplers += ups
            merged = tuple(spatial(merge.out_shape))
            for up in ups:
                before, after = spatial(up.in_shape), spatial(up.out_shape)
                if before is None or len(before) != ndim:
                    continue
                if any(a % b for a, b in zip(after, before)):  # resized by a fractional factor
                    mended.append((merge, up, tuple(before), tuple(after)))
                elif tuple(after) != merged:  # padded or cropped on the way to the merge
                    mended.append((merge, up, tuple(after), merged))
            if any(m[0] is merge for m in mended):
                continue  # the upsampled map's own size already tells; its pad is the same story
            for crop in self._crops_and_pads(graph, merge):
                mended.append((merge, crop, tuple(spatial(crop.in_shape)), tuple(spatial(crop.out_shape))))
        if not mended:
            return
        multiple = self._multiple(graph, image, upsamplers)
        if multiple is None or all(i % m == 0 for i, m in zip(image, multiple)):
            return
        yield self._finding(image, multiple, mended)

    @staticmethod
    def _crops_and_pads(graph, merge):
        """Crops and pads that change a map's size on its way into `merge` (a skip cropped to
        the upsampled map's size, or the other way round)."""
        def keeps_size(layer) -> bool:
            if layer.kind in ("input", "attr") or is_upsampling(layer):
                return False
            if layer.kind in ("function", "method") and layer.op in _MERGES:
                return False
            before, after = spatial(layer.in_shape), spatial(layer.out_shape)
            return before is not None and before == after

        found = []
        for layer in graph.previous_layers(merge, through=keeps_size):
            if layer.kind in ("function", "method") and layer.op in _CROPS_AND_PADS:
                before, after = spatial(layer.in_shape), spatial(layer.out_shape)
                if before is not None and after is not None and len(before) == len(after) and before != after:
                    found.append(layer)
        return found

    @staticmethod
    def _upsamplers(graph, merge, ndim):
        """The upsampling layers that feed `merge` through size-keeping layers and crops/pads."""
        def through(layer) -> bool:
            if is_upsampling(layer) or layer.kind in ("input", "attr"):
                return False
            if layer.kind in ("function", "method") and layer.op in _MERGES:
                return False
            if layer.kind in ("function", "method") and layer.op in _CROPS_AND_PADS:
                return True
            before, after = spatial(layer.in_shape), spatial(layer.out_shape)
            return before is not None and before == after

        return [l for l in graph.previous_layers(merge, through=through)
                if is_upsampling(l) and spatial(l.out_shape) is not None and len(l.out_shape) == ndim + 2]

    @staticmethod
    def _multiple(graph, image, upsamplers):
        """The stride of the deepest map that is upsampled, per axis, when its size is the
        input's divided by that stride (floored or ceiled). Unpadded convs shrink maps by more
        than that; then the input size is not what makes the pieces misfit (see S002)."""
        deepest, size = None, None
        for up in upsamplers:
            sources = [p for p in graph.predecessors(up) if p.rf is not None and spatial(p.out_shape) is not None]
            if not sources:
                continue
            jump = [int(round(j)) for j in sources[0].rf.jump]
            if len(jump) == len(image) and (deepest is None or math.prod(jump) > math.prod(deepest)):
                deepest, size = jump, spatial(sources[0].out_shape)
        if deepest is None or min(deepest) < 2 or len(size) != len(image):
            return None
        if any(abs(s - i / j) >= 1 for s, i, j in zip(size, image, deepest)):
            return None
        return deepest

    def _finding(self, image, multiple, mended):
        merge = mended[0][0]
        below = [i - i % m for i, m in zip(image, multiple)]
        above = [b + m for b, m in zip(below, multiple)]
        fixes = "; ".join(f"{self._what(layer)} {shape_text(a)} -> {shape_text(b)}" for _, layer, a, b in mended)
        m_text = self._one(multiple)
        return self.finding(
            merge,
            f"input {shape_text(image)} is not a multiple of {m_text}, the encoder's total "
            f"downsampling: upsampled maps no longer match their skips and are padded, cropped "
            f"or resized before merging ({fixes})",
            evidence={"input_size": list(image), "multiple": multiple,
                      "nearest_sizes": [below, above],
                      "resized": [{"merge": m.name, "by": self._what(layer),
                                   "size_before": list(a), "size_after": list(b)}
                                  for m, layer, a, b in mended]},
            fix=Fix(f"feed sizes that are multiples of {m_text} (e.g. {shape_text(below)} or "
                    f"{shape_text(above)}), or pad inputs up to the next multiple and crop the "
                    f"output back",
                    "import torch.nn.functional as F\n\n"
                    f"def pad_to_multiple(x, multiple={max(multiple)}):\n"
                    "    \"\"\"Zero-pad the bottom and right so height and width divide evenly.\"\"\"\n"
                    "    h, w = x.shape[-2:]\n"
                    "    return F.pad(x, (0, -w % multiple, 0, -h % multiple))"),
            prefer="call",
        )

    @staticmethod
    def _one(values) -> str:
        return str(values[0]) if len(set(values)) == 1 else shape_text(values)

    @staticmethod
    def _what(layer) -> str:
        if layer.kind == "module":
            return layer.qualname
        names = {"getitem": "slicing", "narrow": "narrow", "pad": "F.pad", "constant_pad_nd": "F.pad"}
        where = f" in {layer.qualname}" if layer.qualname else ""
        return f"{names.get(layer.op, layer.op)}{where}"
