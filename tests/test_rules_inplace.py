"""I001-I003 beyond their own examples, and the tracer's record of in-place writes they rely on."""
from __future__ import annotations

import pytest

from .helpers import lint_source, only, source_findings


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


def _lines(body: str) -> str:
    """A forward body written with '\n        ' between statements, indented for the
    model templates below (forward's body sits 12 spaces deep before dedenting)."""
    return "\n".join(line.strip() for line in body.split("\n")).replace("\n", "\n" + " " * 12)


I001_BAD = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv1(x)
        out = self.relu(y)
        return self.conv2(out) + y


model = Block()
example_input = torch.randn(1, 8, 16, 16)
"""


def test_i001_points_at_the_forward_line_of_the_write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = only(source_findings(I001_BAD, tmp_path, ["I001"]), "I001")[0]
    assert f.location.line == 14  # out = self.relu(y)
    assert f.evidence["overwritten"] == "conv1" and f.evidence["readers_after"] == ["add at line 15"]
    assert "add at line 15 still reads" in f.message
    assert f.fix.code == "nn.ReLU()"


def test_i001_bad_example_really_changes_the_values():
    """The harm I001 claims, on real tensors: the skip path reads the activated values."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    namespace: dict = {}
    exec(I001_BAD, namespace)
    model = namespace["model"]
    x = torch.randn(1, 8, 16, 16)
    with torch.no_grad():
        y = model.conv1(x)
        intended = model.conv2(torch.relu(y)) + y
        got = model(x)
    assert (got - intended).abs().max() > 0.1


@pytest.mark.parametrize("body, fires", [
    # a view taken before the write changes with it
    ("y = self.conv(x)\n        v = y.flatten(1)\n        out = torch.relu_(y)\n        return out.sum() + v.sum()", True),
    # the result of x.relu_() is thrown away: mutation on purpose, later reads want the new value
    ("y = self.conv(x)\n        y.relu_()\n        return y * 2", False),
    # two slices of one tensor need not overlap
    ("y = self.conv(x)\n        a = F.relu(y[:, :4], inplace=True)\n        b = y[:, 4:]\n        return torch.cat([a, b], 1)", False),
    # reading the written tensor only through the in-place op's result is fine
    ("y = self.conv(x)\n        y = F.relu(y, inplace=True)\n        return y + 1", False),
    # `out += y` after `saved = out` leaves saved pointing at the sum
    ("out = self.conv(x)\n        saved = out\n        out += x\n        return out * saved", True),
])
def test_i001_cases(tmp_path, monkeypatch, body, fires):
    monkeypatch.chdir(tmp_path)
    source = f"""
    import torch
    import torch.nn.functional as F
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            {_lines(body)}


    model = Net()
    example_input = torch.randn(1, 8, 16, 16)
    """
    assert bool(only(source_findings(source, tmp_path, ["I001"]), "I001")) is fires


@pytest.mark.parametrize("body, fires", [
    ("y = F.relu(self.conv(x))\n        y += 1\n        return y", True),
    ("y = torch.tanh(self.conv(x))\n        return F.relu(y, inplace=True)", True),
    ("y = torch.softmax(self.conv(x), dim=1)\n        y.mul_(2)\n        return y", True),
    ("y = self.conv(x)\n        z = self.conv2(y)\n        y.relu_()\n        return y + z", True),  # conv2 kept y
    ("y = F.relu6(self.conv(x))\n        y += 1\n        return y", False),  # hardtanh keeps its input
    ("y = F.silu(self.conv(x))\n        y += 1\n        return y", False),
    ("y = self.conv(x)\n        y = F.relu(y, inplace=True)\n        return self.conv2(y)", False),
])
def test_i002_cases(tmp_path, monkeypatch, body, fires):
    monkeypatch.chdir(tmp_path)
    source = f"""
    import torch
    import torch.nn.functional as F
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            {_lines(body)}


    model = Net()
    example_input = torch.randn(1, 8, 16, 16)
    """
    assert bool(only(source_findings(source, tmp_path, ["I002"]), "I002")) is fires
    if fires:  # and autograd agrees, on real tensors
        import torch

        namespace: dict = {}
        exec(textwrap_dedent(source), namespace)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            namespace["model"](torch.randn(1, 8, 16, 16)).sum().backward()


def textwrap_dedent(source):
    import textwrap

    return textwrap.dedent(source)


def test_i002_bad_example_raises_at_backward_and_good_one_does_not():
    import torch

    from archlint.registry import load_rules

    rule = load_rules().by_code()["I002"]
    for example, raises in ((rule.bad[0], True), (rule.good[0], False)):
        namespace: dict = {}
        exec(example.source, namespace)
        loss = namespace["model"](torch.randn(1, 16, 16, 16)).sum()
        if raises:
            with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                loss.backward()
        else:
            loss.backward()


@pytest.mark.parametrize("forward, fires", [
    ("x /= 255\n        return self.conv(x)", True),
    ("x.view(-1).mul_(2)\n        return self.conv(x)", True),
    ("x[:, 0] = 0\n        return self.conv(x)", True),  # setitem writes in place too
    ("return self.conv(self.act(x))", True),  # first layer built with inplace=True
    ("x = x.clone()\n        x /= 255\n        return self.conv(x)", False),
    ("return self.act(self.conv(x))", False),
])
def test_i003_cases(tmp_path, monkeypatch, forward, fires):
    monkeypatch.chdir(tmp_path)
    source = f"""
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            {_lines(forward)}


    model = Net()
    example_input = torch.randn(1, 3, 16, 16)
    """
    findings = only(source_findings(source, tmp_path, ["I003"]), "I003")
    assert bool(findings) is fires
    if fires:
        assert findings[0].location.line == 12  # the first line of forward does the write
        assert findings[0].evidence["input_shape"] == [1, 3, 16, 16]
        assert findings[0].fix.code  # the out-of-place line, or a clone of the input
