"""N (normalization) and I (in-place) rules: edge cases beyond their own examples, the
tracer's record of in-place writes they rely on, and quietness on well-known models."""
from __future__ import annotations

import pytest

from .helpers import at, codes, lint_source

RESNET_BLOCKS = """
import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), BasicBlock(8), BasicBlock(8), BasicBlock(8))
example_input = torch.randn(1, 3, 16, 16)
"""


def graph_of(source, tmp_path):
    report = lint_source(source, tmp_path, select=["I"])
    assert not report.errors, [str(m.error) for m in report.errors]
    return report.models[0].graph


# --- the tracer's record of `out += x` -------------------------------------------------------

def test_augmented_add_writes_in_every_block_not_only_the_last(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    graph = graph_of(RESNET_BLOCKS, tmp_path)
    adds = graph.functions("add")
    assert len(adds) == 3
    for add in adds:  # the same source line runs in three blocks
        assert add.writes == [add.inputs[0]], add
        # `out += identity` returns out's storage: the add's output is the BN output's memory
        assert add.alias_of == add.inputs[0]
    relu_after = [l for l in graph.successors(adds[0]) if l.op == "ReLU"][0]
    assert relu_after.alias_of == adds[0].inputs[0]
