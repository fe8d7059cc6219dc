"""U001 beyond its own examples: the checkerboard a transposed conv leaves on a constant input,
the fix that keeps the size, and quiet GAN generators and reference models."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import archlint

from archlint.rules.upsampling.checkerboard_upsampling import phase_counts

from .helpers import findings, timm_model, torchvision_model


def _constant_response(layer: nn.Module, shape) -> torch.Tensor:
    """The layer's output for a constant input, with constant weights and zero bias."""
    with torch.no_grad():
        nn.init.constant_(layer.weight, 1.0)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
        return layer(torch.ones(shape))


def _interior(y: torch.Tensor, margin: int = 2) -> torch.Tensor:
    return y[..., margin:-margin, margin:-margin]


def test_u001_k3_s2_output_of_a_constant_input_is_not_constant_and_the_fix_is():
    layer = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1)
    y = _interior(_constant_response(layer, (1, 4, 8, 8)))
    assert y.max() > y.min()  # the checkerboard: 4 * (1, 2, 2, 4) taps
    assert sorted(set(y.flatten().tolist())) == [4.0, 8.0, 16.0]
    [f] = findings(layer, (1, 4, 8, 8), "U001")
    assert f.evidence["taps_per_phase"] == [[2, 1], [2, 1]]
    assert (f.evidence["fewest_taps"], f.evidence["most_taps"]) == (1, 4)
    assert f.fix.code == "nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1)"
    fixed = eval(f.fix.code, {"nn": nn})
    out = _constant_response(fixed, (1, 4, 8, 8))
    assert out.shape == layer(torch.ones(1, 4, 8, 8)).shape  # the size is kept
    assert torch.allclose(_interior(out), _interior(out).flatten()[0])  # and the interior is flat
    assert f.fix.checked == "runs"


@pytest.mark.parametrize("k, s, p, op", [(3, 2, 0, 0), (1, 2, 0, 1), (5, 2, 2, 1), (3, 4, 0, 1), (5, 4, 1, 3)])
def test_u001_fix_keeps_the_output_size(k, s, p, op):
    layer = nn.ConvTranspose2d(2, 3, k, stride=s, padding=p, output_padding=op)
    [f] = findings(layer, (1, 2, 7, 7), "U001")
    fixed = eval(f.fix.code, {"nn": nn})
    x = torch.ones(1, 2, 7, 7)
    assert fixed(x).shape == layer(x).shape
    y = _interior(_constant_response(fixed, (1, 2, 7, 7)), margin=max(k, s))
    assert torch.allclose(y, y.flatten()[0])


def test_u001_phase_counts():
    assert phase_counts(3, 2) == (2, 1)
    assert phase_counts(4, 2) == (2, 2)
    assert phase_counts(2, 2) == (1, 1)
    assert phase_counts(3, 2, dilation=2) == (3, 0)  # dilation 2 with stride 2: every other pixel empty


def test_u001_only_axes_that_upsample_count():
    layer = nn.ConvTranspose2d(4, 4, (3, 4), stride=(1, 2), padding=(1, 1))
    assert findings(layer, (1, 4, 8, 8), "U001") == []
    layer = nn.ConvTranspose1d(4, 4, 3, stride=2)
    [f] = findings(layer, (1, 4, 8), "U001")
    assert f.fix.code == "nn.ConvTranspose1d(4, 4, 4, stride=2, padding=1, output_padding=1)"  # 2L + 1 kept


def test_u001_dilated_transposed_conv_gets_the_resize_fix():
    layer = nn.ConvTranspose2d(4, 8, 3, stride=2, dilation=2, padding=2, output_padding=1)
    [f] = findings(layer, (1, 4, 8, 8), "U001")
    assert f.fix.code.startswith("nn.Sequential(nn.Upsample(scale_factor=2")


def dcgan_generator(nz: int = 100, ngf: int = 8) -> nn.Module:
    return nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh(),
    )


def test_u001_quiet_on_a_dcgan_generator():
    assert findings(dcgan_generator(), (2, 100, 1, 1), "U001") == []


@pytest.mark.slow
@pytest.mark.parametrize("source, name", [
    ("torchvision", "resnet18"), ("torchvision", "mobilenet_v3_large"), ("torchvision", "convnext_tiny"),
    ("torchvision", "vit_b_16"), ("timm", "convnext_nano")])
def test_u001_quiet_on_reference_models(source, name):
    model = torchvision_model(name) if source == "torchvision" else timm_model(name)
    assert findings(model, (1, 3, 224, 224), "U001") == []


def test_the_new_rules_are_quiet_on_a_dcgan_generator():
    report = archlint.lint(dcgan_generator(), input_shape=(2, 100, 1, 1),
                           select=["U001", "N005", "N006", "A004", "A005", "P004"])
    assert report.findings == []
