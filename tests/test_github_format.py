"""`--format github`: workflow commands the Actions runner turns into annotations."""
import re
import subprocess

import pytest

from archlint.errors import LoadError
from archlint.findings import Finding, Fix, Location, Severity
from archlint.reports import render
from archlint.reports.github import command, escape_data, escape_property
from archlint.results import ModelReport, Report
from archlint.spans import with_spans

from .helpers import write_model

COMMAND_RE = re.compile(r"^::(?P<name>error|warning|notice)(?: (?P<props>[^:]*))?::(?P<message>.*)$")


def parse(line: str) -> tuple[str, dict[str, str], str]:
    """Read a workflow command back the way the runner does (unescaping included)."""
    match = COMMAND_RE.match(line)
    assert match, line
    props = {}
    for pair in (match["props"] or "").split(","):
        if pair:
            key, _, value = pair.partition("=")
            props[key] = unescape(value, prop=True)
    return match["name"], props, unescape(match["message"])


def unescape(text: str, prop: bool = False) -> str:
    if prop:
        text = text.replace("%3A", ":").replace("%2C", ",")
    return text.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def test_escaping_follows_the_runner():
    assert escape_data("50% of\r\nthe layers") == "50%25 of%0D%0Athe layers"
    assert escape_property("a,b:c%") == "a%2Cb%3Ac%25"
    assert command("warning", "x: y, z", file="a,b.py", line=3) == "::warning file=a%2Cb.py,line=3::x: y, z"
    # `%` escaped first: an already-escaped-looking text survives the round trip.
    assert unescape(escape_data("%0A literally")) == "%0A literally"


@pytest.fixture
def repo(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_findings_become_annotations_on_repository_paths(repo):
    model_file = write_model(repo, "from torch import nn\nconv = nn.Conv2d(\n    3, 8, 7)\n", "nets/a,b.py")
    here = Location("nets/a,b.py", 2, str(model_file))
    findings = [with_spans(f) for f in [  # as the engine hands them on
        Finding("K001", "large-kernel", Severity.WARNING, "features.0", "7x7 conv: 100% of\nit",
                here, fix=Fix("use 3x3 convs", "nn.Sequential(\n    nn.Conv2d(3, 8, 3),\n)"), built_at=here),
        Finding("N001", "batchnorm-small-batch", Severity.ERROR, "", "batch of 2", here),
        Finding("X001", "some-info", Severity.INFO, "head", "fyi", None),
    ]]
    report = Report(models=[ModelReport(target="nets/a,b.py::conv", findings=findings),
                            ModelReport(target="nets/broken.py", error=LoadError("cannot import"))])
    lines = render("github", report).splitlines()
    warning, error, notice, failed, summary = lines
    name, props, message = parse(warning)
    assert name == "warning"
    assert props == {"file": "nets/a,b.py", "line": "2", "endLine": "3", "title": "K001 large-kernel"}
    assert message.startswith("features.0: 7x7 conv: 100% of\nit\nfix: use 3x3 convs\nnn.Sequential(")
    assert parse(error)[0] == "error" and parse(error)[2] == "batch of 2"
    # No location at all: the linted file's first line, as a notice.
    name, props, _ = parse(notice)
    assert name == "notice" and props["file"] == "nets/a,b.py" and props["line"] == "1"
    name, props, message = parse(failed)
    assert name == "error" and props["file"] == "nets/broken.py" and message == "cannot import"
    assert summary.startswith("archlint: 3 findings")
    assert all("\n" not in line for line in lines)
