"""Rung 3: trace the parts of a model that cannot be traced whole.

Detection models end in post-processing whose output size depends on the data (score
thresholds, non-maximum suppression): neither torch.fx nor torch.export can follow it. Their
backbone, neck and heads are ordinary networks, and they are where design mistakes live.

So when the whole model fails to trace, the model is run eagerly on meta tensors (eval mode,
as detection models run at inference) with a forward pre-hook on every submodule. Each hook
records the first inputs its module receives; hooks that fire before the failure point still
fire, so every part that ran before it has real inputs. Then, top down, each child of the
model that received inputs is traced and linted on its own; a child that cannot be traced is
split into its own children, down to a few levels. Each part is traced inside an empty shell
that holds it at its own path, so layer names (and findings) stay qualified from the root:
"backbone.body.layer1.0.conv1", not "body.layer1.0.conv1".
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.utils._pytree as pytree
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import ArchlintError, first_line
from . import trace
from .export import is_layer
from .meta import meta_copy
from .records import Trace

MAX_DEPTH = 4  # how far a failing part is split into its children
MAX_ATTEMPTS = 60  # parts tried at most, so a huge untraceable model cannot take forever


@dataclass
class Part:
    path: str
    traced: Trace
    input_shapes: list[tuple[int, ...]]


@dataclass
class Plan:
    parts: list[Part] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    failure: str = ""  # where the eager run stopped, if it did


# --- capturing each part's inputs ---------------------------------------------------------------

def capture_inputs(model: nn.Module, inputs: Sequence[Any]) -> tuple[dict[str, tuple], str]:
    """Run `model` eagerly and return {qualified name: positional inputs of its first call},
    and how the run ended ("" if it finished)."""
    captured: dict[str, tuple] = {}
    handles = []

    def hook_for(name: str, module: nn.Module):
        def hook(_module, args, kwargs):
            if name not in captured:
                captured[name] = _positional(module, args, kwargs)
        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(hook_for(name, module), with_kwargs=True))
    failure = ""
    try:
        with torch.no_grad(), _keep_every_candidate():
            model(*inputs)
    except Exception as exc:  # the point the whole trace could not get past either
        failure = first_line(exc)
    finally:
        for handle in handles:
            handle.remove()
    return captured, failure


class _KeepAllBoxes(TorchDispatchMode):
    """Non-maximum suppression and unique on meta tensors: keep every box, every value (they
    have no meta kernel, since how many survive depends on the values)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        nms = getattr(getattr(torch.ops, "torchvision", None), "nms", None)
        if nms is not None and func is nms.default and args[0].is_meta:
            return torch.arange(args[0].shape[0], device="meta")
        if func is torch.ops.aten._unique2.default and args[0].is_meta:
            return _all_unique(args[0], *args[1:], **(kwargs or {}))
        if func is torch.ops.aten._local_scalar_dense.default and getattr(args[0], "_archlint_truth", None) is not None:
            return args[0]._archlint_truth
        out = func(*args, **(kwargs or {}))
        if func in _ALL_ANY and args[0].is_meta and isinstance(out, torch.Tensor) and out.numel() == 1:
            # `if not valid.all():` (MMDetection's proposal filter): every element counts as
            # non-zero, as for nonzero, so every box is valid and the filter keeps them all.
            out._archlint_truth = True
        return out


_ALL_ANY = {torch.ops.aten.all.default, torch.ops.aten.all.dim, torch.ops.aten.any.default,
            torch.ops.aten.any.dim}


def _all_unique(x, sorted=True, return_inverse=False, return_counts=False):
    """torch.unique on meta, every element taken to be one value: (values, inverse indices,
    counts) with their shapes. Batched NMS groups boxes by class with it and loops over the
    classes; one class keeps every box (NMS keeps all on meta) in one pass, where a value per
    box looped 90,000 times (minutes for Mask R-CNN)."""
    inverse = torch.empty(x.shape if return_inverse else (0,), dtype=torch.long, device="meta")
    counts = torch.empty((1,) if return_counts else (0,), dtype=torch.long, device="meta")
    return torch.empty((min(x.numel(), 1),), dtype=x.dtype, device="meta"), inverse, counts


@contextmanager
def _keep_every_candidate():
    """Let data-dependent filters run on meta tensors by assuming nothing is filtered out:
    `nonzero` finds every element non-zero and NMS keeps every box. The eager run then reaches
    the heads behind them (a two-stage detector's box and keypoint heads) with inputs of the
    largest size they can get."""
    import torch.fx.experimental._config as fx_config

    with fx_config.patch(meta_nonzero_assume_all_nonzero=True), _KeepAllBoxes():
        yield


def _positional(module: nn.Module, args: tuple, kwargs: dict) -> tuple:
    """The call's arguments as positional ones (tracing takes positional inputs only)."""
    if not kwargs:
        return tuple(args)
    try:
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
    except TypeError:
        return tuple(args)
    values = []
    for name, param in inspect.signature(module.forward).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.KEYWORD_ONLY):
            if param.kind == param.VAR_POSITIONAL:
                values.extend(bound.arguments.get(name, ()))
            continue
        if name in bound.arguments:
            values.append(bound.arguments[name])
        elif param.default is not inspect.Parameter.empty:
            values.append(param.default)
    return tuple(values)


# --- tracing one part where it sits ---------------------------------------------------------------

def shell(path: str, part: nn.Module, n_inputs: int) -> nn.Module:
    """An otherwise empty module holding `part` at `path`, whose forward calls it, so traced
    names are the part's names in the whole model."""
    root = nn.Module()
    holder = root
    *parents, leaf = path.split(".")
    for name in parents:
        child = nn.Module()
        holder.add_module(name, child)
        holder = child
    holder.add_module(leaf, part)
    names = [f"input_{i}" for i in range(n_inputs)]
    # fx needs a forward with a fixed signature, not *args.
    namespace: dict[str, Any] = {}
    exec(f"def forward(self, {', '.join(names)}):\n"
         f"    return self.get_submodule({path!r})({', '.join(names)})\n", namespace)
    cls = type("Shell", (nn.Module,), {"forward": namespace["forward"]})
    wrapped = cls()
    for name, child in root.named_children():
        wrapped.add_module(name, child)
    return wrapped


def _tensor_shapes(value: Any) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in pytree.tree_leaves(value) if isinstance(t, torch.Tensor)]


def _has_tensor(value: Any) -> bool:
    return any(isinstance(t, torch.Tensor) for t in pytree.tree_leaves(value))


def plan_parts(model: nn.Module, inputs: Sequence[Any]) -> Plan:
    """Trace what can be traced of `model` (a meta copy), top down."""
    meta = meta_copy(model)
    # Each module's own mode, as the model trains: a BatchNorm kept in eval mode inside a
    # training model (MMDetection's norm_eval) is frozen, and rules must tell it from one that
    # uses batch statistics. The eager run and the traces need eval mode; the rules get these.
    modes = {m: m.training for m in meta.modules()}
    meta.eval()
    captured, failure = capture_inputs(meta, inputs)
    plan = Plan(failure=failure)
    attempts = [0]

    def visit(prefix: str, module: nn.Module, depth: int) -> None:
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            args = captured.get(path)
            if args is None:
                if any(p.startswith(path + ".") for p in captured):
                    visit(path, child, depth)  # a container whose members are called directly
                elif sum(1 for _ in child.parameters()):
                    plan.skipped.append((path, "did not run before the forward pass failed"))
                continue
            if is_layer(child) and not list(child.children()):
                continue  # a bare torch.nn layer called by the failing code itself
            if not _has_tensor(args):
                plan.skipped.append((path, "its inputs hold no tensors"))
                continue
            problem = None
            if attempts[0] < MAX_ATTEMPTS:
                attempts[0] += 1
                try:
                    shown = ", ".join("x".join(map(str, t)) for t in _tensor_shapes(args)[:4])
                    traced = trace(shell(path, child, len(args)), args, f"{shown} (captured for {path})")
                except ArchlintError as exc:
                    problem = exc
                except Exception as exc:  # a part's code may fail in ways the whole did not
                    problem = exc
                else:
                    plan.parts.append(Part(path, traced, _tensor_shapes(args)))
                    continue
            else:
                problem = RuntimeError("too many parts tried")
            has_children = any(True for _ in child.named_children())
            if has_children and depth < MAX_DEPTH:
                visit(path, child, depth + 1)
            else:
                plan.skipped.append((path, f"cannot be traced on its own ({_reason(problem)})"))

    visit("", meta, 1)
    for module, training in modes.items():
        module.training = training
    for part in plan.parts:
        part.traced.model.training = model.training  # the shell stands for the whole model
    return plan


def _reason(exc: BaseException | str) -> str:
    """The cause, without the advice meant for whole models."""
    if isinstance(exc, str):
        return exc
    if isinstance(exc, ArchlintError):
        text = exc.message
        cut = text.find(". ")
        return (text[:cut] if 0 < cut < 300 else text[:300]).rstrip(".")
    return first_line(exc, 300)


def describe(plan: Plan, whole_error: ArchlintError) -> list[str]:
    """Notes for the model report: what was linted, what was skipped, and why."""
    linted = ", ".join(f"{p.path} ({p.traced.tracer})" for p in plan.parts)
    notes = [
        f"The whole model could not be traced: {_reason(whole_error)}. archlint ran it eagerly on "
        "meta tensors in eval mode to capture each part's inputs (data-dependent filters such as "
        "score thresholds and NMS keep every candidate there), and linted the parts that trace "
        f"on their own: {linted}.",
    ]
    if plan.failure:
        notes.append(f"The eager run on meta tensors stopped at {_reason(plan.failure)}.")
    for path, why in plan.skipped:
        notes.append(f"Skipped {path}: {why}.")
    return notes
