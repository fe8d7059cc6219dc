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
