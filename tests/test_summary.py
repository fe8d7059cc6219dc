"""`archlint summary` (the layer table, archlint/summary.py), training memory (archlint/memory.py)
and `--format markdown`. Every number is checked against something archlint did not compute:
torch's own parameter count, torch.utils.flop_counter, a real CPU forward's saved tensors, a real
optimizer step, a Markdown parser."""
from __future__ import annotations

import json
import re
import textwrap

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import archlint
from archlint import memory, summary
from archlint.cli import main
from archlint.errors import ArchlintError
from archlint.findings import Finding, Location, Severity
from archlint.reports.summary_text import human_bytes
from archlint.reports.text import human
from archlint.results import ModelReport, Report

torchvision = pytest.importorskip("torchvision")

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def write(tmp_path, name: str, source: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source).lstrip())
    return str(path)


def flop_counts(name: str) -> dict[str, int]:
    """MACs per module from torch.utils.flop_counter on the meta device, keyed like
    named_modules() ('' for the whole model)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None)
        x = torch.empty(1, 3, 224, 224)
    with FlopCounterMode(display=False) as counter:
        model(x)
    root = type(model).__name__
    out = {}
    for key, per_op in counter.get_flop_counts().items():
        qualname = "" if key == "Global" else key.removeprefix(root).removeprefix(".")
        out[qualname] = sum(per_op.values()) // 2
    return out


@pytest.fixture(scope="module", params=["resnet50", "vit_b_16"])
def zoo(request, tmp_path_factory):
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    path = write(folder, f"{name}.py", f"""
        import torchvision
        model = torchvision.models.{name}(weights=None)
    """)
    data = json.loads(run("summary", path, "--format", "json", "--depth", "9", "--batch-size", "2"))
    text = run("summary", path, "--depth", "2", "--batch-size", "2")
    return name, data, text


def test_zoo_totals_are_torchs_and_the_flop_counters(zoo):
    name, data, _ = zoo
    [model] = data["models"]
    reference = torchvision.models.get_model(name, weights=None)
    params = sum(p.numel() for p in reference.parameters())
    assert model["totals"]["params"] == params
    assert model["totals"]["trainable"] == params and model["totals"]["non_trainable"] == 0
    flops = flop_counts(name)
    assert model["totals"]["macs"] == flops[""]
    # Each module's row against the flop counter's own per-module count and torch's parameters.
    modules = dict(reference.named_modules())
    for row in model["layers"]:
        if row["name"] not in modules:
            continue
        assert row["params"] == sum(p.numel() for p in modules[row["name"]].parameters()), row["name"]
        assert row["macs"] == flops.get(row["name"], 0), row["name"]


def test_zoo_text_totals_equal_the_json(zoo):
    name, data, text = zoo
    [model] = data["models"]
    totals = model["totals"]
    assert f"Params: {human(totals['params'])} ({totals['params']:,})" in text
    assert f"({totals['macs']:,}) for input 1x3x224x224" in text
    saved = model["training"]["saved_activations"]

    assert f"activations saved for backward {human_bytes(saved)}" in text
    # The table holds the JSON's rows, folded at its --depth 2.
    body = text.split("\n-")[1].split("\n-")[0].splitlines()[1:]
    assert [line.split()[0] for line in body] == [r["name"] for r in model["layers"] if r["depth"] <= 2]
    # The rows at depth 1 add up to the totals (neither model ties weights across them).
    top = [r for r in model["layers"] if r["depth"] == 1]
    assert sum(r["macs"] for r in top) == totals["macs"]
    assert sum(r["params"] for r in top) + sum(totals["outside_rows"].values()) == totals["params"]


def test_linear_over_tokens_counts_every_token(zoo):
    name, data, _ = zoo
    [model] = data["models"]
    rows = {r["name"]: r for r in model["layers"]}
    if name == "vit_b_16":
        mlp = rows["encoder.layers.encoder_layer_0.mlp.0"]  # Linear 768 -> 3072 over 197 tokens
        assert mlp["macs"] == 197 * 768 * 3072
        assert model["totals"]["outside_rows"] == {"class_token": 768}
    else:  # a Linear over a flat (N, features) input counts once
        assert rows["fc"]["macs"] == 2048 * 1000
        assert model["totals"]["outside_rows"] == {}


def test_depth_folds_rows_without_changing_them(tmp_path):
    path = write(tmp_path, "r18.py", """
        import torchvision
        model = torchvision.models.resnet18(weights=None)
    """)
    by_depth = {}
    for depth in ("1", "2", "3"):
        data = json.loads(run("summary", path, "--format", "json", "--depth", depth, "--no-memory"))
        by_depth[int(depth)] = {r["name"]: r for r in data["models"][0]["layers"]}
    assert all("." not in name for name in by_depth[1])
    assert {r["depth"] for r in by_depth[2].values()} == {1, 2}
    assert "layer1.0.conv1" in by_depth[3] and "layer1.0.conv1" not in by_depth[2]
    for shallow, deep in ((1, 2), (2, 3)):
        for name, row in by_depth[shallow].items():
            assert by_depth[deep][name] == row  # folding hides rows, it does not recompute them
    assert by_depth[1]["layer1"]["children"] == 2
    text = run("summary", path, "--depth", "1", "--no-memory")
    assert "layer1.0" not in text and "layer1 " in text


def test_piped_output_has_no_colour_and_a_terminal_gets_it(tmp_path, monkeypatch):
    path = write(tmp_path, "small.py", """
        import torch
        from torch import nn
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten())
        example_input = torch.randn(2, 3, 8, 8)
    """)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    plain = run("summary", path)  # CliRunner's stdout is not a terminal
    assert not ANSI.search(plain)
    assert "Module" in plain and "Saved @2" in plain
    monkeypatch.setenv("FORCE_COLOR", "1")
    coloured = run("summary", path)
    assert ANSI.search(coloured)
    assert ANSI.sub("", coloured) == plain


def test_table_fits_a_narrow_terminal():
    from archlint.reports import summary_text

    report = archlint.lint(torchvision.models.vit_b_16(weights=None), input_shape=(1, 3, 224, 224))
    record = summary.summarize(report.graph, "vit", memory=False)
    for width in (100, 72, 50):
        text = summary_text.render([record], depth=3, width=width)
        assert max(len(line) for line in text.splitlines()) <= width, width
    assert "Type" not in summary_text.render([record], depth=3, width=50)
    assert "EncoderBlock" in summary_text.render([record], depth=3, width=None)


# --- training memory ------------------------------------------------------------------------

class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)) + x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(Residual(), Residual())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(self.pool(x), 1))


def measured(model: nn.Module, shape):
    """The lint report of `model` and its training memory at the shape's batch."""
    report = archlint.lint(model, input_shape=shape)
    return report, memory.measure(report.graph.model, report.graph.input_shapes,
                                  [l.dtype for l in report.graph.inputs], batch_size=shape[0])


def real_saved(model: nn.Module, x: torch.Tensor) -> int:
    model.train()
    weights = list(model.parameters()) + list(model.buffers())
    with memory.saved_storages(weights) as saved:
        model(x)
    return sum(s.nbytes for s in saved.values())


@pytest.mark.parametrize("build,shape", [
    (Net, (4, 3, 16, 16)),
    (lambda: torchvision.models.resnet18(weights=None), (2, 3, 64, 64)),
    (lambda: torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                  hidden_dim=32, mlp_dim=64), (2, 3, 32, 32)),
])
def test_saved_activations_match_a_real_cpu_forward(build, shape):
    torch.manual_seed(0)
    _, usage = measured(build(), shape)
    assert usage.saved_total == real_saved(build(), torch.randn(*shape))
    assert usage.saved_total > 0


def test_saved_activations_per_layer_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    _, usage = measured(model, (2, 3, 5, 5))
    per = usage.saved_by_module
    pixels = 2 * 5 * 5 * 4  # batch * H * W * float32
    assert per["0"] == 3 * pixels  # conv keeps its input
    assert per["1"] == 4 * pixels + 2 * 4 * 4  # BatchNorm: its input, the batch mean and 1/std
    assert per["2"] == 4 * pixels  # ReLU: its output, which is also what the last conv keeps
    assert per.get("3", 0) == 0
    assert per[""] == usage.saved_total == sum(per[k] for k in "0123" if k in per)


def test_checkpoint_estimate_matches_real_checkpointing():
    """With the stages wrapped in (reentrant) torch.utils.checkpoint, the outer hooks see exactly
    what stays saved: the stages' inputs and whatever is saved outside them."""
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    model = Net()
    report, usage = measured(model, (4, 3, 16, 16))
    record = summary.build(report.graph, "net", usage)
    stages = record.training.checkpoint_stages
    assert stages and all(s in ("stem", "blocks") or s.startswith("blocks.") for s in stages)
    for stage in stages:
        module = model.get_submodule(stage)
        module.forward = (lambda m: lambda x: checkpoint(type(m).forward.__get__(m), x,
                                                         use_reentrant=True))(module)
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    assert record.training.checkpoint_saved == real_saved(model, x)
    assert record.training.checkpoint_saved < usage.saved_total


@pytest.mark.parametrize("optimizer,build", [
    ("adam", lambda ps: torch.optim.Adam(ps)),
    ("adamw", lambda ps: torch.optim.AdamW(ps)),
    ("sgd-momentum", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
    ("sgd", lambda ps: torch.optim.SGD(ps, lr=0.1)),
])
def test_weights_gradients_and_optimizer_state_match_a_real_step(optimizer, build):
    model = Net()
    model.stem.requires_grad_(False)  # frozen: no gradient, no state
    _, usage = measured(model, (4, 3, 16, 16))
    opt = build([p for p in model.parameters() if p.requires_grad])
    model(torch.randn(4, 3, 16, 16)).sum().backward()
    opt.step()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for k, t in s.items()
                if torch.is_tensor(t) and k != "step")
    assert usage.weights == sum(p.numel() * p.element_size() for p in model.parameters())
    assert usage.buffers == sum(b.numel() * b.element_size() for b in model.buffers())
    assert usage.gradients == grads
    assert usage.optimizer_state(optimizer) == state


def test_frozen_parameters_get_their_own_column(tmp_path):
    path = write(tmp_path, "frozen.py", """
        import torch
        from torch import nn
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
        model[0].requires_grad_(False)
        example_input = torch.randn(1, 3, 16, 16)
    """)
    data = json.loads(run("summary", path, "--format", "json"))
    totals = data["models"][0]["totals"]
    assert totals["non_trainable"] == 3 * 8 * 9 + 8 and totals["trainable"] == 8 * 4 * 9 + 4
    text = run("summary", path)
    assert "Frozen" in text and "non-trainable 224" in text


def test_summary_reports_a_target_that_cannot_be_linted(tmp_path):
    path = write(tmp_path, "broken.py", """
        import torch
        from torch import nn
        model = nn.Linear(3, 4)
        example_input = torch.randn(2, 5)
    """)
    result = CliRunner().invoke(main, ["summary", path], catch_exceptions=False)
    assert result.exit_code == 2 and "error" in result.output


def test_a_forward_that_fails_in_training_still_gets_its_table(tmp_path):
    path = write(tmp_path, "evalonly.py", """
        import torch
        from torch import nn
        class EvalOnly(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 4)
            def forward(self, x):
                if self.training:
                    raise RuntimeError("only eval")
                return self.fc(x)
        model = EvalOnly().eval()
        example_input = torch.randn(2, 4)
    """)
    data = json.loads(run("summary", path, "--format", "json"))
    [model] = data["models"]
    assert model["training"] is None and "only eval" in model["notes"][0]
    assert model["layers"][0]["macs"] == 2 * 4 * 4


# --- markdown -------------------------------------------------------------------------------

def _markdown_report(tmp_path) -> Report:
    source = tmp_path / "net.py"
    source.write_text("import torch\n" * 20)
    loc = Location(str(source.relative_to(tmp_path)), 12, abspath=str(source))
    findings = [
        Finding("K001", "large-kernel", Severity.WARNING, "stem", "7x7 conv | wide <kernel>", loc),
        Finding("N002", "bias-before-norm", Severity.ERROR, "", "line one\nline two",
                Location("net.py", 3, abspath=str(source))),
    ]
    model = ModelReport(target="net.py::Net", tracer="torch.fx", inputs=[[1, 3, 64, 64]],
                        findings=findings, stored_summary={"params": 33100, "macs": 10_060_000, "layers": 11})
    return Report(models=[model, ModelReport(target="bad.py::M", error=ArchlintError("boom"))])


def test_markdown_is_a_valid_table_with_links(tmp_path, monkeypatch):
    from markdown_it import MarkdownIt

    from archlint.reports import render

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()
    text = render("markdown", _markdown_report(tmp_path),
                  environ={"GITHUB_REPOSITORY": "o/r", "GITHUB_SHA": "abc"})
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    tables = [i for i, t in enumerate(tokens) if t.type == "table_open"]
    assert len(tables) == 2

    def rows(start: int) -> list[list[str]]:
        out, current = [], None
        for tok in tokens[start:]:
            if tok.type == "tr_open":
                current = []
            elif tok.type == "inline" and current is not None:
                current.append(tok.content)
            elif tok.type == "tr_close":
                out.append(current)
                current = None
            elif tok.type == "table_close":
                return out
        return out

    findings = rows(tables[0])
    assert findings[0] == ["Severity", "Rule", "Where", "Module", "Finding"]
    assert len(findings) == 3 and all(len(r) == 5 for r in findings)  # a "|" did not split a cell
    assert "error" in findings[1][0]  # errors first
    links = [t.attrGet("href") for t in tokens if t.type == "link_open"] + [
        c.attrGet("href") for t in tokens if t.children for c in t.children if c.type == "link_open"]
    assert "https://github.com/o/r/blob/abc/net.py#L12" in links
    html = MarkdownIt("commonmark").enable("table").render(text)
    assert "&lt;kernel&gt;" in html and "<kernel>" not in html
    models = rows(tables[1])
    assert models[1][:6] == ["net.py::Net", "torch.fx", "1x3x64x64", "33.10K", "10.06M", "11"]
    assert "could not be linted" in models[2][1]
    assert "**2 findings** (1 error, 1 warning) in 1 model" in text


def test_check_format_markdown_from_the_cli(tmp_path, monkeypatch):
    path = write(tmp_path, "cnn.py", """
        import torch
        from torch import nn
        model = nn.Sequential(nn.Conv2d(3, 32, 7, stride=2, padding=3), nn.BatchNorm2d(32), nn.ReLU())
        example_input = torch.randn(1, 3, 32, 32)
    """)
    monkeypatch.chdir(tmp_path)
    for key in ("GITHUB_REPOSITORY", "GITHUB_SHA"):
        monkeypatch.delenv(key, raising=False)
    result = CliRunner().invoke(main, ["check", path, "--format", "markdown", "--no-cache"])
    assert result.exit_code == 1
    assert "| `K001` large-kernel |" in result.output
    assert re.search(r"\[cnn\.py:3\]\(cnn\.py#L3\)", result.output)
