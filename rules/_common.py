"""Small helpers the rules share: conv arithmetic and how to print numbers and layers."""
from __future__ import annotations

from torch import nn

from archlint.graph import Layer
from archlint.graph.ops import NORM_TYPES as NORMALIZATION_LAYERS

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM_TYPES = NORMALIZATION_LAYERS


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


# --- graph vocabulary shared by the D, P and A rules ----------------------------------------

DROPOUT_TYPES = (nn.modules.dropout._DropoutNd,)
POOL_TYPES = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
              nn.modules.pooling._LPPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
              nn.modules.pooling._AdaptiveMaxPoolNd)
POOL_FUNCTIONS = {
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "_adaptive_avg_pool2d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "lp_pool2d",
}
NORM_FUNCTIONS = {"layer_norm", "batch_norm", "group_norm", "instance_norm", "native_layer_norm",
                  "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
                  "native_group_norm", "rms_norm"}
DROPOUT_FUNCTIONS = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
                     "feature_alpha_dropout", "native_dropout"}
# Operations that move or select values without mixing them: a linear map stays linear through them.
SHAPE_FUNCTIONS = {"view", "reshape", "_unsafe_view", "flatten", "permute", "transpose", "t",
                   "contiguous", "squeeze", "unsqueeze", "getitem", "clone", "alias", "detach"}
UPSAMPLE_FUNCTIONS = {"interpolate", "upsample", "upsample_nearest1d", "upsample_nearest2d",
                      "upsample_nearest3d", "upsample_bilinear2d", "upsample_bicubic2d",
                      "upsample_trilinear3d", "upsample_linear1d", "pixel_shuffle"}


def is_norm(layer: Layer) -> bool:
    if layer.kind == "module":
        return isinstance(layer.module, NORM_TYPES) or type(layer.module).__name__ in ("RMSNorm", "LayerNorm2d")
    return layer.kind in ("function", "method") and layer.op in NORM_FUNCTIONS


def is_dropout(layer: Layer) -> bool:
    if layer.kind == "module":
        return isinstance(layer.module, DROPOUT_TYPES)
    return layer.kind in ("function", "method") and layer.op in DROPOUT_FUNCTIONS


def is_identity(layer: Layer) -> bool:
    return layer.kind == "module" and isinstance(layer.module, (nn.Identity, nn.Flatten, nn.Unflatten))


def is_shape_op(layer: Layer) -> bool:
    return layer.kind in ("function", "method") and layer.op in SHAPE_FUNCTIONS


def keeps_linearity(layer: Layer) -> bool:
    """Norms (affine at inference), dropout (identity at inference), identities and reshapes:
    two linear layers joined only by these compose into one linear map."""
    return is_norm(layer) or is_dropout(layer) or is_identity(layer) or is_shape_op(layer)


def is_pool(layer: Layer) -> bool:
    if layer.kind == "module":
        return isinstance(layer.module, POOL_TYPES)
    return layer.kind in ("function", "method") and layer.op in POOL_FUNCTIONS


def is_upsampling(layer: Layer) -> bool:
    if layer.kind == "module":
        return isinstance(layer.module, (nn.modules.conv._ConvTransposeNd, nn.Upsample,
                                         nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
                                         nn.PixelShuffle))
    return layer.kind in ("function", "method") and layer.op in UPSAMPLE_FUNCTIONS


def is_weighted(layer: Layer) -> bool:
    """A layer in the VGG sense of depth: a convolution or a fully connected layer."""
    if layer.kind == "module":
        return isinstance(layer.module, (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear))
    return layer.kind in ("function", "method") and layer.op in (
        "conv1d", "conv2d", "conv3d", "convolution", "linear", "addmm")


def spatial(shape) -> tuple[int, ...] | None:
    """The spatial sizes of an (N, C, *spatial) tensor."""
    if shape is None or len(shape) < 3:
        return None
    return tuple(shape[2:])


def reduction(layer: Layer) -> tuple[int, ...] | None:
    """How many times smaller each spatial side gets across `layer` ((2, 2) for a stride-2
    step), or None when it does not shrink the input or its shapes are unknown."""
    before, after = spatial(layer.in_shape), spatial(layer.out_shape)
    if before is None or after is None or len(before) != len(after):
        return None
    if not any(a < b for a, b in zip(after, before)) or any(a > b for a, b in zip(after, before)):
        return None
    return tuple(max(1, round(b / a)) if a else b for a, b in zip(after, before))


def is_global(layer: Layer) -> bool:
    """Pools the whole map to one position per channel (a classifier head's pooling)."""
    after = spatial(layer.out_shape)
    return after is not None and all(a == 1 for a in after)


def data_dependent(graph) -> set[str]:
    """Names of the layers whose output depends on the model's input. A parameter reshaped
    and multiplied in (layer scale, a position embedding) is not a second data branch."""
    found: set[str] = set()
    for layer in graph:
        if layer.kind == "input" or any(p in found for p in layer.inputs):
            found.add(layer.name)
    return found


def tensor_inputs(graph, layer: Layer, dependent: set[str]) -> list[Layer]:
    """The distinct producers of the activation tensors `layer` reads (not sizes, not weights)."""
    seen: dict[str, Layer] = {}
    for p in graph.predecessors(layer):
        if p.name in dependent and p.out_shapes and p.name not in seen:
            seen[p.name] = p
    return list(seen.values())


def shape_text(shape) -> str:
    return "x".join(str(s) for s in shape)


# --- sliding-window geometry shared by the K, S and R rules ---------------------------------

from dataclasses import dataclass  # noqa: E402  (this section is appended; imports above are others')


@dataclass(frozen=True)
class Window:
    """Where a conv or pool slides, per spatial axis: kernel, stride, padding on each side,
    dilation, and the input and output sizes the trace measured."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad_before: tuple[int, ...]
    pad_after: tuple[int, ...]
    dilation: tuple[int, ...]
    size_in: tuple[int, ...]
    size_out: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.kernel)

    def span(self, axis: int) -> int:
        """The dilated kernel: how many input positions one window stretches over."""
        return self.dilation[axis] * (self.kernel[axis] - 1) + 1

    def last_read(self, axis: int) -> int:
        """The last input index the last window reaches (padding indices included)."""
        return (self.size_out[axis] - 1) * self.stride[axis] - self.pad_before[axis] + self.span(axis) - 1

    def taps_reading_input(self, axis: int) -> list[int]:
        """The kernel taps that read a real input position for at least one output position;
        the others only ever multiply zero padding."""
        def reads_input(tap: int) -> bool:
            offset = tap * self.dilation[axis] - self.pad_before[axis]
            return any(0 <= offset + o * self.stride[axis] < self.size_in[axis]
                       for o in range(self.size_out[axis]))

        return [tap for tap in range(self.kernel[axis]) if reads_input(tap)]


def _per_axis(value, ndim: int) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    return (int(value),) * ndim


def _string_padding(mode: str, kernel, dilation) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """padding="same" puts the odd pixel after (as torch does); "valid" pads nothing."""
    if mode != "same":
        zero = (0,) * len(kernel)
        return zero, zero
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    before = tuple(t // 2 for t in total)
    return before, tuple(t - b for t, b in zip(total, before))


CONV_FUNCTIONS = {"conv1d", "conv2d", "conv3d"}
WINDOW_POOL_FUNCTIONS = {"max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d",
                         "avg_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
                         "max_pool3d_with_indices"}


def is_conv(layer: Layer) -> bool:
    """A forward convolution, as a layer or a functional call (transposed convs are not)."""
    if layer.kind == "module":
        return isinstance(layer.module, nn.modules.conv._ConvNd) and not layer.module.transposed
    return layer.kind in ("function", "method") and layer.op in CONV_FUNCTIONS


def sliding_window(layer: Layer) -> Window | None:
    """The window of a conv or pool (module or function), or None for anything else or when
    the trace did not record its shapes."""
    before, after = spatial(layer.in_shape), spatial(layer.out_shape)
    if before is None or after is None or len(before) != len(after):
        return None
    ndim = len(before)
    module = layer.module
    if layer.kind == "module":
        if is_conv(layer):
            kernel, dilation = _per_axis(module.kernel_size, ndim), _per_axis(module.dilation, ndim)
            if isinstance(module.padding, str):
                pad_before, pad_after = _string_padding(module.padding, kernel, dilation)
            else:
                pad_before = pad_after = _per_axis(module.padding, ndim)
            stride = _per_axis(module.stride, ndim)
        elif isinstance(module, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                                 nn.modules.pooling._LPPoolNd)):
            kernel = _per_axis(module.kernel_size, ndim)
            stride = _per_axis(module.stride or module.kernel_size, ndim)
            pad_before = pad_after = _per_axis(getattr(module, "padding", 0), ndim)
            dilation = _per_axis(getattr(module, "dilation", 1), ndim)
        else:
            return None
    elif layer.kind in ("function", "method") and layer.op in CONV_FUNCTIONS | WINDOW_POOL_FUNCTIONS:
        window = _functional_window(layer, ndim)
        if window is None:
            return None
        kernel, stride, pad_before, pad_after, dilation = window
    else:
        return None
    if not (len(kernel) == len(stride) == len(pad_before) == len(dilation) == ndim):
        return None
    return Window(kernel, stride, pad_before, pad_after, dilation, before, after)


def _functional_window(layer: Layer, ndim: int):
    def arg(i, key, default):
        if key in layer.kwargs:
            return layer.kwargs[key]
        return layer.args[i] if len(layer.args) > i else default

    if layer.op in CONV_FUNCTIONS:
        if len(layer.in_shapes) < 2 or len(layer.in_shapes[1]) != ndim + 2:
            return None
        kernel = tuple(layer.in_shapes[1][2:])
        dilation = _per_axis(arg(5, "dilation", 1), ndim)
        padding = arg(4, "padding", 0)
        if isinstance(padding, str):
            pad_before, pad_after = _string_padding(padding, kernel, dilation)
        else:
            pad_before = pad_after = _per_axis(padding, ndim)
        return kernel, _per_axis(arg(3, "stride", 1), ndim), pad_before, pad_after, dilation
    kernel = arg(1, "kernel_size", None)
    if kernel is None or isinstance(kernel, str):
        return None
    stride = arg(2, "stride", None) or kernel
    padding = _per_axis(arg(3, "padding", 0), ndim)
    dilation = arg(4, "dilation", 1) if layer.op.startswith("max") else 1
    return _per_axis(kernel, ndim), _per_axis(stride, ndim), padding, padding, _per_axis(dilation, ndim)


def pool_call(module: nn.Module, **changes) -> str:
    """The constructor call that builds pooling `module`, with `changes` applied."""
    kind = type(module).__name__
    fields = {"kernel_size": module.kernel_size, "stride": module.stride,
              "padding": getattr(module, "padding", 0)}
    if hasattr(module, "dilation"):
        fields["dilation"] = module.dilation
    fields["ceil_mode"] = getattr(module, "ceil_mode", False)
    if hasattr(module, "count_include_pad"):
        fields["count_include_pad"] = module.count_include_pad
    fields.update(changes)
    defaults = {"stride": fields["kernel_size"], "padding": 0, "dilation": 1, "ceil_mode": False,
                "count_include_pad": True}
    parts = [_compact(_tuple_or(fields.pop("kernel_size")))]
    for key, value in fields.items():
        if value is None or (key in defaults and _compact(_tuple_or(value)) == _compact(_tuple_or(defaults[key]))):
            continue
        parts.append(f"{key}={value if isinstance(value, bool) else _compact(_tuple_or(value))}")
    return f"nn.{kind}({', '.join(parts)})"


def _tuple_or(value):
    return tuple(value) if isinstance(value, list) else value
