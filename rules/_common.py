"""Small helpers the rules share: conv arithmetic and how to print numbers and layers."""
from __future__ import annotations

from torch import nn

from archlint.graph import Layer

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
              nn.modules.instancenorm._InstanceNorm)


def human(n: float) -> str:
    """4.09G, 25.6M, 9.4K, 512."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.3g}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return f"{n:g}" if isinstance(n, float) else str(n)


def conv_weights(k: int | tuple[int, ...], c_in: int, c_out: int, groups: int = 1, bias: bool = True) -> int:
    """Parameters of a conv: k*k*(C_in/groups)*C_out + C_out (the seed notes' formula)."""
    kernel = 1
    for size in (k if isinstance(k, tuple) else (k, k)):
        kernel *= size
    return kernel * (c_in // groups) * c_out + (c_out if bias else 0)


def is_standard_conv(layer: Layer) -> bool:
    return isinstance(layer.module, CONV_TYPES) and layer.module.groups == 1


def is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, CONV_TYPES) and module.groups > 1 and module.groups == module.in_channels


def conv_call(module: nn.Module, **changes) -> str:
    """The constructor call that builds `module`, with `changes` applied: paste-able code."""
    kind = type(module).__name__
    k = changes.pop("kernel_size", module.kernel_size)
    fields = {
        "stride": changes.pop("stride", module.stride),
        "padding": changes.pop("padding", module.padding),
        "dilation": changes.pop("dilation", module.dilation),
        "groups": changes.pop("groups", module.groups),
        "bias": changes.pop("bias", module.bias is not None),
    }
    defaults = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "bias": True}
    c_in = changes.pop("in_channels", module.in_channels)
    c_out = changes.pop("out_channels", module.out_channels)
    parts = [str(c_in), str(c_out), _compact(k)]
    for key, value in fields.items():
        value = _compact(value) if not isinstance(value, (bool, str)) else repr(value) if isinstance(value, str) else value
        if str(value) != str(defaults[key]):
            parts.append(f"{key}={value}")
    return f"nn.{kind}({', '.join(parts)})"


def _compact(value) -> str:
    """(3, 3) -> '3'; (1, 3) -> '(1, 3)'."""
    if isinstance(value, tuple) and len(set(value)) == 1:
        return str(value[0])
    return str(value)


def square(value) -> int | None:
    """The side of a square kernel/stride/padding tuple, or None when the sides differ."""
    if isinstance(value, int):
        return value
    if isinstance(value, tuple) and len(set(value)) == 1:
        return value[0]
    return None
