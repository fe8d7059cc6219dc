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


def lint(source, tmp_path, select, **settings):
    report = lint_source(source, tmp_path, settings or None, select=select)
    assert not report.errors, [str(m.error) for m in report.errors]
    return report.findings


def _lines(body: str) -> str:
    """A forward body written with '\n        ' between statements, indented for the
    model templates below (forward's body sits 12 spaces deep before dedenting)."""
    return "\n".join(line.strip() for line in body.split("\n")).replace("\n", "\n" + " " * 12)


def only(findings, code):
    return [f for f in findings if f.code == code]


# --- N001 batchnorm-tiny-batch ---------------------------------------------------------------

CONV_BN_HELPER = """
import torch
from torch import nn


class ConvBN(nn.Sequential):
    def __init__(self, c_in, c_out):
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


model = nn.Sequential(ConvBN(3, 24), ConvBN(24, 48), ConvBN(48, 48))
example_input = torch.randn(1, 3, 16, 16)
"""


def test_n001_is_silent_without_a_batch_size(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert only(lint(CONV_BN_HELPER, tmp_path, ["N001"]), "N001") == []


def test_n001_threshold_is_an_option(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert only(lint(CONV_BN_HELPER, tmp_path, ["N001"], **{"batch-size": 16}), "N001") == []
    raised = {"batch-size": 16, "rules": {"N001": {"min-batch": 32}}}
    assert only(lint(CONV_BN_HELPER, tmp_path, ["N001"], **raised), "N001")


def test_n001_reports_once_per_model_naming_every_layer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    findings = only(lint(CONV_BN_HELPER, tmp_path, ["N001"], **{"batch-size": 4}), "N001")
    assert len(findings) == 1
    f = findings[0]
    assert f.location.line == 8  # nn.BatchNorm2d(c_out) in ConvBN
    assert f.evidence["layers"] == ["0.1", "1.1", "2.1"]
    assert f.evidence["batchnorm_layers"] == 3 and f.evidence["batch_size"] == 4
    assert f.evidence["channels"] == [24, 48]


def test_n001_one_finding_lists_every_line_that_builds_a_batchnorm(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = """
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 12 * 12, 10), nn.BatchNorm1d(10),
    )
    example_input = torch.randn(2, 3, 16, 16)
    """
    findings = only(lint(source, tmp_path, ["N001"], **{"batch-size": 2}), "N001")
    assert len(findings) == 1
    f = findings[0]
    assert f.location.line == 5 and f.evidence["batchnorm_layers"] == 3
    assert [where.rsplit(":", 1)[1] for where in f.evidence["built_at"]] == ["5", "6", "7"]
    assert "nn.BatchNorm1d(10)  ->  nn.GroupNorm(5, 10)" in f.fix.code


def test_n001_fix_code_runs_and_its_group_counts_divide_the_channels(tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    f = only(lint(CONV_BN_HELPER, tmp_path, ["N001"], **{"batch-size": 4}), "N001")[0]
    namespace: dict = {}
    exec(f.fix.code, namespace)  # paste-able: defines WSConv2d and group_norm
    for channels in (3, 24, 48, 64, 2048):
        gn = namespace["group_norm"](channels)
        assert channels % gn.num_groups == 0 and gn.num_groups <= 32
    assert "nn.GroupNorm(12, 24)" in f.fix.code and "nn.GroupNorm(24, 48)" in f.fix.code
    conv = namespace["WSConv2d"](3, 8, 3, padding=1, bias=False)
    w = conv.weight.detach()
    out = conv(torch.randn(2, 3, 8, 8))
    standardized = (w - w.mean((1, 2, 3), keepdim=True)) / w.var((1, 2, 3), keepdim=True, unbiased=False).add(1e-6).sqrt()
    expected = torch.nn.functional.conv2d(torch.zeros(0, 3, 8, 8), standardized, padding=1)
    assert out.shape == (2, 8, 8, 8) and expected.shape[1] == 8
    assert "WSConv2d(3, 24, 3, padding=1, bias=False)" in f.fix.code


def test_n001_leaves_sync_frozen_and_eval_frozen_batchnorm_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = """
    import torch
    from torch import nn
    from torchvision.ops import FrozenBatchNorm2d

    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False), FrozenBatchNorm2d(8),
        nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8).eval(),  # frozen inside a training model
        nn.Conv2d(8, 8, 3, bias=False), nn.SyncBatchNorm(8),
    )
    example_input = torch.randn(1, 3, 16, 16)
    """
    assert only(lint(source, tmp_path, ["N001"], **{"batch-size": 2}), "N001") == []


def test_n001_one_finding_for_a_library_model_built_in_the_users_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = """
    import torch
    import torchvision

    model = torchvision.models.resnet18()
    example_input = torch.randn(1, 3, 64, 64)
    """
    findings = only(lint(source, tmp_path, ["N001"], **{"batch-size": 8}), "N001")
    assert len(findings) == 1
    assert findings[0].evidence["batchnorm_layers"] == 20
    assert findings[0].location.line == 4
    assert "norm_layer" in findings[0].fix.description


def test_n001_explain_says_how_to_give_the_batch_size():
    from archlint.registry import load_rules

    doc = load_rules().by_code()["N001"].docs_markdown()
    assert "--batch-size" in doc and "batch-size = 8" in doc and "batch_size=8" in doc


# --- N002 bias-before-norm -------------------------------------------------------------------

def _n002(tmp_path, layers, shape="1, 8, 16, 16"):
    source = f"""
    import torch
    from torch import nn

    model = nn.Sequential({layers})
    example_input = torch.randn({shape})
    """
    return at(lint(source, tmp_path, ["N002"]), "N002")


@pytest.mark.parametrize("layers, shape, fires", [
    ("nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8)", "1, 8, 16, 16", True),
    ("nn.Conv2d(8, 8, 3), nn.InstanceNorm2d(8)", "1, 8, 16, 16", True),
    ("nn.Conv2d(8, 8, 3), nn.GroupNorm(8, 8)", "1, 8, 16, 16", True),   # one channel per group
    ("nn.Conv2d(8, 8, 3), nn.GroupNorm(2, 8)", "1, 8, 16, 16", False),  # groups keep bias differences
    ("nn.Conv2d(8, 8, 3), nn.LayerNorm([8, 14, 14])", "1, 8, 16, 16", False),  # mean across channels
    ("nn.Conv2d(8, 8, 3), nn.LayerNorm(14)", "1, 8, 16, 16", True),     # per-channel rows of W: removed
    ("nn.Linear(8, 8), nn.LayerNorm(8)", "4, 8", False),                # over the features: survives
    ("nn.Linear(8, 8), nn.BatchNorm1d(8)", "4, 8", True),
    ("nn.Linear(8, 6), nn.BatchNorm1d(5)", "4, 5, 8", False),           # BN over dim 1 = tokens, not features
    ("nn.Conv2d(8, 8, 3), nn.RMSNorm([8, 14, 14])", "1, 8, 16, 16", False),
    ("nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8)", "1, 8, 16, 16", False),
    ("nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8).eval()", "1, 8, 16, 16", False),  # frozen statistics
])
def test_n002_fires_only_where_the_norm_removes_the_bias(tmp_path, monkeypatch, layers, shape, fires):
    monkeypatch.chdir(tmp_path)
    assert bool(_n002(tmp_path, layers, shape)) is fires


def test_n002_matches_the_gradient_the_bias_really_gets():
    """The rule's claim, checked on real tensors: a bias the norm cancels gets no gradient."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    def bias_grad(producer, norm, shape):
        out = norm(producer(torch.randn(*shape)))
        (out * torch.randn_like(out)).sum().backward()
        return producer.bias.grad.abs().max().item()

    assert bias_grad(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), (4, 3, 8, 8)) < 1e-4
    assert bias_grad(nn.Conv2d(3, 8, 3), nn.GroupNorm(8, 8), (4, 3, 8, 8)) < 1e-4
    assert bias_grad(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), (4, 3, 8, 8)) > 1e-2
    assert bias_grad(nn.Linear(5, 8), nn.LayerNorm(8), (4, 5)) > 1e-2


def test_n002_quiet_when_the_conv_output_also_feeds_a_skip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = """
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # the skip path sees the bias


    model = Net()
    example_input = torch.randn(1, 8, 16, 16)
    """
    assert only(lint(source, tmp_path, ["N002"]), "N002") == []


def test_n002_fix_is_the_constructor_without_bias(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = """
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16))
    example_input = torch.randn(1, 8, 16, 16)
    """
    f = only(lint(source, tmp_path, ["N002"]), "N002")[0]
    assert f.fix.code == "nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)"
    assert f.evidence["bias_params"] == 16 and f.location.line == 4


def test_n002_one_finding_per_line_that_builds_the_layers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = """
    import torch
    from torch import nn


    def stage(c_in, c_out):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


    model = nn.Sequential(stage(3, 16), stage(16, 32), stage(32, 32))
    example_input = torch.randn(1, 3, 16, 16)
    """
    findings = only(lint(source, tmp_path, ["N002"]), "N002")
    assert len(findings) == 1
    f = findings[0]
    assert f.location.line == 6 and f.evidence["layers"] == ["0.0", "1.0", "2.0"]
    assert f.evidence["bias_params"] == 16 + 32 + 32
    assert f.fix.code.splitlines() == ["nn.Conv2d(3, 16, 3, padding=1, bias=False)",
                                       "nn.Conv2d(16, 32, 3, padding=1, bias=False)",
                                       "nn.Conv2d(32, 32, 3, padding=1, bias=False)"]


# --- N003 shared-norm-module -----------------------------------------------------------------

def test_n003_fires_on_one_batchnorm_reused_at_several_depths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = """
    import torch
    from torch import nn


    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            for _ in range(3):
                x = torch.relu(self.bn(self.conv(x)))
            return x


    model = Recurrent()
    example_input = torch.randn(1, 8, 16, 16)
    """
    findings = only(lint(source, tmp_path, ["N003"]), "N003")
    assert len(findings) == 1
    assert findings[0].evidence["calls"] == 3 and "several depths" in findings[0].message


def test_n003_ignores_batchnorm_without_running_statistics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = """
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(8, 8, 1)
            self.b = nn.Conv2d(8, 8, 1)
            self.bn = nn.BatchNorm2d(8, track_running_stats=False)

        def forward(self, x):
            return self.bn(self.a(x)) + self.bn(self.b(x))


    model = Net()
    example_input = torch.randn(2, 8, 8, 8)
    """
    assert only(lint(source, tmp_path, ["N003"]), "N003") == []


# --- N004 dropout-before-batchnorm -----------------------------------------------------------

@pytest.mark.parametrize("middle, fires", [
    ("nn.Dropout2d(0.2), nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8)", True),
    ("nn.Dropout(0.0), nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8)", False),
    ("nn.Dropout(0.5), nn.Conv2d(8, 8, 3, bias=False), nn.GroupNorm(4, 8), nn.BatchNorm2d(8)", False),
    ("nn.AlphaDropout(0.2), nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8)", False),
    ("nn.BatchNorm2d(8), nn.Dropout(0.5), nn.Conv2d(8, 8, 3)", False),
])
def test_n004_cases(tmp_path, monkeypatch, middle, fires):
    monkeypatch.chdir(tmp_path)
    source = f"""
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), {middle})
    example_input = torch.randn(1, 3, 16, 16)
    """
    assert bool(only(lint(source, tmp_path, ["N004"]), "N004")) is fires


@pytest.mark.parametrize("training", ["self.training", "False"])
def test_n004_follows_functional_dropout_through_a_residual_add(tmp_path, monkeypatch, training):
    monkeypatch.chdir(tmp_path)
    source = """
    import torch
    import torch.nn.functional as F
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            y = F.dropout(self.conv1(x), p=0.25, training=TRAINING)
            return self.bn(self.conv2(x + y))


    model = Net()
    example_input = torch.randn(1, 8, 16, 16)
    """.replace("TRAINING", training)
    findings = only(lint(source, tmp_path, ["N004"]), "N004")
    if training == "False":  # switched off for good: nothing to report
        assert findings == []
        return
    assert len(findings) == 1
    f = findings[0]
    assert f.evidence["batchnorm"] == "bn" and f.evidence["p"] == 0.25
    assert f.evidence["train_scale"] == pytest.approx(1 / 0.75, rel=1e-3)


# --- I001 inplace-overwrites-shared ----------------------------------------------------------

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
    f = only(lint(I001_BAD, tmp_path, ["I001"]), "I001")[0]
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
    assert bool(only(lint(source, tmp_path, ["I001"]), "I001")) is fires


# --- I002 inplace-on-saved-output ------------------------------------------------------------

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
    assert bool(only(lint(source, tmp_path, ["I002"]), "I002")) is fires
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


# --- I003 inplace-on-input -------------------------------------------------------------------

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
    findings = only(lint(source, tmp_path, ["I003"]), "I003")
    assert bool(findings) is fires
    if fires:
        assert findings[0].location.line == 12  # the first line of forward does the write
        assert findings[0].evidence["input_shape"] == [1, 3, 16, 16]
        assert findings[0].fix.code  # the out-of-place line, or a clone of the input


# --- quiet on well-known models --------------------------------------------------------------

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
