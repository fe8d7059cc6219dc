"""Load an MMDetection config as a target: build the detector from `cfg.model` through
MMDetection's registry, with no pretrained weights, and take the example input from the
config's test pipeline.

A user of MMDetection writes a config, not a module: `model = dict(type='RetinaNet', ...)`,
usually on top of `_base_` files. `looks_like_config` tells such a file from an ordinary one
without importing it; `load_config_targets` turns it into one `Target`.

Three things make the built detector lintable like any module:
- MMDetection imports mmcv's compiled ops (`mmcv._ext`), which mmcv-lite lacks. Linting runs
  on meta tensors, where compiled kernels could not run anyway, so `prepare` puts a
  stand-in `mmcv._ext` in place that computes the few ops the R-CNN and RetinaNet families
  call (RoIAlign, NMS, deformable convs) with `torchvision.ops`, which have meta kernels and
  are ordinary dispatcher ops to the tracers. Every other op raises, naming itself.
- Nothing may fetch weights (the only network is the package registry): every `init_cfg` and
  `pretrained` is dropped from the config before building, `init_weights` is never called,
  and the download functions of torch.hub and mmengine raise while the detector is built.
- A detector's `forward(inputs, data_samples, mode)` needs image meta data; `tensor_mode`
  gives the built detector a forward of the image alone that runs MMDetection's own
  `mode='tensor'` (backbone, neck and heads, no post-processing) with that meta data made
  from the image's size.
"""
from __future__ import annotations

import ast
import importlib.util
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from . import sources
from .errors import BuildError, LoadError

# --- is this file a config? -------------------------------------------------------------------

def looks_like_config(path: Path) -> bool:
    """A top-level `_base_ = ...`, or `model = dict(type=...)`: how mmengine configs start.
    Read, not imported: importing a config runs nothing useful and may need its base files."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return False
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        names = {t.id for t in node.targets if isinstance(t, ast.Name)}
        if "_base_" in names:
            return True
        value = node.value
        if ("model" in names and isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id == "dict" and any(k.arg == "type" for k in value.keywords)):
            return True
    return False


def mentions_openmmlab(path: Path) -> bool:
    """An ordinary file that builds an MMDetection model imports mmdet or mmcv by name."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "mmdet" in text or "mmcv" in text


# --- mmcv's compiled ops, on torchvision ---------------------------------------------------------

def _nms(bboxes, scores, iou_threshold, offset=0):
    from torchvision.ops import nms

    if offset:  # mmcv's legacy "+1" box convention: widen every box by one pixel
        bboxes = torch.cat([bboxes[:, :2], bboxes[:, 2:] + offset], dim=1)
    return nms(bboxes, scores, float(iou_threshold))


def _roi_align_forward(input, rois, output, argmax_y, argmax_x, aligned_height, aligned_width,
                       spatial_scale, sampling_ratio, pool_mode, aligned):
    from torchvision.ops import roi_align

    if pool_mode != 1:
        raise NotImplementedError("RoIAlign pool_mode='max' has no torchvision kernel; "
                                  "archlint maps pool_mode='avg' only")
    output.copy_(roi_align(input, rois, (aligned_height, aligned_width), spatial_scale,
                           sampling_ratio, aligned))


def _deform_conv_forward(input, weight, offset, output, columns, ones, kW, kH, dW, dH, padW,
                         padH, dilationW, dilationH, group, deformable_group, im2col_step):
    from torchvision.ops import deform_conv2d

    output.copy_(deform_conv2d(input, offset, weight, None, (dH, dW), (padH, padW),
                               (dilationH, dilationW)))


def _modulated_deform_conv_forward(input, weight, bias, ones, offset, mask, output, columns,
                                   kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                   dilation_h, dilation_w, group, deformable_group, with_bias):
    from torchvision.ops import deform_conv2d

    output.copy_(deform_conv2d(input, offset, weight, bias if with_bias else None,
                               (stride_h, stride_w), (pad_h, pad_w), (dilation_h, dilation_w),
                               mask))


_MAPPED = {
    "nms": _nms,
    "roi_align_forward": _roi_align_forward,
    "deform_conv_forward": _deform_conv_forward,
    "modulated_deform_conv_forward": _modulated_deform_conv_forward,
}


def _ext_module() -> types.ModuleType:
    module = types.ModuleType("mmcv._ext", "archlint's stand-in for mmcv's compiled ops "
                              "(mmcv-lite ships none); see archlint/load_mmdet.py")
    module.__dict__.update(_MAPPED)

    # mmcv checks at import that every op it may call exists, so every name must resolve; the
    # ones archlint does not map fail when called, not when imported.
    def missing(name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def op(*args, **kwargs):
            raise NotImplementedError(
                f"mmcv op {name!r} needs mmcv's compiled extension, which mmcv-lite lacks; "
                f"archlint maps only {', '.join(sorted(_MAPPED))} onto torchvision.ops")
        op.__name__ = name
        return op

    module.__getattr__ = missing
    return module


def prepare() -> None:
    """Make MMDetection importable and its detectors runnable on meta tensors: the stand-in
    ops where mmcv is installed without its compiled ones, and meta index tensors."""
    if "mmcv._ext" not in sys.modules:
        try:
            missing = (importlib.util.find_spec("mmcv") is not None
                       and importlib.util.find_spec("mmcv._ext") is None)
        except (ImportError, ValueError):
            missing = False
        if missing:
            sys.modules["mmcv._ext"] = _ext_module()
    meta_indexing()


class _DtypeCheck(type):
    def __instancecheck__(cls, value):
        return isinstance(value, torch.Tensor) and value.dtype in cls.dtypes


class _AnyBoolTensor(metaclass=_DtypeCheck):
    dtypes = (torch.bool,)


class _AnyLongTensor(metaclass=_DtypeCheck):
    dtypes = (torch.long,)


def meta_indexing() -> None:
    """mmengine's InstanceData accepts index tensors by their legacy CPU/CUDA types
    (torch.LongTensor), which meta tensors are not; the eager run that captures each part's
    inputs indexes proposals with meta tensors. Accept any bool or long tensor, as the CPU
    and CUDA ones are accepted."""
    from typing import Union

    import numpy as np

    try:
        import mmengine.structures.instance_data as instance_data
    except ImportError:
        return
    if getattr(instance_data, "__archlint_meta_indexing__", False):
        return
    instance_data.BoolTypeTensor = Union[instance_data.BoolTypeTensor, _AnyBoolTensor]
    instance_data.LongTypeTensor = Union[instance_data.LongTypeTensor, _AnyLongTensor]
    instance_data.IndexType = Union[str, slice, int, list, instance_data.LongTypeTensor,
                                    instance_data.BoolTypeTensor, np.ndarray]
    instance_data.__archlint_meta_indexing__ = True


# --- no weights from anywhere -------------------------------------------------------------------

def strip_pretrained(cfg: Any) -> Any:
    """The model config without `init_cfg` (read only by `init_weights`, which may download a
    checkpoint) and with every `pretrained` unset, at every depth."""
    if isinstance(cfg, dict):
        out = {}
        for key, value in cfg.items():
            if key == "init_cfg":
                continue
            out[key] = None if key == "pretrained" else strip_pretrained(value)
        return out
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(strip_pretrained(v) for v in cfg)
    return cfg


@contextmanager
def no_downloads() -> Iterator[None]:
    """Any attempt to fetch weights while the detector is built fails loudly instead of
    hanging on a network that is not there."""
    import torch.hub

    def refuse(*args, **kwargs):
        url = next((a for a in args if isinstance(a, str)), kwargs.get("url", "?"))
        raise LoadError(f"building the detector tried to download {url}: archlint lints without "
                        "pretrained weights; drop init_cfg/pretrained from the model config")

    patches = [(torch.hub, "load_state_dict_from_url"), (torch.hub, "download_url_to_file")]
    try:
        import mmengine.runner.checkpoint as checkpoint
        patches += [(checkpoint, "load_from_http"), (checkpoint, "load_from_mmcls"),
                    (checkpoint, "load_from_torchvision"), (checkpoint, "load_from_openmmlab")]
    except ImportError:
        pass
    saved = [(owner, name, getattr(owner, name)) for owner, name in patches if hasattr(owner, name)]
    for owner, name, _ in saved:
        setattr(owner, name, refuse)
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


# --- the detector's forward on an image alone ------------------------------------------------------

def _image_samples(inputs: torch.Tensor) -> list:
    """Image meta data for a batch whose images fill the whole tensor (no padding)."""
    from mmdet.structures import DetDataSample

    height, width = (int(d) for d in inputs.shape[-2:])
    meta = {"img_shape": (height, width), "ori_shape": (height, width),
            "pad_shape": (height, width), "batch_input_shape": (height, width),
            "scale_factor": (1.0, 1.0)}
    return [DetDataSample(metainfo=dict(meta)) for _ in range(int(inputs.shape[0]))]


def tensor_mode(model: nn.Module) -> nn.Module:
    """The detector, with a forward that takes the image batch alone and runs MMDetection's
    `mode='tensor'`. Done by a subclass of the same name rather than a wrapper, so layer names
    stay the detector's own ("backbone.layer1.0.conv1")."""
    if "mmdet.models" not in sys.modules:  # no detector was built: never import mmdet for one
        return model
    from mmdet.models.detectors import BaseDetector

    cls = type(model)
    if not isinstance(model, BaseDetector) or getattr(cls, "__archlint_tensor_mode__", False):
        return model

    def forward(self, inputs):
        # Two-stage detectors pick proposals inside mode='tensor' and need each image's size
        # for it; single-stage ones read no meta data.
        samples = _image_samples(inputs) if getattr(self, "with_rpn", False) else None
        return cls.forward(self, inputs, samples, mode="tensor")

    model.__class__ = type(cls.__name__, (cls,), {
        "forward": forward, "__module__": cls.__module__, "__qualname__": cls.__qualname__,
        "__archlint_tensor_mode__": True, "__doc__": cls.__doc__})
    if model.training:
        # MMDetection trains with norm_eval (BatchNorm kept in eval mode) and frozen stages;
        # both take effect in train(), which its runner calls and building does not.
        model.train()
    return model


# --- the example input from the test pipeline ---------------------------------------------------------

def _pipeline(cfg: Any) -> list:
    for getter in (lambda c: c.test_pipeline,
                   lambda c: c.test_dataloader.dataset.pipeline,
                   lambda c: c.val_dataloader.dataset.pipeline):
        try:
            found = getter(cfg)
        except (AttributeError, KeyError):
            continue
        if isinstance(found, (list, tuple)):
            return list(found)
    return []


def pipeline_input(cfg: Any) -> tuple[tuple[int, int, int, int], str] | None:
    """(1, 3, H, W) from the test pipeline's Resize scale (W, H), padded as the model's data
    preprocessor pads, and a sentence saying so; None if the pipeline gives no fixed size."""
    for step in _pipeline(cfg):
        if not isinstance(step, dict) or "Resize" not in str(step.get("type", "")):
            continue
        scale = step.get("scale")
        if isinstance(scale, int):
            scale = (scale, scale)
        if not (isinstance(scale, (list, tuple)) and len(scale) == 2
                and all(isinstance(s, int) for s in scale)):
            continue
        # mmcv's scale is (width, height): with keep_ratio the image fits inside it.
        width, height = scale
        pre = (cfg.model.get("data_preprocessor") or {}) if hasattr(cfg, "model") else {}
        divisor = int(pre.get("pad_size_divisor", 1) or 1)
        padded = tuple(-(-s // divisor) * divisor for s in (height, width))
        note = f", padded to a multiple of {divisor}" if divisor > 1 and padded != (height, width) else ""
        return (1, 3, *padded), f"the config's test pipeline: {step['type']} scale=({width}, {height}){note}"
    return None


# --- the target ------------------------------------------------------------------------------------

def _build(cfg: Any, shown: str):
    from mmengine.registry import init_default_scope

    from . import load

    init_default_scope(cfg.get("default_scope", "mmdet") or "mmdet")
    try:
        import mmdet.utils

        mmdet.utils.register_all_modules(init_default_scope=False)
        from mmdet.registry import MODELS
    except ModuleNotFoundError as exc:
        raise LoadError(f"{shown}: building an MMDetection config needs module {exc.name!r}. "
                        "Install mmdet, mmengine and mmcv-lite (scripts/setup_mmdet.sh).") from exc
    from mmengine.config import ConfigDict

    # ConfigDict again, at every depth: detectors read their configs by attribute (train_cfg.rpn).
    model_cfg = ConfigDict(strip_pretrained(cfg.model))

    def build() -> nn.Module:
        last = None
        for on_meta in (True, False):
            try:
                with no_downloads(), load.building(on_meta):
                    model = MODELS.build(model_cfg)
                break
            except LoadError:
                raise
            except Exception as exc:  # a constructor that computes with its weights
                last = exc
        else:
            raise BuildError(f"{shown}: building {model_cfg.get('type')} from cfg.model raised "
                             f"{type(last).__name__}: {last}") from last
        return tensor_mode(model)

    return build


def load_config_targets(path: Path, names: Sequence[str] = ()):
    """One target, the config's detector, named `config.py::TYPE`; a name `TYPE.sub.module`
    (or `model.sub.module`) lints that submodule."""
    from . import load

    shown = sources.display_path(str(path))
    prepare()
    try:
        from mmengine.config import Config

        cfg = Config.fromfile(str(path))
    except ModuleNotFoundError as exc:
        raise LoadError(f"{shown}: looks like an mmengine config, and reading it needs module "
                        f"{exc.name!r}. Install mmengine (scripts/setup_mmdet.sh).") from exc
    except Exception as exc:
        raise LoadError(f"{shown}: reading the config failed: {type(exc).__name__}: {exc}") from exc
    model_cfg = cfg.get("model")
    if not isinstance(model_cfg, dict) or "type" not in model_cfg:
        raise LoadError(f"{shown}: the config has no `model = dict(type=...)`, so there is no "
                        "detector to build.")
    kind = str(model_cfg["type"]).rsplit(".", 1)[-1]
    module = types.ModuleType(f"archlint_config_{path.stem}")
    found = pipeline_input(cfg)
    if found is not None:
        module.example_input = torch.empty(found[0], device="meta")
        module.__archlint_input_source__ = found[1]
    build = _build(cfg, shown)
    specs = list(names) or [kind]
    targets = []
    for spec in specs:
        head, _, rest = spec.partition(".")
        if head not in (kind, "model"):
            raise LoadError(f"{shown}: the config builds one model, {kind}; name it "
                            f"{shown}::{kind} (or {kind}.backbone for a part), not {spec!r}.")
        targets.append(load.Target(f"{shown}::{spec}", path, build, module, rest or None))
    return targets
