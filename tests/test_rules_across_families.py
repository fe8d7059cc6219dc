"""Several rule families at once: silence on well-known good models (the K/S/R, D/P/A and N/I
rules each with the findings that are true), and 1-D and 3-D models."""
from __future__ import annotations

import pytest
from torch import nn

import archlint
from archlint.findings import Severity

from .helpers import codes, lint, timm_model, torchvision_model


# The window and field rules (K, S, R) are checked together, as are D, P and A, and N and I.
K_S_R_RULES = ["K002", "K003", "K004", "K005", "S001", "S002", "S003", "R001"]
D_P_A_RULES = ["D001", "D002", "D003", "P001", "P002", "P003", "A001", "A002", "A003"]


# Genuine information these rules give on good models: ResNet-18's basic blocks run 3x3 convs at
# 256 and 512 channels without a bottleneck (ResNet-50 and deeper use one), and so do VGG and AlexNet.
# Same-shaped convs in the same role of repeated blocks share one finding (resnet18: 7 convs, 5 findings).
EXPECTED_INFO = {"resnet18": {"K004": 5}, "vgg16": {"K004": 8}, "alexnet": {"K004": 2}}


FAST = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
        "regnet_y_400mf", "alexnet"]


SLOW = ["convnext_tiny", "densenet121", "vit_b_16", "vgg16"]


def check_quiet(name, model):
    report = archlint.lint(model, input_shape=(1, 3, 224, 224), select=K_S_R_RULES)
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


def test_one_and_three_dimensional_models():
    signal = nn.Sequential(nn.Conv1d(1, 8, 4), nn.Conv1d(8, 8, 3, dilation=2, padding=2),
                           nn.Conv1d(8, 8, 3, dilation=2, padding=2), nn.AdaptiveAvgPool1d(1))
    report = archlint.lint(signal, input_shape=(1, 1, 25), select=K_S_R_RULES)
    assert sorted(f.code for f in report.findings) == ["K002", "K005", "R001"]
    volume = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.MaxPool3d(2), nn.AdaptiveAvgPool3d(1))
    [f] = archlint.lint(volume, input_shape=(1, 1, 9, 16, 16), select=["S001"]).findings
    assert f.evidence["dropped"] == {"slice": [8]} and f.fix.code == "nn.MaxPool3d(2, ceil_mode=True)"


# The only warnings the D, P and A rules raise on the reference models, each a true finding: the 1x1
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
    model = timm_model(name[5:]) if name.startswith("timm:") else torchvision_model(name)
    report = lint(model, shape=(1, 3, 224, 224), select=D_P_A_RULES)
    warnings = {(f.code, f.module) for f in report.findings if f.severity >= Severity.WARNING}
    assert warnings == GENUINE.get(name, set())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["repvgg_a2", "mobileone_s0", "lcnet_050", "hrnet_w18_small", "mvitv2_tiny"])
def test_timm_families_that_once_raised_false_alarms(name):
    model = timm_model(name)
    report = lint(model, shape=(1, *model.pretrained_cfg["input_size"]), select=D_P_A_RULES)
    assert not [f for f in report.findings if f.severity >= Severity.WARNING or f.code == "D003"]


def _reference_models():
    import timm
    import torchvision.models as tv

    return {
        "resnet18": tv.resnet18, "resnet50": tv.resnet50, "mobilenet_v2": tv.mobilenet_v2,
        "mobilenet_v3_large": tv.mobilenet_v3_large, "efficientnet_b0": tv.efficientnet_b0,
        "convnext_tiny": tv.convnext_tiny, "regnet_y_400mf": tv.regnet_y_400mf,
        "densenet121": tv.densenet121, "vit_b_16": tv.vit_b_16,
        "timm_resnet50d": lambda: timm.create_model("resnet50d", pretrained=False),
        "timm_convnext_nano": lambda: timm.create_model("convnext_nano", pretrained=False),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_reference_models()))
def test_reference_models_are_quiet(name):
    import torch

    import archlint

    build = _reference_models()[name]
    try:
        with torch.device("meta"):
            model = build()
    except NotImplementedError:  # regnet computes its widths with real tensors
        model = build()
    shape = (1, 3, 224, 224) if name == "vit_b_16" else (1, 3, 64, 64)
    report = archlint.lint(model, input_shape=shape, select=["N", "I"])
    assert report.findings == [], [(f.code, f.module, f.message) for f in report.findings]
    # With a small batch the only finding is N001, once: the model is built by one library call.
    small = archlint.lint(model, input_shape=shape, select=["N", "I"], batch_size=8)
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert codes(small) == (["N001"] if has_bn else [])
