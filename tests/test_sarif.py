"""SARIF output: valid against the official 2.1.0 schema, with what GitHub code scanning needs."""
import ast
import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest

from archlint.findings import Finding, Fix, Location, Severity
from archlint.errors import LoadError
from archlint.reports import render
from archlint.results import ModelReport, Report
from archlint.registry import load_rules
from archlint.spans import with_spans
from tests.helpers import lint_source, write_model

ALL_RULES = load_rules().rules

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())

BIG_KERNEL = """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(16, 16, 7, padding=3)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.conv(x))

    example_input = torch.randn(1, 16, 16, 16)
"""


def sarif(report) -> dict:
    data = json.loads(render("sarif", report))
    jsonschema.validate(data, SCHEMA)
    check_github_requirements(data)
    return data


def check_github_requirements(data: dict) -> None:
    """The fields GitHub code scanning reads (docs: 'SARIF support for code scanning')."""
    assert data["version"] == "2.1.0"
    (run,) = data["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "archlint" and driver["version"]
    ids = [rule["id"] for rule in driver["rules"]]
    assert len(ids) == len(set(ids)) and ids
    for rule in driver["rules"]:
        assert rule["name"] and rule["shortDescription"]["text"] and rule["fullDescription"]["text"]
        assert rule["help"]["text"] and rule["help"]["markdown"].startswith(f"# {rule['id']}")
        assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note")
        assert rule["properties"]["tags"]
    for result in run["results"]:
        assert result["ruleId"] in ids
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note")
        assert result["message"]["text"]
        (location,) = result["locations"]
        physical = location["physicalLocation"]
        uri = physical["artifactLocation"]["uri"]
        # Repository-relative: no scheme, no leading slash, no way out of the root.
        assert "://" not in uri and not uri.startswith("/") and ".." not in uri.split("/")
        assert physical["artifactLocation"]["uriBaseId"] == "SRCROOT"
        region = physical["region"]
        assert 1 <= region["startLine"] <= region["endLine"]
        assert result["partialFingerprints"]
    assert run["originalUriBaseIds"]["SRCROOT"]["uri"].endswith("/")


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git work tree with a `models/` folder, and the working folder inside it."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path / "models")
    return tmp_path


def test_real_finding_points_into_the_repository_with_a_fix(repo):
    report = lint_source(BIG_KERNEL, repo / "models", select=["K001"])
    data = sarif(report)
    (result,) = data["runs"][0]["results"]
    assert result["ruleId"] == "K001" and result["level"] == "warning"
    physical = result["locations"][0]["physicalLocation"]
    uri = physical["artifactLocation"]["uri"]
    assert uri.startswith("models/example_") and uri.endswith(".py")  # relative to the git root
    source = (repo / uri).read_text().splitlines()
    assert "nn.Conv2d(16, 16, 7, padding=3)" in source[physical["region"]["startLine"] - 1]
    assert result["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "conv"
    assert result["properties"]["evidence"]["kernel"] == 7

    (fix,) = result["fixes"]
    (change,) = fix["artifactChanges"]
    assert change["artifactLocation"]["uri"] == uri
    (replacement,) = change["replacements"]
    fixed = apply(source, replacement)
    assert "nn.Conv2d(16, 16, 7" not in fixed and "self.conv = nn.Sequential(" in fixed
    ast.parse(fixed)  # the fixed file still parses


def apply(lines: list[str], replacement: dict) -> str:
    """Apply one SARIF replacement (1-based lines and columns) to a file's lines."""
    region = replacement["deletedRegion"]
    text = "\n".join(lines) + "\n"
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    start = offsets[region["startLine"] - 1] + region.get("startColumn", 1) - 1
    end = offsets[region["endLine"] - 1] + region.get("endColumn", 1) - 1
    return text[:start] + replacement["insertedContent"]["text"] + text[end:]


def _finding(severity=Severity.WARNING, **where) -> Finding:
    """A finding as the engine hands it on: with its lines' ends and its fix's span."""
    return with_spans(Finding(
        code="K001", name="large-kernel", severity=severity, module="features.0",
        message="7x7 conv", fix=Fix("use 3x3 convs", "nn.Sequential(\n    nn.Conv2d(3, 8, 3),\n)"),
        **where))


def test_location_outside_the_repository_falls_back_to_a_line_in_it(repo):
    model_file = write_model(repo, "import torchvision\n\nmodel = torchvision.models.alexnet()\n", "models/net.py")
    library = os.path.join(os.path.dirname(jsonschema.__file__), "validators.py")
    outside = Location("jsonschema/validators.py", 10, library)
    in_repo = Location("net.py", 3, str(model_file))
    report = Report(rules=ALL_RULES, models=[ModelReport(target="net.py::model", findings=[
        _finding(location=outside, built_at=outside, called_at=in_repo),
        _finding(Severity.INFO, location=outside, built_at=outside),
    ])])
    results = sarif(report)["runs"][0]["results"]
    first, second = results
    assert first["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "models/net.py"
    assert first["locations"][0]["physicalLocation"]["region"]["startLine"] == 3
    assert "outside this repository" in first["message"]["text"]
    assert "fixes" not in first  # the replacement code is for the library's line, not this one
    # Nothing in the repository: the linted file's first line.
    assert second["locations"][0]["physicalLocation"]["region"] == {"startLine": 1, "endLine": 1}
    assert second["level"] == "note"
    # Same file, rule and module twice: still two distinct alerts.
    assert first["partialFingerprints"] != second["partialFingerprints"]


def test_errors_become_notifications_and_clean_runs_validate(repo):
    write_model(repo, "import nothing_here\n", "models/bad.py")
    error = ModelReport(target="bad.py", error=LoadError("bad.py: importing bad.py failed"))
    data = sarif(Report(rules=ALL_RULES, models=[error], problems=["rule pack x failed to load"]))
    invocation = data["runs"][0]["invocations"][0]
    assert invocation["executionSuccessful"] is False
    levels = [n["level"] for n in invocation["toolExecutionNotifications"]]
    assert levels == ["error", "warning"]
    clean = sarif(Report(rules=ALL_RULES, models=[ModelReport(target="ok.py::model")]))
    assert clean["runs"][0]["results"] == [] and clean["runs"][0]["invocations"][0]["executionSuccessful"]


def test_multiline_call_fix_replaces_the_whole_call(repo):
    model_file = write_model(repo, """
        from torch import nn

        layers = [
            nn.Conv2d(
                3, 8, 7,
                padding=3),
            nn.ReLU(),
        ]
    """, "models/wide.py")
    at = Location("wide.py", 4, str(model_file))
    report = Report(rules=ALL_RULES, models=[ModelReport(target="wide.py::layers", findings=[_finding(location=at, built_at=at)])])
    (result,) = sarif(report)["runs"][0]["results"]
    assert result["locations"][0]["physicalLocation"]["region"] == {"startLine": 4, "endLine": 6}
    (replacement,) = result["fixes"][0]["artifactChanges"][0]["replacements"]
    fixed = apply(model_file.read_text().splitlines(), replacement)
    assert "padding=3" not in fixed and "nn.Sequential(" in fixed and "nn.ReLU()" in fixed
    ast.parse(fixed)


def test_no_fix_where_the_line_builds_a_whole_model(repo):
    """A torchvision layer's finding points at `model = AlexNet()` in the user's file: replacing
    that call with the fix's conv stack would be wrong, so there is no SARIF fix."""
    model_file = write_model(repo, "from torchvision.models import AlexNet\nimport torch.nn as tnn\n"
                             "from torch.nn import Conv2d as C\n\nmodel = AlexNet()\n"
                             "a = tnn.Conv2d(3, 8, 7)\nb = C(3, 8, 7)\n", "models/zoo.py")
    findings = [_finding(location=Location("zoo.py", line, str(model_file))) for line in (5, 6, 7)]
    report = Report(rules=ALL_RULES, models=[ModelReport(target="zoo.py::model", findings=findings)])
    whole, aliased, imported = sarif(report)["runs"][0]["results"]
    assert "fixes" not in whole
    assert "fixes" in aliased and "fixes" in imported
