"""Real models from torchvision and timm: archlint must trace them all and say the right things."""
import pytest
import torch

import archlint

torchvision = pytest.importorskip("torchvision")

CLASSIFIERS = sorted(torchvision.models.list_models(module=torchvision.models))


def lint_tv(name, **options):
    from archlint import load

    with load.building(on_meta=True):
        model = torchvision.models.get_model(name, weights=None)
    side = 299 if name == "inception_v3" else 224
    return archlint.lint(model, input_shape=(1, 3, side, side), **options)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_torchvision_classifier_lints(name):
    report = lint_tv(name)
    assert report.error is None
    assert report.tracer in ("torch.fx", "torch.fx (meta)", "torch.export")
    assert report.summary["layers"] > 5 and report.summary["macs"] > 0
    coverage = report.coverage
    assert coverage["params_reached"] == coverage["params_total"] == report.summary["params"], coverage
    assert coverage["modules_reached"] == coverage["modules_total"] and not coverage["unreached"]
    for finding in report.findings:
        assert finding.message and finding.fix is not None


def codes_at(report, *codes):
    return {(f.code, f.module) for f in report.findings if f.code in codes}


def test_resnet50_expectations():
    report = lint_tv("resnet50")
    assert report.summary["params"] == 25_557_032
    assert report.summary["macs"] == pytest.approx(4.09e9, rel=0.01)
    assert codes_at(report, "K001") == {("K001", "conv1")}
    # One finding for the torchvision line that builds every stage's shortcut, naming all three.
    (d002,) = [f for f in report.findings if f.code == "D002"]
    assert d002.evidence["modules"] == [f"layer{i}.0.downsample.0" for i in (2, 3, 4)]
    assert not codes_at(report, "I001", "I002", "I003", "S001")


def test_mobilenet_v2_quiet_on_kernels_and_inplace():
    report = lint_tv("mobilenet_v2")
    assert not codes_at(report, "K001", "I001", "I002", "I003")


def test_textbook_cases_fire():
    vgg = lint_tv("vgg16")
    assert ("P001", "classifier.0") in codes_at(vgg, "P001")
    alexnet = lint_tv("alexnet")
    assert codes_at(alexnet, "K001") == {("K001", "features.0"), ("K001", "features.3")}
    assert ("P001", "classifier.1") in codes_at(alexnet, "P001")


def test_timm_models_lint():
    timm = pytest.importorskip("timm")
    for name in ("resnet50d", "convnext_nano", "vit_small_patch16_224", "efficientnet_b0"):
        model = timm.create_model(name, pretrained=False)
        report = archlint.lint(model)
        assert report.error is None, name
        assert report.inputs == [[1, *model.pretrained_cfg["input_size"]]]
        assert report.input_source == "the model's pretrained_cfg"
        assert report.coverage["params_reached"] == report.coverage["params_total"], name
