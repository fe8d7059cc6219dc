"""Coverage: every result says how much of the model its graph reached, and a low share is a
warning, never a silent green."""
from __future__ import annotations

import json

import torch
from click.testing import CliRunner
from torch import nn

import archlint
from archlint.cli import main
from archlint.graph.coverage import measure

from .helpers import write_model


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.unused = nn.Linear(100, 100)  # built, never called
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.stem(x).mean((2, 3)))


def test_a_module_forward_never_calls_is_named_with_its_parameters():
    report = archlint.lint(Backbone(), input_shape=(1, 3, 16, 16))
    cov = report.coverage
    assert cov["params_total"] == sum(p.numel() for p in Backbone().parameters())
    assert cov["params_reached"] == cov["params_total"] - 100 * 100 - 100
    assert cov["modules_reached"] == 2 and cov["modules_total"] == 3
    assert cov["unreached"] == [{"module": "unused", "params": 10100,
                                 "why": "not called by the traced forward"}]
    # 10.1K of 10.3K params unreached: under 90%, a warning
    assert [f.code for f in report.findings if f.code == "C001"] == ["C001"]


def test_shared_weights_count_once_and_direct_parameter_reads_count():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(50, 16)
            self.out = nn.Linear(16, 50, bias=False)
            self.out.weight = self.embed.weight
            self.scale = nn.Parameter(torch.ones(16))

        def forward(self, ids):
            return self.out(self.embed(ids) * self.scale)

    report = archlint.lint(Tied(), torch.zeros(1, 7, dtype=torch.long))
    cov = report.coverage
    assert cov["params_total"] == 50 * 16 + 16 == cov["params_reached"]
    assert not cov["unreached"]


def test_a_module_whose_tied_weights_another_called_module_uses_is_reached():
    """T5's pattern: `shared` owns the embedding; the encoder and decoder call their own
    Embedding modules holding the same Parameter, and `shared` itself is never called."""
    class EncoderDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = nn.Embedding(50, 16)
            self.enc_embed = nn.Embedding(50, 16)
            self.dec_embed = nn.Embedding(50, 16)
            self.enc_embed.weight = self.dec_embed.weight = self.shared.weight
            self.head = nn.Linear(16, 50)

        def forward(self, ids, dec_ids):
            return self.head(self.enc_embed(ids).mean(1, keepdim=True) + self.dec_embed(dec_ids))

    model = EncoderDecoder()
    report = archlint.lint(model, (torch.zeros(1, 7, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)))
    cov = report.coverage
    assert cov["params_total"] == 50 * 16 + 16 * 50 + 50 == cov["params_reached"]
    assert cov["modules_reached"] == cov["modules_total"] == 2 and not cov["unreached"]
    assert "C001" not in {f.code for f in report.findings}


def test_a_skipped_part_is_named_and_fails_ci(tmp_path):
    source = '''
        import torch
        from torch import nn

        class Detector(nn.Module):
            def __init__(self):
                super().__init__()
                self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
                self.head = nn.Sequential(nn.Linear(8 * 16 * 16, 256), nn.ReLU(), nn.Linear(256, 4))

            def forward(self, x):
                x = self.backbone(x)
                if x.max() > 0.5:  # value-dependent: no tracer follows it
                    x = self.head(x.flatten(1))
                return x

        model = Detector()
        example_input = torch.randn(1, 3, 16, 16)
    '''
    path = write_model(tmp_path, source)
    result = CliRunner().invoke(main, ["check", str(path), "--no-cache", "--format", "json"])
    data = json.loads(result.output)
    (model,) = data["models"]
    assert model["tracer"] == "parts"
    assert model["coverage"]["unreached"][0]["module"] == "head"
    assert "skipped" in model["coverage"]["unreached"][0]["why"]
    assert "C001" in [f["code"] for f in model["findings"]]
    assert result.exit_code == 1  # --fail-on warning (the default) fails: no false green
    text = CliRunner().invoke(main, ["check", str(path), "--no-cache"]).output
    assert "coverage <0.1% of parameters" in text and "not reached: head" in text


def test_threshold_is_an_option_and_full_coverage_is_quiet(tmp_path):
    report = archlint.lint(Backbone(), input_shape=(1, 3, 16, 16), rules={"C001": {"min-coverage": 1.0}})
    assert "C001" not in [f.code for f in report.findings]


def test_an_opaque_op_leaves_its_parameters_unreached():
    """A graph with one weight read only by an op the tracer could not open."""
    from archlint.graph.archgraph import ArchGraph
    from archlint.graph.layer import Layer
    from archlint.graph.ops import Kind

    model = nn.Sequential(nn.Linear(4, 4))
    graph = ArchGraph(model, "torch.export", [(1, 4)])
    graph.add(Layer("w", 0, Kind.ATTR, "attr", "0.weight"))
    graph.add(Layer("hop", 1, Kind.FUNCTION, "wrap_with_set_grad_enabled", "", inputs=["w"], opaque=True))
    coverage = measure(model, [graph])
    assert coverage.params_reached == 0
    assert "could not open" in coverage.unreached[0][2]
