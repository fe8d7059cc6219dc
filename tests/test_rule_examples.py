"""Every rule's own bad and good example models: bad must fire the rule, good must not.

The examples live on the rule classes (and `archlint explain` prints them), so a rule cannot
ship without models that prove it fires and stays quiet.
"""
import pytest

from archlint.registry import load_rules

from .helpers import codes, lint_source

RULES = load_rules().rules
CASES = [
    pytest.param(rule, kind, example, id=f"{rule.code}-{kind}-{i}")
    for rule in RULES
    for kind in ("bad", "good")
    for i, example in enumerate(getattr(rule, kind))
]


@pytest.mark.parametrize("rule, kind, example", CASES)
def test_example(rule, kind, example, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = lint_source(example.source, tmp_path, example.settings, select=[rule.code])
    assert not report.errors, [str(m.error) for m in report.errors]
    found = codes(report)
    if kind == "bad":
        assert rule.code in found, f"{rule.code} did not fire on its bad example"
        for f in report.findings:
            assert f.message and f.fix and f.fix.description, f"{rule.code} finding lacks a message or fix"
            assert f.location is not None, f"{rule.code} finding has no source location"
            # Its code was built (and, for a layer's replacement, run on the layer's input)
            # before it is shown; code that did not build or run is never shown.
            assert "did not build" not in f.fix.description, f.fix.description
            if f.fix.code:
                assert f.fix.checked in ("runs", "changes-output", "builds", "compiles", "advice"), \
                    (rule.code, f.fix.checked, f.fix.code)
            if f.fix.checked == "changes-output":
                assert "changes the output from" in f.fix.description
    else:
        assert rule.code not in found, f"{rule.code} fired on its good example: {report.findings}"


def test_every_builtin_rule_module_loads():
    # A rule module that fails to import is reported, not raised: without this the examples
    # above would quietly shrink to the rules that still load.
    assert not load_rules().problems
    assert len({rule.__module__ for rule in RULES}) == len(RULES)  # one rule per module


def test_every_rule_is_documented():
    for rule in RULES:
        doc = rule.docs_markdown()
        for section in ("## What it does", "## Why is this bad?", "## How to fix it", "## Example",
                        "## Use instead", "## References"):
            assert section in doc, (rule.code, section)
        assert rule.code[0].isalpha() and rule.code[1:].isdigit() and len(rule.code) == 4
