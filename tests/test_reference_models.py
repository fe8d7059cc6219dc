"""Well-designed models raise exactly the warning/error findings docs/reference-findings.md lists."""
import re
from pathlib import Path

import pytest

import archlint
from archlint import load
from archlint.findings import Severity

DOC = Path(__file__).resolve().parent.parent / "docs" / "reference-findings.md"
MODELS = {
    "torchvision": ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
                    "convnext_tiny", "regnet_y_400mf", "densenet121", "vit_b_16"],
    "timm": ["resnet50d", "convnext_nano"],
}
ROW = re.compile(r"^\| (torchvision|timm) (\S+) \| ([A-Z]\d{3}) \| (\S+) \| .+ \|$")


def documented() -> set[tuple[str, str, str, str]]:
    rows = {m.groups() for m in map(ROW.match, DOC.read_text().splitlines()) if m}
    assert rows, "the table in docs/reference-findings.md could not be read"
    return rows


def build(source: str, name: str):
    with load.building(on_meta=True):
        if source == "torchvision":
            import torchvision
            return torchvision.models.get_model(name, weights=None)
        timm = pytest.importorskip("timm")
        return timm.create_model(name, pretrained=False)


@pytest.mark.parametrize("source, name", [(s, n) for s, names in MODELS.items() for n in names])
def test_reference_model_findings_match_the_doc(source, name):
    report = archlint.lint(build(source, name), input_shape=(1, 3, 224, 224))
    assert report.error is None
    found = {(source, name, f.code, f.module) for f in report.findings if f.severity >= Severity.WARNING}
    expected = {row for row in documented() if row[:2] == (source, name)}
    assert found == expected, (
        f"not in docs/reference-findings.md: {sorted(found - expected)}; "
        f"listed there but not raised: {sorted(expected - found)}")
