"""The op table: what kinds of node a trace holds and which family each operation belongs to.

Tracers name a function by its plain name (`operator.add`, `torch.add` and `aten.add.Tensor`
are all "add"); the families below are sets of those names plus the torch.nn layer types that do
the same work, and the predicates are the one place rules, the MAC counter and the tracer ask
"is this a convolution / a norm / a reshape?". Adding an op means adding it here.
"""
from __future__ import annotations

import enum
from typing import Any

from torch import nn


class Kind(enum.StrEnum):
    """What a node of the trace is. A str enum, so records serialize as plain strings."""

    INPUT = "input"
    MODULE = "module"  # a torch.nn layer (or a leaf module) called as a whole
    FUNCTION = "function"  # torch.*, F.*, operator.*, aten ops
    METHOD = "method"  # tensor methods: x.view(...)
    ATTR = "attr"  # a parameter or buffer read by forward
    OUTPUT = "output"


CALLS = (Kind.FUNCTION, Kind.METHOD)


def op_name(target: Any) -> str:
    """A plain name for a call target: operator.add, torch.add and aten.add.Tensor are 'add'."""
    if isinstance(target, str):
        return target
    packet = getattr(target, "overloadpacket", None)
    if packet is not None:
        return packet.__name__
    return getattr(target, "__name__", str(target))


# --- families: layer types and the functions that do the same work ---------------------------

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
ANY_CONV_TYPES = (nn.modules.conv._ConvNd,)  # transposed convs included
TRANSPOSED_CONV_TYPES = (nn.modules.conv._ConvTransposeNd,)
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
              nn.modules.instancenorm._InstanceNorm)
NORM_TYPE_NAMES = ("RMSNorm", "LayerNorm2d")  # third-party norms known by name
BATCH_NORM_TYPES = (nn.modules.batchnorm._BatchNorm,)
INSTANCE_NORM_TYPES = (nn.modules.instancenorm._InstanceNorm,)
DROPOUT_TYPES = (nn.modules.dropout._DropoutNd,)
# Dropout that keeps the mean and variance of SELU activations: not the kind that shifts them.
ALPHA_DROPOUT_TYPES = (nn.AlphaDropout, nn.FeatureAlphaDropout)
WINDOW_POOL_TYPES = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                     nn.modules.pooling._LPPoolNd)
AVG_POOL_TYPES = (nn.modules.pooling._AvgPoolNd,)
POOL_TYPES = WINDOW_POOL_TYPES + (nn.modules.pooling._AdaptiveAvgPoolNd,
                                  nn.modules.pooling._AdaptiveMaxPoolNd)
PAD_TYPES = (nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
             nn.modules.padding._ReplicationPadNd, nn.modules.padding._CircularPadNd)
IDENTITY_TYPES = (nn.Identity, nn.Flatten, nn.Unflatten)
UPSAMPLE_TYPES = (nn.modules.conv._ConvTransposeNd, nn.Upsample, nn.UpsamplingNearest2d,
                  nn.UpsamplingBilinear2d, nn.PixelShuffle)
WEIGHTED_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear)
ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
                    nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
                    nn.Hardtanh, nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.Threshold, nn.GLU,
                    nn.LogSigmoid)
SOFTMAX_TYPES = (nn.Softmax, nn.LogSoftmax, nn.Softmax2d)

CONV_FUNCTIONS = frozenset({"conv1d", "conv2d", "conv3d"})
WINDOW_POOL_FUNCTIONS = frozenset({
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices"})
AVG_POOL_FUNCTIONS = frozenset({"avg_pool1d", "avg_pool2d", "avg_pool3d"})
POOL_FUNCTIONS = WINDOW_POOL_FUNCTIONS | {
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "_adaptive_avg_pool2d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "lp_pool2d"}
NORM_FUNCTIONS = frozenset({
    "layer_norm", "batch_norm", "group_norm", "instance_norm", "native_layer_norm",
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "native_group_norm", "rms_norm"})
DROPOUT_FUNCTIONS = frozenset({"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
                               "feature_alpha_dropout", "native_dropout", "feature_dropout"})
ALPHA_DROPOUT_FUNCTIONS = frozenset({"alpha_dropout", "feature_alpha_dropout"})
PAD_FUNCTIONS = frozenset({"pad", "constant_pad_nd", "reflection_pad1d", "reflection_pad2d",
                           "reflection_pad3d", "replication_pad1d", "replication_pad2d",
                           "replication_pad3d"})
# Operations that move or select values without mixing them: a linear map stays linear through them.
SHAPE_FUNCTIONS = frozenset({"view", "reshape", "_unsafe_view", "flatten", "permute", "transpose",
                             "t", "contiguous", "squeeze", "unsqueeze", "getitem", "clone",
                             "alias", "detach"})
# ...and, for the receptive field, everything else that keeps each value's field as it was.
MOVES_VALUES_FUNCTIONS = SHAPE_FUNCTIONS | PAD_FUNCTIONS | {
    "unflatten", "movedim", "expand", "expand_as", "chunk", "split", "unbind", "narrow", "slice",
    "select", "to", "float", "half", "type", "roll"}
MOVES_VALUES_TYPES = IDENTITY_TYPES + PAD_TYPES
UPSAMPLE_FUNCTIONS = frozenset({
    "interpolate", "upsample", "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d",
    "upsample_bilinear2d", "upsample_bicubic2d", "upsample_trilinear3d", "upsample_linear1d",
    "pixel_shuffle"})
LINEAR_FUNCTIONS = frozenset({"linear", "addmm"})
WEIGHTED_FUNCTIONS = CONV_FUNCTIONS | {"convolution"} | LINEAR_FUNCTIONS
# The views that flatten a feature map into a vector for a fully connected layer.
FLATTEN_FUNCTIONS = frozenset({"flatten", "view", "reshape", "_unsafe_view"})
# Indexing that selects part of a tensor (a view of it, for in-place writes).
INDEX_FUNCTIONS = frozenset({"getitem", "__getitem__", "select", "slice"})
CROP_FUNCTIONS = frozenset({"getitem", "narrow", "slice", "center_crop", "crop"})
SUM_FUNCTIONS = frozenset({"add", "add_", "iadd"})
CONCAT_FUNCTIONS = frozenset({"cat", "concat", "concatenate", "stack"})
MERGE_FUNCTIONS = frozenset({"cat", "concat", "concatenate", "stack", "add", "add_", "iadd",
                             "sub", "mul"})
SOFTMAX_FUNCTIONS = frozenset({"softmax", "log_softmax", "_softmax", "_log_softmax"})
MATMUL_FUNCTIONS = frozenset({"matmul", "bmm", "baddbmm", "mm", "addmm", "einsum"})
ATTENTION_FUNCTIONS = frozenset({"scaled_dot_product_attention", "_scaled_dot_product_efficient_attention",
                                 "_scaled_dot_product_flash_attention"})


# --- predicates over graph layers (anything with .kind, .op and .module) ---------------------

def is_call(layer) -> bool:
    return layer.kind in CALLS


def _either(layer, types: tuple, functions) -> bool:
    if layer.kind == Kind.MODULE:
        return isinstance(layer.module, types)
    return layer.kind in CALLS and layer.op in functions


def is_conv(layer) -> bool:
    """A forward convolution, as a layer or a functional call (transposed convs are not)."""
    if layer.kind == Kind.MODULE:
        return isinstance(layer.module, ANY_CONV_TYPES) and not layer.module.transposed
    return layer.kind in CALLS and layer.op in CONV_FUNCTIONS


def is_norm(layer) -> bool:
    if layer.kind == Kind.MODULE:
        return isinstance(layer.module, NORM_TYPES) or type(layer.module).__name__ in NORM_TYPE_NAMES
    return layer.kind in CALLS and layer.op in NORM_FUNCTIONS


def is_dropout(layer) -> bool:
    return _either(layer, DROPOUT_TYPES, DROPOUT_FUNCTIONS)


def is_alpha_dropout(layer) -> bool:
    return _either(layer, ALPHA_DROPOUT_TYPES, ALPHA_DROPOUT_FUNCTIONS)


def is_batch_norm(layer) -> bool:
    return layer.kind == Kind.MODULE and isinstance(layer.module, BATCH_NORM_TYPES)


def is_softmax(layer) -> bool:
    return _either(layer, SOFTMAX_TYPES, SOFTMAX_FUNCTIONS)


def is_pool(layer) -> bool:
    return _either(layer, POOL_TYPES, POOL_FUNCTIONS)


def is_avg_pool(layer) -> bool:
    return _either(layer, AVG_POOL_TYPES, AVG_POOL_FUNCTIONS)


def is_pad(layer) -> bool:
    return _either(layer, PAD_TYPES, PAD_FUNCTIONS)


def is_upsampling(layer) -> bool:
    return _either(layer, UPSAMPLE_TYPES, UPSAMPLE_FUNCTIONS)


def is_weighted(layer) -> bool:
    """A layer in the VGG sense of depth: a convolution or a fully connected layer."""
    return _either(layer, WEIGHTED_TYPES, WEIGHTED_FUNCTIONS)


def is_identity(layer) -> bool:
    return layer.kind == Kind.MODULE and isinstance(layer.module, IDENTITY_TYPES)


def is_shape_op(layer) -> bool:
    return layer.kind in CALLS and layer.op in SHAPE_FUNCTIONS


def moves_values(layer) -> bool:
    """Moves, selects or pads values without combining them: each keeps the field it had."""
    if layer.module is not None:
        return isinstance(layer.module, MOVES_VALUES_TYPES)
    return layer.op in MOVES_VALUES_FUNCTIONS


def is_merge(layer) -> bool:
    return layer.kind in CALLS and layer.op in MERGE_FUNCTIONS


def is_call_of(layer, functions) -> bool:
    """A function or method call whose plain name is in `functions` (one of the sets above)."""
    return layer.kind in CALLS and layer.op in functions


def keeps_linearity(layer) -> bool:
    """Norms (affine at inference), dropout (identity at inference), identities and reshapes:
    two linear layers joined only by these compose into one linear map."""
    return is_norm(layer) or is_dropout(layer) or is_identity(layer) or is_shape_op(layer)
