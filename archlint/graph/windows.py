"""One model of a sliding window: where a conv or pool reads its input.

Per spatial axis: kernel, stride, dilation and the padding on each side, with `padding="same"`
resolved as torch resolves it and an explicit pad in front of the layer (`nn.ReflectionPad2d`,
`nn.ZeroPad2d`, `F.pad`: CycleGAN generators, TensorFlow-"SAME" ports, DeepLab's fixed padding)
folded in, so the window is measured against the tensor before the pad. From it follow the
output size, `floor((in + pad_before + pad_after - d(k-1) - 1) / s) + 1`, the receptive field,
the input pixels no window reaches, and the kernel taps that only ever read padding.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

from torch import nn

from . import ops
from .ops import Kind

Sizes = tuple[int, ...]


@dataclass(frozen=True)
class Window:
    kernel: Sizes
    stride: Sizes
    pad_before: Sizes
    pad_after: Sizes
    dilation: Sizes
    size_in: Sizes  # before any folded explicit pad
    size_out: Sizes
    transposed: bool = False
    ceil_mode: bool = False
    # Padding that reads real values (reflect, replicate, circular) rather than zeros.
    pad_mode: str = "zeros"
    pad_layer: str | None = None  # the explicit pad folded in, by node name

    @property
    def ndim(self) -> int:
        return len(self.kernel)

    def span(self, axis: int) -> int:
        """The dilated kernel: how many input positions one window stretches over."""
        return self.dilation[axis] * (self.kernel[axis] - 1) + 1

    def expected_out(self, axis: int) -> int:
        """The output size the conv arithmetic gives (forward windows)."""
        room = self.size_in[axis] + self.pad_before[axis] + self.pad_after[axis] - self.span(axis)
        if self.ceil_mode:
            return -(-room // self.stride[axis]) + 1
        return room // self.stride[axis] + 1

    def last_read(self, axis: int) -> int:
        """The last input index the last window reaches (padding indices included)."""
        return (self.size_out[axis] - 1) * self.stride[axis] - self.pad_before[axis] + self.span(axis) - 1

    def unread(self, axis: int) -> int:
        """Input positions at the end of the axis that no window reaches."""
        if self.transposed:
            return 0
        return max(0, self.size_in[axis] - 1 - self.last_read(axis))

    def taps_reading_input(self, axis: int) -> list[int]:
        """The kernel taps that read a real input position for at least one output position;
        the others only ever multiply padding."""
        def reads_input(tap: int) -> bool:
            offset = tap * self.dilation[axis] - self.pad_before[axis]
            return any(0 <= offset + o * self.stride[axis] < self.size_in[axis]
                       for o in range(self.size_out[axis]))

        return [tap for tap in range(self.kernel[axis]) if reads_input(tap)]

    def receptive_field(self, incoming):
        """The field after this window, from the field of the tensor it reads."""
        if self.transposed:
            return incoming.transposed(self.kernel, self.stride, self.pad_before, self.dilation)
        return incoming.through_window(self.kernel, self.stride, self.pad_before, self.dilation)


def per_axis(value: Any, ndim: int) -> Sizes:
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    return (int(value),) * ndim


def string_padding(mode: str, kernel: Sizes, dilation: Sizes) -> tuple[Sizes, Sizes]:
    """padding="same" puts the odd pixel after (as torch does); "valid" pads nothing."""
    if mode != "same":
        zero = (0,) * len(kernel)
        return zero, zero
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    before = tuple(t // 2 for t in total)
    return before, tuple(t - b for t, b in zip(total, before))


def _spatial(shape) -> Sizes | None:
    return tuple(shape[2:]) if shape is not None and len(shape) >= 3 else None


class _Unknown(Exception):
    """An argument computed in forward: recorded as its producer's name, unknown here."""


def _ints(value: Any, ndim: int) -> Sizes:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * ndim
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise _Unknown
    return values


def _padding(value: Any, kernel: Sizes, dilation: Sizes, ndim: int) -> tuple[Sizes, Sizes]:
    if isinstance(value, str):
        return string_padding(value, kernel, dilation)
    pad = _ints(value, ndim)
    return pad, pad


def _module_window(module, ndim: int):
    """(kernel, stride, pad_before, pad_after, dilation, transposed, ceil_mode) of a layer."""
    if isinstance(module, ops.ANY_CONV_TYPES):
        kernel, dilation = _ints(module.kernel_size, ndim), _ints(module.dilation, ndim)
        before, after = _padding(module.padding, kernel, dilation, ndim)
        return kernel, _ints(module.stride, ndim), before, after, dilation, module.transposed, False
    if isinstance(module, ops.WINDOW_POOL_TYPES):
        kernel = _ints(module.kernel_size, ndim)
        stride = _ints(module.stride or module.kernel_size, ndim)
        pad = _ints(getattr(module, "padding", 0), ndim)
        dilation = _ints(getattr(module, "dilation", 1), ndim)
        return kernel, stride, pad, pad, dilation, False, bool(getattr(module, "ceil_mode", False))
    return None


def _function_window(layer, ndim: int):
    def arg(i: int, key: str, default: Any) -> Any:
        if key in layer.kwargs:
            return layer.kwargs[key]
        return layer.args[i] if len(layer.args) > i else default

    if layer.op in ops.CONV_FUNCTIONS | {"convolution"}:
        if len(layer.in_shapes) < 2 or len(layer.in_shapes[1]) != ndim + 2:
            return None
        kernel = tuple(layer.in_shapes[1][2:])
        dilation = _ints(arg(5, "dilation", 1), ndim)
        before, after = _padding(arg(4, "padding", 0), kernel, dilation, ndim)
        transposed = bool(arg(6, "transposed", False)) if layer.op == "convolution" else False
        return kernel, _ints(arg(3, "stride", 1), ndim), before, after, dilation, transposed, False
    if layer.op in ops.WINDOW_POOL_FUNCTIONS:
        kernel = arg(1, "kernel_size", None)
        if kernel is None or isinstance(kernel, str):
            return None
        kernel = _ints(kernel, ndim)
        stride = arg(2, "stride", None) or kernel
        pad = _ints(arg(3, "padding", 0), ndim)
        dilation = _ints(arg(4, "dilation", 1), ndim) if layer.op.startswith("max") else (1,) * ndim
        ceil = bool(arg(5 if layer.op.startswith("max") else 4, "ceil_mode", False))
        return kernel, _ints(stride, ndim), pad, pad, dilation, False, ceil
    return None


def pad_amounts(layer, ndim: int) -> tuple[Sizes, Sizes, str] | None:
    """(before, after, mode) per spatial axis of an explicit pad layer or F.pad call; torch
    lists pads last axis first: (left, right, top, bottom, ...)."""
    if layer.kind == Kind.MODULE:
        module = layer.module
        flat = per_axis(module.padding, 2 * ndim)
        if isinstance(module, (nn.modules.padding._ConstantPadNd,)):
            mode = "zeros" if float(getattr(module, "value", 0.0)) == 0.0 else "constant"
        elif isinstance(module, nn.modules.padding._ReflectionPadNd):
            mode = "reflect"
        elif isinstance(module, nn.modules.padding._ReplicationPadNd):
            mode = "replicate"
        else:
            mode = "circular"
    else:
        flat = layer.args[1] if len(layer.args) > 1 else layer.kwargs.get("pad")
        if not isinstance(flat, (tuple, list)) or not all(isinstance(v, int) for v in flat):
            return None
        mode = layer.kwargs.get("mode", layer.args[2] if len(layer.args) > 2 else "constant")
        value = layer.kwargs.get("value", layer.args[3] if len(layer.args) > 3 else 0)
        if layer.op.startswith("reflection"):
            mode = "reflect"
        elif layer.op.startswith("replication"):
            mode = "replicate"
        elif mode == "constant":
            mode = "zeros" if not value else "constant"
    flat = tuple(flat) + (0,) * max(0, 2 * ndim - len(flat))
    before = tuple(flat[2 * (ndim - 1 - axis)] for axis in range(ndim))
    after = tuple(flat[2 * (ndim - 1 - axis) + 1] for axis in range(ndim))
    return before, after, mode


def window_of(layer, graph=None) -> Window | None:
    """The window of a conv or pool (layer or functional call), or None for anything else or
    when the trace did not record its shapes. With `graph`, an explicit pad that feeds the
    layer is folded in."""
    before, after = _spatial(layer.in_shape), _spatial(layer.out_shape)
    if before is None or after is None or len(before) != len(after):
        return None
    ndim = len(before)
    try:
        if layer.kind == Kind.MODULE:
            found = _module_window(layer.module, ndim)
        elif layer.kind in ops.CALLS:
            found = _function_window(layer, ndim)
        else:
            found = None
    except _Unknown:
        return None
    if found is None:
        return None
    kernel, stride, pad_before, pad_after, dilation, transposed, ceil = found
    if not (len(kernel) == len(stride) == len(pad_before) == len(dilation) == ndim):
        return None
    window = Window(kernel, stride, pad_before, pad_after, dilation, before, after, transposed, ceil)
    if graph is not None and not transposed:
        window = _fold_explicit_pad(window, layer, graph)
    return window


def _pointwise(layer) -> bool:
    """Maps each position on its own (a 1x1/s1 conv, a norm, an activation, dropout): a pad
    in front of it still pads the conv after it (DeepLab's MobileNetV2 pads the input of the
    1x1 expansion, and the depthwise 3x3 with padding=0 reads that padded map)."""
    module = layer.module
    if layer.kind == Kind.MODULE and isinstance(module, nn.modules.conv._ConvNd):
        return (not module.transposed and all(k == 1 for k in module.kernel_size)
                and all(s == 1 for s in module.stride) and not isinstance(module.padding, str)
                and all(p == 0 for p in module.padding))
    return (ops.is_norm(layer) or ops.is_dropout(layer) or ops.is_identity(layer)
            or (layer.kind == Kind.MODULE and isinstance(module, ops.ACTIVATION_TYPES)))


def _fold_explicit_pad(window: Window, layer, graph) -> Window:
    current = layer
    for _ in range(8):
        feeding = [p for p in graph.predecessors(current) if p.out_shape is not None
                   and _spatial(p.out_shape) == window.size_in]
        if len(feeding) != 1:
            return window
        if ops.is_pad(feeding[0]):
            break
        if not _pointwise(feeding[0]):
            return window
        current = feeding[0]
    else:
        return window
    pad = feeding[0]
    amounts = pad_amounts(pad, window.ndim)
    size = _spatial(pad.in_shape)
    if amounts is None or size is None or len(size) != window.ndim:
        return window
    extra_before, extra_after, mode = amounts
    return replace(
        window, size_in=size,
        pad_before=tuple(a + b for a, b in zip(window.pad_before, extra_before)),
        pad_after=tuple(a + b for a, b in zip(window.pad_after, extra_after)),
        pad_mode=mode if any(extra_before + extra_after) else window.pad_mode,
        pad_layer=pad.name)


def resized(window: Window, **changes: Sequence[int]) -> Window:
    """The window with kernel/stride/padding changed, its output size recomputed."""
    changed = replace(window, **{k: tuple(v) for k, v in changes.items()})
    return replace(changed, size_out=tuple(changed.expected_out(a) for a in range(changed.ndim)))
