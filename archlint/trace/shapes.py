"""Closed-form outputs of the common layers and functions, so the interpreter need not run them.

On meta tensors most torch ops run through torch's Python references (torch._refs) and meta
registrations: each call costs 0.1-3 ms, and the first one in a process imports torch._dynamo
and sympy (1-2 s). A plain CNN needs none of that: its output shapes follow from the input
shapes and the layers' settings. `module_output` and `function_output` give that output (an
empty meta tensor of the right shape and dtype, or the input itself for an in-place op, its
version bumped as the real op would) or None, and then the op is run for real. They answer
only when the real op would certainly succeed, so every shape error still comes from torch's
own message: any doubt (a dtype mix, a channel mismatch, a non-contiguous input, a hook, a
subclass that may override forward) means None.
"""
from __future__ import annotations

import operator
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..graph.ops import NORM_TYPES, op_name

_META = torch.device("meta")


def _new(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    # empty_strided, not empty_like: empty_like runs a Python decomposition on meta.
    stride, step = [], 1
    for size in reversed(shape):
        stride.append(step)
        step *= max(size, 1)
    return torch.empty_strided(shape, tuple(reversed(stride)), dtype=dtype, device=_META)


def _in_place(x: torch.Tensor) -> torch.Tensor:
    torch.autograd.graph.increment_version(x)  # the interpreter finds in-place writes this way
    return x


def _plain(x: Any) -> bool:
    """A meta tensor whose layout the closed forms reproduce (contiguous, floating)."""
    return (type(x) is torch.Tensor and x.is_meta and x.is_floating_point() and x.is_contiguous()
            and not x.requires_grad)


def _weight(w: Any) -> bool:
    """A layer's weight or bias (a Parameter is fine: only its shape and dtype are read)."""
    return isinstance(w, torch.Tensor) and w.is_meta and w.is_floating_point() and w.is_contiguous()


def _tuple(value: Any, n: int) -> tuple | None:
    if isinstance(value, int):
        return (value,) * n
    if isinstance(value, (tuple, list)) and len(value) == n and all(isinstance(v, int) for v in value):
        return tuple(value)
    return None


def same_shape(x: torch.Tensor) -> torch.Tensor:
    """An output with the input's shape, dtype and layout (normalization, activations)."""
    if x.is_contiguous():
        return _new(tuple(x.shape), x.dtype)
    return torch.empty_like(x)


# Normalization keeps its input's shape and does no multiply-accumulate work that MACs count,
# yet on meta tensors it runs through Python decompositions (~4 ms a call, half of a 1000-block
# net's trace). Its output shape is known, so it is not run.
_NORM_FUNCTIONS = frozenset({"batch_norm", "group_norm", "layer_norm", "instance_norm"})


def norm_output(kind: str, target: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """A normalization's output (a norm layer called on one tensor, or F.batch_norm,
    F.group_norm, F.layer_norm, F.instance_norm), or None for any other node. `kind` is fx's
    node op; `target` the module for call_module, the function for call_function."""
    if kind == "call_module":
        if isinstance(target, NORM_TYPES) and len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor):
            return same_shape(args[0])
    elif kind == "call_function" and op_name(target) in _NORM_FUNCTIONS and args \
            and isinstance(args[0], torch.Tensor):
        return same_shape(args[0])
    return None


# --- windows: convolution and pooling --------------------------------------------------------

def _window(sizes, kernel, stride, padding, dilation, ceil_mode=False) -> tuple[int, ...] | None:
    out = []
    for size, k, s, p, d in zip(sizes, kernel, stride, padding, dilation):
        span = size + 2 * p - d * (k - 1) - 1
        if span < 0 or s <= 0:
            return None
        n = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (n - 1) * s >= size + p:
            n -= 1  # the last window must start inside the input or its left padding
        out.append(n)
    return tuple(out)


def _conv(x, weight, bias, stride, padding, dilation, groups, n) -> torch.Tensor | None:
    if not (_plain(x) and _weight(weight)) or weight.dtype != x.dtype or x.dim() not in (n + 1, n + 2):
        return None
    if bias is not None and not (_weight(bias) and bias.dtype == x.dtype and bias.shape == (weight.shape[0],)):
        return None
    batched = x.dim() == n + 2
    channels, sizes = x.shape[-n - 1], tuple(x.shape[-n:])
    if not isinstance(groups, int) or groups <= 0 or weight.dim() != n + 2 \
            or channels != weight.shape[1] * groups or weight.shape[0] % groups:
        return None
    kernel, stride, dilation = tuple(weight.shape[2:]), _tuple(stride, n), _tuple(dilation, n)
    if stride is None or dilation is None:
        return None
    if padding == "same":
        if any(s != 1 for s in stride):
            return None
        out = sizes
    else:
        padding = (0,) * n if padding == "valid" else _tuple(padding, n)
        if padding is None:
            return None
        out = _window(sizes, kernel, stride, padding, dilation)
        if out is None or min(out) <= 0:
            return None
    lead = (x.shape[0],) if batched else ()
    return _new(lead + (weight.shape[0],) + out, x.dtype)


def _conv_module(m: nn.modules.conv._ConvNd, x: torch.Tensor) -> torch.Tensor | None:
    if m.padding_mode != "zeros":
        return None  # reflect/replicate padding fails on inputs smaller than the padding
    return _conv(x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups, len(m.kernel_size))


def _pool(x, n, kernel, stride, padding, dilation, ceil_mode) -> torch.Tensor | None:
    if not _plain(x) or x.dim() not in (n + 1, n + 2):
        return None
    kernel = _tuple(kernel, n)
    stride = kernel if stride is None or stride == [] or stride == () else _tuple(stride, n)
    padding, dilation = _tuple(padding, n), _tuple(dilation, n)
    if None in (kernel, stride, padding, dilation) or not isinstance(ceil_mode, bool):
        return None
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        return None  # torch rejects padding over half the kernel
    out = _window(tuple(x.shape[-n:]), kernel, stride, padding, dilation, ceil_mode)
    if out is None or min(out) <= 0:
        return None
    return _new(tuple(x.shape[:-n]) + out, x.dtype)


def _adaptive(x, n, output_size) -> torch.Tensor | None:
    if not _plain(x) or x.dim() not in (n + 1, n + 2):
        return None
    if isinstance(output_size, int):
        output_size = (output_size,) * n
    if not isinstance(output_size, (tuple, list)) or len(output_size) != n:
        return None
    sizes = tuple(x.shape[-n:])
    out = tuple(s if o is None else o for o, s in zip(output_size, sizes))
    if not all(isinstance(o, int) and o > 0 for o in out) or min(sizes) <= 0:
        return None
    return _new(tuple(x.shape[:-n]) + out, x.dtype)


# --- modules -------------------------------------------------------------------------------------

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh,
                nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid, nn.Dropout, nn.Dropout1d,
                nn.Dropout2d, nn.Dropout3d, nn.Softmax, nn.LogSoftmax)
_POOLS = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3, nn.AvgPool1d: 1, nn.AvgPool2d: 2,
          nn.AvgPool3d: 3}
_ADAPTIVE = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}


_BATCH_NORMS = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}


def _norm(module: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    kind = type(module)
    if kind in _BATCH_NORMS:
        if x.dim() not in _BATCH_NORMS[kind] or x.shape[1] != module.num_features:
            return None
        if module.training and x.numel() // x.shape[1] <= 1:
            return None  # torch wants more than one value per channel to train
        return same_shape(x)
    if kind is nn.GroupNorm:
        if x.dim() < 2 or x.shape[1] != module.num_channels or module.num_channels % module.num_groups:
            return None
        return same_shape(x)
    if kind is nn.LayerNorm:
        n = len(module.normalized_shape)
        if x.dim() < n or tuple(x.shape[x.dim() - n:]) != tuple(module.normalized_shape):
            return None
        return same_shape(x)
    return None


def module_output(module: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The output of calling `module` on `args`, or None when it must be run for real."""
    kind = type(module)
    if kwargs or len(args) != 1 or module._forward_hooks or module._forward_pre_hooks:
        return None
    x = args[0]
    if not _plain(x):
        return None
    if kind in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
        return _conv_module(module, x)
    if kind is nn.Linear:
        if x.dim() < 1 or x.shape[-1] != module.in_features or not _weight(module.weight) \
                or module.weight.dtype != x.dtype or (module.bias is not None and module.bias.dtype != x.dtype):
            return None
        return _new(tuple(x.shape[:-1]) + (module.out_features,), x.dtype)
    if kind in _ACTIVATIONS:
        if isinstance(module, nn.modules.dropout._DropoutNd) and not 0 <= module.p <= 1:
            return None
        return _in_place(x) if getattr(module, "inplace", False) else same_shape(x)
    if kind in _POOLS:
        if getattr(module, "return_indices", False) or getattr(module, "divisor_override", None):
            return None
        return _pool(x, _POOLS[kind], module.kernel_size, module.stride, module.padding,
                     getattr(module, "dilation", 1), module.ceil_mode)
    if kind in _ADAPTIVE:
        return _adaptive(x, _ADAPTIVE[kind], module.output_size)
    return _norm(module, x)


def attention_output(module: nn.Module, args: tuple, kwargs: dict) -> tuple | None:
    """nn.MultiheadAttention's (output, weights) for plain 3-D query, key and value without
    masks, or None. Only for reruns that need shapes, not MACs: the layer is not run."""
    if type(module) is not nn.MultiheadAttention or module._forward_hooks or module._forward_pre_hooks:
        return None
    bound = _bind(args, kwargs, ("query", "key", "value", "key_padding_mask", "need_weights",
                                 "attn_mask", "average_attn_weights", "is_causal"),
                  {"key_padding_mask": None, "need_weights": True, "attn_mask": None,
                   "average_attn_weights": True, "is_causal": False})
    if bound is None or any(k not in bound for k in ("query", "key", "value")) \
            or bound["key_padding_mask"] is not None or bound["attn_mask"] is not None:
        return None
    q, k, v = bound["query"], bound["key"], bound["value"]
    if not all(_plain(t) and t.dim() == 3 and t.dtype == q.dtype for t in (q, k, v)):
        return None
    n_at, l_at = (0, 1) if module.batch_first else (1, 0)
    if not (q.shape[n_at] == k.shape[n_at] == v.shape[n_at] and k.shape[l_at] == v.shape[l_at]
            and q.shape[2] == module.embed_dim and k.shape[2] == module.kdim and v.shape[2] == module.vdim):
        return None
    n, length, source = q.shape[n_at], q.shape[l_at], k.shape[l_at]
    weights = None
    if bound["need_weights"]:
        heads = () if bound["average_attn_weights"] else (module.num_heads,)
        weights = _new((n, *heads, length, source), q.dtype)
    return same_shape(q), weights


def run(module: nn.Module, x: torch.Tensor) -> Any:
    """Call `module` on the meta tensor `x`, answering its layers in closed form where they
    have one (a Sequential is walked layer by layer): what checking a fix's code costs."""
    if type(module) is nn.Sequential and not (module._forward_hooks or module._forward_pre_hooks):
        for layer in module:
            x = run(layer, x)
        return x
    if _rejects(module, x):
        raise RuntimeError(f"{type(module).__name__} does not take an input of shape {tuple(x.shape)}")
    out = module_output(module, (x,), {})
    return out if out is not None else module(x)


def _rejects(module: nn.Module, x: torch.Tensor) -> bool:
    """Certainly fails on `x` (a channel count that does not match): torch would raise too, after
    importing its shape machinery to say so."""
    kind = type(module)
    if kind in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
        n = len(module.kernel_size)
        return x.dim() not in (n + 1, n + 2) or x.shape[-n - 1] != module.in_channels
    if kind is nn.Linear:
        return x.dim() < 1 or x.shape[-1] != module.in_features
    if kind in _BATCH_NORMS:
        return x.dim() not in _BATCH_NORMS[kind] or x.shape[1] != module.num_features
    return False


# --- functions and methods -----------------------------------------------------------------------

def _bind(args: tuple, kwargs: dict, names: tuple[str, ...], defaults: dict) -> dict | None:
    if len(args) > len(names) or any(k not in names for k in kwargs):
        return None
    bound = dict(defaults)
    bound.update(zip(names, args))
    bound.update(kwargs)
    return bound if all(n in bound for n in names) else None


# Elementwise functions: name -> position of their `inplace` argument (None: they have none).
_UNARY = {"relu": 1, "relu6": 1, "silu": 1, "hardswish": 1, "hardsigmoid": 1, "mish": 1,
          "leaky_relu": 2, "elu": 2, "selu": 1, "celu": 2, "hardtanh": 3, "gelu": None,
          "sigmoid": None, "tanh": None, "softplus": None, "logsigmoid": None,
          "softmax": None, "log_softmax": None, "dropout": 3}
_UNARY_FUNCTIONS: dict[Callable, str] = {
    F.relu: "relu", F.relu6: "relu6", F.silu: "silu", F.hardswish: "hardswish",
    F.hardsigmoid: "hardsigmoid", F.mish: "mish", F.leaky_relu: "leaky_relu", F.elu: "elu",
    F.selu: "selu", F.celu: "celu", F.hardtanh: "hardtanh", F.gelu: "gelu", F.sigmoid: "sigmoid",
    F.tanh: "tanh", F.softplus: "softplus", F.logsigmoid: "logsigmoid", F.softmax: "softmax",
    F.log_softmax: "log_softmax", F.dropout: "dropout", torch.relu: "relu",
    torch.sigmoid: "sigmoid", torch.tanh: "tanh", torch.softmax: "softmax",
    torch.log_softmax: "log_softmax",
}
_UNARY_METHODS = {"relu", "sigmoid", "tanh", "softmax", "log_softmax"}
_UNARY_INPLACE_METHODS = {"relu_", "sigmoid_", "tanh_"}


def _unary(name: str, args: tuple, kwargs: dict, method: bool) -> torch.Tensor | None:
    x = args[0]
    if name in ("softmax", "log_softmax"):
        if kwargs.get("dtype") is not None or len(args) > 2 + (not method):
            return None
        return same_shape(x)
    if name == "dropout":
        p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
        if not isinstance(p, (int, float)) or not 0 <= p <= 1:
            return None
    position = _UNARY[name]
    inplace = kwargs.get("inplace", False)
    if position is not None and len(args) > position:
        inplace = args[position]
    if not isinstance(inplace, bool):
        return None
    return _in_place(x) if inplace else same_shape(x)


_BINARY = {operator.add: "add", operator.sub: "sub", operator.mul: "mul",
           operator.truediv: "div", torch.add: "add", torch.sub: "sub", torch.mul: "mul",
           torch.div: "div", torch.true_divide: "div", operator.pow: "pow", torch.pow: "pow"}
_BINARY_INPLACE = {operator.iadd: "add", operator.isub: "sub", operator.imul: "mul",
                   operator.itruediv: "div"}
_BINARY_METHODS = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "truediv": "div",
                   "pow": "pow"}
_BINARY_INPLACE_METHODS = {"add_": "add", "sub_": "sub", "mul_": "mul", "div_": "div"}


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and 1 not in (x, y):
            return None
        out.append(y if x == 1 else x)
    return tuple(reversed(out))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _binary(args: tuple, kwargs: dict, in_place: bool) -> torch.Tensor | None:
    if len(args) != 2 or any(k != "alpha" for k in kwargs):
        return None
    a, b = args
    if _number(a) and _plain(b) and not in_place:
        a, b = b, a  # `0.5 * x`, `1 + x`: the tensor's shape and dtype
    if not _plain(a):
        return None
    if _number(b):
        shape, dtype = tuple(a.shape), a.dtype  # a float tensor with a Python number keeps its dtype
    elif _plain(b) and b.dtype == a.dtype:
        shape, dtype = _broadcast(tuple(a.shape), tuple(b.shape)), a.dtype
        if shape is None:
            return None
    else:
        return None
    if in_place:
        return _in_place(a) if shape == tuple(a.shape) else None
    return _new(shape, dtype)


def _reduce(name: str, args: tuple, kwargs: dict) -> torch.Tensor | None:
    bound = _bind(args, kwargs, ("input", "dim", "keepdim"), {"dim": None, "keepdim": False})
    if bound is None or kwargs.get("dtype") is not None:
        return None
    x, dim, keepdim = bound["input"], bound["dim"], bound["keepdim"]
    if not isinstance(keepdim, bool):
        return None
    ndim = x.dim()
    if dim is None:
        dims = set(range(ndim))
    else:
        dims_list = [dim] if isinstance(dim, int) else list(dim) if isinstance(dim, (tuple, list)) else None
        if dims_list is None or not all(isinstance(d, int) and -max(ndim, 1) <= d < max(ndim, 1)
                                        for d in dims_list):
            return None
        dims = {d % max(ndim, 1) for d in dims_list}
        if len(dims) != len(dims_list) or (not dims_list and name == "mean"):
            return None  # a repeated dim is an error; mean over dim=[] is torch-version dependent
        if not dims_list:
            dims = set(range(ndim))
    shape = tuple(1 if i in dims else s for i, s in enumerate(x.shape) if keepdim or i not in dims)
    return _new(shape, x.dtype)


def _cat(args: tuple, kwargs: dict) -> torch.Tensor | None:
    bound = _bind(args, kwargs, ("tensors", "dim"), {"dim": 0})
    if bound is None:
        return None
    tensors, dim = bound["tensors"], bound["dim"]
    if not isinstance(tensors, (list, tuple)) or not tensors or not isinstance(dim, int):
        return None
    first = tensors[0]
    if not all(_plain(t) and t.dtype == first.dtype and t.dim() == first.dim() for t in tensors):
        return None
    ndim = first.dim()
    if ndim == 0 or not -ndim <= dim < ndim:
        return None
    dim %= ndim
    if any(t.shape[:dim] != first.shape[:dim] or t.shape[dim + 1:] != first.shape[dim + 1:]
           for t in tensors):
        return None
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return _new(tuple(shape), first.dtype)


def _linear(args: tuple, kwargs: dict) -> torch.Tensor | None:
    bound = _bind(args, kwargs, ("input", "weight", "bias"), {"bias": None})
    if bound is None:
        return None
    x, w, b = bound["input"], bound["weight"], bound["bias"]
    if not (_plain(x) and _weight(w)) or w.dim() != 2 or x.dim() < 1 or x.shape[-1] != w.shape[1] \
            or w.dtype != x.dtype or (b is not None and not (_weight(b) and b.dtype == x.dtype
                                                             and b.shape == (w.shape[0],))):
        return None
    return _new(tuple(x.shape[:-1]) + (w.shape[0],), x.dtype)


def _conv_function(n: int) -> Callable:
    def run(args: tuple, kwargs: dict) -> torch.Tensor | None:
        bound = _bind(args, kwargs, ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
                      {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1})
        if bound is None:
            return None
        return _conv(bound["input"], bound["weight"], bound["bias"], bound["stride"],
                     bound["padding"], bound["dilation"], bound["groups"], n)
    return run


def _pool_function(n: int, kind: str) -> Callable:
    names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices") \
        if kind == "max" else ("input", "kernel_size", "stride", "padding", "ceil_mode",
                               "count_include_pad", "divisor_override")
    defaults = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False,
                "return_indices": False, "count_include_pad": True, "divisor_override": None}

    def run(args: tuple, kwargs: dict) -> torch.Tensor | None:
        bound = _bind(args, kwargs, names, defaults)
        if bound is None or bound["return_indices"] or bound["divisor_override"] is not None:
            return None
        return _pool(bound["input"], n, bound["kernel_size"], bound["stride"], bound["padding"],
                     bound["dilation"], bound["ceil_mode"])
    return run


def _adaptive_function(n: int) -> Callable:
    def run(args: tuple, kwargs: dict) -> torch.Tensor | None:
        bound = _bind(args, kwargs, ("input", "output_size"), {})
        return None if bound is None else _adaptive(bound["input"], n, bound["output_size"])
    return run


def _float_meta(x: Any) -> bool:
    """A meta tensor of any layout: products and attention read only shapes, so a transposed
    key (`k.transpose(-2, -1)`) is as good as a contiguous one."""
    return type(x) is torch.Tensor and x.is_meta and x.is_floating_point() and not x.requires_grad


def _matmul(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """`a @ b` for a and b of two dims or more (batch dims broadcast); vectors are left to torch."""
    if len(args) != 2 or kwargs:
        return None
    a, b = args
    if not (_float_meta(a) and _float_meta(b)) or a.dtype != b.dtype or a.dim() < 2 or b.dim() < 2 \
            or a.shape[-1] != b.shape[-2]:
        return None
    batch = _broadcast(tuple(a.shape[:-2]), tuple(b.shape[:-2]))
    return None if batch is None else _new(batch + (a.shape[-2], b.shape[-1]), a.dtype)


def _bmm(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if len(args) != 2 or kwargs or not all(_float_meta(t) and t.dim() == 3 for t in args):
        return None
    a, b = args
    if a.dtype != b.dtype or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        return None
    return _new((a.shape[0], a.shape[1], b.shape[2]), a.dtype)


def _addmm(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """`bias + a @ b` for 2-D a and b (Hugging Face's Conv1D layers)."""
    rest = dict(kwargs)
    if not all(_number(rest.pop(k, 1)) for k in ("beta", "alpha")):
        return None
    bound = _bind(args, rest, ("input", "mat1", "mat2"), {})
    if bound is None:
        return None
    bias, a, b = bound["input"], bound["mat1"], bound["mat2"]
    if not all(_float_meta(t) for t in (bias, a, b)) or not bias.dtype == a.dtype == b.dtype \
            or a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0] or bias.dim() > 2:
        return None
    shape = (a.shape[0], b.shape[1])
    return _new(shape, a.dtype) if _broadcast(tuple(bias.shape), shape) == shape else None


_SDPA_NAMES = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def sdpa_inputs(args: tuple, kwargs: dict) -> dict | None:
    """F.scaled_dot_product_attention's arguments by name, or None."""
    return _bind(args, kwargs, _SDPA_NAMES, {"attn_mask": None, "dropout_p": 0.0, "is_causal": False,
                                             "scale": None, "enable_gqa": False})


def _sdpa(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """Attention over (..., heads, L, E) queries and (..., heads_kv, S, E) keys: (..., heads, L, Ev).
    Only where torch would certainly accept it: same batch dims (heads may differ only with
    enable_gqa, as a multiple), no mask together with is_causal, a mask that broadcasts."""
    bound = sdpa_inputs(args, kwargs)
    if bound is None:
        return None
    q, k, v, mask = bound["query"], bound["key"], bound["value"], bound["attn_mask"]
    if not all(_float_meta(t) for t in (q, k, v)) or not q.dtype == k.dtype == v.dtype \
            or not q.dim() == k.dim() == v.dim() or q.dim() < 2:
        return None
    if not isinstance(bound["is_causal"], bool) or not isinstance(bound["enable_gqa"], bool) \
            or not isinstance(bound["dropout_p"], (int, float)) \
            or not (bound["scale"] is None or isinstance(bound["scale"], (int, float))):
        return None
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2] or k.shape[:-1] != v.shape[:-1]:
        return None
    if q.shape[:-3] != k.shape[:-3] or (q.dim() >= 3 and q.shape[-3] != k.shape[-3] and not (
            bound["enable_gqa"] and q.shape[-3] % k.shape[-3] == 0)):
        return None
    if mask is not None:
        if bound["is_causal"] or type(mask) is not torch.Tensor or not mask.is_meta \
                or mask.dtype not in (torch.bool, q.dtype) or mask.dim() > q.dim():
            return None
        scores = tuple(q.shape[:-1]) + (k.shape[-2],)
        if _broadcast(tuple(mask.shape), scores) != scores:
            return None
    return _new(tuple(q.shape[:-1]) + (v.shape[-1],), q.dtype)


_OTHER_FUNCTIONS: dict[Callable, Callable] = {
    operator.matmul: _matmul, torch.matmul: _matmul, torch.bmm: _bmm, torch.addmm: _addmm,
    F.scaled_dot_product_attention: _sdpa,
    torch.mean: lambda a, k: _reduce("mean", a, k), torch.sum: lambda a, k: _reduce("sum", a, k),
    torch.cat: _cat, torch.concat: _cat, F.linear: _linear,
    F.conv1d: _conv_function(1), F.conv2d: _conv_function(2), F.conv3d: _conv_function(3),
    F.max_pool1d: _pool_function(1, "max"), F.max_pool2d: _pool_function(2, "max"),
    F.max_pool3d: _pool_function(3, "max"), F.avg_pool1d: _pool_function(1, "avg"),
    F.avg_pool2d: _pool_function(2, "avg"), F.avg_pool3d: _pool_function(3, "avg"),
    F.adaptive_avg_pool1d: _adaptive_function(1), F.adaptive_avg_pool2d: _adaptive_function(2),
    F.adaptive_avg_pool3d: _adaptive_function(3),
}
_OTHER_METHODS = {"mean": lambda a, k: _reduce("mean", a, k), "sum": lambda a, k: _reduce("sum", a, k),
                  "matmul": _matmul, "bmm": _bmm}
# Whose first argument need not be contiguous (function_output asks _plain of the others).
_ANY_LAYOUT = (operator.matmul, torch.matmul, torch.bmm, torch.addmm, F.scaled_dot_product_attention)


def function_output(target: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The output of an fx call_function node, or None when it must be run for real."""
    try:
        name = _UNARY_FUNCTIONS.get(target)
        if name is not None:
            return _unary(name, args, kwargs, method=False) if args and _plain(args[0]) else None
        if target in _BINARY:
            if _BINARY[target] == "pow" and kwargs:
                return None  # pow takes no alpha
            return _binary(args, kwargs, in_place=False)
        if target in _BINARY_INPLACE:
            return _binary(args, kwargs, in_place=True)
        run = _OTHER_FUNCTIONS.get(target)
        if run is not None:
            if target in _ANY_LAYOUT or target in (torch.cat, torch.concat):
                return run(args, kwargs)
            return run(args, kwargs) if args and _plain(args[0]) else None
    except TypeError:  # an unhashable target (a partial, a bound method of a list)
        return None
    return None


def method_output(name: str, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The output of an fx call_method node (`x.mean(...)`), or None."""
    if name in ("matmul", "bmm"):
        return _OTHER_METHODS[name](args, kwargs)
    if not args or not _plain(args[0]):
        return None
    if name in _UNARY_METHODS:
        return _unary(name, args, kwargs, method=True)
    if name in _UNARY_INPLACE_METHODS and len(args) == 1 and not kwargs:
        return _in_place(args[0])
    if name in _BINARY_METHODS:
        return _binary(args, kwargs, in_place=False)
    if name in _BINARY_INPLACE_METHODS:
        return _binary(args, kwargs, in_place=True)
    run = _OTHER_METHODS.get(name)
    return run(args, kwargs) if run is not None else None
