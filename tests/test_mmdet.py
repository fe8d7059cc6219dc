"""MMDetection configs as targets (archlint/load_mmdet.py), and frozen BatchNorm in the N rules.

The first tests need no MMDetection. The rest build small detectors from MMDetection's own
configs (ResNet-18 and a small image, through `_base_`, so they take seconds) and skip where
mmdet is not installed; `scripts/setup_mmdet.sh` installs it into a virtualenv of its own.
"""
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import archlint
from archlint import load_mmdet
from archlint.config import settings_from_table
from archlint.driver import check_paths
from archlint.errors import LoadError

from .helpers import codes
from .test_partial import Detector

# --- without MMDetection ---------------------------------------------------------------------


@pytest.mark.parametrize("source, expected", [
    ("_base_ = ['../_base_/models/retinanet_r50_fpn.py']\n", True),
    ("model = dict(type='RetinaNet', backbone=dict(type='ResNet'))\n", True),
    ("from torch import nn\nmodel = nn.Sequential(nn.Conv2d(3, 8, 3))\n", False),
    ("model = dict(depth=50)\n", False),  # a dict, but no registry type
    ("def f(:\n", False),
])
def test_a_file_is_a_config_when_it_starts_like_one(tmp_path, source, expected):
    path = tmp_path / "cfg.py"
    path.write_text(source)
    assert load_mmdet.looks_like_config(path) is expected


def test_pretrained_weights_are_dropped_at_every_depth():
    cfg = {"type": "RetinaNet", "init_cfg": {"type": "Pretrained", "checkpoint": "x"},
           "backbone": {"type": "ResNet", "pretrained": "torchvision://resnet50",
                        "init_cfg": {"type": "Pretrained"}},
           "heads": [{"type": "H", "init_cfg": {"type": "Normal"}}]}
    assert load_mmdet.strip_pretrained(cfg) == {
        "type": "RetinaNet", "backbone": {"type": "ResNet", "pretrained": None},
        "heads": [{"type": "H"}]}


def test_downloads_are_refused_while_a_detector_is_built():
    with load_mmdet.no_downloads():
        with pytest.raises(LoadError, match="tried to download https://example.invalid/w.pth"):
            torch.hub.load_state_dict_from_url("https://example.invalid/w.pth")
    assert torch.hub.load_state_dict_from_url.__name__ == "load_state_dict_from_url"


def test_the_stand_in_ops_map_nms_and_name_the_ones_they_do_not():
    ext = load_mmdet._ext_module()
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
    keep = ext.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5, offset=0)
    assert keep.tolist() == [0, 2]
    assert hasattr(ext, "roi_align_rotated_forward")  # mmcv checks names at import
    with pytest.raises(NotImplementedError, match="'roi_align_rotated_forward'"):
        ext.roi_align_rotated_forward()


def _net(freeze: bool) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 16, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU())
    if freeze:
        model[1].requires_grad_(False)
    return model.eval()


@pytest.mark.parametrize("freeze, fires", [(True, False), (False, True)])
def test_a_batchnorm_that_does_not_train_gets_no_batch_size_warning_in_an_eval_model(freeze, fires):
    report = archlint.lint(_net(freeze), input_shape=(1, 3, 32, 32), batch_size=2, select=["N001"])
    assert (codes(report) == ["N001"]) is fires


class _BNDetector(Detector):
    def __init__(self, norm_eval: bool):
        super().__init__()
        self.backbone.body.insert(1, nn.BatchNorm2d(32))
        self.norm_eval = norm_eval

    def train(self, mode=True):
        super().train(mode)
        if mode and self.norm_eval:  # as MMDetection's ResNet does
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self


@pytest.mark.parametrize("norm_eval, fires", [(True, False), (False, True)])
def test_parts_keep_each_batchnorm_s_own_mode_for_the_rules(norm_eval, fires):
    # The parts are traced in eval mode; the rules must still see which BatchNorm trains.
    model = _BNDetector(norm_eval).train()
    report = archlint.lint(model, input_shape=(1, 3, 64, 64), batch_size=2, select=["N001"])
    assert report.tracer == "parts"
    assert (codes(report) == ["N001"]) is fires
    assert model.training and model.backbone.body[1].training is not norm_eval


def test_a_part_fed_feature_maps_is_not_taken_for_an_image_to_image_model():
    # A detector's neck linted alone (FPN: pool for P6, upsample top-down) maps 256-channel
    # features to features of the same size; that is no image being reconstructed.
    neck = nn.Sequential(nn.Conv2d(256, 256, 3, padding=1), nn.MaxPool2d(2),
                         nn.Upsample(scale_factor=2), nn.Conv2d(256, 256, 3, padding=1))
    [f] = archlint.lint(neck, input_shape=(1, 256, 32, 32), select=["D001"]).findings
    assert f.severity.name == "INFO" and not f.evidence["generative_model"]


# --- with MMDetection --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def configs() -> Path:
    mmdet = pytest.importorskip(
        "mmdet", reason="MMDetection is not installed here; scripts/setup_mmdet.sh installs it "
        "into a virtualenv of its own, where these tests run")
    pytest.importorskip("mmengine", reason="mmengine is not installed (scripts/setup_mmdet.sh)")
    return Path(mmdet.__file__).parent / ".mim" / "configs"


def _small(configs: Path, tmp_path: Path, base: str, extra: str = "") -> Path:
    """An R-18 variant of one of MMDetection's configs, tested at 256x320."""
    path = tmp_path / f"small_{Path(base).stem.replace('-', '_')}.py"
    path.write_text(textwrap.dedent(f"""
        _base_ = {str(configs / base)!r}
        model = dict(
            backbone=dict(depth=18, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
            neck=dict(in_channels=[64, 128, 256, 512]))
        test_pipeline = [
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(320, 250), keep_ratio=True),
            dict(type='PackDetInputs'),
        ]
        load_from = 'https://example.invalid/never-fetched.pth'
    """) + textwrap.dedent(extra))
    return path


def _check(path: Path, **table):
    report = check_paths([str(path)], settings_from_table(table, "test") if table else settings_from_table({}, "test"))
    assert len(report.models) == 1
    model = report.models[0]
    assert model.error is None, model.error
    return model


def test_retinanet_config_lints_whole_from_its_test_pipeline(configs, tmp_path):
    model = _check(_small(configs, tmp_path, "retinanet/retinanet_r50_fpn_1x_coco.py"), **{"batch-size": 2})
    assert model.target.endswith("::RetinaNet")
    assert model.tracer == "torch.fx"
    assert model.inputs == [[1, 3, 256, 320]]  # 250 padded to the preprocessor's 32
    assert "test pipeline: Resize scale=(320, 250), padded to a multiple of 32" in model.input_source
    assert model.coverage["params"] == 1.0 and model.coverage["unreached"] == []
    # norm_eval=True: the backbone's BatchNorms keep their statistics, whatever the batch.
    assert "N001" not in codes(model)
    assert {f.module for f in model.findings} >= {"backbone.conv1"}  # K001, named from the root


def test_batchnorm_that_trains_is_still_reported(configs, tmp_path):
    path = _small(configs, tmp_path, "retinanet/retinanet_r50_fpn_1x_coco.py",
                  "model.update(backbone=dict(depth=18, norm_eval=False, frozen_stages=-1))\n")
    model = _check(path, **{"batch-size": 2, "select": ["N001"]})
    assert codes(model) == ["N001"]


def test_two_stage_config_lints_in_parts_down_to_its_roi_heads(configs, tmp_path):
    model = _check(_small(configs, tmp_path, "mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py"), **{"batch-size": 2})
    assert model.target.endswith("::MaskRCNN")
    assert model.tracer == "parts"
    linted = {p["module"] for p in model.parts if "skipped" not in p}
    assert {"backbone", "neck", "rpn_head", "roi_head.bbox_head", "roi_head.mask_head"} <= linted
    assert model.coverage["params"] == 1.0
    assert "N001" not in codes(model)
    assert all(f.severity.name == "INFO" for f in model.findings if f.module == "neck")


def test_a_file_that_builds_the_detector_through_the_registry(configs, tmp_path):
    path = tmp_path / "detector.py"
    path.write_text(textwrap.dedent(f"""
        from mmengine.config import Config
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules

        register_all_modules()
        cfg = Config.fromfile({str(configs / 'retinanet/retinanet_r50_fpn_1x_coco.py')!r})
        cfg.model.backbone.update(depth=18, init_cfg=None)
        cfg.model.neck.in_channels = [64, 128, 256, 512]
        model = MODELS.build(cfg.model)
    """))
    model = _check(path, **{"input-shape": [[1, 3, 128, 128]]})
    assert model.target.endswith("::model")
    assert model.tracer == "torch.fx" and model.coverage["params"] == 1.0


def test_deformable_convs_run_on_torchvision_s_kernel(configs, tmp_path):
    # DCNv2 (modulated) in stages 2-4 of a ResNet-50 (MMDetection's basic blocks take no DCN):
    # mmcv-lite has no kernel for it; archlint's stand-in maps it onto torchvision's.
    path = _small(configs, tmp_path, "retinanet/retinanet_r50_fpn_1x_coco.py",
                  "model['backbone'].update(depth=50, dcn=dict(type='DCNv2', deform_groups=1, "
                  "fallback_on_stride=False), stage_with_dcn=(False, True, True, True))\n"
                  "model['neck'].update(in_channels=[256, 512, 1024, 2048])\n")
    model = _check(path)
    assert model.tracer in ("torch.fx", "torch.fx (meta)", "torch.export") and model.coverage["params"] == 1.0
