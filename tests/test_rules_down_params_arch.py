"""D001-D003, P001-P003, A001-A003 beyond their own examples: edge cases, textbook firing
cases, and silence on well-known good models."""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archlint
from archlint.findings import Severity
from archlint.rules.architecture.deep_plain_stack import longest_plain_chains

MINE = ["D001", "D002", "D003", "P001", "P002", "P003", "A001", "A002", "A003"]


def lint(model, shape=(1, 3, 32, 32), select=MINE, **options):
    return archlint.lint(model, input_shape=shape, select=select, **options)


def found(report, code=None):
    return [f for f in report.findings if code is None or f.code == code]


def modules(report, code):
    return {f.module for f in report.findings if f.code == code}


def conv_bn_relu(c_in, c_out, k=3, stride=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU())


# --- D001 pool-downsampling -------------------------------------------------------------------

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
    assert f.evidence["params_added"] == 9 * 8 * 8
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
    assert f.evidence["params_added"] == 9 * 8 * 8


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


# --- D002 strided-pointwise ---------------------------------------------------------------------

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


# --- D003 downsample-without-widening ------------------------------------------------------------

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


# --- P001 dense-head-dominates ---------------------------------------------------------------------

def test_p001_evidence_and_threshold():
    model = nn.Sequential(conv_bn_relu(3, 16), nn.Flatten(), nn.Dropout(), nn.Linear(16 * 32 * 32, 100),
                          nn.ReLU(), nn.Linear(100, 10))
    [f] = found(lint(model, select=["P001"]))
    assert f.module == "3"
    assert f.evidence["flattened"] == [16, 32, 32]
    assert f.evidence["params_after"] == 16 * 100 + 100
    assert f.evidence["share"] > 0.9
    assert f.evidence["model_params_after"] == f.evidence["model_params"] - f.evidence["params"] + 1700
    assert "nn.AdaptiveAvgPool2d(1)" in f.fix.code and "nn.Linear(16, 100)" in f.fix.code
    assert not found(lint(model, select=["P001"], rules={"P001": {"max-share": 0.9999}}))


def test_p001_sees_a_view_flatten():
    class LeNetish(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 16, 5)
            self.fc = nn.Linear(16 * 24 * 24, 120)
            self.out = nn.Linear(120, 10)

        def forward(self, x):
            x = torch.relu(self.conv(x))
            return self.out(torch.relu(self.fc(x.view(x.size(0), -1))))

    [f] = found(lint(LeNetish(), shape=(2, 1, 28, 28), select=["P001"]))
    assert f.module == "fc" and f.evidence["flattened"] == [16, 24, 24]


def test_p001_quiet_when_pooled_first_even_if_the_head_is_big():
    model = nn.Sequential(nn.Conv2d(3, 512, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 4096))
    assert not found(lint(model, select=["P001"]))


# --- P002 channels-not-multiple-of-8 ------------------------------------------------------------

def test_p002_one_finding_per_model_exempting_input_and_class_count():
    model = nn.Sequential(nn.Conv2d(3, 20, 3, padding=1), nn.ReLU(), nn.Conv2d(20, 36, 3, padding=1),
                          nn.ReLU(), nn.Conv2d(36, 32, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(32, 10))
    [f] = found(lint(model, select=["P002"]))
    assert {entry["module"] for entry in f.evidence["layers"]} == {"0", "2", "4"}
    assert f.module == "4"  # the costliest of them: 36->32 channels
    assert "nn.Conv2d(24, 40, 3, padding=1)  # 2" in f.fix.code
    assert "nn.Conv2d(3, 24, 3, padding=1)  # 0" in f.fix.code  # the RGB input stays 3


def test_p002_exempts_the_input_channels_behind_any_preprocessing():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.head = nn.Conv2d(16, 5, 1)

        def forward(self, x):
            return self.head(torch.relu(self.conv((x - 0.5) * 2)))

    assert not found(lint(Net(), select=["P002"]))


def test_p002_exempts_a_decoders_rgb_image_behind_its_activation():
    model = nn.Sequential(nn.ConvTranspose2d(100, 64, 4), nn.ReLU(),
                          nn.ConvTranspose2d(64, 3, 4, 2, 1), nn.Tanh())
    assert not found(lint(model, shape=(1, 100, 1, 1), select=["P002"]))


def test_p002_ignores_misalignment_that_costs_almost_nothing():
    class SE(nn.Module):  # a 4-channel squeeze: negligible compute
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(64, 64, 3, padding=1)
            self.squeeze = nn.Conv2d(64, 4, 1)
            self.expand = nn.Conv2d(4, 64, 1)

        def forward(self, x):
            x = self.body(x)
            return x * torch.sigmoid(self.expand(torch.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))

    assert not found(lint(SE(), shape=(1, 64, 32, 32), select=["P002"]))
    assert found(lint(SE(), shape=(1, 64, 32, 32), select=["P002"], rules={"P002": {"min-macs-share": 0.0}}))


# --- P003 unused-parameters -------------------------------------------------------------------------

class _Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.spare = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
        self.frozen = nn.Linear(8, 8).requires_grad_(False)
        self.stray = nn.Parameter(torch.zeros(8))

    def forward(self, x):
        return self.stem(x)


def test_p003_reports_the_outermost_unused_module_and_stray_parameters():
    report = lint(_Unused(), select=["P003"])
    assert modules(report, "P003") == {"spare", ""}
    spare = next(f for f in found(report) if f.module == "spare")
    assert spare.severity == Severity.WARNING and spare.evidence["unused_params"] == 2 * (64 + 8)
    stray = next(f for f in found(report) if f.module == "")
    assert stray.evidence["module"] == "stray"


def test_p003_shared_modules_tied_weights_and_direct_reads_are_used():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 8)
            self.alias = self.proj  # same module, second name
            self.out = nn.Linear(8, 8, bias=False)
            self.out.weight = self.proj.weight
            self.scale = nn.Parameter(torch.ones(8))

        def forward(self, x):
            return F.linear(self.alias(x) * self.scale, self.out.weight)

    assert not found(lint(Net(), shape=(2, 8), select=["P003"]))


def test_p003_branch_not_taken_is_only_information():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.aux = nn.Linear(8, 2)

        def forward(self, x, with_aux: bool = False):
            y = self.fc(x)
            if with_aux:
                return y, self.aux(y)
            return y

    [f] = found(lint(Net(), shape=(2, 8), select=["P003"]))
    assert f.module == "aux" and f.severity == Severity.INFO and f.evidence["mentioned_outside_init"]
    assert "find_unused_parameters=True" in f.fix.code


def test_p003_unused_bias_suggests_bias_false():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return x @ self.fc.weight.t()

    [f] = found(lint(Net(), shape=(2, 8), select=["P003"]))
    assert f.evidence["module"] == "fc.bias" and "bias=False" in f.fix.code


# --- A001 missing-nonlinearity -----------------------------------------------------------------------

def test_a001_linear_bottleneck_and_depthwise_pointwise_are_quiet():
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 96, 1), nn.BatchNorm2d(96), nn.ReLU6(),
        nn.Conv2d(96, 96, 3, padding=1, groups=96), nn.BatchNorm2d(96), nn.ReLU6(),
        nn.Conv2d(96, 24, 1), nn.BatchNorm2d(24),   # linear bottleneck: no activation on purpose
        nn.Conv2d(24, 144, 1), nn.BatchNorm2d(144), nn.ReLU6(),
        nn.Conv2d(144, 144, 5, padding=2, groups=144), nn.BatchNorm2d(144),  # depthwise ...
        nn.Conv2d(144, 32, 1),                                                # ... then pointwise
    )
    assert not found(lint(model, select=["A001"]))


def test_a001_attention_projections_are_not_in_a_row():
    class Attention(nn.Module):
        def __init__(self, dim=32, heads=4):
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            b, n, c = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
            x = F.scaled_dot_product_attention(q, k, v)
            return self.proj(x.transpose(1, 2).reshape(b, n, c))

    assert not found(lint(Attention(), shape=(1, 8, 32), select=["A001"]))


def test_a001_fires_through_layernorm_and_reshape_and_names_the_pair():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(32, 64)
            self.norm = nn.LayerNorm(64)
            self.fc2 = nn.Linear(64, 64)

        def forward(self, x):
            return self.fc2(self.norm(self.fc1(x)).reshape(-1, 4, 64))

    [f] = found(lint(Net(), shape=(4, 4, 32), select=["A001"]))
    assert f.module == "fc2" and f.evidence["first"] == "fc1"
    assert f.evidence["between"] == ["LayerNorm", "reshape"]
    assert f.evidence["params_single"] == 32 * 64 + 64
    assert "nn.LayerNorm(64)" in f.fix.code and "nn.GELU()" in f.fix.code


def test_a001_conv_pair_reports_the_combined_kernel():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Dropout2d(0.1), nn.Conv2d(8, 8, 3, padding=1))
    [f] = found(lint(model, shape=(1, 8, 32, 32), select=["A001"]))
    assert f.evidence["combined_kernel"] == [7, 7]  # 3 + (3 - 1) * stride 2


# --- A002 softmax-output ---------------------------------------------------------------------------

class _Head(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.fc = nn.Linear(16, 4)
        self.how = how

    def forward(self, x):
        logits = self.fc(x)
        if self.how == "method":
            return logits.softmax(-1)
        if self.how == "torch":
            return torch.softmax(logits, dim=1)
        if self.how == "log":
            return F.log_softmax(logits, dim=1)
        if self.how == "both":
            return logits, logits.softmax(-1)
        if self.how == "eval-only":
            return logits if self.training else logits.softmax(-1)
        return logits


@pytest.mark.parametrize("how, severity", [("method", Severity.WARNING), ("torch", Severity.WARNING),
                                           ("log", Severity.INFO), ("both", None), ("eval-only", None),
                                           ("plain", None)])
def test_a002_forms_of_softmax(how, severity):
    result = found(lint(_Head(how), shape=(2, 16), select=["A002"]))
    if severity is None:
        assert not result
    else:
        [f] = result
        assert f.severity == severity and f.evidence["classifier"] == "fc"


def test_a002_softmax_that_is_not_over_classifier_scores_is_quiet():
    class Net(nn.Module):
        def forward(self, x):
            return torch.softmax(x, dim=-1)  # a normalization of the input, not a classifier

    assert not found(lint(Net(), shape=(2, 16), select=["A002"]))


# --- A003 deep-plain-stack --------------------------------------------------------------------------

def _plain(n, c=8):
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1),
                         *[m for _ in range(n - 1) for m in (nn.Conv2d(c, c, 3, padding=1), nn.ReLU())])


def test_a003_thirty_plain_convs_fire_and_vgg_depth_does_not():
    [f] = found(lint(_plain(30), shape=(1, 3, 8, 8), select=["A003"]))
    assert f.evidence["plain_depth"] == 30 and f.evidence["first"] == "0"
    assert "class Residual" in f.fix.code
    assert not found(lint(_plain(16), shape=(1, 3, 8, 8), select=["A003"]))
    assert found(lint(_plain(16), shape=(1, 3, 8, 8), select=["A003"], rules={"A003": {"max-plain-depth": 15}}))


class _Res(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + torch.relu(self.conv(x))


def test_a003_a_skip_in_the_middle_breaks_the_chain():
    model = nn.Sequential(_plain(15), _Res(), *list(_plain(16))[1:])
    report = lint(model, shape=(1, 3, 8, 8), select=["A003"])
    assert not found(report)
    # 15 convs plus the residual branch's own conv, then the add starts a new chain of 15
    assert [count for count, _, _ in longest_plain_chains(report.graph)] == [16, 15]


def test_a003_depthwise_and_pointwise_count_as_one_layer():
    def separable(c):
        return [nn.Conv2d(c, c, 3, padding=1, groups=c), nn.BatchNorm2d(c), nn.ReLU(),
                nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU()]

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *[m for _ in range(13) for m in separable(8)])
    report = lint(model, shape=(1, 3, 8, 8), select=["A003"])
    assert not found(report)  # MobileNetV1's shape: 14 layers, not 27
    assert longest_plain_chains(report.graph)[0][0] == 14


def test_a003_layer_scale_and_position_embeddings_are_not_merges():
    class Scaled(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(n))
            self.gamma = nn.Parameter(torch.ones(8))

        def forward(self, x):
            for conv in self.convs:
                x = torch.relu(conv(x)) * self.gamma.reshape(1, -1, 1, 1)
            return x

    [f] = found(lint(Scaled(22), shape=(1, 8, 8, 8), select=["A003"]))
    assert f.evidence["plain_depth"] == 22


@pytest.mark.slow
def test_a003_is_linear_in_graph_size():
    def timed(blocks):
        model = nn.Sequential(*[_Res(4) for _ in range(blocks)])
        report = lint(model, shape=(1, 4, 4, 4), select=["A003"])
        graph = report.graph
        started = time.perf_counter()
        chains = longest_plain_chains(graph)
        return time.perf_counter() - started, chains

    small, _ = timed(100)
    large, chains = timed(1000)
    assert chains[0][0] == 1
    assert large < max(0.5, 30 * small)  # ten times the graph, nowhere near a hundred times the time


# --- real models ----------------------------------------------------------------------------------

def _torchvision(name):
    torchvision = pytest.importorskip("torchvision")
    return getattr(torchvision.models, name)(weights=None)


def _timm(name):
    timm = pytest.importorskip("timm")
    return timm.create_model(name, pretrained=False)


# The only warnings my rules raise on the reference models, each a true finding: the 1x1
# stride-2 projection shortcuts of torchvision's ResNets and of RegNet.
GENUINE = {
    "resnet18": {("D002", f"layer{i}.0.downsample.0") for i in (2, 3, 4)},
    "resnet50": {("D002", f"layer{i}.0.downsample.0") for i in (2, 3, 4)},
    "regnet_y_400mf": {("D002", f"trunk_output.block{i}.block{i}-0.proj.0") for i in (1, 2, 3, 4)},
}
REFERENCE = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny",
             "regnet_y_400mf", "densenet121", "vit_b_16", "timm:resnet50d", "timm:convnext_nano"]


@pytest.mark.slow
@pytest.mark.parametrize("name", REFERENCE)
def test_reference_models_raise_no_false_warnings(name):
    model = _timm(name[5:]) if name.startswith("timm:") else _torchvision(name)
    report = lint(model, shape=(1, 3, 224, 224))
    warnings = {(f.code, f.module) for f in report.findings if f.severity >= Severity.WARNING}
    assert warnings == GENUINE.get(name, set())


@pytest.mark.slow
def test_d002_fires_on_resnet50_shortcuts_exactly_and_not_on_resnet50d():
    report = lint(_torchvision("resnet50"), shape=(1, 3, 224, 224), select=["D002"])
    assert modules(report, "D002") == {"layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"}
    assert not found(lint(_timm("resnet50d"), shape=(1, 3, 224, 224), select=["D002"]))


@pytest.mark.slow
@pytest.mark.parametrize("name, layer, share", [("vgg16", "classifier.0", 0.74), ("alexnet", "classifier.1", 0.62)])
def test_p001_on_vgg16_and_alexnet(name, layer, share):
    report = lint(_torchvision(name), shape=(1, 3, 224, 224), select=["P001", "A003", "D003"])
    [f] = found(report, "P001")
    assert f.module == layer and f.evidence["share"] == pytest.approx(share, abs=0.01)
    assert f.evidence["model_params_after"] < f.evidence["model_params"] / 2
    assert not found(report, "A003") and not found(report, "D003")  # 16 layers; the last pool feeds the head


@pytest.mark.slow
@pytest.mark.parametrize("name", ["repvgg_a2", "mobileone_s0", "lcnet_050", "hrnet_w18_small", "mvitv2_tiny"])
def test_timm_families_that_once_raised_false_alarms(name):
    model = _timm(name)
    report = lint(model, shape=(1, *model.pretrained_cfg["input_size"]))
    assert not [f for f in report.findings if f.severity >= Severity.WARNING or f.code == "D003"]


@pytest.mark.slow
def test_d003_quiet_on_resnet18_stem_maxpool_and_mobilenet():
    assert not found(lint(_torchvision("resnet18"), shape=(1, 3, 224, 224), select=["D003"]))
    assert not found(lint(_torchvision("mobilenet_v2"), shape=(1, 3, 224, 224), select=["D003"]))
