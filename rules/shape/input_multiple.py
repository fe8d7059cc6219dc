"""S003 input-multiple: an encoder-decoder fed an input size its downsampling does not divide."""
from __future__ import annotations

import math

from archlint.findings import Fix, Severity
from archlint.graph.ops import (CONCAT_FUNCTIONS, CROP_FUNCTIONS, PAD_FUNCTIONS, SUM_FUNCTIONS,
                                Kind, is_call_of, is_upsampling)
from archlint.rule import Rule

from ..helpers import shape_text, spatial


# Merges that join an upsampled map and its skip: they need the two sizes to match.
_MERGES = CONCAT_FUNCTIONS | SUM_FUNCTIONS

_CROPS_AND_PADS = PAD_FUNCTIONS | CROP_FUNCTIONS


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
        if not any(is_upsampling(layer) for layer in graph):
            return  # nothing upsampled: no maps to misfit their skips
        image = graph.input_shapes[0][2:]
        ndim = len(image)
        mended = []  # (merge, the layer that changed a size, its size before, after)
        upsamplers = []
        for merge in graph:
            if not is_call_of(merge, _MERGES):
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
            if layer.kind in (Kind.INPUT, Kind.ATTR) or is_upsampling(layer):
                return False
            if is_call_of(layer, _MERGES):
                return False
            before, after = spatial(layer.in_shape), spatial(layer.out_shape)
            return before is not None and before == after

        found = []
        for layer in graph.previous_layers(merge, through=keeps_size):
            if is_call_of(layer, _CROPS_AND_PADS):
                before, after = spatial(layer.in_shape), spatial(layer.out_shape)
                if before is not None and after is not None and len(before) == len(after) and before != after:
                    found.append(layer)
        return found

    @staticmethod
    def _upsamplers(graph, merge, ndim):
        """The upsampling layers that feed `merge` through size-keeping layers and crops/pads."""
        def through(layer) -> bool:
            if is_upsampling(layer) or layer.kind in (Kind.INPUT, Kind.ATTR):
                return False
            if is_call_of(layer, _MERGES):
                return False
            if is_call_of(layer, _CROPS_AND_PADS):
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
        if layer.kind == Kind.MODULE:
            return layer.qualname
        names = {"getitem": "slicing", "narrow": "narrow", "pad": "F.pad", "constant_pad_nd": "F.pad"}
        where = f" in {layer.qualname}" if layer.qualname else ""
        return f"{names.get(layer.op, layer.op)}{where}"


def _tensor_inputs(graph, layer, ndim):
    return [p for p in graph.predecessors(layer) if p.kind != Kind.ATTR and spatial(p.out_shape) is not None
            and len(p.out_shape) == ndim + 2]
