"""N001-N004 beyond their own examples: BatchNorm on tiny batches, biases a norm cancels, shared
norm modules, dropout before BatchNorm."""
from __future__ import annotations

import pytest

from .helpers import at, only, source_findings
import torch
import torch.nn.functional as F
from torch import nn
from archlint.findings import Severity
from .helpers import at, findings, only, source_findings, timm_model, torchvision_model


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
    assert only(source_findings(CONV_BN_HELPER, tmp_path, ["N001"]), "N001") == []


def test_n001_threshold_is_an_option(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert only(source_findings(CONV_BN_HELPER, tmp_path, ["N001"], **{"batch-size": 16}), "N001") == []
    raised = {"batch-size": 16, "rules": {"N001": {"min-batch": 32}}}
    assert only(source_findings(CONV_BN_HELPER, tmp_path, ["N001"], **raised), "N001")


def test_n001_reports_once_per_model_naming_every_layer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    findings = only(source_findings(CONV_BN_HELPER, tmp_path, ["N001"], **{"batch-size": 4}), "N001")
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
    findings = only(source_findings(source, tmp_path, ["N001"], **{"batch-size": 2}), "N001")
    assert len(findings) == 1
    f = findings[0]
    assert f.location.line == 5 and f.evidence["batchnorm_layers"] == 3
    assert [where.rsplit(":", 1)[1] for where in f.evidence["built_at"]] == ["5", "6", "7"]
    assert "nn.BatchNorm1d(10)  ->  nn.GroupNorm(5, 10)" in f.fix.code


def test_n001_fix_code_runs_and_its_group_counts_divide_the_channels(tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    f = only(source_findings(CONV_BN_HELPER, tmp_path, ["N001"], **{"batch-size": 4}), "N001")[0]
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
    assert only(source_findings(source, tmp_path, ["N001"], **{"batch-size": 2}), "N001") == []


def test_n001_one_finding_for_a_library_model_built_in_the_users_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = """
    import torch
    import torchvision

    model = torchvision.models.resnet18()
    example_input = torch.randn(1, 3, 64, 64)
    """
    findings = only(source_findings(source, tmp_path, ["N001"], **{"batch-size": 8}), "N001")
    assert len(findings) == 1
    assert findings[0].evidence["batchnorm_layers"] == 20
    assert findings[0].location.line == 4
    assert "norm_layer" in findings[0].fix.description


def test_n001_explain_says_how_to_give_the_batch_size():
    from archlint.registry import load_rules

    doc = load_rules().by_code()["N001"].docs_markdown()
    assert "--batch-size" in doc and "batch-size = 8" in doc and "batch_size=8" in doc


def _n002(tmp_path, layers, shape="1, 8, 16, 16"):
    source = f"""
    import torch
    from torch import nn

    model = nn.Sequential({layers})
    example_input = torch.randn({shape})
    """
    return at(source_findings(source, tmp_path, ["N002"]), "N002")


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
    assert only(source_findings(source, tmp_path, ["N002"]), "N002") == []


def test_n002_fix_is_the_constructor_without_bias(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = """
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16))
    example_input = torch.randn(1, 8, 16, 16)
    """
    f = only(source_findings(source, tmp_path, ["N002"]), "N002")[0]
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
    findings = only(source_findings(source, tmp_path, ["N002"]), "N002")
    assert len(findings) == 1
    f = findings[0]
    assert f.location.line == 6 and f.evidence["layers"] == ["0.0", "1.0", "2.0"]
    assert f.evidence["bias_params"] == 16 + 32 + 32
    assert f.fix.code.splitlines() == ["nn.Conv2d(3, 16, 3, padding=1, bias=False)",
                                       "nn.Conv2d(16, 32, 3, padding=1, bias=False)",
                                       "nn.Conv2d(32, 32, 3, padding=1, bias=False)"]


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
    findings = only(source_findings(source, tmp_path, ["N003"]), "N003")
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
    assert only(source_findings(source, tmp_path, ["N003"]), "N003") == []


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
    assert bool(only(source_findings(source, tmp_path, ["N004"]), "N004")) is fires


@pytest.mark.parametrize("training", ["self.training", "False"])
def test_n004_follows_functional_dropout(tmp_path, monkeypatch, training):
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
            return self.bn(self.conv2(y))


    model = Net()
    example_input = torch.randn(1, 8, 16, 16)
    """.replace("TRAINING", training)
    findings = only(source_findings(source, tmp_path, ["N004"]), "N004")
    if training == "False":  # switched off for good: nothing to report
        assert findings == []
        return
    assert len(findings) == 1
    f = findings[0]
    assert f.evidence["batchnorm"] == "bn" and f.evidence["p"] == 0.25
    assert f.evidence["train_scale"] == pytest.approx(1 / 0.75, rel=1e-3)


# --- issue 10: N004 / N002 precision on real code (docs/precision.md) -------------------------

N004_BLOCKS = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.qkv = nn.Conv2d(c, 3 * c, 1, bias=False)
        self.attn_drop = nn.Dropout(0.3)                      # on attention weights: quiet
        self.branch = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.GELU(),
                                    nn.Conv2d(c, c, 1), nn.Dropout(0.3))   # end of a residual branch: quiet
        self.head_drop = nn.Dropout(0.1)                      # low p before conv+BN: quiet
        self.head = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).flatten(2).chunk(3, dim=1)
        a = self.attn_drop((q.transpose(1, 2) @ k).softmax(-1))
        x = (v @ a.transpose(1, 2)).view(b, c, h, w) + x
        x = self.branch(x) + x
        return self.head(self.head_drop(x))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(Block(8), Block(8))
        self.drop = nn.Dropout(0.5)                           # straight into conv+BN: fires
        self.tail = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())

    def forward(self, x):
        return self.tail(self.drop(self.blocks(x)))


model = Net()
example_input = torch.randn(1, 8, 8, 8)
"""


def test_n004_quiet_on_merges_attention_weights_and_low_p_fires_on_plain_dropout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    [f] = only(source_findings(N004_BLOCKS, tmp_path, ["N004"]), "N004")
    assert f.module == "drop" and f.evidence["p"] == 0.5 and f.evidence["batchnorm"] == "tail.1"


def test_n004_quiet_on_dropout_feeding_a_skip_concatenation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = """
    import torch
    from torch import nn


    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.Sequential(nn.ConvTranspose2d(8, 8, 4, 2, 1, bias=False), nn.BatchNorm2d(8), nn.Dropout(0.5))
            self.after = nn.Sequential(nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))

        def forward(self, x, skip):
            return self.after(torch.cat([skip, self.up(x)], 1))


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Conv2d(8, 8, 4, 2, 1)
            self.level = Up()

        def forward(self, x):
            return self.level(self.down(x), x)


    model = Net()
    example_input = torch.randn(1, 8, 16, 16)
    """
    assert only(source_findings(source, tmp_path, ["N004"]), "N004") == []


def test_n002_fix_names_the_line_and_does_not_promise_a_beta_on_an_affine_false_norm(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = """
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.InstanceNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.InstanceNorm2d(8, affine=True), nn.ReLU(),
    )
    example_input = torch.randn(1, 3, 16, 16)
    """
    plain, affine = sorted(only(source_findings(source, tmp_path, ["N002"]), "N002"), key=lambda f: f.module)
    assert plain.fix.description.startswith("add bias=False on line ")
    assert "beta" not in plain.fix.description and "affine=False" in plain.fix.description
    assert not plain.evidence["norm_has_shift"]
    assert "beta" in affine.fix.description and affine.evidence["norm_has_shift"]




def test_n006_dropout_09_zeroes_90_percent_and_the_fix_keeps_90():
    torch.manual_seed(0)
    x = torch.ones(64, 1000)
    kept = (nn.Dropout(0.9).train()(x) != 0).float().mean().item()
    assert 0.08 < kept < 0.12  # keep_prob=0.9 was meant; 90% are dropped
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Dropout(0.9), nn.Linear(16, 4))
    [f] = findings(model, (2, 16), "N006")
    assert f.severity == Severity.WARNING and f.evidence["p"] == 0.9
    assert f.fix.code == "nn.Dropout(p=0.1)"
    kept = (eval(f.fix.code, {"nn": nn}).train()(x) != 0).float().mean().item()
    assert 0.88 < kept < 0.92


def test_n006_functional_dropout_and_the_option():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            return self.fc(F.dropout(x, 0.8, training=self.training))

    [f] = findings(Net(), (2, 16), "N006")
    assert f.evidence["suggested_p"] == pytest.approx(0.2) and f.fix.code is None
    assert "p=0.2" in f.fix.description
    assert findings(Net(), (2, 16), "N006", **{"max-p": 0.8}) == []


def test_n006_half_is_information_on_conv_maps_and_quiet_on_features_and_tokens():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Dropout(0.5), nn.Conv2d(8, 8, 3, padding=1))
    [f] = findings(conv, (2, 3, 16, 16), "N006")
    assert f.severity == Severity.INFO and f.evidence["feature_map"]
    tokens = nn.Sequential(nn.Linear(32, 32), nn.Dropout(0.5), nn.Linear(32, 32))
    assert findings(tokens, (2, 10, 32), "N006") == []
    assert findings(nn.Sequential(nn.Linear(32, 32), nn.Dropout(0.5)), (2, 32), "N006") == []
    assert findings(nn.Sequential(nn.Linear(32, 32), nn.Dropout(0.3)), (2, 32), "N006") == []



def test_n006_half_is_quiet_in_an_image_generator_where_dropout_is_the_noise():
    # pix2pix's U-Net decoder: Dropout(0.5) after each of the first upsampling convs is the
    # generator's only noise (Isola et al.), not a rate someone misread.
    generator = nn.Sequential(
        nn.Conv2d(3, 16, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(16, 16, 4, stride=2, padding=1), nn.InstanceNorm2d(16), nn.Dropout(0.5), nn.ReLU(),
        nn.Conv2d(16, 3, 3, padding=1), nn.Tanh(),
    )
    assert findings(generator, (1, 3, 32, 32), "N006") == []
    # A rate above one half is still the keep_prob confusion there.
    generator[4] = nn.Dropout(0.9)
    [f] = findings(generator, (1, 3, 32, 32), "N006")
    assert f.severity == Severity.WARNING


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg16", "alexnet", "efficientnet_b0", "mobilenet_v3_large", "densenet121", "vit_b_16"])
def test_n006_quiet_on_classic_classifiers(name):
    assert findings(torchvision_model(name), (1, 3, 224, 224), "N006") == []


def test_n005_layernorm_over_the_width_standardizes_each_row_of_pixels():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 16, 16) + torch.arange(8.0).view(1, 8, 1, 1)  # channels differ in mean
    y = nn.LayerNorm(16, elementwise_affine=False)(x)
    rows = y.mean(dim=-1)
    assert torch.allclose(rows, torch.zeros_like(rows), atol=1e-5)  # every row of every channel: mean 0
    assert y.mean(dim=(2, 3)).abs().max() < 1e-5  # and the channels' means are erased
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.LayerNorm(16))
    [f] = findings(model, (2, 3, 16, 16), "N005")
    assert f.evidence["axes"] == ["W"] and f.evidence["channels"] == 8
    assert f.fix.code == "nn.GroupNorm(1, 8)" and f.fix.checked == "runs"
    fixed = eval(f.fix.code, {"nn": nn})
    assert fixed(x).shape == x.shape


def test_n005_height_and_width_and_the_functional_call():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LayerNorm((12, 16)))
    [f] = findings(model, (2, 3, 12, 16), "N005")
    assert f.evidence["axes"] == ["H", "W"]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(4, 8, 3, padding=1)

        def forward(self, x):
            return F.layer_norm(self.conv(x), (20,))

    [f] = findings(Net(), (2, 4, 20), "N005")
    assert f.evidence["axes"] == ["L"] and f.fix.code is None


def test_n005_quiet_on_channels_last_tokens_and_whole_map_norms():
    class ChannelsLast(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.norm = nn.LayerNorm(16)

        def forward(self, x):
            return self.norm(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    assert findings(ChannelsLast(), (2, 3, 16, 16), "N005") == []
    whole = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LayerNorm((8, 16, 16)))
    assert findings(whole, (2, 3, 16, 16), "N005") == []
    tokens = nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16))
    assert findings(tokens, (2, 10, 16), "N005") == []


@pytest.mark.slow
@pytest.mark.parametrize("source, name", [("torchvision", "convnext_tiny"), ("torchvision", "vit_b_16"),
                                          ("torchvision", "swin_t"), ("timm", "convnext_nano")])
def test_n005_quiet_on_convnext_vit_and_swin(source, name):
    model = torchvision_model(name) if source == "torchvision" else timm_model(name)
    assert findings(model, (1, 3, 224, 224), "N005") == []
