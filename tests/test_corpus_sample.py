"""A sample of the model-zoo corpus (bench/corpus.py), run in CI.

About thirty models from every source the corpus covers: torchvision classification, detection,
segmentation, video, optical flow and quantizable builders; timm families traced by torch.fx and
by torch.export; segmentation_models_pytorch; Ultralytics YOLO; the VAE and GAN examples. Each is
built and linted exactly as the corpus does it (same code), at its default input size, and must
lint whole (detection models: in parts, with a note saying what was skipped) with no archlint
error, no error-level finding and no rule crash. The full corpus table is docs/corpus.md.
"""
import importlib.util
import os
import subprocess
import sys

import pytest

from .conftest import ROOT
from .helpers import write_model

_spec = importlib.util.spec_from_file_location("archlint_bench_corpus", ROOT / "bench" / "corpus.py")
corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpus)

TORCHVISION = [
    "resnet18", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "densenet121", "vit_b_16",
    "swin_t", "regnet_y_400mf", "shufflenet_v2_x0_5", "inception_v3", "maxvit_t",
    "fasterrcnn_mobilenet_v3_large_320_fpn",  # detection: linted in parts
    "lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large",  # segmentation
    "r3d_18", "swin3d_t",  # video
    "raft_small",  # optical flow: two inputs
    "quantized_mobilenet_v2",  # quantizable, float
]
TIMM = [
    "resnet50d", "convnext_nano", "vit_small_patch16_224", "efficientnet_b0", "deit_tiny_patch16_224",
    "swin_tiny_patch4_window7_224", "levit_128", "mobilevitv2_050", "regnety_002",
    "tiny_vit_5m_224", "tf_efficientnet_lite0", "convit_tiny",  # plain torch.fx once failed on these
    "vit_small_r26_s32_224",  # hybrid embed: its constructor runs the CNN stem once on zeros
]
# The rung each now takes: timm's own fx leaves (Conv2dSame), fx with meta-backed proxies for
# shape checks, and torch.export for what is left.
RUNG = {"tiny_vit_5m_224": "torch.fx (meta)", "tf_efficientnet_lite0": "torch.fx",
        "convit_tiny": "torch.fx (meta)"}  # off export since issue 14
PARTS = {"fasterrcnn_mobilenet_v3_large_320_fpn"}


def _entries():
    by_name = {e["model"]: e for e in corpus.torchvision_entries()}
    params = [pytest.param(by_name[n], id=f"torchvision-{n}") for n in TORCHVISION]
    params += [pytest.param({"source": "timm", "group": "timm", "model": n, "shapes": None}, id=f"timm-{n}")
               for n in TIMM]
    params += [pytest.param(e, id=f"smp-{e['model']}") for e in corpus.smp_entries()]
    params += [pytest.param(e, id=f"yolo-{e['model']}") for e in corpus.yolo_entries()]
    params += [pytest.param(e, id=f"examples-{e['model']}") for e in corpus.example_entries()]
    return params


@pytest.mark.parametrize("entry", _entries())
def test_corpus_model_lints(entry):
    if entry["source"] == "smp":
        pytest.importorskip("segmentation_models_pytorch")
    if entry["source"] == "yolo":
        pytest.importorskip("ultralytics")
    row = corpus.lint_entry(entry)
    assert row["status"] != "crash", row.get("traceback")
    expected = "parts" if entry["model"] in PARTS else "linted"
    assert row["status"] == expected, row.get("error") or row.get("notes")
    assert row["layers"] > 0
    assert row["errors"] == 0, row["rules"]
    assert not row["rule_crashes"], row["rule_crashes"]
    assert row["weights"] == "meta", "built with real weights: the constructor did not run on meta"
    if entry["model"] in RUNG:
        assert row["tracer"] == RUNG[entry["model"]]
    if expected == "parts":
        notes = " ".join(row["notes"])
        assert "could not be traced" in notes and "Skipped" in notes
        linted = [p["module"] for p in row["parts"] if "skipped" not in p]
        assert "backbone" in linted


def test_timm_uses_the_models_default_input_size():
    row = corpus.lint_entry({"source": "timm", "group": "timm", "model": "vit_small_patch16_384", "shapes": None})
    assert row["status"] == "linted"
    assert row["inputs"] == [[1, 3, 384, 384]] and row["input_source"] == "the model's pretrained_cfg"


# --- the command line, end to end --------------------------------------------------------------

def _archlint(*args, cwd):
    env = dict(os.environ, NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "archlint", "check", "--no-cache", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def _no_cache_flag_supported() -> bool:
    from archlint.cli import check

    return any(p.name == "no_cache" for p in check.params)


def test_cli_on_examples_and_a_detection_model(tmp_path):
    detector = write_model(tmp_path, """
        import torch
        from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

        model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
        example_input = torch.randn(1, 3, 320, 320)
    """, "detector.py")
    args = [str(ROOT / "examples" / "conv_vae.py"), str(ROOT / "examples" / "dcgan_generator.py"), str(detector)]
    if not _no_cache_flag_supported():
        pytest.skip("archlint check has no --no-cache")
    result = _archlint("--fail-on", "error", *args, cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    assert "could not be traced" in result.stdout and "Skipped" in result.stdout
    assert "conv_vae.py::model" in result.stdout and "dcgan_generator.py::model" in result.stdout


def test_cli_untraceable_model_exits_2_with_one_paragraph(tmp_path):
    path = write_model(tmp_path, """
        import torch
        from torch import nn

        class Gate(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3)

            def forward(self, x):
                y = self.conv(x)
                if y.mean() > 0:  # data-dependent: no tracer can follow it
                    return y
                return -y

        model = Gate()
        example_input = torch.randn(1, 3, 16, 16)
    """, "gate.py")
    if not _no_cache_flag_supported():
        pytest.skip("archlint check has no --no-cache")
    result = _archlint(str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    error_lines = [line for line in output.splitlines() if "error" in line]
    assert len(error_lines) == 1 and "gate.py" in error_lines[0]
