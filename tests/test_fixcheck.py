"""Fix checks: code is built and run on the layer's input before it is shown."""
from __future__ import annotations

import torch
from torch import nn

import archlint
from archlint.engine import one_per_line
from archlint.findings import Finding, Fix, Location, Severity

from .helpers import lint_source


def _fix_of(report, code):
    (finding,) = [f for f in report.findings if f.code == code]
    return finding.fix


def test_a_drop_in_replacement_is_run_on_the_layers_input():
    model = nn.Sequential(nn.Conv2d(3, 32, 7, stride=2, padding=3), nn.BatchNorm2d(32), nn.ReLU())
    report = archlint.lint(model, input_shape=(1, 3, 64, 64), select=["K001"])
    fix = _fix_of(report, "K001")
    assert fix.checked == "runs" and fix.checked_on == "1x3x64x64"
    built = eval(fix.code, {"nn": nn, "torch": torch})
    assert built(torch.zeros(1, 3, 64, 64)).shape == (1, 32, 32, 32)  # and so it does for real


def test_a_fix_that_changes_the_output_says_from_what_to_what():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=2)  # drops the last row of a 32x32 input

        def forward(self, x):
            return self.conv(x)

    report = archlint.lint(Net(), input_shape=(1, 3, 32, 32), select=["S001"])
    fix = _fix_of(report, "S001")
    assert fix.checked == "changes-output"
    assert "changes the output from 1x8x15x15 to 1x8x16x16" in fix.description


def test_code_that_does_not_fit_is_dropped_and_the_advice_kept():
    from archlint import fixcheck

    layer_model = nn.Sequential(nn.Conv2d(3, 8, 3))
    report = archlint.lint(layer_model, input_shape=(1, 3, 16, 16), select=["K003"])
    graph = report.graph
    finding = Finding("X001", "x", Severity.WARNING, "0", "m",
                      fix=Fix("use a linear layer", "nn.Linear(99, 4)"))
    checked = fixcheck.check(finding, graph)
    assert checked.fix.code is None and "did not run" in checked.fix.description
    broken = fixcheck.check(replace_fix(finding, "nn.Conv2d(3, 8, kernel=3)"), graph)
    assert broken.fix.code is None and "did not build" in broken.fix.description


def replace_fix(finding, code):
    from dataclasses import replace

    return replace(finding, fix=Fix("advice", code))


def test_one_finding_per_rule_and_line_counts_the_others():
    at = Location("net.py", 7)
    findings = [Finding("D002", "d", Severity.WARNING, f"layer{i}.0.downsample", "strided 1x1",
                        location=Location("train.py", 3), origin=at) for i in (2, 3, 4)]
    findings.append(Finding("D002", "d", Severity.WARNING, "other", "strided 1x1", location=Location("net.py", 9)))
    merged = one_per_line(findings)
    assert len(merged) == 2
    first = merged[0]
    assert first.evidence["count"] == 3
    assert first.evidence["modules"] == ["layer2.0.downsample", "layer3.0.downsample", "layer4.0.downsample"]
    assert "also layer3.0.downsample, layer4.0.downsample" in first.message


def test_findings_merged_per_part_merge_again_across_parts():
    # A detector linted in parts: layer2, layer3 and layer4 are traced one by one, and their
    # downsample convs come from one line of _make_layer.
    at = Location("net.py", 7)
    part = lambda names: one_per_line([Finding("D002", "d", Severity.WARNING, n, "strided 1x1", origin=at)
                                       for n in names])
    merged = one_per_line(part(["layer2.0.downsample"]) + part(["layer3.0.downsample", "layer3.1.downsample"])
                          + part(["layer4.0.downsample"]))
    [f] = merged
    assert f.evidence["count"] == 4
    assert f.evidence["modules"] == ["layer2.0.downsample", "layer3.0.downsample", "layer3.1.downsample",
                                     "layer4.0.downsample"]
    assert f.message == ("strided 1x1 (also layer3.0.downsample, layer3.1.downsample, layer4.0.downsample, "
                         "built by the same line)")


def test_a_functional_op_in_a_block_is_one_finding_for_its_calling_line(tmp_path):
    # pytorch-cifar's PNASNet: each stage calls F.max_pool2d on the same forward line.
    report = lint_source("""
        import torch
        from torch import nn
        import torch.nn.functional as F

        class Transition(nn.Module):
            def __init__(self, c):
                super().__init__()
                self.conv = nn.Conv2d(c, c, 1)

            def forward(self, x):
                return F.max_pool2d(self.conv(x), 2)

        model = nn.Sequential(Transition(8), Transition(8), Transition(8))
        example_input = torch.randn(1, 8, 32, 32)
        """, tmp_path, select=["D001"])
    [f] = report.findings
    assert f.evidence["count"] == 3 and f.location.line == 11
    assert "also 1, 2, called by the same line" in f.message
    # Each call keeps its own shapes where its fix was checked.
    assert f.fix.checked == "runs" and f.fix.checked_on == "1x8x32x32"
