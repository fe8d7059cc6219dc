"""The numbers archlint computes: shapes, parameters, MACs, receptive fields, source lines, tracers.

These are the numbers familiar summary tools get wrong (shared weights, Linear over 3-D inputs,
attention), so each is checked against a closed-form count.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archlint


def layer(report, qualname):
    return next(l for l in report.graph if l.qualname == qualname and l.kind == "module")


def test_conv_output_size_params_and_macs():
    # out = floor((in + 2p - d(k-1) - 1) / s) + 1 ; params = k*k*C_in*C_out + C_out
    model = nn.Sequential(nn.Conv2d(3, 16, 5, stride=2, padding=1, dilation=2))
    report = archlint.lint(model, input_shape=(1, 3, 37, 37))
    conv = layer(report, "0")
    side = math.floor((37 + 2 * 1 - 2 * (5 - 1) - 1) / 2) + 1
    assert conv.out_shape == (1, 16, side, side)
    assert conv.params == 5 * 5 * 3 * 16 + 16
    assert conv.macs == 16 * side * side * 3 * 5 * 5


def test_linear_over_3d_input_counts_every_token():
    model = nn.Sequential(nn.Linear(768, 3072))
    report = archlint.lint(model, input_shape=(2, 197, 768))
    assert report.summary["macs"] == 2 * 197 * 768 * 3072


def test_attention_macs():
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(64, 192)

        def forward(self, x):
            b, n, c = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, 4, 16).permute(2, 0, 3, 1, 4)
            return F.scaled_dot_product_attention(q, k, v)

    report = archlint.lint(Attention(), input_shape=(1, 50, 64))
    projections = 50 * 64 * 192
    scores_and_mix = 2 * 4 * 50 * 50 * 16
    assert report.summary["macs"] == projections + scores_and_mix


def test_vit_b_16_macs_match_the_paper_count():
    torchvision = pytest.importorskip("torchvision")
    report = archlint.lint(torchvision.models.vit_b_16(), input_shape=(1, 3, 224, 224))
    # torchvision documents 17.56 GFLOPS (multiply-adds) for ViT-B/16 at 224.
    assert report.summary["macs"] == pytest.approx(17.56e9, rel=0.005)
    assert report.summary["params"] == 86_567_656


def test_shared_weights_count_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(1000, 64)
            self.body = nn.Linear(64, 64)
            self.head = nn.Linear(64, 1000, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids):
            return self.head(self.body(self.embed(ids)))

    report = archlint.lint(Tied(), torch.zeros(2, 7, dtype=torch.long))
    assert report.summary["params"] == 1000 * 64 + 64 * 64 + 64
    naive = sum(l.params for l in report.graph.layers)
    assert naive == report.summary["params"] + 1000 * 64  # what a per-layer sum would claim


def test_reused_module_is_two_calls_one_set_of_weights():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return self.conv(torch.relu(self.conv(x)))

    report = archlint.lint(Twice(), input_shape=(1, 8, 16, 16))
    calls = [l for l in report.graph.layers if l.qualname == "conv"]
    assert len(calls) == 2
    assert report.summary["params"] == 8 * 8 * 9 + 8
    assert report.summary["macs"] == 2 * 8 * 16 * 16 * 8 * 9


def test_receptive_field_of_stacked_3x3_is_7():
    model = nn.Sequential(*[m for _ in range(3) for m in (nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())])
    report = archlint.lint(model, input_shape=(1, 4, 32, 32))
    sizes = [l.rf.size[0] for l in report.graph.layers if isinstance(l.module, nn.Conv2d)]
    assert sizes == [3, 5, 7]


def test_receptive_field_with_strides_and_pooling():
    # conv3x3/s2 -> jump 2; maxpool 2/s2 adds (2-1)*2 -> 5, jump 4; conv3x3 adds 2*4 -> 13.
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1))
    report = archlint.lint(model, input_shape=(1, 3, 64, 64))
    rf = [l.rf for l in report.graph.layers]
    assert [r.size[0] for r in rf[:3]] == [3, 5, 13]
    assert [r.jump[0] for r in rf[:3]] == [2, 4, 4]
    assert rf[3].is_global


def test_user_model_is_not_touched():
    model = nn.Linear(4, 4)
    before = model.weight.detach().clone()
    archlint.lint(model, input_shape=(2, 4))
    assert model.weight.device.type == "cpu"
    assert torch.equal(model.weight.detach(), before)


def test_source_lines_of_construction_and_call(write_model):
    path = write_model("""
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3)

            def forward(self, x):
                y = self.conv(x)
                return y
    """, "lines.py")
    report = archlint.check_paths([str(path)], archlint.api.Settings())
    conv = layer(report.models[0], "conv")
    assert (conv.built_at.path, conv.built_at.line) == ("lines.py", 7)
    assert (conv.called_at.path, conv.called_at.line) == ("lines.py", 10)


def test_each_layers_call_stack_is_its_own(write_model):
    # The tracer remembers the frames above each user frame (sources.CallStacks); a generator
    # resumed from two lines has two stacks above it, and a block called twice has two callers.
    path = write_model("""
        import torch
        from torch import nn

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(8, 8, 3, padding=1)

            def forward(self, x):
                return self.conv(x)

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.stem, self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
                self.block = Block()

            def stages(self, x):
                yield self.a(x)
                yield self.b(x)

            def forward(self, x):
                x = self.stem(x)
                stages = self.stages(x)
                y = next(stages)
                z = next(stages)
                y = self.block(y)
                return self.block(y + z)
    """, "stacks.py")
    report = archlint.check_paths([str(path)], archlint.api.Settings())
    stacks = {l.name: [f.line for f in l.call_frames] for l in report.models[0].graph.layers}
    assert stacks["a"] == [19, 25] and stacks["b"] == [20, 26]
    assert [stacks[n] for n in stacks if n.startswith("block")] == [[10, 27], [10, 28]]


def test_meta_fx_rung_when_the_forward_branches_on_shapes():
    class ShapeCheck(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            if x.shape[-1] % 8:  # plain fx proxies cannot be branched on; meta-backed ones can
                raise ValueError("width must be a multiple of 8")
            batch = len(x)
            return self.conv(x).view(batch, 8, -1)

    report = archlint.lint(ShapeCheck(), input_shape=(1, 3, 32, 32))
    assert report.tracer == "torch.fx (meta)"
    conv = layer(report, "conv")
    assert conv.out_shape == (1, 8, 32, 32) and conv.macs == 8 * 32 * 32 * 27
    assert next(l for l in report.graph if l.op == "view").out_shape == (1, 8, 1024)
    assert any("torch.fx could not trace" in n for n in report.notes)


def test_export_rung_when_no_fx_tracer_can_follow_the_forward():
    class TypeCheck(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            if not isinstance(x, torch.Tensor):  # an fx proxy is not a tensor; export's are
                raise TypeError("expected a tensor")
            return self.conv(x)

    report = archlint.lint(TypeCheck(), input_shape=(1, 3, 32, 32))
    assert report.tracer == "torch.export"
    conv = layer(report, "conv")
    assert conv.out_shape == (1, 8, 32, 32) and conv.macs == 8 * 32 * 32 * 27
    assert any("torch.fx could not trace" in n for n in report.notes)


def _conv_norm_pool_stack(norm_act):
    """conv, norm+act, max pool, conv, norm without act, conv: `norm_act(channels, act)`."""
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
            self.bn1 = norm_act(16, True)
            self.pool = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
            self.bn2 = norm_act(16, False)  # no activation: conv2 and conv3 compose linearly
            self.conv3 = nn.Conv2d(16, 16, 3, padding=1)

        def forward(self, x):
            return self.conv3(self.bn2(self.conv2(self.pool(self.bn1(self.conv1(x))))))
    return Stack()


def test_timm_fused_norm_act_is_recorded_as_its_norm_then_its_activation():
    timm_layers = pytest.importorskip("timm.layers")

    def fused(c, act):  # timm's BatchNormAct2d, as its CNNs build it
        return timm_layers.BatchNormAct2d(c, act_layer=nn.SiLU, apply_act=act)

    def plain(c, act):
        return nn.Sequential(nn.BatchNorm2d(c), nn.SiLU(inplace=True)) if act else nn.BatchNorm2d(c)

    timm_report = archlint.lint(_conv_norm_pool_stack(fused), input_shape=(2, 3, 32, 32))
    plain_report = archlint.lint(_conv_norm_pool_stack(plain), input_shape=(2, 3, 32, 32))
    kinds = [(l.kind, type(l.module).__name__ if l.module is not None else l.op) for l in timm_report.graph]
    # Traced through, each was eleven nodes: an assert on x.ndim, four weight reads, F.batch_norm.
    assert kinds == [("input", "x"), ("module", "Conv2d"), ("module", "BatchNormAct2d"), ("module", "SiLU"),
                     ("module", "MaxPool2d"), ("module", "Conv2d"), ("module", "BatchNormAct2d"),
                     ("module", "Conv2d"), ("output", "output")]
    assert layer(timm_report, "bn1.act").in_shape == (2, 16, 32, 32)
    assert timm_report.coverage["params"] == 1.0
    assert sum(l.macs for l in timm_report.graph) == sum(l.macs for l in plain_report.graph)
    # The rules read it as the BatchNorm and the SiLU it computes: the same findings, among
    # them the missing nonlinearity after the norm without one, and fix code in torch.nn terms.
    assert sorted(f.code for f in timm_report.findings) == sorted(f.code for f in plain_report.findings)
    assert "A001" in {f.code for f in timm_report.findings}
    pool_fix = next(f for f in timm_report.findings if f.code == "D001").fix
    assert "nn.BatchNorm2d(16)" in pool_fix.code and "bias=False" in pool_fix.code


def test_inplace_writes_and_aliases_are_recorded():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            y = self.conv(x)
            y += x
            flat = y.view(1, -1)
            return self.relu(y), flat

    report = archlint.lint(Block(), input_shape=(1, 4, 8, 8))
    by_name = {l.name: l for l in report.graph}
    add = next(l for l in report.graph if l.op == "add")
    assert add.writes == ["conv"]
    assert by_name["view"].alias_of == "conv"
    relu = layer(report, "relu")
    assert relu.writes == ["add"]


def test_meta_building_costs_no_weight_memory(write_model):
    path = write_model("""
        import torch
        from torch import nn
        model = nn.Sequential(nn.Linear(20000, 20000), nn.Linear(20000, 20000))  # 3.2 GB of fp32
        example_input = torch.zeros(1, 20000)
    """)
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = archlint.check_paths([str(path)], archlint.api.Settings())
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert not report.errors
    assert report.models[0].summary["params"] == 2 * (20000 * 20000 + 20000)
    assert grew_mb < 500


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2), (2, 8, 17, 17)),
    (lambda: nn.Conv2d(8, 8, 5, groups=8, dilation=2), (1, 8, 20, 20)),
    (lambda: nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1), (1, 8, 9, 9)),
    (lambda: nn.Conv1d(4, 6, 3), (3, 4, 50)),
    (lambda: nn.Conv3d(2, 4, 3, padding=1), (1, 2, 6, 6, 6)),
    (lambda: nn.Linear(12, 7), (2, 5, 3, 12)),
    (lambda: nn.MultiheadAttention(16, 4, batch_first=True), None),
])
def test_closed_form_macs_agree_with_flop_counter(make, shape):
    """Common layers are counted from shapes; everything else by FlopCounterMode. Both must agree."""
    from torch.utils.flop_counter import FlopCounterMode

    module = make()
    args = (torch.zeros(shape),) if shape else (torch.zeros(2, 6, 16),) * 3
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(*args)
    report = archlint.lint(module, args)
    assert report.summary["macs"] == counter.get_total_flops() // 2 > 0


def test_lstm_macs_count_every_gate_at_every_step():
    # torch's flop counter sees one fused op on CPU and counts 0; on meta tensors the LSTM runs
    # as its matrix products: 4 gates x hidden x (input + hidden) per step and sample.
    report = archlint.lint(nn.LSTM(8, 16), input_shape=(5, 2, 8))
    assert report.summary["macs"] == 5 * 2 * 4 * 16 * (8 + 16)


def test_functional_conv_and_linear_macs():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(6, 3, 3, 3))
            self.fc = nn.Parameter(torch.zeros(10, 6))

        def forward(self, x):
            y = F.conv2d(x, self.w, padding=1)
            return F.linear(y.mean((2, 3)), self.fc)

    report = archlint.lint(Functional(), input_shape=(2, 3, 8, 8))
    assert report.summary["macs"] == 2 * 6 * 8 * 8 * 3 * 9 + 2 * 6 * 10


def test_the_users_model_is_linted_in_place_and_given_back_as_it_was():
    """archlint.lint puts the live model's weights on meta while it lints, without copying the
    module tree, and puts its own tensors and modes back, also when the lint fails."""
    from archlint.errors import ArchlintError

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 6 * 6, 2))
    model.train()
    model[1].eval()
    before = {name: t for name, t in list(model.named_parameters()) + list(model.named_buffers())}
    values = {name: t.detach().clone() for name, t in before.items()}
    x = torch.randn(2, 3, 8, 8)
    report = archlint.lint(model, x)
    assert report.error is None and report.summary["params"] == sum(p.numel() for p in model.parameters())
    after = dict(list(model.named_parameters()) + list(model.named_buffers()))
    assert all(after[name] is t and torch.equal(t, values[name]) for name, t in before.items())
    assert model.training and not model[1].training
    with pytest.raises(ArchlintError):
        archlint.lint(model, torch.randn(1, 4, 8, 8))  # the conv takes 3 channels
    assert all(not t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    model(x)  # still runs as the user built it
