"""MACs of an operation in closed form, for the operations that make up most networks.

MACs are counted as torch.utils.flop_counter counts FLOPs (halved): only matrix products,
convolutions and attention do multiply-accumulate work; elementwise ops, norms, pooling and
reshapes count zero. For the common layers the count follows from shapes alone; anything else
(matmul, einsum, attention, RNNs, layers we do not know) is run under FlopCounterMode, which
counts every aten op it decomposes to. Running under that mode costs the first trace of a
process about a second (it imports torch._dynamo), which a plain CNN never needs to pay.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .ops import ACTIVATION_TYPES, DROPOUT_TYPES, IDENTITY_TYPES, NORM_TYPES, PAD_TYPES, POOL_TYPES, SOFTMAX_TYPES

_ZERO_MAC_MODULES = (
    *NORM_TYPES, *POOL_TYPES, *DROPOUT_TYPES, *IDENTITY_TYPES, *PAD_TYPES, *ACTIVATION_TYPES,
    *SOFTMAX_TYPES, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle, nn.Embedding,
)

_ZERO_MAC_FUNCTIONS = frozenset("""
    add add_ iadd sub sub_ mul mul_ imul truediv div div_ neg pow sqrt rsqrt exp log abs clamp clamp_
    cat stack view view_as reshape permute transpose t flatten unflatten squeeze unsqueeze
    contiguous getitem getattr size dim chunk split unbind expand expand_as repeat narrow select
    relu relu_ relu6 gelu silu silu_ sigmoid sigmoid_ tanh tanh_ hardswish hardsigmoid hardtanh
    leaky_relu elu mish softplus softmax log_softmax dropout dropout_ alpha_dropout
    batch_norm group_norm layer_norm instance_norm
    adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool2d
    avg_pool1d avg_pool2d avg_pool3d max_pool1d max_pool2d max_pool3d
    mean sum amax max min interpolate upsample pad flip roll to float half type_as clone detach
    masked_fill where zeros ones zeros_like ones_like full arange erf sign floor ceil round
    pixel_shuffle pixel_unshuffle embedding normalize
""".split())


_CLOSED_FORM_FUNCTIONS = _ZERO_MAC_FUNCTIONS | {"linear", "conv1d", "conv2d", "conv3d"}
_CLOSED_FORM_MODULES = (nn.modules.conv._ConvNd, nn.Linear, *_ZERO_MAC_MODULES)
_COUNTED_MODULES: dict[type, bool] = {}


def needs_counter(kind: str, target: object) -> bool:
    """Whether an op's MACs need FlopCounterMode (else `closed_form` has them)."""
    if kind == "module":
        # Asked for every layer call: answered once per class (isinstance against the forty
        # classes above walks them all for a class that is none of them).
        cls = type(target)
        counted = _COUNTED_MODULES.get(cls)
        if counted is None:
            counted = _COUNTED_MODULES[cls] = not issubclass(cls, _CLOSED_FORM_MODULES)
        return counted
    if kind in ("function", "method"):
        return target not in _CLOSED_FORM_FUNCTIONS
    return False


def closed_form(kind: str, target: object, inputs: Sequence[torch.Tensor],
                outputs: Sequence[torch.Tensor]) -> int:
    """MACs of an op for which `needs_counter` is False."""
    if not outputs:
        return 0
    out = outputs[0]
    if kind == "module":
        if isinstance(target, nn.modules.conv._ConvTransposeNd):
            # Every input value is scattered through a (C_out/groups) x kernel window.
            return inputs[0].numel() * (target.out_channels // target.groups) * math.prod(target.kernel_size)
        if isinstance(target, nn.modules.conv._ConvNd):
            return out.numel() * (target.in_channels // target.groups) * math.prod(target.kernel_size)
        if isinstance(target, nn.Linear):
            return math.prod(out.shape[:-1]) * target.in_features * target.out_features
        return 0
    if target == "linear" and len(inputs) >= 2:
        weight = inputs[1]
        return math.prod(out.shape[:-1]) * weight.shape[-1] * weight.shape[0]
    if target in ("conv1d", "conv2d", "conv3d") and len(inputs) >= 2:
        weight = inputs[1]  # (C_out, C_in / groups, *kernel)
        return out.numel() * weight.shape[1] * math.prod(weight.shape[2:])
    return 0


def of_products(name: str, args: tuple, kwargs: dict, out: torch.Tensor) -> int | None:
    """MACs of a matrix product or attention whose output the interpreter gave in closed form
    (trace/shapes.py), so FlopCounterMode saw no op run: as it counts them, halved. None for
    any other op."""
    if name in ("matmul", "bmm") and len(args) == 2:
        return out.numel() * args[0].shape[-1]
    if name == "addmm":
        mat1 = args[1] if len(args) > 1 else kwargs["mat1"]
        return out.numel() * mat1.shape[-1]
    if name == "scaled_dot_product_attention":
        q, k, v = (list(args[:3]) + [kwargs.get(n) for n in ("query", "key", "value")[len(args[:3]):]])
        batch = math.prod(q.shape[:-2])
        return batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
    return None
