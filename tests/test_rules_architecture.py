"""A001-A003 beyond their own examples: linear layers with no nonlinearity between, softmax
outputs, deep stacks without skips."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archlint
from archlint.findings import Severity
from archlint.rules.architecture.deep_plain_stack import longest_plain_chains

from .helpers import found, lint, torchvision_model


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
    # Counted in neighbour lookups, not timed: a walk per layer would make them quadratic.
    def lookups(blocks):
        model = nn.Sequential(*[_Res(4) for _ in range(blocks)])
        graph = lint(model, shape=(1, 4, 4, 4), select=["A003"]).graph
        calls = []
        for name in ("predecessors", "successors"):
            look = getattr(graph, name)
            setattr(graph, name, lambda layer, look=look: calls.append(layer) or look(layer))
        chains = longest_plain_chains(graph)
        return len(calls), chains

    small, _ = lookups(100)
    large, chains = lookups(1000)
    assert chains[0][0] == 1
    assert 0 < large <= 12 * small  # ten times the graph: ten times the lookups, not a hundred


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


def test_a004_sigmoid_scores_cap_cross_entropy_and_relu_scores_get_no_gradient():
    # Ten sigmoid scores lie in (0, 1): even the best case, 1 for the target and 0 elsewhere,
    # leaves cross-entropy at log(1 + 9/e) ~ 1.46.
    best = torch.tensor([[1.0] + [0.0] * 9])
    assert F.cross_entropy(best, torch.tensor([0])).item() == pytest.approx(1.4612, abs=1e-3)
    squashed = torch.sigmoid(torch.tensor([[20.0] + [-20.0] * 9]))
    assert F.cross_entropy(squashed, torch.tensor([0])).item() > 1.46
    # A ReLU'd target score that went negative gets no gradient to recover.
    z = torch.tensor([[-1.0, 2.0, 0.5]], requires_grad=True)
    F.cross_entropy(F.relu(z), torch.tensor([0])).backward()
    assert z.grad[0, 0] == 0


def test_a004_severities_and_the_fix():
    relu = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 10), nn.ReLU())
    [f] = found(lint(relu, (2, 8), select=["A004"]))
    assert f.severity == Severity.WARNING and f.evidence["classes"] == 10 and f.module == "3"
    assert "without the ReLU" in f.fix.code and f.fix.checked == "compiles"
    tanh = nn.Sequential(nn.Linear(8, 6), nn.Tanh())             # a policy's actions look like this
    assert [f.severity for f in found(lint(tanh, (2, 8), select=["A004"]))] == [Severity.INFO]
    binary = nn.Sequential(nn.Linear(8, 1), nn.Sigmoid())
    [f] = found(lint(binary, (2, 8), select=["A004"]))
    assert f.severity == Severity.INFO and "BCEWithLogitsLoss" in f.fix.description
    regression = nn.Sequential(nn.Linear(8, 1), nn.ReLU())       # one non-negative value
    assert not found(lint(regression, (2, 8), select=["A004"]))


def test_a004_quiet_on_gan_generators_and_conv_head_counts():
    generator = nn.Sequential(nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.ReLU(),
                              nn.ConvTranspose2d(8, 3, 4, 2, 1), nn.Tanh())
    assert not found(lint(generator, (2, 16, 4, 4), select=["A004"]))
    # DCGAN's discriminator: conv -> Sigmoid on N x 1 x 1 x 1, flattened: a binary head
    discriminator = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(8, 1, 4, 1, 0), nn.Sigmoid(), nn.Flatten())
    [f] = found(lint(discriminator, (2, 3, 8, 8), select=["A004"]))
    assert f.severity == Severity.INFO and f.evidence["classes"] == 1
    segmentation = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.Sigmoid())  # masks: not (N, classes)
    assert not found(lint(segmentation, (2, 3, 8, 8), select=["A004"]))


def test_a004_quiet_when_the_logits_are_returned_too():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            logits = self.fc(x)
            return logits, torch.sigmoid(logits)

    assert not found(lint(Net(), (2, 8), select=["A004"]))


def test_a004_quiet_on_a_bert_style_pooler_and_fires_on_a_narrowing_head():
    # Hugging Face's BertModel returns its token features and dense + Tanh over [CLS]: a
    # sentence embedding as wide as the hidden size, not class scores.
    class Encoder(nn.Module):
        def __init__(self, head: nn.Linear):
            super().__init__()
            self.embed = nn.Embedding(100, 32)
            self.layer = nn.TransformerEncoderLayer(32, 2, 64, batch_first=True)
            self.pooler = head

        def forward(self, ids):
            hidden = self.layer(self.embed(ids))
            return hidden, torch.tanh(self.pooler(hidden[:, 0]))

    ids = torch.zeros(2, 10, dtype=torch.long)
    assert not found(archlint.lint(Encoder(nn.Linear(32, 32)), ids, select=["A004"]))
    [f] = found(archlint.lint(Encoder(nn.Linear(32, 5)), ids, select=["A004"]))
    assert f.evidence["classes"] == 5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_large", "efficientnet_b0", "vit_b_16", "vgg16"])
def test_a004_quiet_on_reference_classifiers(name):
    assert not found(lint(torchvision_model(name), (1, 3, 224, 224), select=["A004"]))


def _mlp(act, depth=8, width=64, norm=False):
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width)] + ([nn.LayerNorm(width)] if norm else []) + [act()]
    return nn.Sequential(*layers)


def _weight_grad_norms(model, width=64):
    torch.manual_seed(1)
    model(torch.randn(32, width)).sum().backward()
    return [m.weight.grad.norm().item() for m in model if isinstance(m, nn.Linear)]


def test_a005_gradient_at_the_first_layer_of_a_deep_tanh_mlp_is_far_smaller_than_at_the_last():
    torch.manual_seed(0)
    grads = _weight_grad_norms(_mlp(nn.Tanh))  # PyTorch's default init
    assert grads[0] < grads[-1] / 10
    torch.manual_seed(0)
    grads = _weight_grad_norms(_mlp(nn.Sigmoid))
    assert grads[0] < grads[-1] / 1e4
    [f] = found(lint(_mlp(nn.Tanh), (32, 64), select=["A005"]))
    assert f.evidence["saturating_depth"] == 8 and (f.evidence["first"], f.evidence["last"]) == ("0", "14")
    assert f.fix.code == "nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64))" and f.fix.checked == "runs"


def test_a005_norms_other_activations_skips_and_short_stacks_are_quiet():
    assert not found(lint(_mlp(nn.Tanh, norm=True), (32, 64), select=["A005"]))
    assert not found(lint(_mlp(nn.Tanh, depth=5), (32, 64), select=["A005"]))
    assert found(lint(_mlp(nn.Tanh, depth=5), (32, 64), select=["A005"], rules={"A005": {"min-depth": 5}}))
    mixed = nn.Sequential(*(list(_mlp(nn.Tanh, depth=4)) + [nn.Linear(64, 64), nn.ReLU()] + list(_mlp(nn.Tanh, depth=4))))
    assert not found(lint(mixed, (32, 64), select=["A005"]))

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 64)

        def forward(self, x):
            return x + torch.tanh(self.fc(x))

    assert not found(lint(nn.Sequential(*[Residual() for _ in range(8)]), (32, 64), select=["A005"]))


def test_a005_conv_stack_with_sigmoid():
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.Sigmoid()]
    for _ in range(6):
        layers += [nn.Conv2d(8, 8, 3, padding=1), nn.Sigmoid()]
    [f] = found(lint(nn.Sequential(*layers), (2, 3, 8, 8), select=["A005"]))
    assert f.evidence["saturating_depth"] == 7
    assert f.fix.code == "nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_large", "resnet50", "vit_b_16"])
def test_a005_quiet_on_reference_models_with_sigmoid_gates(name):
    assert not found(lint(torchvision_model(name), (1, 3, 224, 224), select=["A005"]))
