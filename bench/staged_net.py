"""A synthetic 1000-block network in four stages, for the HTML report's scale check.

1000 conv-bn-relu blocks of small width (8 to 64 channels) at a 64x64 input: four stages of
250 blocks, each stage opened by a stride-2 3x3 conv. The report must stay usable (collapse
by stage) and small enough to open.

    archlint report bench/staged_net.py
"""
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class StagedNet(nn.Module):
    def __init__(self, blocks: int = 1000, stages: int = 4, base_width: int = 8, num_classes: int = 10):
        super().__init__()
        per_stage = blocks // stages
        layers, c = [], 3
        for s in range(stages):
            width = base_width * 2 ** s
            stage = [Block(c, width, stride=1 if s == 0 else 2)]
            stage += [Block(width, width) for _ in range(per_stage - 1)]
            layers.append(nn.Sequential(*stage))
            c = width
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.stages(x)), 1))


model = StagedNet()
example_input = torch.randn(1, 3, 64, 64)
