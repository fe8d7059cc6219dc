"""The HTML report, checked structurally: parse the page and look for what a reviewer needs.

resnet50 (real model, real findings), a model with findings of every severity, the synthetic
1000-block network, several models in one run, a target that fails, and the CLI entry points.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from archlint import registry
from archlint.api import Report, check_paths, lint
from archlint.cli import main
from archlint.config import Settings
from archlint.reports import render
from archlint.reports.html_graph import CHUNK_ABOVE
from archlint.registry import load_rules

ALL_RULES = load_rules().rules

from .html_support import TEST_RULES, check_page, finding_cards

ROOT = Path(__file__).resolve().parent.parent


def _html(report) -> str:
    return render("html", report)


def _card_checks(root, findings) -> None:
    """Every finding has a card with its code, its line highlighted, its fix and a docs link."""
    cards = finding_cards(root)
    assert len(cards) == len(findings)
    severities = [c.find("span", cls="sev").text().strip() for c in cards]
    order = {"error": 0, "warning": 1, "info": 2}
    assert severities == sorted(severities, key=order.__getitem__), "most severe first"
    by_key = {}
    for card in cards:
        header = card.find("header")
        by_key.setdefault((card.attrs["data-code"], header.find("span", cls="module").text()), []).append(card)
    for f in findings:
        matching = by_key[(f.code, f"in {f.module or '(model)'}")]
        card = matching.pop(0)
        assert card.find("code", cls="code").text() == f.code
        sev = card.find("span", cls="sev")
        assert sev.find("svg", cls="icon") is not None and sev.text().strip() == str(f.severity), \
            "severity as icon and word"
        assert f.message == card.find("p", cls="message").text()
        if f.location is not None:
            assert card.find("code", cls="location").text() == str(f.location)
            current = card.find("mark", cls="current")
            assert current is not None, f"{f.code}: no highlighted source line"
            assert current.find("span", cls="ln").text() == str(f.location.line)
            source = Path(f.location.abspath).read_text().splitlines()[f.location.line - 1]
            assert source.strip() in current.text()
        if f.fix is not None:
            fix = card.find("div", cls="fix")
            assert f.fix.description in fix.text()
            if f.fix.code:
                assert fix.find("pre", cls="fix-code").text() == f.fix.code.rstrip()
        for key, value in f.evidence.items():
            assert key in [dt.text() for dt in card.find("dl", cls="evidence").find_all("dt")]
        docs = card.find("a", cls="docs")
        assert docs is not None and docs.attrs["href"] == f"#rule-{f.code}"
        assert root.find("article", cls="rule", id=f"rule-{f.code}") is not None


def _table_checks(root, graph, model_id="m0") -> None:
    table = root.find("section", id=f"{model_id}-layers").find("table")
    rows = table.find("tbody").find_all("tr")
    expected = [l for l in graph if l.kind != "output"]
    assert len(rows) == len(expected), "the table is complete without JavaScript"
    for row, layer in zip(rows, expected):
        cells = row.find_all("td")
        assert cells[0].attrs["data-v"] == str(layer.index)
        assert cells[4].attrs["data-v"] == str(layer.params)
        assert cells[5].attrs["data-v"] == str(layer.macs)
    headers = [th.text() for th in table.find("thead").find_all("th")]
    assert headers == ["#", "module", "type", "output shape", "params", "MACs", "receptive field", "findings"]


# --- resnet50 -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def resnet50_report():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet50(weights=None)
    return Report(rules=ALL_RULES, models=[lint(model, input_shape=(1, 3, 224, 224))])


def test_resnet50_page(resnet50_report):
    html = _html(resnet50_report)  # its time is bench/bench_html.py's
    root = check_page(html)
    model = resnet50_report.models[0]
    assert model.findings, "resnet50 has known findings (its 7x7 stem at least)"
    _card_checks(root, model.findings)
    _table_checks(root, model.graph)
    index = root.find("ol", cls="finding-index")
    if len(model.findings) > 3:  # a list of links to the cards heads a long list of findings
        cards = [c.attrs["id"] for c in finding_cards(root)]
        assert [a.attrs["href"][1:] for a in index.find_all("a")] == cards
    else:
        assert index is None
    header = root.find("dl", cls="summary").text()
    for word in ("torch.fx", "1×3×224×224", "25.56M", "4.09G", "receptive field", "427×427"):
        assert word in header
    graph = root.find("section", id="m0-graph")
    top = graph.find("svg", cls="graph")
    labels = [t.text() for t in top.find_all("text", cls="t1")]
    assert labels[:5] == ["x", "conv1", "bn1", "relu", "maxpool"] and "layer4" in labels and "fc" in labels
    marked = [g for g in top.find_all("g", cls="node") if any(c.startswith("sev-") for c in g.classes)]
    assert any("conv1" in g.text() for g in marked), "the 7x7 stem is marked in the graph"
    # Every module opens to its own graph; a bottleneck shows its residual add and the ports.
    block = graph.find("div", cls="graph-body", id="m0-g-layer1.0")
    block_labels = [t.text() for t in block.find("svg").find_all("text", cls="t1")]
    assert {"conv1", "conv3", "add", "downsample"} <= set(block_labels)
    assert block.find("use", href="#port-in") is not None and block.find("use", href="#port-out") is not None
    plots = root.find("section", id="m0-plots")
    assert {f.attrs["id"] for f in plots.find_all("figure")} == {"m0-pyramid", "m0-macs", "m0-rf"}
    pyramid = plots.find("figure", id="m0-pyramid")
    assert [t.text() for t in pyramid.find_all("text") if "×" in t.text()][:3] == ["224×224", "112×112", "56×56"]
    assert len(html.encode()) < 3_000_000


def test_resnet50_page_has_no_absolute_paths_and_is_reproducible(resnet50_report):
    first, second = _html(resnet50_report), _html(resnet50_report)
    assert first == second
    for f in resnet50_report.findings:
        assert f.location.abspath not in first
    assert os.getcwd() not in first


# --- findings of every severity -------------------------------------------------------------------

SEVERITY_MODEL = """
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(16, 16, kernel_size=7, padding=3)  # K001: warning
            self.act = nn.ReLU()  # T902: info
            self.head = nn.Linear(16, 4)  # T901: error

        def forward(self, x):
            x = self.act(self.stem(x))
            return self.head(x.mean((2, 3)))


    model = Net()
    example_input = torch.randn(1, 16, 32, 32)
"""


@pytest.fixture
def with_test_rules(monkeypatch):
    """Register the test pack the way a third-party pack registers: one more entry point."""
    import types

    pack = types.ModuleType("archlint_test_pack")
    for rule in TEST_RULES:
        setattr(pack, rule.__name__, rule)
        rule.__module__ = pack.__name__
    original = registry._packs

    def packs():
        yield from original()
        yield "archlint_test_pack", lambda: pack

    monkeypatch.setattr(registry, "_packs", packs)
    monkeypatch.setattr(registry, "_cache", None)
    yield


def test_findings_of_every_severity(with_test_rules, write_model):
    path = write_model(SEVERITY_MODEL)
    report = check_paths([str(path)], Settings().with_overrides(select=["K001", "T9"]))
    model = report.models[0]
    assert model.error is None
    assert {str(f.severity) for f in model.findings} == {"error", "warning", "info"}
    html = _html(report)
    root = check_page(html)
    _card_checks(root, model.findings)
    _table_checks(root, model.graph)
    cards = finding_cards(root)
    assert [c.attrs["data-code"] for c in cards] == ["T901", "K001", "T902"]
    # The highlighted line is the one that built the layer, in the user's file.
    text = cards[0].find("mark", cls="current").text()
    assert "self.head = nn.Linear(16, 4)" in text
    assert str(path) not in html and path.name in html
    counts = root.find("dl", cls="summary").find("span", cls="counts").text()
    assert "1 error" in counts and "1 warning" in counts and "1 info" in counts
    # A docs section for each rule that fired, unfolded; the others folded.
    for code in ("T901", "K001", "T902"):
        rule = root.find("article", id=f"rule-{code}")
        assert "open" in rule.find("details").attrs
    graph = root.find("section", id="m0-graph").find("svg", cls="graph")
    marks = {g.find("text", cls="t1").text(): g.classes for g in graph.find_all("g", cls="node")}
    assert "sev-error" in marks["head"] and "sev-warning" in marks["stem"] and "sev-info" in marks["act"]
    head_link = [a for a in graph.find_all("a") if "head" in a.text()][0]
    assert head_link.attrs["href"] == "#" + cards[0].attrs["id"], "a marked node links to its finding"


# --- the 1000-block network -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def staged_report():
    return check_paths([str(ROOT / "bench" / "staged_net.py")], Settings())


@pytest.mark.slow
def test_thousand_block_network(staged_report):
    model = staged_report.models[0]
    assert model.error is None and model.summary["layers"] > 3000
    html = _html(staged_report)
    root = check_page(html)
    _card_checks(root, model.findings)
    _table_checks(root, model.graph)
    graph = root.find("section", id="m0-graph")
    top = graph.find("svg", cls="graph")
    assert len(top.find_all("g", cls="node")) < 10, "the top level shows stages, not 3000 boxes"
    stage = graph.find("div", cls="graph-body", id="m0-g-stages.2")
    boxes = stage.find("svg").find_all("g", cls="node")
    assert len(boxes) <= CHUNK_ABOVE, "a 250-block stage opens as a few chunks of blocks"
    chunk = stage.find("div", cls="graph-body", id="m0-g-stages.2~0")
    assert chunk is not None and len(chunk.find("svg").find_all("g", cls="node")) > 10
    block = graph.find("div", cls="graph-body", id="m0-g-stages.2.100")
    assert [t.text() for t in block.find("svg").find_all("text", cls="t1")] == ["conv", "bn", "relu"]
    # No box is drawn twice: each operation appears once as a leaf across all levels.
    leaves = [g for g in graph.find_all("g", cls="leaf")]
    assert len(leaves) == len(model.graph)
    assert len(html.encode()) < 6_000_000


# --- several models, a failing target, the CLI ----------------------------------------------------

TWO_MODELS = """
    import torch
    from torch import nn

    small = nn.Sequential(nn.Conv2d(3, 8, 7, padding=3), nn.ReLU())
    tiny = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    example_input = torch.randn(1, 3, 16, 16)
"""


def test_several_models_and_a_failure(write_model):
    path = write_model(TWO_MODELS)
    report = check_paths([f"{path}::small", f"{path}::tiny", "missing_model.py"], Settings())
    assert len(report.models) == 3 and report.models[2].error is not None
    root = check_page(_html(report))
    contents = root.find("nav", cls="contents")
    links = [a.attrs["href"] for a in contents.find_all("a")]
    assert links == ["#m0", "#m1", "#m2"]
    sections = root.find_all("section", cls="model")
    assert [s.find("h2").text() for s in sections] == [m.target for m in report.models]
    assert sections[2].find("div", cls="error-box") is not None
    assert "missing_model.py" in sections[2].text()
    # Anchors are per model, so the two graphs do not clash (check_page rejects duplicate ids).
    assert root.find("div", cls="graph-body", id="m0-g-model") is not None
    assert root.find("div", cls="graph-body", id="m1-g-model") is not None


def test_cli_check_format_html_and_report(write_model):
    path = write_model(SEVERITY_MODEL.replace("# T90", "#"), name="net.py")
    runner = CliRunner()
    result = runner.invoke(main, ["check", str(path), "--format", "html", "-o", "out.html", "--select", "K"])
    assert result.exit_code == 1, result.output
    page = Path("out.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "K001" in page
    result = runner.invoke(main, ["report", str(path), "--select", "K"])
    assert result.exit_code == 1
    written = Path("archlint-report.html")
    assert result.stdout.strip() == str(written.resolve())
    assert written.read_text() == page, "`report` is `check --format html`"
    result = runner.invoke(main, ["report", str(path), "--select", "K", "-o", "elsewhere.html", "--exit-zero"])
    assert result.exit_code == 0 and result.stdout.strip().endswith("elsewhere.html")
    result = runner.invoke(main, ["report", str(path), "--select", "K", "--input-shape", "nonsense"])
    assert result.exit_code == 2 and result.stdout == "", "nothing written, no path printed"


@pytest.mark.slow
def test_identical_across_processes(write_model):
    """Two runs of the same model give byte-identical pages, whatever the hash seed."""
    path = write_model(textwrap.dedent(SEVERITY_MODEL), name="net.py")
    runs = []
    for seed in ("1", "2"):
        out = path.parent / f"page{seed}.html"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        command = [sys.executable, "-m", "archlint", "check", path.name, "--format", "html", "-o", str(out),
                   "--exit-zero"]
        runs.append((out, subprocess.Popen(command, cwd=path.parent, env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE)))
    for out, process in runs:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-2000:]
    first, second = (out.read_bytes() for out, _ in runs)
    assert first == second and b"K001" in first


def test_model_linted_in_parts_and_a_finding_without_a_line():
    """A model traced part by part has no whole graph: the page lists its parts and still shows
    every finding, including one that names no source line."""
    from archlint.findings import Finding, Fix, Severity
    from archlint.results import ModelReport

    finding = Finding("K001", "large-kernel", Severity.WARNING, "backbone.stem", "7x7 conv",
                      evidence={"kernel": 7}, fix=Fix("use 3x3 convs", "nn.Conv2d(3, 8, 3)"))
    model = ModelReport(target="det.py::model", tracer="parts", inputs=[[1, 3, 64, 64]], findings=[finding],
                        parts=[{"module": "backbone", "tracer": "torch.fx", "inputs": [[1, 3, 64, 64]],
                                "params": 1000, "macs": 20000, "layers": 12},
                               {"module": "postprocess", "skipped": "data-dependent output size"}])
    root = check_page(_html(Report(rules=ALL_RULES, models=[model])))
    rows = root.find("section", id="m0-parts").find("tbody").find_all("tr")
    assert [r.find("code").text() for r in rows] == ["backbone", "postprocess"]
    assert "skipped: data-dependent output size" in rows[1].text()
    card = finding_cards(root)[0]
    assert card.find("mark") is None and card.find("code", cls="location") is None
    assert card.find("pre", cls="fix-code").text() == "nn.Conv2d(3, 8, 3)"
    assert root.find("section", id="m0-graph") is None


def test_graph_layout_geometry(resnet50_report):
    """Every level of the drawing: boxes inside the canvas, no two boxes overlapping, and every
    module of the model reachable as a level."""
    from archlint.reports.html_graph import GraphBuilder

    model = resnet50_report.models[0]
    top = GraphBuilder(model.graph, model.findings, "m0", {}).build()
    seen, stack = [], [top]
    while stack:
        level = stack.pop()
        seen.append(level.path)
        stack.extend(level.children)
        for n in level.nodes:
            assert 0 <= n.left and n.left + n.w <= level.width and 0 <= n.top and n.top + n.h <= level.height
        for i, a in enumerate(level.nodes):
            for b in level.nodes[i + 1:]:
                apart_x = abs(a.x - b.x) >= (a.w + b.w) / 2
                apart_y = abs(a.y - b.y) >= (a.h + b.h) / 2
                assert apart_x or apart_y, f"{level.path}: {a.title} overlaps {b.title}"
    traced_through = {".".join(l.qualname.split(".")[:i]) for l in model.graph if l.kind == "module"
                      for i in range(1, l.qualname.count(".") + 1)}
    assert traced_through <= set(seen)
