"""D001-D003 beyond their own examples: pooling that a strided conv could learn, strided 1x1
convs, downsampling without widening."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archlint.findings import Severity

from .helpers import conv_bn_relu, found, lint, modules, timm_model, torchvision_model


def test_d001_global_pool_and_resnet_d_shortcut_are_quiet():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = conv_bn_relu(16, 32, stride=2)
            self.short = nn.Sequential(nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False),
                                       nn.Conv2d(16, 32, 1, bias=False))

        def forward(self, x):
            return self.body(x) + self.short(x)

    model = nn.Sequential(conv_bn_relu(3, 16), Block(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    assert not found(lint(model, select=["D001"]))


def test_d001_functional_pool_fires_and_counts_what_it_drops():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            return F.max_pool2d(self.conv(x), 2)

    [f] = found(lint(Net(), select=["D001"]))
    assert f.severity == Severity.INFO
    assert f.evidence["reduction"] == [2, 2] and f.evidence["values_kept"] == 0.25
    assert f.evidence["params_added"] == 9 * 8 * 8 + 8  # no norm in the model: the conv keeps its bias
    assert "stride=2" in f.fix.code


def test_d001_is_a_warning_in_models_that_reconstruct_an_image_unless_turned_off():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Upsample(scale_factor=2), nn.Conv2d(8, 3, 3, padding=1))
    [f] = found(lint(model, select=["D001"]))
    assert f.severity == Severity.WARNING and f.evidence["generative_model"]
    [f] = found(lint(model, select=["D001"], rules={"D001": {"warn-in-decoders": False}}))
    assert f.severity == Severity.INFO


def test_d001_fix_keeps_a_temporal_axis_that_is_not_pooled():
    model = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.MaxPool3d((1, 2, 2)), nn.Conv3d(8, 16, 3, padding=1))
    [f] = found(lint(model, shape=(1, 3, 4, 16, 16), select=["D001"]))
    assert f.evidence["reduction"] == [1, 2, 2]
    assert "nn.Conv3d(8, 8, kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)" in f.fix.code
    assert f.evidence["params_added"] == 9 * 8 * 8 + 8  # no norm in the model: the conv keeps its bias


def test_d001_segmentation_models_stay_information():
    class FCN(nn.Module):  # resizes its class scores at the end: no decoder
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 3, 1))

        def forward(self, x):
            return F.interpolate(self.body(x), size=x.shape[-2:], mode="bilinear")

    class TinyUNet(nn.Module):  # decodes, but to 5 class maps
        def __init__(self):
            super().__init__()
            self.down = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.pool = nn.MaxPool2d(2)
            self.mid = nn.Conv2d(8, 16, 3, padding=1)
            self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
            self.head = nn.Conv2d(16, 5, 1)

        def forward(self, x):
            skip = self.down(x)
            return self.head(torch.cat([skip, self.up(self.mid(self.pool(skip)))], dim=1))

    for model in (FCN(), TinyUNet()):
        [f] = found(lint(model, select=["D001"]))
        assert f.severity == Severity.INFO and not f.evidence["generative_model"]


def test_d002_only_strided_1x1():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                          nn.Conv2d(16, 32, 1, stride=2))
    [f] = found(lint(model, select=["D002"]))
    assert f.module == "2"
    assert f.evidence["positions_ignored"] == 0.75
    assert "nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)" in f.fix.code
    assert "nn.Conv2d(16, 32, 1)" in f.fix.code  # stride gone, channels kept


def test_d002_fix_matches_the_dimensionality():
    model = nn.Sequential(nn.Conv1d(4, 8, 1, stride=3, bias=False))
    [f] = found(lint(model, shape=(1, 4, 30), select=["D002"]))
    assert "nn.AvgPool1d(3, 3" in f.fix.code and "nn.Conv1d(4, 8, 1, bias=False)" in f.fix.code
    assert f.evidence["positions_read"] == pytest.approx(1 / 3, abs=1e-3)


def test_d002_quiet_on_a_1x1_map():
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(3, 8, 1, stride=2))
    assert not found(lint(model, select=["D002"]))


def test_d002_quiet_on_a_reparameterizable_1x1_branch():
    class RepBlock(nn.Module):  # RepVGG: 3x3 and 1x1 branches of one input, summed; fold into one 3x3
        def __init__(self, c_in, c_out):
            super().__init__()
            self.kxk = nn.Sequential(nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out))
            self.pointwise = nn.Sequential(nn.Conv2d(c_in, c_out, 1, 2, bias=False), nn.BatchNorm2d(c_out))

        def forward(self, x):
            return torch.relu(self.kxk(x) + self.pointwise(x))

    assert not found(lint(RepBlock(8, 16), shape=(1, 8, 16, 16), select=["D002"]))


def test_d002_quiet_on_a_strided_attention_query():
    class StridedQueryAttention(nn.Module):  # HaloNet: queries at every other position, keys everywhere
        def __init__(self, c=16):
            super().__init__()
            self.q = nn.Conv2d(c, c, 1, stride=2, bias=False)
            self.kv = nn.Conv2d(c, 2 * c, 1, bias=False)

        def forward(self, x):
            b, c, h, w = x.shape
            q = self.q(x).flatten(2).transpose(1, 2)
            k, v = self.kv(x).flatten(2).chunk(2, dim=1)
            attn = (q @ k).softmax(-1)
            return (attn @ v.transpose(1, 2)).transpose(1, 2).reshape(b, c, h // 2, w // 2)

    assert not found(lint(StridedQueryAttention(), shape=(1, 16, 8, 8), select=["D002"]))


def test_d003_textbook_plain_net_fires_at_each_body_step_not_the_stem():
    model = nn.Sequential(conv_bn_relu(3, 32, stride=2), conv_bn_relu(32, 32, stride=2),  # stem: /2, /4
                          conv_bn_relu(32, 32), conv_bn_relu(32, 32, stride=2), conv_bn_relu(32, 32),
                          nn.MaxPool2d(2), conv_bn_relu(32, 32),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    report = lint(model, shape=(1, 3, 64, 64), select=["D003"])
    assert modules(report, "D003") == {"3.0", "5"}
    f = next(f for f in found(report) if f.module == "3.0")
    assert f.evidence["compute_per_layer_drop"] == 4 and f.evidence["widest_after"] == 32
    assert "nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False)" in f.fix.code


def test_d003_inverted_residual_that_widens_as_a_block_is_quiet():
    def inverted(c_in, c_out, stride):
        hidden = c_in * 6
        return nn.Sequential(conv_bn_relu(c_in, hidden, 1),
                             nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),  # keeps width
                             nn.BatchNorm2d(hidden), nn.ReLU(),
                             nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    model = nn.Sequential(conv_bn_relu(3, 16, stride=4), inverted(16, 24, 1), inverted(24, 32, 2),
                          inverted(32, 64, 2), inverted(64, 64, 1))
    assert not found(lint(model, shape=(1, 3, 128, 128), select=["D003"]))


def test_d003_a_side_branch_that_pools_further_does_not_end_the_stage():
    class Gated(nn.Module):  # GhostNetV2-style gate: pool, conv, upsample back, multiply
        def __init__(self, c):
            super().__init__()
            self.gate = nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            g = torch.sigmoid(F.interpolate(self.gate(F.avg_pool2d(x, 2)), size=x.shape[-2:]))
            return x * g

    model = nn.Sequential(conv_bn_relu(3, 32, stride=4), conv_bn_relu(32, 32, stride=2), Gated(32),
                          conv_bn_relu(32, 64))  # the stage widens after the gate
    assert not found(lint(model, shape=(1, 3, 64, 64), select=["D003"]))


def test_d003_pool_before_the_head_is_quiet():
    model = nn.Sequential(conv_bn_relu(3, 32, stride=4), conv_bn_relu(32, 64, stride=2), conv_bn_relu(64, 64),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 4 * 4, 10))
    assert not found(lint(model, shape=(1, 3, 64, 64), select=["D003"]))


def test_d003_auxiliary_head_and_narrowing_branch_are_quiet():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = conv_bn_relu(3, 32, stride=4)
            self.body = nn.Sequential(conv_bn_relu(32, 64, stride=2), conv_bn_relu(64, 64))
            self.aux = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(64, 64, 1), nn.Flatten(), nn.Linear(64 * 2 * 2, 10))
            self.low = conv_bn_relu(64, 32, stride=2)  # a narrower low-resolution branch (HRNet)
            self.low_body = conv_bn_relu(32, 32)

        def forward(self, x):
            x = self.body(self.stem(x))
            return self.aux(x), self.low_body(self.low(x))

    assert not found(lint(Net(), shape=(1, 3, 32, 32), select=["D003"]))


@pytest.mark.slow
def test_d002_fires_on_resnet50_shortcuts_exactly_and_not_on_resnet50d():
    report = lint(torchvision_model("resnet50"), shape=(1, 3, 224, 224), select=["D002"])
    assert modules(report, "D002") == {"layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"}
    assert not found(lint(timm_model("resnet50d"), shape=(1, 3, 224, 224), select=["D002"]))


@pytest.mark.slow
def test_d003_quiet_on_resnet18_stem_maxpool_and_mobilenet():
    assert not found(lint(torchvision_model("resnet18"), shape=(1, 3, 224, 224), select=["D003"]))
    assert not found(lint(torchvision_model("mobilenet_v2"), shape=(1, 3, 224, 224), select=["D003"]))
