"""Baselines: accepted findings are matched on target, rule and module, never on lines."""
import json

import pytest
from click.testing import CliRunner

from archlint import baseline
from archlint.cli import main
from archlint.errors import ConfigError
from archlint.findings import Finding, Location, Severity
from archlint.results import ModelReport, Report

ONE_BIG = """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(16, 16, 7, padding=3)

        def forward(self, x):
            return self.conv(x)

    example_input = torch.randn(1, 16, 16, 16)
"""


def finding(module: str, line: int, code: str = "K001") -> Finding:
    return Finding(code, "large-kernel", Severity.WARNING, module, f"{module} is big",
                   Location("net.py", line))


def report(*findings: Finding, target: str = "net.py::Net") -> Report:
    return Report(models=[ModelReport(target=target, findings=list(findings))])


def test_matching_ignores_lines_but_not_modules_rules_or_counts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "archlint-baseline.json"
    assert baseline.write(report(finding("conv", 8), finding("head", 12)), path) == 2
    accepted = baseline.Baseline.read(path)

    moved = report(finding("conv", 30), finding("head", 40), finding("head", 41),
                   finding("conv", 30, code="N001"), finding("stem", 3))
    result = accepted.filter(moved)
    assert result.hidden == 2 and result.stale == 0
    kept = [(f.module, f.code) for f in moved.findings]
    assert kept == [("head", "K001"), ("conv", "N001"), ("stem", "K001")]

    # Another model in the same file does not inherit the first one's baseline.
    other = report(finding("conv", 8), target="net.py::Other")
    assert accepted.filter(other).hidden == 0


def test_fixed_findings_make_the_baseline_stale_only_for_linted_targets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "b.json"
    baseline.write(Report(models=[ModelReport("a.py::A", findings=[finding("conv", 1)]),
                                  ModelReport("b.py::B", findings=[finding("conv", 1)])]), path)
    result = baseline.Baseline.read(path).filter(report(target="a.py::A"))
    assert result.hidden == 0 and result.stale == 1  # b.py was not linted: not stale


def test_paths_are_relative_to_the_baseline_file(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    path = tmp_path / "archlint-baseline.json"
    baseline.write(report(finding("conv", 1), target="models/net.py::Net"), path)
    entry = json.loads(path.read_text())["findings"][0]
    assert entry == {"target": "sub/models/net.py::Net", "code": "K001", "module": "conv", "count": 1,
                     "message": "conv is big"}
    monkeypatch.chdir(tmp_path)  # the same finding seen from the root
    assert baseline.Baseline.read(path).filter(report(finding("conv", 5), target="sub/models/net.py::Net")).hidden == 1


def test_unreadable_baselines_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such baseline"):
        baseline.Baseline.read(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{\"findings\": [{\"code\": 1}]}")
    with pytest.raises(ConfigError, match="not an archlint baseline"):
        baseline.Baseline.read(tmp_path / "bad.json")


def test_cli_write_then_check_reports_only_new_findings(write_model, tmp_path):
    net = write_model(ONE_BIG, "net.py")
    runner = CliRunner()
    result = runner.invoke(main, ["check", str(net), "--select", "K001", "--write-baseline"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "archlint-baseline.json").exists()

    result = runner.invoke(main, ["check", str(net), "--select", "K001", "--baseline", "archlint-baseline.json"])
    assert result.exit_code == 0, result.output
    assert "0 findings" in result.output and "1 finding accepted" in result.output

    # Lines move and a new large conv appears: only the new one is reported.
    net.write_text(net.read_text().replace(
        "self.conv = nn.Conv2d(16, 16, 7, padding=3)",
        "# a comment that moves every line\n        self.conv = nn.Conv2d(16, 16, 7, padding=3)\n"
        "        self.head = nn.Conv2d(16, 16, 5, padding=2)").replace(
        "return self.conv(x)", "return self.head(self.conv(x))"))
    result = runner.invoke(main, ["check", str(net), "--select", "K001", "--baseline", "archlint-baseline.json"])
    assert result.exit_code == 1, result.output
    assert "K001 warning head" in result.output and "K001 warning conv" not in result.output
