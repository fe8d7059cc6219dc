"""R001 and the receptive field it reads: the last map before global pooling, dense outputs,
global context, channels-last blocks, transposed convs, ResNet-50's 427 pixels."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import archlint

from .helpers import findings, torchvision_model


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


def test_resnet50_receptive_field_is_427():
    report = archlint.lint(torchvision_model("resnet50"), input_shape=(1, 3, 224, 224), select=["R001"])
    pool = report.graph.layer([l.name for l in report.graph.layers if l.qualname == "avgpool"][0])
    [last] = report.graph.predecessors(pool)
    assert last.rf.size == (427, 427) and report.findings == []


def test_r001_quiet_on_a_patchgan_discriminator_and_fires_on_a_dense_segmenter():
    # PatchGAN: one real/fake score per 70x70-ish patch, the short field is the design.
    patchgan = nn.Sequential(nn.Conv2d(3, 16, 4, 2, 1), nn.LeakyReLU(0.2),
                             nn.Conv2d(16, 32, 4, 2, 1), nn.InstanceNorm2d(32), nn.LeakyReLU(0.2),
                             nn.Conv2d(32, 1, 4, 1, 1))
    assert findings(patchgan, (1, 3, 128, 128), "R001") == []
    segmenter = nn.Sequential(nn.Conv2d(3, 16, 4, 2, 1), nn.LeakyReLU(0.2),
                              nn.Conv2d(16, 32, 4, 2, 1), nn.InstanceNorm2d(32), nn.LeakyReLU(0.2),
                              nn.Conv2d(32, 5, 4, 1, 1))  # 5 classes per position: same field, reported
    assert [f.code for f in findings(segmenter, (1, 3, 128, 128), "R001")] == ["R001"]
