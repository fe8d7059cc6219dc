"""A001-A003 beyond their own examples: linear layers with no nonlinearity between, softmax
outputs, deep stacks without skips."""
from __future__ import annotations

import pytest
import time
import torch
import torch.nn.functional as F
from torch import nn

from archlint.findings import Severity
from archlint.rules.architecture.deep_plain_stack import longest_plain_chains

from .helpers import found, lint


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


def test_a003_quiet_on_a_plain_stack_inside_a_global_residual_and_fires_without_it():
    # SRVGGNetCompact / VDSR: a deliberately plain stack whose output is added to the
    # upsampled input; the same stack without the global residual is still a deep plain stack.
    class Compact(nn.Module):
        def __init__(self, residual: bool):
            super().__init__()
            layers = [nn.Conv2d(3, 8, 3, padding=1), nn.PReLU(8)]
            for _ in range(24):
                layers += [nn.Conv2d(8, 8, 3, padding=1), nn.PReLU(8)]
            layers += [nn.Conv2d(8, 12, 3, padding=1)]
            self.body = nn.Sequential(*layers)
            self.up = nn.PixelShuffle(2)
            self.residual = residual

        def forward(self, x):
            out = self.up(self.body(x))
            return out + F.interpolate(x, scale_factor=2, mode="nearest") if self.residual else out

    assert found(lint(Compact(True), (1, 3, 16, 16), select=["A003"])) == []
    [f] = found(lint(Compact(False), (1, 3, 16, 16), select=["A003"]))
    assert f.evidence["plain_depth"] == 26
