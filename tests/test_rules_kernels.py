"""K001-K005 beyond their own examples: even kernels that shift, taps that only read padding,
bottlenecks, dilation rates that grid."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archlint
from archlint.rules.kernels.dilation_gridding import _coverage, hdc_rates

from .helpers import findings


def modules(found) -> list[str]:
    return [f.module for f in found]


def test_k001_fix_keeps_a_reflection_pad_in_front_and_the_size():
    # A CycleGAN-style body conv: the pad supplies the 7x7's padding, so the 3x3s take none.
    model = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(16, 16, 7), nn.ReLU())
    [f] = findings(model, (1, 16, 32, 32), "K001")
    assert "keeping the ReflectionPad2d in front" in f.fix.description
    assert f.fix.checked == "runs"
    stack = eval(f.fix.code, {"nn": nn})
    x = torch.randn(1, 16, 32, 32)
    assert nn.Sequential(nn.ReflectionPad2d(3), stack)(x).shape == model(x).shape


def test_k001_stack_pads_as_much_as_the_conv_did():
    # An unpadded 5x5 (LeNet's style) becomes two unpadded 3x3s: a drop-in, not a resize.
    model = nn.Sequential(nn.Conv2d(32, 32, 5), nn.ReLU(), nn.Conv2d(32, 32, 5, padding=1))
    found = findings(model, (1, 32, 32, 32), "K001")
    assert [f.fix.checked for f in found] == ["runs", "runs"]
    assert "nn.Conv2d(32, 32, 3)," in found[0].fix.code and "padding" not in found[0].fix.code
    x = torch.randn(1, 32, 32, 32)
    for f in found:
        conv = model[int(f.module)]
        stack = eval(f.fix.code, {"nn": nn})
        assert stack(x).shape == conv(x).shape


def test_k001_a_widening_conv_is_stacked_at_its_input_width():
    # AlexNet's 64->192 5x5: at the output's width the stack would cost more than the conv;
    # at the input's width, widened by the last 3x3, it costs half.
    model = nn.Sequential(nn.Conv2d(64, 192, 5, padding=2), nn.BatchNorm2d(192), nn.ReLU())
    [f] = findings(model, (1, 64, 27, 27), "K001")
    assert f.evidence["params_after"] < f.evidence["params_now"] / 2
    assert f.fix.checked == "runs"
    assert "nn.Conv2d(64, 64, 3, padding=1, bias=False)" not in f.fix.code  # bias kept as the model has it
    assert "nn.BatchNorm2d(64)" in f.fix.code and "nn.Conv2d(64, 192, 3, padding=1)" in f.fix.code


def test_k001_strided_stem_stack_keeps_the_output_size():
    stem = nn.Sequential(nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU())  # AlexNet's
    [f] = findings(stem, (1, 3, 224, 224), "K001")
    assert f.fix.checked == "runs"
    x = torch.randn(1, 3, 224, 224)
    assert eval(f.fix.code, {"nn": nn})(x).shape == stem[0](x).shape


def test_k001_quiet_on_a_stride1_conv_whose_stack_costs_more_weights():
    # pytorch-cifar's LeNet: 5x5 convs widening 3->6->16; two 3x3s hold more weights at the
    # output's width, and at the input's they squeeze through 3 or 6 channels.
    lenet = nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
    assert findings(lenet, (1, 3, 32, 32), "K001") == []
    # ...while a strided RGB stem (ResNet-C) still fires, although its stack is larger too.
    stem = nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU())
    [f] = findings(stem, (1, 3, 64, 64), "K001")
    assert f.evidence["params_after"] > f.evidence["params_now"]


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


# --- issue 10: K001/K002 precision on real code (docs/precision.md) ---------------------------

class _InstanceNormTranslator(nn.Module):
    """Image-to-image net: 7x7 stem on RGB and 7x7 back to RGB (CycleGAN-style), with a
    5x5 mid conv that is a real K001 case, so the rule must still speak there, in the
    model's own InstanceNorm + LeakyReLU."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 7, padding=3)
        self.norm1 = nn.InstanceNorm2d(16)
        self.act1 = nn.LeakyReLU(0.2)
        self.mid = nn.Conv2d(16, 16, 5, padding=2)
        self.norm2 = nn.InstanceNorm2d(16)
        self.act2 = nn.LeakyReLU(0.2)
        self.out = nn.Conv2d(16, 3, 7, padding=3)

    def forward(self, x):
        y = self.act1(self.norm1(self.stem(x)))
        y = self.act2(self.norm2(self.mid(y)))
        return torch.tanh(self.out(y))


def test_k001_quiet_on_image_space_stem_and_output_fix_uses_the_models_norm():
    found = findings(_InstanceNormTranslator(), (1, 3, 32, 32), "K001")
    assert modules(found) == ["mid"]  # stem (3->16) and output (16->3) are image-space projections
    [f] = found
    assert "InstanceNorm2d+LeakyReLU" in f.fix.description and "BatchNorm" not in f.fix.code
    stack = eval(f.fix.code, {"nn": nn})
    assert isinstance(stack[1], nn.InstanceNorm2d) and isinstance(stack[2], nn.LeakyReLU)
    assert stack[2].negative_slope == 0.2


def test_k001_quiet_on_norm_free_sr_net_and_still_fires_on_a_batchnorm_classifier_stem():
    sr = nn.Sequential(nn.Conv2d(1, 32, 9, padding=4), nn.ReLU(), nn.Conv2d(32, 16, 5, padding=2),
                       nn.ReLU(), nn.Conv2d(16, 1, 5, padding=2))
    assert findings(sr, (1, 1, 32, 32), "K001") == []
    classifier = nn.Sequential(nn.Conv2d(3, 32, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(32),
                               nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    [f] = findings(classifier, (1, 3, 64, 64), "K001")
    assert f.module == "0" and "BatchNorm2d+ReLU" in f.fix.description


def test_k001_quiet_on_a_conv_token_embedding_before_layernorm():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, 32, 7, stride=4, padding=3)   # CvT: overlapping, stride 4
            self.embed2 = nn.Conv2d(32, 32, 5, stride=2, padding=2)  # stride 2 but LayerNorm after
            self.norm = nn.LayerNorm(32)
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            t = self.embed2(self.embed(x)).flatten(2).transpose(1, 2)
            return self.head(self.norm(t).mean(1))

    assert findings(Tokens(), (1, 3, 64, 64), "K001") == []


class _ChannelLayerNorm(nn.Module):
    """vit-pytorch's CvT LayerNorm: over the channels of an N x C x H x W map, by hand."""

    def __init__(self, dim):
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x):
        var = torch.var(x, dim=1, unbiased=False, keepdim=True)
        mean = torch.mean(x, dim=1, keepdim=True)
        return (x - mean) / (var + 1e-5).sqrt() * self.g


def test_k001_quiet_on_a_token_embedding_before_a_handwritten_layernorm():
    embedding = nn.Sequential(nn.Conv2d(3, 64, 7, stride=4, padding=3), _ChannelLayerNorm(64))
    assert findings(embedding, (1, 3, 64, 64), "K001") == []
    # A BatchNorm after the same conv is a CNN stem's.
    stem = nn.Sequential(nn.Conv2d(3, 64, 7, stride=4, padding=3), nn.BatchNorm2d(64), nn.ReLU())
    assert modules(findings(stem, (1, 3, 64, 64), "K001")) == ["0"]


def test_k002_quiet_on_fixed_blur_kernel_and_single_output_position():
    class Disc(nn.Module):
        def __init__(self):
            super().__init__()
            k = torch.tensor([1.0, 3.0, 3.0, 1.0])
            k = k[:, None] * k[None, :]
            self.register_buffer("blur", (k / k.sum())[None, None].repeat(8, 1, 1, 1))
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.learned = nn.Conv2d(8, 8, 4, padding=1)   # a trained even kernel: still reported
            self.final = nn.Conv2d(8, 1, 4)                 # 4x4 on a 4x4 map: one position

        def forward(self, x):
            x = F.conv2d(F.pad(self.conv(x), (2, 1, 2, 1)), self.blur, groups=8)
            x = F.adaptive_avg_pool2d(self.learned(x), 4)
            return self.final(x)

    assert modules(findings(Disc(), (1, 3, 16, 16), "K002")) == ["learned"]
