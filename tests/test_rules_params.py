"""P001-P003 beyond their own examples: dense heads on flattened maps, channel counts that are not
multiples of 8, parameters forward never uses."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archlint.findings import Severity

from .helpers import conv_bn_relu, found, lint, modules, torchvision_model
from .helpers import conv_bn_relu, found, lint, modules, timm_model, torchvision_model


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
    # the advice is to build the layer only where it is used, not DDP's find_unused_parameters first
    assert "self.aux = None" in f.fix.code and "find_unused_parameters=True" not in f.fix.code
    assert f.fix.description.startswith("build self.aux only in the configuration")


def test_p003_unused_bias_suggests_bias_false():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return x @ self.fc.weight.t()

    [f] = found(lint(Net(), shape=(2, 8), select=["P003"]))
    assert f.evidence["module"] == "fc.bias" and f.fix.code == "nn.Linear(8, 4, bias=False)"
    assert f.fix.checked in ("runs", "builds")  # built before it is shown


@pytest.mark.slow
@pytest.mark.parametrize("name, layer, share", [("vgg16", "classifier.0", 0.74), ("alexnet", "classifier.1", 0.62)])
def test_p001_on_vgg16_and_alexnet(name, layer, share):
    report = lint(torchvision_model(name), shape=(1, 3, 224, 224), select=["P001", "A003", "D003"])
    [f] = found(report, "P001")
    assert f.module == layer and f.evidence["share"] == pytest.approx(share, abs=0.01)
    assert f.evidence["model_params_after"] < f.evidence["model_params"] / 2
    assert not found(report, "A003") and not found(report, "D003")  # 16 layers; the last pool feeds the head


def test_p003_unused_layer_mentioned_in_forward_advises_not_building_it():
    class Net(nn.Module):
        def __init__(self, use_proj: bool = False):
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.proj = nn.Linear(8, 8)
            self.use_proj = use_proj

        def forward(self, x):
            return self.proj(self.fc(x)) if self.use_proj else self.fc(x)

    [f] = found(lint(Net(), shape=(2, 8), select=["P003"]))
    assert f.severity == Severity.INFO and f.fix.checked == "advice"
    assert "self.proj = None" in f.fix.code and "only in the configuration" in f.fix.description


class _DeadBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        y = self.branch(x)  # noqa: F841 (the dead branch)
        return self.head(x)


def test_p004_a_dead_branch_is_reported_once_with_its_macs_and_params():
    model = _DeadBranch()
    x = torch.randn(1, 3, 8, 8)
    before = model(x)
    with torch.no_grad():  # the branch's weights do not change the output: its result is unused
        for p in model.branch.parameters():
            p.add_(torch.randn_like(p))
    assert torch.equal(model(x), before)
    [f] = found(lint(model, (1, 3, 8, 8), select=["P004"]), "P004")
    assert f.module == "branch.0"
    assert f.evidence["macs"] == 8 * 8 * (8 * 9 * 8 + 8 * 8)
    assert f.evidence["params"] == sum(p.numel() for p in model.branch.parameters())
    assert f.evidence["modules"] == ["branch.0", "branch.1", "branch.2"]


def test_p004_in_place_writes_views_and_buffers_count_as_used():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.head = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            x = self.conv(x)
            self.bn(x)            # updates the running statistics only
            x[:, :2].mul_(0.5)    # writes x through a view
            return self.head(x)

    assert not found(lint(Net(), (2, 3, 8, 8), select=["P004"]), "P004")


@pytest.mark.slow
@pytest.mark.parametrize("source, name", [
    ("torchvision", "resnet18"), ("torchvision", "mobilenet_v2"), ("torchvision", "mobilenet_v3_large"),
    ("torchvision", "efficientnet_b0"), ("torchvision", "convnext_tiny"), ("torchvision", "vit_b_16"),
    ("torchvision", "densenet121"), ("torchvision", "regnet_y_400mf"), ("timm", "resnet50d"),
    ("timm", "convnext_nano")])
def test_p004_quiet_on_reference_models(source, name):
    model = torchvision_model(name) if source == "torchvision" else timm_model(name)
    assert not found(lint(model, (1, 3, 224, 224), select=["P004"]), "P004")
