"""K002-K005, S001-S003 and R001 beyond their own examples: the edge cases their specs name, the
numbers they report, fixes that really fix, and silence on well-known good models."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archlint
from archlint.errors import ShapeError
from archlint.rules.kernels.dilation_gridding import _coverage, hdc_rates

from .helpers import lint_source

MINE = ["K002", "K003", "K004", "K005", "S001", "S002", "S003", "R001"]


def findings(model, shape, code, **options):
    """Lint `model`; a bare torch.nn layer is wrapped so it is traced as a layer, not as the
    functional call its forward makes."""
    if type(model).__module__.startswith("torch.nn") and not isinstance(model, nn.Sequential):
        model = nn.Sequential(model)
    rules = {code: options} if options else {}
    return archlint.lint(model, input_shape=shape, select=[code], rules=rules).findings


def modules(found) -> list[str]:
    return [f.module for f in found]


# --- K002 even-kernel ---------------------------------------------------------------------------

def test_k002_stride1_even_kernels_shift_and_strided_ones_do_not():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 2),                          # 32 -> 31, shifted
        nn.Conv2d(8, 8, 4, padding="same"),          # torch pads 1 before, 2 after: shifted
        nn.Conv2d(8, 8, 4, stride=4),                # patchify: fine
        nn.Conv2d(8, 8, 2, stride=2),                # 2x2 downsampler: fine
        nn.Conv2d(8, 8, (1, 3), padding=(0, 1)),     # odd: fine
    )
    found = findings(model, (1, 3, 32, 32), "K002")
    assert modules(found) == ["0", "1"]
    assert found[0].evidence["shift_px"] == [0.5, 0.5]
    assert found[1].evidence["shift_px"] == [0.5, 0.5] and found[1].evidence["size_out"] == [31, 31]
    assert found[0].fix.code == "nn.Conv2d(3, 8, 3, padding=1)"


def test_k002_only_the_axis_that_slides_by_one_counts():
    model = nn.Conv2d(3, 8, (4, 3), stride=(4, 1), padding=(0, 1))  # rows patchified, columns odd
    assert findings(model, (1, 3, 32, 32), "K002") == []


# --- K003 kernel-exceeds-input ------------------------------------------------------------------

def test_k003_counts_the_weights_that_never_see_the_input():
    model = nn.Conv2d(256, 256, 3, padding=1)
    [f] = findings(model, (1, 256, 1, 1), "K003")
    assert f.evidence["taps_reading_input"] == 1
    assert f.evidence["weights_wasted"] == 8 * 256 * 256
    assert f.fix.code == "nn.Conv2d(256, 256, 1)"


def test_k003_functional_conv():
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(32, 16, 5, 5))

        def forward(self, x):
            return F.conv2d(x, self.weight, padding=2)

    [f] = findings(Head(), (1, 16, 1, 1), "K003")
    assert f.evidence["weights_wasted"] == 24 * 16 * 32 and f.fix.code is None
    assert "1x1 conv (padding 0x0)" in f.fix.description


def test_k003_quiet_when_every_tap_reads_a_pixel_somewhere():
    assert findings(nn.Conv2d(8, 8, 3, padding=1), (1, 8, 2, 2), "K003") == []
    assert findings(nn.Conv2d(8, 8, 7, padding=3, groups=8), (1, 8, 7, 7), "K003") == []


def test_k003_dilation_past_the_map_leaves_the_center_tap_only():
    # An ASPP branch with rate 36 on the 28x28 map of an output-stride-8 backbone.
    aspp = nn.Conv2d(64, 64, 3, padding=36, dilation=36, bias=False)
    [f] = findings(aspp, (1, 64, 28, 28), "K003")
    assert f.evidence["taps_reading_input"] == 1 and "dilation 36" in f.message
    assert f.fix.code == "nn.Conv2d(64, 64, 1, bias=False)"


def test_k003_fix_computes_the_same_outputs():
    conv = nn.Conv2d(4, 6, 3, padding=2, dilation=2)
    [f] = findings(conv, (1, 4, 2, 2), "K003")
    replacement = eval(f.fix.code, {"nn": nn})
    with torch.no_grad():
        replacement.weight.copy_(conv.weight[:, :, 1:2, 1:2])
        replacement.bias.copy_(conv.bias)
        x = torch.randn(2, 4, 2, 2)
        assert torch.allclose(conv(x), replacement(x), atol=1e-6)


def test_k003_strided_conv_on_a_tiny_map_wastes_one_side():
    # 3x3/s2/p1 on 2x2 gives one output, centered on pixel 0: the first row and column of taps
    # read padding only. Keeping the other taps would need asymmetric padding: prose fix.
    [f] = findings(nn.Conv2d(8, 8, 3, stride=2, padding=1), (1, 8, 2, 2), "K003")
    assert f.evidence["taps_reading_input"] == 4 and f.fix.code is None


def test_k003_copies_of_real_pixels_are_not_padding():
    model = nn.Conv2d(8, 8, 3, padding=1, padding_mode="circular")
    assert findings(model, (1, 8, 1, 1), "K003") == []


# --- K004 missing-bottleneck --------------------------------------------------------------------

def test_k004_reports_params_and_macs_before_and_after():
    [f] = findings(nn.Conv2d(256, 256, 3, padding=1, bias=False), (1, 256, 14, 14), "K004")
    e = f.evidence
    assert e["params_now"] == 9 * 256 * 256
    assert e["params_after"] == 256 * 64 + 9 * 64 * 64 + 64 * 256
    assert e["macs_now"] == 9 * 256 * 256 * 14 * 14
    assert e["macs_after"] == (256 * 64 + 9 * 64 * 64 + 64 * 256) * 14 * 14
    block = eval(f.fix.code, {"nn": nn})
    assert block(torch.randn(1, 256, 14, 14)).shape == (1, 256, 14, 14)


def test_k004_quiet_after_a_1x1_reduction_and_respects_min_channels():
    reduced = nn.Sequential(nn.Conv2d(1024, 256, 1), nn.BatchNorm2d(256), nn.ReLU(),
                            nn.Conv2d(256, 256, 3, padding=1))
    assert findings(reduced, (1, 1024, 8, 8), "K004") == []
    narrow = nn.Conv2d(128, 128, 3, padding=1)
    assert findings(narrow, (1, 128, 8, 8), "K004") == []
    assert len(findings(narrow, (1, 128, 8, 8), "K004", **{"min-channels": 128})) == 1


# --- K005 dilation-gridding ---------------------------------------------------------------------

def dilated(*rates, residual=False):
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=r, dilation=r) for r in rates)

        def forward(self, x):
            for conv in self.convs:
                x = x + torch.relu(conv(x)) if residual else torch.relu(conv(x))
            return x

    return Stack()


@pytest.mark.parametrize("rates, fires", [
    ((2, 2), True), ((2, 4, 8), True), ((3, 6), True),
    ((1, 2, 5), False), ((2, 3), False), ((2, 1, 2), False), ((2,), False),
])
def test_k005_rates_with_a_common_factor(rates, fires):
    found = findings(dilated(*rates), (1, 8, 32, 32), "K005")
    assert bool(found) == fires, found
    if fires:
        assert found[0].evidence["dilations"] == list(rates)


def test_k005_follows_residual_blocks():
    [f] = findings(dilated(2, 2, 2, residual=True), (1, 8, 32, 32), "K005")
    assert f.evidence["positions_read"] == 7 and f.evidence["span"] == 13


def test_k005_aspp_branches_are_not_part_of_the_stack():
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.stack = dilated(2, 2, residual=True)
            self.branches = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=r, dilation=r) for r in (6, 12, 18))

        def forward(self, x):
            x = self.stack(x)
            return torch.cat([branch(x) for branch in self.branches], dim=1)

    [f] = findings(Head(), (1, 8, 64, 64), "K005")
    assert f.evidence["layers"] == ["stack.convs.0", "stack.convs.1"]


def test_k005_suggested_rates_fill_the_span_and_never_fire_again():
    for count in range(2, 7):
        for rate in (2, 3, 4):
            rates = hdc_rates(count, rate, 1)
            reached, span = _coverage(rates, 1)
            assert reached == span, rates
            assert all(math.gcd(a, b) == 1 for a, b in zip(rates, rates[1:])), rates
    assert hdc_rates(3, 2, 1) == [1, 2, 3]
    assert findings(dilated(*hdc_rates(5, 2, 1)), (1, 8, 64, 64), "K005") == []


# --- S001 dropped-pixels ------------------------------------------------------------------------

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


# --- S002 shrinking-padding ---------------------------------------------------------------------

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


# --- S003 input-multiple ------------------------------------------------------------------------

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


# --- R001 receptive-field-short -----------------------------------------------------------------

def test_r001_reports_the_field_of_the_last_map_before_global_pooling():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    [f] = findings(model, (1, 3, 32, 32), "R001")
    assert f.evidence["receptive_field"] == [5, 5] and f.evidence["input_size"] == [32, 32]
    assert f.module == "2"  # the conv that set the field, not the ReLU after it
    extra = eval(f.fix.code, {"nn": nn})
    grown = nn.Sequential(*list(model)[:4], extra, nn.AdaptiveAvgPool2d(1))
    assert findings(grown, (1, 3, 32, 32), "R001") == []
    assert findings(model, (1, 3, 32, 32), "R001", **{"min-coverage": 0.1}) == []


def test_r001_dense_output_gets_encoder_advice_not_layers_after_it():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))
    [f] = findings(model, (1, 3, 32, 32), "R001")
    assert f.evidence["receptive_field"] == [5, 5] and f.fix.code is None
    assert "encoder" in f.fix.description


def test_r001_global_context_inside_the_network_counts():
    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Conv2d(8, 8, 1)

        def forward(self, x):
            x = self.conv(x)
            return x * torch.sigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)))

    assert findings(nn.Sequential(SE(), nn.AdaptiveAvgPool2d(1)), (1, 3, 32, 32), "R001") == []


def test_receptive_field_survives_channels_last_blocks():
    """A ConvNeXt-style block (permute, LayerNorm, Linear, permute back) keeps the 7x7 field."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.dw = nn.Conv2d(8, 8, 7, padding=3, groups=8)
            self.norm, self.fc = nn.LayerNorm(8), nn.Linear(8, 8)

        def forward(self, x):
            y = self.fc(self.norm(self.dw(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
            return x + y

    report = archlint.lint(nn.Sequential(Block(), Block()), input_shape=(1, 8, 32, 32), select=["R001"])
    last = [l for l in report.graph if l.op == "add"][-1]
    assert last.rf.size == (13, 13) and not last.rf.is_global


def test_receptive_field_of_a_transposed_conv_grows_by_what_it_gathers():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1))
    report = archlint.lint(model, input_shape=(1, 3, 16, 16), select=["R001"])
    up = report.graph.layers[-1]
    assert up.rf.size == (5, 5) and up.rf.jump == (1.0, 1.0)  # 3 + (ceil(4/2) - 1) * 2


# --- real models --------------------------------------------------------------------------------

def torchvision_model(name):
    torchvision = pytest.importorskip("torchvision")
    return getattr(torchvision.models, name)(weights=None)


def timm_model(name):
    timm = pytest.importorskip("timm")
    return timm.create_model(name, pretrained=False)


# Genuine information these rules give on good models: ResNet-18's basic blocks run 3x3 convs at
# 256 and 512 channels without a bottleneck (ResNet-50 and deeper use one), and so do VGG and AlexNet.
# Same-shaped convs in the same role of repeated blocks share one finding (resnet18: 7 convs, 5 findings).
EXPECTED_INFO = {"resnet18": {"K004": 5}, "vgg16": {"K004": 8}, "alexnet": {"K004": 2}}

FAST = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
        "regnet_y_400mf", "alexnet"]
SLOW = ["convnext_tiny", "densenet121", "vit_b_16", "vgg16"]


def check_quiet(name, model):
    report = archlint.lint(model, input_shape=(1, 3, 224, 224), select=MINE)
    assert not report.error
    counts: dict[str, int] = {}
    for f in report.findings:
        counts[f.code] = counts.get(f.code, 0) + 1
    assert counts == EXPECTED_INFO.get(name, {}), [(f.code, f.module, f.message) for f in report.findings]
    assert all(f.severity < archlint.Severity.WARNING for f in report.findings)


@pytest.mark.parametrize("name", FAST)
def test_quiet_on_torchvision(name):
    check_quiet(name, torchvision_model(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_quiet_on_torchvision_slow(name):
    check_quiet(name, torchvision_model(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50d", "convnext_nano"])
def test_quiet_on_timm(name):
    check_quiet(name, timm_model(name))


def test_squeezenet_stem_drops_the_last_row_and_column():
    # A genuine finding: 3x3/s2 without padding on 224 ends its last window at 222.
    [f] = findings(torchvision_model("squeezenet1_1"), (1, 3, 224, 224), "S001")
    assert f.module == "features.0" and f.evidence["dropped"] == {"row": [223], "column": [223]}


def test_resnet50_receptive_field_is_427():
    report = archlint.lint(torchvision_model("resnet50"), input_shape=(1, 3, 224, 224), select=["R001"])
    pool = report.graph.layer([l.name for l in report.graph.layers if l.qualname == "avgpool"][0])
    [last] = report.graph.predecessors(pool)
    assert last.rf.size == (427, 427) and report.findings == []


def test_one_and_three_dimensional_models():
    signal = nn.Sequential(nn.Conv1d(1, 8, 4), nn.Conv1d(8, 8, 3, dilation=2, padding=2),
                           nn.Conv1d(8, 8, 3, dilation=2, padding=2), nn.AdaptiveAvgPool1d(1))
    report = archlint.lint(signal, input_shape=(1, 1, 25), select=MINE)
    assert sorted(f.code for f in report.findings) == ["K002", "K005", "R001"]
    volume = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.MaxPool3d(2), nn.AdaptiveAvgPool3d(1))
    [f] = archlint.lint(volume, input_shape=(1, 1, 9, 16, 16), select=["S001"]).findings
    assert f.evidence["dropped"] == {"slice": [8]} and f.fix.code == "nn.MaxPool3d(2, ceil_mode=True)"


def test_k004_one_finding_for_convs_built_by_one_line(write_model):
    path = write_model("""
        import torch
        from torch import nn

        class Block(nn.Module):
            def __init__(self, c=256):
                super().__init__()
                self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)

            def forward(self, x):
                return torch.relu(self.conv(x)) + x

        model = nn.Sequential(Block(), Block(), Block(), nn.Conv2d(256, 256, 3, padding=1))
        example_input = torch.randn(1, 256, 8, 8)
    """)
    report = archlint.check_paths([str(path)], archlint.api.Settings(select=["K004"]))
    found = report.findings
    assert [f.module for f in found] == ["0.conv", "3"]
    assert found[0].evidence["same_convs"] == ["1.conv", "2.conv"]
    assert "also 1.conv, 2.conv, built by the same line" in found[0].message
