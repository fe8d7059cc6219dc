"""S001-S003 beyond their own examples: pixels no window reads, padding that shrinks maps (and
explicit pads that are padding), inputs an encoder-decoder does not divide."""
from __future__ import annotations

import pytest
import torch.nn.functional as F
from torch import nn

from archlint.errors import ShapeError

from .helpers import findings, lint_source, torchvision_model


@pytest.mark.parametrize("layer, size, dropped", [
    (nn.Conv2d(3, 3, 3, stride=2), 56, [55]),                         # 3x3/s2/p0 on 56
    (nn.MaxPool2d(2), 25, [24]),
    (nn.Conv2d(3, 3, 3, stride=2, dilation=2), 10, [9]),              # spans 5
    (nn.AvgPool2d(3, stride=3), 11, [9, 10]),
    (nn.Conv2d(3, 3, 3, stride=2, padding=1), 112, None),             # only padding left over
    (nn.MaxPool2d(3, stride=2, padding=1), 112, None),                # ResNet's stem pool
    (nn.Conv2d(3, 3, 7, stride=2, padding=3), 224, None),             # ResNet's stem conv
    (nn.MaxPool2d(2, ceil_mode=True), 25, None),
    (nn.Conv2d(3, 3, 1, stride=2), 57, None),                         # kernel < stride: not this rule
])
def test_s001_dropped_rows(layer, size, dropped):
    found = findings(layer, (1, 3, size, size), "S001")
    if dropped is None:
        assert found == []
    else:
        [f] = found
        assert f.evidence["dropped"] == {"row": dropped, "column": dropped}


def test_s001_fix_reads_every_pixel():
    for layer, size in ((nn.Conv2d(3, 3, 3, stride=2), 56), (nn.MaxPool2d(2), 25), (nn.MaxPool2d(3, 2), 30)):
        [f] = findings(layer, (1, 3, size, size), "S001")
        fixed = eval(f.fix.code, {"nn": nn})
        assert findings(fixed, (1, 3, size, size), "S001") == [], f.fix.code


def test_s001_functional_pool_points_at_the_call(tmp_path):
    report = lint_source("""
        import torch
        import torch.nn.functional as F
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3, padding=1)

            def forward(self, x):
                return F.max_pool2d(self.conv(x), 2)

        model = Net()
        example_input = torch.randn(1, 3, 25, 25)
        """, tmp_path, select=["S001"])
    [f] = report.findings
    assert f.location.line == 11 and f.evidence["dropped"]["row"] == [24]


def test_s002_one_finding_per_run():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.MaxPool2d(2), nn.Conv2d(8, 8, 5),
        nn.Conv2d(8, 8, 3, padding=1),                   # a padded conv ends the run
        nn.Conv2d(8, 8, 3, dilation=2, padding=1),       # needs padding 2: a second run
    )
    found = findings(model, (1, 3, 40, 40), "S002")
    assert [f.evidence["layers"] for f in found] == [["0", "2", "4"], ["6"]]
    assert found[0].evidence["size_in"] == [40, 40] and found[0].evidence["size_out"] == [14, 14]
    assert found[0].evidence["pixels_lost"] == [8, 8]
    assert "padding=2, dilation=2" in found[1].fix.code


def test_s002_quiet_on_padded_even_strided_and_head_convs():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding="same"), nn.Conv2d(8, 8, 2, stride=2),
                          nn.Conv2d(8, 8, 4), nn.Conv2d(8, 8, 3, stride=2), nn.Conv2d(8, 8, 3))
    # the 4x4 is K002's business; the strided 3x3 is not stride 1; the last one maps 3x3 to 1x1
    assert findings(model, (1, 3, 20, 20), "S002") == []


def test_s002_an_explicit_pad_in_front_is_padding():
    class SameConv(nn.Conv2d):  # how TensorFlow-ported models pad ("same")
        def forward(self, x):
            return super().forward(F.pad(x, (1, 1, 1, 1)))

    model = nn.Sequential(SameConv(3, 8, 3), nn.ReLU(), SameConv(8, 8, 3))
    assert findings(model, (1, 3, 16, 16), "S002") == []


def generator(pad: bool) -> nn.Module:
    """A CycleGAN-style generator: reflection pads in front of unpadded convs (a 7x7 stem, a
    stride-2 downsampling conv, a residual block's 3x3s); without `pad`, the same convs."""
    def padded(amount, conv):
        return [nn.ReflectionPad2d(amount), conv] if pad else [conv]

    return nn.Sequential(
        *padded(3, nn.Conv2d(3, 16, 7)), nn.ReLU(),
        *padded(1, nn.Conv2d(16, 32, 3, stride=2)), nn.ReLU(),
        *padded(1, nn.Conv2d(32, 32, 3)), nn.InstanceNorm2d(32), nn.ReLU(),
        *padded(1, nn.Conv2d(32, 32, 3)), nn.InstanceNorm2d(32),
    )


def test_reflection_pads_in_front_of_unpadded_convs_are_their_padding():
    assert findings(generator(pad=True), (1, 3, 64, 64), "S001") == []
    assert findings(generator(pad=True), (1, 3, 64, 64), "S002") == []
    # Without the pads the convs really shave pixels off, and the strided one drops a row.
    shrinking = findings(generator(pad=False), (1, 3, 64, 64), "S002")
    assert [f.evidence["layers"] for f in shrinking] == [["0"], ["4", "7"]]
    [dropped] = findings(generator(pad=False), (1, 3, 64, 64), "S001")
    assert dropped.module == "2" and dropped.evidence["dropped"] == {"row": [57], "column": [57]}


class FixedPaddingConv(nn.Conv2d):
    """TensorFlow-"SAME"-style padding done by hand before a stride-2 conv (DeepLab's
    fixed_padding): F.pad by (k-1)//2 on each side, then the conv with padding 0."""

    def forward(self, x):
        total = self.kernel_size[0] - 1
        return super().forward(F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2)))


def test_f_pad_before_a_strided_conv_is_its_padding():
    model = nn.Sequential(FixedPaddingConv(3, 8, 3, stride=2), nn.ReLU(), FixedPaddingConv(8, 8, 3))
    assert findings(model, (1, 3, 32, 32), "S001") == []
    assert findings(model, (1, 3, 32, 32), "S002") == []
    [f] = findings(nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU()), (1, 3, 32, 32), "S001")
    assert f.evidence["dropped"] == {"row": [31], "column": [31]}


def test_fixes_keep_an_explicit_pad_and_pad_only_the_rest():
    model = nn.Sequential(nn.ZeroPad2d(1), nn.Conv2d(3, 8, 5), nn.ReLU())  # pads 1 of the 2 needed
    [f] = findings(model, (1, 3, 16, 16), "S002")
    assert f.evidence["size_in"] == [16, 16] and f.evidence["pixels_lost"] == [2, 2]
    assert f.fix.code.startswith("nn.Conv2d(3, 8, 5, padding=1),") and "keeping the ZeroPad2d" in f.fix.code


UNET = """
    import torch
    import torch.nn.functional as F
    from torch import nn


    def block(c_in, c_out, pad={pad}):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=pad), nn.ReLU())


    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.encs = nn.ModuleList([block(3, 8), block(8, 16), block(16, 32), block(32, 64)])
            self.ups = nn.ModuleList([nn.Upsample(scale_factor=2) for _ in range(3)])
            self.decs = nn.ModuleList([block(96, 32), block(48, 16), block(24, 8)])

        def forward(self, x):
            skips = []
            for i, enc in enumerate(self.encs):
                x = enc(x if i == 0 else F.max_pool2d(x, 2))
                skips.append(x)
            x = skips.pop()
            for up, dec in zip(self.ups, self.decs):
                skip = skips.pop()
                x = {merge}
                skip = {skip}
                x = dec(torch.cat([x, skip], dim=1))
            return x


    model = UNet()
    example_input = torch.randn(1, 3, {size}, {size})
"""


PAD = "F.pad(up(x), [0, skip.shape[3] - up(x).shape[3], 0, skip.shape[2] - up(x).shape[2]])"


RESIZE = "F.interpolate(x, size=skip.shape[2:])"


CROP_SKIP = "skip[:, :, :x.shape[2], :x.shape[3]]"


def unet(pad=1, merge="up(x)", skip="skip", size=116):
    return UNET.format(pad=pad, merge=merge, skip=skip, size=size)


@pytest.mark.parametrize("merge, skip", [(PAD, "skip"), (RESIZE, "skip"), ("up(x)", CROP_SKIP)],
                         ids=["pad", "interpolate-to-size", "crop-skip"])
def test_s003_states_the_multiple(merge, skip, tmp_path):
    report = lint_source(unet(merge=merge, skip=skip, size=116), tmp_path, select=["S003"])
    [f] = report.findings
    assert f.evidence["multiple"] == [8, 8]
    assert f.evidence["nearest_sizes"] == [[112, 112], [120, 120]]
    quiet = lint_source(unet(merge=merge, skip=skip, size=112), tmp_path, select=["S003"])
    assert not quiet.errors and quiet.findings == []


def test_s003_unpadded_unet_is_not_about_the_input_size(tmp_path):
    # Unpadded convs (the original U-Net) shrink every level: 60 -> 58 -> 29 -> 27 -> ... -> 3 at
    # stride 8, far from 60/8. Padding the upsampled maps is needed at any input size, so S003
    # stays quiet and S002 names the cause.
    report = lint_source(unet(pad=0, merge=PAD, size=60), tmp_path, select=["S003", "S002"])
    assert not report.errors
    assert {f.code for f in report.findings} == {"S002"}


def test_s003_trace_failure_names_the_multiple(tmp_path):
    report = lint_source(unet(size=116), tmp_path, select=["S003"])
    [failed] = report.errors
    assert isinstance(failed.error, ShapeError)
    message = str(failed.error)
    assert "multiples of its total downsampling, here 8" in message
    assert "112x112 or 120x120" in message
    ok = lint_source(unet(size=112), tmp_path, select=["S003"])
    assert not ok.errors and ok.findings == []


def test_squeezenet_stem_drops_the_last_row_and_column():
    # A genuine finding: 3x3/s2 without padding on 224 ends its last window at 222.
    [f] = findings(torchvision_model("squeezenet1_1"), (1, 3, 224, 224), "S001")
    assert f.module == "features.0" and f.evidence["dropped"] == {"row": [223], "column": [223]}


def test_s001_sees_an_explicit_pad_through_pointwise_layers_and_still_fires_without_one():
    # DeepLabV3Plus's MobileNetV2: F.pad on the block input, then 1x1 expansion + BN + ReLU6,
    # then the depthwise 3x3/s2 with padding=0 reads the padded map: every image pixel is read.
    class Block(nn.Module):
        def __init__(self, padded: bool):
            super().__init__()
            self.expand = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
            self.dw = nn.Conv2d(16, 16, 3, 2, 0, groups=16, bias=False)
            self.padded = padded

        def forward(self, x):
            return self.dw(self.expand(F.pad(x, (1, 1, 1, 1)) if self.padded else x))

    assert findings(Block(True), (1, 8, 64, 64), "S001") == []
    [f] = findings(Block(False), (1, 8, 64, 64), "S001")  # 64 -> 31: row and column 63 never read
    assert f.module == "dw"
