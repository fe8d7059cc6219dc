"""How each op moves, keeps or mixes the batch: the transfer functions of graph/batch.py.

One function per family of ops, reading the op's arguments (tensors replaced by their
`BatchDim` and shape) and the shapes it produced at the analysis batch. An op this module does
not know gives `unknown`, unless the traced and the rerun shapes show one output dim that holds
exactly the batch (the op is then taken to keep samples apart, which can only hide a mixing,
never invent one).
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

from torch import nn

from .batch import (AT, FREE, GONE, NO_BATCH, SCRAMBLED, UNKNOWN, BatchDim, BatchFlow, Mixing,
                    Step, batch_dim_of, reshaped)
from .ops import (ACTIVATION_TYPES, BATCH_NORM_TYPES, CALLS, DROPOUT_TYPES, IDENTITY_TYPES,
                  INSTANCE_NORM_TYPES, PAD_TYPES, POOL_TYPES, UPSAMPLE_TYPES, Kind)


@dataclass(frozen=True)
class T:
    """A tensor argument: its batch and its shape at the analysis batch."""

    value: BatchDim
    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)


# --- op families, by plain name ----------------------------------------------------------------

ELEMENTWISE = frozenset("""
add sub mul div truediv floordiv pow neg abs rsub radd iadd isub imul itruediv true_divide
floor_divide float_power exp exp2 log log2 log10 log1p expm1 sqrt rsqrt sin cos tan asin acos atan
atan2 sinh cosh tanh asinh acosh atanh sigmoid relu relu6 gelu silu mish elu selu celu leaky_relu
hardtanh hardswish hardsigmoid hardshrink softshrink tanhshrink softplus softsign logsigmoid
threshold prelu rrelu glu_ clamp clip clamp_min clamp_max where masked_fill lerp addcmul addcdiv
maximum minimum fmax fmin sign sgn floor ceil round trunc frac reciprocal square erf erfc erfinv
nan_to_num eq ne lt gt le ge and_ or_ xor invert not_ logical_and logical_or logical_not
logical_xor bitwise_and bitwise_or bitwise_xor bitwise_not mod fmod remainder type_as to float
half double bfloat16 int long bool type contiguous clone detach requires_grad copy dropout
alpha_dropout feature_alpha_dropout dropout1d dropout2d dropout3d native_dropout feature_dropout
bernoulli stochastic_depth drop_path real imag angle conj isnan isinf isfinite hypot heaviside
xlogy logaddexp lift_fresh_copy _to_copy alias _assert_tensor_metadata sigmoid_ cpu cuda
positive deg2rad rad2deg logit sinc i0 exponential_ uniform_ normal_ fill zero copy_ fill_ zero_
""".split())
FACTORIES = frozenset("""
zeros ones empty full arange rand randn randint eye linspace logspace tensor as_tensor zeros_like
ones_like empty_like full_like rand_like randn_like randint_like new_zeros new_ones new_empty
new_full new_tensor scalar_tensor empty_strided normal tril_indices triu_indices
""".split())
RESHAPES = frozenset({"view", "reshape", "_unsafe_view", "flatten", "unflatten", "squeeze",
                      "unsqueeze", "view_as", "reshape_as", "ravel", "atleast_1d", "atleast_2d",
                      "atleast_3d", "squeeze_", "unsqueeze_"})
PERMUTES = frozenset({"permute", "transpose", "swapaxes", "swapdims", "t", "movedim", "moveaxis",
                      "transpose_", "t_", "numpy_T", "adjoint"})
REDUCTIONS = frozenset({"sum", "mean", "nansum", "nanmean", "prod", "amax", "amin", "max", "min",
                        "var", "std", "var_mean", "std_mean", "norm", "vector_norm", "logsumexp",
                        "argmax", "argmin", "all", "any", "median", "nanmedian", "mode",
                        "count_nonzero", "quantile", "nanquantile", "aminmax", "linalg_vector_norm",
                        "frobenius_norm", "sum_to_size"})
ALONG = {  # ops that mix values along one dim and keep the shape: name -> (kind, default dim)
    "softmax": ("softmax", None), "log_softmax": ("softmax", None), "softmin": ("softmax", None),
    "_softmax": ("softmax", None), "_log_softmax": ("softmax", None), "gumbel_softmax": ("softmax", -1),
    "cumsum": ("cumulate", None), "cumprod": ("cumulate", None), "cummax": ("cumulate", None),
    "cummin": ("cumulate", None), "logcumsumexp": ("cumulate", None),
    "sort": ("sort", -1), "argsort": ("sort", -1), "msort": ("sort", 0),
    "normalize": ("normalize", 1), "diff": ("cumulate", -1),
}
RESIZING_ALONG = {"topk": ("sort", -1), "kthvalue": ("sort", -1)}
LOSSES = frozenset({"cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss",
                    "huber_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits",
                    "kl_div", "poisson_nll_loss", "gaussian_nll_loss", "cosine_embedding_loss",
                    "margin_ranking_loss", "hinge_embedding_loss", "soft_margin_loss",
                    "multilabel_soft_margin_loss", "triplet_margin_loss", "ctc_loss"})
SPLITS = frozenset({"chunk", "split", "unbind", "tensor_split", "split_with_sizes", "hsplit",
                    "vsplit", "unsafe_split", "unsafe_chunk"})
CONCATS = frozenset({"cat", "concat", "concatenate", "stack", "hstack", "vstack"})
SELECTS = frozenset({"select", "slice", "narrow", "index_select", "gather", "take_along_dim"})
CONVS = {"conv1d": 1, "conv2d": 2, "conv3d": 3, "conv_transpose1d": 1, "conv_transpose2d": 2,
         "conv_transpose3d": 3}
SPATIAL = frozenset({"max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d",
                     "avg_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
                     "max_pool3d_with_indices", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
                     "adaptive_avg_pool3d", "_adaptive_avg_pool2d", "adaptive_max_pool1d",
                     "adaptive_max_pool2d", "adaptive_max_pool3d", "lp_pool1d", "lp_pool2d",
                     "interpolate", "upsample", "upsample_nearest1d", "upsample_nearest2d",
                     "upsample_nearest3d", "upsample_bilinear2d", "upsample_bicubic2d",
                     "upsample_trilinear3d", "upsample_linear1d", "_upsample_nearest_exact2d",
                     "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "unfold", "fold",
                     "grid_sample", "grid_sampler", "grid_sampler_2d", "roll", "flip", "pad", "constant_pad_nd", "reflection_pad1d",
                     "reflection_pad2d", "reflection_pad3d", "replication_pad1d",
                     "replication_pad2d", "replication_pad3d", "_patch_merging_pad"})
BATCH_NORMS = frozenset({"batch_norm", "native_batch_norm", "_native_batch_norm_legit",
                         "_native_batch_norm_legit_no_training", "_native_batch_norm_legit_functional",
                         "_batch_norm_impl_index", "cudnn_batch_norm"})
NO_TENSOR = frozenset({"size", "dim", "numel", "getattr", "_assert", "eq", "floordiv", "mod"})
ELEMENTWISE_MODULES = ACTIVATION_TYPES + DROPOUT_TYPES + (nn.Identity, nn.Softplus, nn.Hardshrink,
                                                         nn.Softshrink, nn.RReLU)
SOFTMAX_MODULES = (nn.Softmax, nn.LogSoftmax, nn.Softmin)
RESAMPLE_MODULES = tuple(t for t in UPSAMPLE_TYPES if not issubclass(t, nn.modules.conv._ConvNd)) + (
    nn.PixelUnshuffle, nn.ChannelShuffle, nn.Fold, nn.Unfold)


def _base(op: str) -> str:
    """`add_` is `add` that writes its input: the batch moves the same way."""
    return op[:-1] if op.endswith("_") and not op.endswith("__") and op[:-1] else op


# --- the interpreter -------------------------------------------------------------------------------

class Interpreter:
    """Follows the batch through `steps` in order, filling `flow`."""

    def __init__(self, flow: BatchFlow, steps: list[Step], example: int,
                 reference: dict[str, list[tuple[int, ...]]] | None, second: bool = False):
        self.flow, self.steps, self.example, self.reference = flow, steps, example, reference
        self.second = second  # (1, 1, ...) inputs read with the batch in dim 1
        self.batch = flow.batch
        self.sizes: dict[str, Any] = {}  # what ops returned when not a tensor: sizes

    def run(self) -> None:
        for step in self.steps:
            self.flow.shapes[step.name] = step.out_shapes
            if step.value is not None:
                self.sizes[step.name] = step.value
            try:
                values = self.step(step)
            except Exception:  # an argument shaped as this module does not expect: stay quiet
                values = None
            if values is None:
                values = self._unknown(step)
            values = tuple(values)
            if len(values) != len(step.out_shapes):
                values = tuple(_unknown_like(self._operand_values(step)) for _ in step.out_shapes)
            values = self._batch_one_only(step, values)
            self.flow.values[step.name] = values
            if step.writes and len(values) == 1:
                for name in step.writes:  # an in-place op: the written tensor holds the result
                    if name in self.flow.values and len(self.flow.values[name]) == 1:
                        self.flow.values[name] = values

    # --- reading arguments ---------------------------------------------------------------------
    def _resolve(self, step: Step, arg: Any) -> Any:
        if isinstance(arg, str) and arg in step.inputs:
            values, shapes = self.flow.values.get(arg, ()), self.flow.shapes.get(arg, [])
            tensors = tuple(T(v, tuple(s)) for v, s in zip(values, shapes))
            if len(tensors) == 1:
                return tensors[0]
            return tensors if tensors else self.sizes.get(arg)
        if isinstance(arg, (list, tuple)):
            return type(arg)(self._resolve(step, a) for a in arg) if type(arg) in (list, tuple) \
                else [self._resolve(step, a) for a in arg]
        if isinstance(arg, dict):
            return {k: self._resolve(step, v) for k, v in arg.items()}
        if isinstance(arg, slice):
            return slice(self._resolve(step, arg.start), self._resolve(step, arg.stop), self._resolve(step, arg.step))
        return arg

    def _operand_values(self, step: Step) -> list[BatchDim]:
        return [v for name in step.inputs for v in self.flow.values.get(name, ())]

    def _tensors(self, step: Step) -> list[T]:
        """The tensors an op reads, in order: from its arguments, or (a grouped module op of
        torch.export has none) from its inputs."""
        found: list[T] = []

        def walk(value):
            if isinstance(value, T):
                found.append(value)
            elif isinstance(value, (list, tuple)):
                for v in value:
                    walk(v)
            elif isinstance(value, dict):
                for v in value.values():
                    walk(v)

        args = self._resolve(step, step.args)
        kwargs = self._resolve(step, step.kwargs)
        walk(args)
        walk(kwargs)
        if not found:
            for name in step.inputs:
                walk(self._resolve(step, name))
        return found

    # --- bookkeeping -----------------------------------------------------------------------------
    def confirm(self, step: Step, value: BatchDim) -> None:
        for source in value.sources:
            self.flow.confirmed.setdefault(source, step.name)

    def mix(self, step: Step, kind: str, x: T, what: str, implicit: bool = False) -> BatchDim:
        """Record that `step` mixes samples along the dim of `x` that carries them; the value
        its result carries (its batch axis left as the caller says)."""
        v = x.value
        merged = v.state == AT and not (v.inner == 1 and v.outer == 1)
        self.flow.events.setdefault(step.name, Mixing(
            step.name, kind, v.dim if v.dim is not None else -1, what,
            moved=v.moved if v.displaced or v.state == SCRAMBLED else None, merged=merged,
            sources=v.sources, implicit=implicit))
        return v.but(mixed=v.mixed + (step.name,))

    def _unknown(self, step: Step) -> list[BatchDim]:
        """An op the analysis does not know: its output holds the batch where the shapes show
        one dim that grew with it, and the op is taken not to mix."""
        operands = [v for v in self._operand_values(step)]
        live = [v for v in operands if v.state != FREE]
        if not live:
            return [NO_BATCH for _ in step.out_shapes]
        self.flow.unknown_ops.append(step.op)
        if self.reference is None or step.name not in self.reference:
            return [_unknown_like(operands) for _ in step.out_shapes]
        out = []
        for i, shape in enumerate(step.out_shapes):
            before = self.reference[step.name][i] if i < len(self.reference[step.name]) else None
            dims = [] if before is None or len(before) != len(shape) else \
                [d for d, (a, b) in enumerate(zip(before, shape)) if a != b]
            if len(dims) == 1 and before[dims[0]] == self.example and shape[dims[0]] == self.batch \
                    and all(v.state == AT for v in live):
                first = live[0]
                home = first.home
                out.append(BatchDim(AT, dims[0], home=home, mixed=_union(v.mixed for v in live),
                                    moved=None if dims[0] == home else step.name,
                                    sources=frozenset().union(*(v.sources for v in live))))
            else:
                out.append(_unknown_like(operands))
        return out

    def _batch_one_only(self, step: Step, values: tuple[BatchDim, ...]) -> tuple[BatchDim, ...]:
        """Where the output's rank differs between the traced batch and the analysis batch
        (`x.squeeze(0)` of a batch of one), the model treats a batch of one apart: unknown."""
        if self.reference is None or step.name not in self.reference:
            return values
        before = self.reference[step.name]
        if len(before) == len(step.out_shapes) and all(len(a) == len(b) for a, b in zip(before, step.out_shapes)):
            return values
        return tuple(v if v.state == FREE else _unknown_like([v]) for v in values)

    # --- dispatch ---------------------------------------------------------------------------------
    def step(self, step: Step) -> list[BatchDim] | None:
        if step.kind == Kind.INPUT:
            return [self._input(step, s) for s in step.out_shapes]
        if step.kind == Kind.ATTR:
            return [NO_BATCH for _ in step.out_shapes]
        if step.kind == Kind.OUTPUT:
            return [t.value for t in self._tensors(step)]
        if step.kind == Kind.MODULE:
            return self._module(step)
        if step.kind in CALLS:
            return self._call(step)
        return None

    def _input(self, step: Step, shape: tuple[int, ...]) -> BatchDim:
        traced = shape
        if self.reference is not None:  # which dim is the batch is read off the traced input
            before = self.reference.get(step.name, [])
            if not before or len(before[0]) != len(shape):
                return NO_BATCH
            traced = before[0]
        dim = batch_dim_of(traced, self.second)
        if dim is None or shape[dim] != self.batch or traced[dim] != self.example:
            return NO_BATCH
        return BatchDim(AT, dim, home=dim, sources=frozenset({step.name}))

    def _call(self, step: Step) -> list[BatchDim] | None:
        op = step.op
        if not step.out_shapes:
            return []  # sizes, shapes, asserts: no tensor
        base = _base(op)
        args = self._resolve(step, step.args)
        kwargs = self._resolve(step, step.kwargs)
        out = step.out_shapes
        if base in FACTORIES:
            return [NO_BATCH for _ in out]
        tensors = self._tensors(step)
        if tensors and all(t.value.state == FREE for t in tensors) and base not in ("getitem",):
            return [NO_BATCH for _ in out]
        if base == "getitem":
            return self._getitem(step, args)
        if base == "getattr":
            return self._getattr(step, args)
        if base in ELEMENTWISE:
            return [combine(tensors, shape) for shape in out]
        if base in RESHAPES or base in ("expand", "expand_as", "broadcast_to"):
            x = tensors[0]
            if base in ("expand", "expand_as", "broadcast_to"):
                return [combine([x], out[0])]
            return [reshaped(x.value, x.shape, out[0], self.batch, step.name)]
        if base in PERMUTES:
            return [self._permute(step, base, args, kwargs, tensors[0])]
        if base in ("repeat", "tile"):
            return [self._repeat(step, args, tensors[0])]
        if base in REDUCTIONS:
            return self._reduce(step, base, args, kwargs, tensors)
        if base in ALONG or base in RESIZING_ALONG:
            return self._along(step, base, args, kwargs, tensors)
        if base in LOSSES:
            return self._loss(step, kwargs, tensors)
        if base in CONCATS:
            return [self._concat(step, base, args, kwargs)]
        if base in SPLITS:
            return self._split(step, base, args, kwargs, tensors[0])
        if base in SELECTS:
            return [self._select(step, base, args, kwargs, tensors)]
        if base in ("linear", "addmm", "mm", "matmul", "bmm", "baddbmm", "addbmm", "mv", "dot",
                    "einsum", "bilinear", "cdist", "tensordot", "outer", "inner", "ger"):
            return self._contract(step, base, args, kwargs, tensors)
        if base in ("scaled_dot_product_attention", "_scaled_dot_product_efficient_attention",
                    "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu"):
            return self._sdpa(step, tensors)
        if base in CONVS or base == "convolution":
            return self._conv_call(step, base, args, kwargs, tensors)
        if base in SPATIAL:
            return self._spatial_call(step, base, args, kwargs, tensors)
        if base in BATCH_NORMS:
            x = tensors[0]
            if x.value.state == AT and x.value.dim == 0:
                self.confirm(step, x.value)
            return [x.value] + [_unknown_like([x.value]) for _ in out[1:]]
        if base in ("layer_norm", "native_layer_norm", "rms_norm", "group_norm", "native_group_norm",
                    "instance_norm", "local_response_norm"):
            return self._norm_call(step, base, args, kwargs, tensors)
        if base in ("embedding", "one_hot", "embedding_bag"):
            return self._embedding(step, base, tensors)
        if base == "setitem":
            return [combine(tensors, tensors[0].shape)] if tensors else None
        if base in ("masked_scatter", "index_put", "index_copy", "index_add", "scatter", "scatter_add",
                    "scatter_reduce", "index_fill", "masked_select", "nonzero", "where_"):
            return None
        return None

    # --- reshapes and moves ----------------------------------------------------------------------
    def _permute(self, step: Step, op: str, args, kwargs, x: T) -> BatchDim:
        v = x.value
        if v.state != AT:
            return v if v.state in (FREE, GONE, UNKNOWN) else _unknown_like([v])
        n = x.ndim
        rest = list(args[1:])
        if op == "permute":
            order = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
            order = kwargs.get("dims", order)
            order = [d % n for d in order]
            new = order.index(v.dim)
        elif op in ("transpose", "swapaxes", "swapdims", "transpose_"):
            a = kwargs.get("dim0", rest[0] if rest else None)
            b = kwargs.get("dim1", rest[1] if len(rest) > 1 else None)
            a, b = a % n, b % n
            new = b if v.dim == a else a if v.dim == b else v.dim
        elif op in ("t", "t_", "numpy_T"):
            new = (n - 1 - v.dim) if n == 2 else v.dim
        elif op == "adjoint":
            new = {n - 1: n - 2, n - 2: n - 1}.get(v.dim, v.dim)
        else:  # movedim(source, destination)
            src = kwargs.get("source", rest[0] if rest else None)
            dst = kwargs.get("destination", rest[1] if len(rest) > 1 else None)
            src = [s % n for s in (src if isinstance(src, (list, tuple)) else [src])]
            dst = [d % n for d in (dst if isinstance(dst, (list, tuple)) else [dst])]
            order = [None] * n
            for s, d in zip(src, dst):
                order[d] = s
            remaining = iter(d for d in range(n) if d not in src)
            order = [o if o is not None else next(remaining) for o in order]
            new = order.index(v.dim)
        if new == v.dim:
            return v
        moved = None if (new == v.home and v.inner == 1 and v.outer == 1) else step.name
        return v.but(dim=new, moved=moved)

    def _getattr(self, step: Step, args) -> list[BatchDim] | None:
        x, name = (args + (None, None))[:2] if isinstance(args, tuple) else (None, None)
        if not isinstance(x, T):
            return None
        if name in ("data",):
            return [x.value]
        if name in ("T", "mT", "H", "mH"):
            op = "t" if name in ("T", "H") and x.ndim == 2 else "adjoint"
            if name in ("T", "H") and x.ndim > 2:
                if x.value.state != AT:
                    return [x.value]
                new = x.ndim - 1 - x.value.dim
                return [x.value.but(dim=new, moved=step.name)]
            return [self._permute(step, op, (x,), {}, x)]
        return None

    def _repeat(self, step: Step, args, x: T) -> BatchDim:
        v = x.value
        if v.state != AT:
            return v
        out = step.out_shapes[0]
        shift = len(out) - x.ndim
        dim = v.dim + shift
        if shift < 0 or out[dim] % x.shape[v.dim]:
            return _unknown_like([v])
        times = out[dim] // x.shape[v.dim]  # the sizes may be read at run time: use the shapes
        if times == 1:
            return v if shift == 0 else v.but(dim=dim, moved=v.moved if dim == v.home else step.name)
        return v.but(dim=dim, outer=v.outer * times, moved=step.name)

    def _getitem(self, step: Step, args) -> list[BatchDim] | None:
        x, index = args[0], args[1]
        if isinstance(x, (tuple, list)) and not isinstance(x, T):
            return _item(list(x), index, step.out_shapes)
        if not isinstance(x, T):
            return None
        if isinstance(index, int) and len(step.out_shapes) == 1 and len(step.out_shapes[0]) == x.ndim:
            # An int index keeps every dim: an element of a tuple whose other items are not
            # tensors (nn.MultiheadAttention's (output, None)).
            return [x.value] if step.out_shapes[0] == x.shape else None
        v = x.value
        if v.state in (FREE, GONE) and not _tensor_index_carries_batch(index):
            return [v] * len(step.out_shapes)
        if v.state != AT:
            return [_unknown_like([v])]
        items = list(index) if isinstance(index, tuple) else [index]
        # Where each input dim goes: ints drop it, None inserts one, slices keep it; an
        # Ellipsis stands for the dims not named.
        named = sum(1 for i in items if i is not None and i is not Ellipsis)
        expanded = []
        for item in items:
            if item is Ellipsis:
                expanded.extend([slice(None)] * (x.ndim - named))
            else:
                expanded.append(item)
        if not any(i is Ellipsis for i in items):
            expanded.extend([slice(None)] * (x.ndim - named))
        position = out_dim = 0
        advanced = [i for i in expanded if isinstance(i, (T, list))]
        if advanced:
            first = next(k for k, i in enumerate(expanded) if isinstance(i, (T, list)))
            dims_before = sum(1 for i in expanded[:first] if i is not None and not isinstance(i, int))
            in_before = sum(1 for i in expanded[:first] if i is not None)
            if v.dim >= in_before or any(isinstance(i, T) and i.value.state != FREE for i in advanced):
                return [_unknown_like([v])]
        for item in expanded:
            if item is None:
                out_dim += 1
                continue
            if position == v.dim:
                if isinstance(item, slice) and item == slice(None, None, None):
                    return [v if out_dim == v.dim else v.but(dim=out_dim, moved=v.moved)]
                return [_unknown_like([v])]  # a sample or some samples picked out
            if not isinstance(item, int):
                out_dim += 1
            position += 1
        return [_unknown_like([v])]

    def _select(self, step: Step, op: str, args, kwargs, tensors: list[T]) -> BatchDim:
        x = tensors[0]
        v = x.value
        if v.state != AT:
            return v if v.state in (FREE, GONE) else _unknown_like([v])
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if not isinstance(dim, int):
            return _unknown_like([v])
        dim %= x.ndim
        others = [t for t in tensors[1:] if t.value.state != FREE]
        if dim == v.dim:
            if op == "slice":  # aten: slice(x, dim, start, end, step) over the whole dim keeps it
                start = args[2] if len(args) > 2 else 0
                end = args[3] if len(args) > 3 else None
                stride = args[4] if len(args) > 4 else 1
                if start in (0, None) and (end is None or end >= x.shape[dim]) and stride == 1:
                    return v
            return _unknown_like([v])
        if others and not (op in ("gather", "take_along_dim") and all(
                t.value.state == AT and (t.value.dim, t.value.inner, t.value.outer) == (v.dim, v.inner, v.outer)
                for t in others)):
            return _unknown_like([v])
        if op == "select" and dim < v.dim:
            return v.but(dim=v.dim - 1)
        return v

    def _split(self, step: Step, op: str, args, kwargs, x: T) -> list[BatchDim]:
        v = x.value
        n = len(step.out_shapes)
        if v.state != AT:
            return [v if v.state in (FREE, GONE) else _unknown_like([v])] * n
        default = 0
        dim = kwargs.get("dim", args[2] if len(args) > 2 else default)
        if op == "unbind":
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        if not isinstance(dim, int):
            return [_unknown_like([v])] * n
        dim %= x.ndim
        if dim != v.dim:
            if op == "unbind" and dim < v.dim:
                return [v.but(dim=v.dim - 1)] * n
            return [v] * n
        out = []
        for shape in step.out_shapes:
            size = shape[dim] if op != "unbind" and len(shape) > dim else 0
            parts = x.shape[dim] // size if size else 0
            if size and x.shape[dim] % size == 0 and v.outer % parts == 0:
                out.append(v.but(outer=v.outer // parts, moved=v.moved if v.outer // parts != 1 or
                                 v.inner != 1 or v.dim != v.home else None))
            else:
                out.append(_unknown_like([v]))
        return out

    def _concat(self, step: Step, op: str, args, kwargs) -> BatchDim:
        parts = args[0] if args else kwargs.get("tensors")
        if isinstance(parts, T):
            parts = [parts]
        parts = [p for p in (parts or []) if isinstance(p, T)]
        out = step.out_shapes[0]
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        if not isinstance(dim, int) or not parts:
            return _unknown_like([p.value for p in parts])
        stack = op == "stack"
        dim %= len(out)
        live = [p for p in parts if p.value.state != FREE]
        if not live:
            return NO_BATCH
        carried = [p for p in live if p.value.state == AT]
        gone = [p for p in live if p.value.state == GONE]
        if len(carried) + len(gone) != len(live) or not carried:
            return _unknown_like([p.value for p in parts])
        first = carried[0].value
        position = first.dim + (1 if stack and dim <= first.dim else 0)
        if any((p.value.dim, p.value.inner, p.value.outer) != (first.dim, first.inner, first.outer)
               for p in carried):
            return _unknown_like([p.value for p in parts])
        mixed = _union(p.value.mixed for p in live)
        sources = frozenset().union(*(p.value.sources for p in live))
        if not stack and dim == first.dim:
            # Batches laid end to end (two views of each image, a cat([x, x])): each index still
            # holds one sample when every part is the same batch, equally merged.
            if gone or len(carried) != len(parts) or len({p.shape[dim] for p in carried}) != 1:
                return _unknown_like([p.value for p in parts])
            return first.but(outer=first.outer * len(parts), mixed=mixed, sources=sources, moved=step.name)
        if gone and not stack:
            # Statistics of the whole batch set beside each sample's features (minibatch
            # discrimination, ProGAN's minibatch stddev): mixing on purpose.
            for p in gone:
                self.flow.deliberate.update(p.value.mixed)
        return first.but(dim=position, mixed=mixed, sources=sources)

    # --- mixing along dims -----------------------------------------------------------------------
    def _dims(self, value, n: int) -> list[int] | None:
        if value is None:
            return list(range(n))
        if isinstance(value, int):
            return [value % n] if n else []
        if isinstance(value, (list, tuple)) and all(isinstance(d, int) for d in value):
            return sorted({d % n for d in value}) if value else list(range(n))
        return None

    def _reduce(self, step: Step, op: str, args, kwargs, tensors: list[T]) -> list[BatchDim] | None:
        x = tensors[0]
        v = x.value
        n = len(step.out_shapes)
        if op in ("max", "min") and len(tensors) > 1:
            return [combine(tensors, step.out_shapes[0])]  # max(a, b): elementwise
        if op in ("norm",):
            dim = kwargs.get("dim", args[2] if len(args) > 2 else None)
        elif op in ("vector_norm", "linalg_vector_norm"):
            dim = kwargs.get("dim", args[2] if len(args) > 2 else None)
        elif op in ("quantile", "nanquantile"):
            dim = kwargs.get("dim", args[2] if len(args) > 2 else None)
        elif op == "sum_to_size":
            return None
        else:
            dim = kwargs.get("dim", kwargs.get("axis", args[1] if len(args) > 1 else None))
        keepdim = kwargs.get("keepdim", kwargs.get("keepdims", False))
        if op in ("var", "std", "var_mean", "std_mean") and len(args) > 2 and isinstance(args[2], bool):
            keepdim = args[3] if len(args) > 3 else keepdim
        elif len(args) > 2 and isinstance(args[2], bool) and op not in ("norm", "vector_norm"):
            keepdim = args[2]
        if isinstance(dim, bool):
            return None
        dims = self._dims(dim, x.ndim)
        if dims is None:
            return None
        if v.state == SCRAMBLED:
            return [_unknown_like([v])] * n
        if v.state != AT:
            return [v] * n
        if v.dim in dims:
            what = f"{op} over {_dims_text(dims, x.ndim)}"
            mixed = self.mix(step, "reduce", x, what)
            return [mixed.but(state=GONE, dim=None)] * n
        new = v.dim if keepdim else v.dim - sum(1 for d in dims if d < v.dim)
        return [v.but(dim=new)] * n

    def _along(self, step: Step, op: str, args, kwargs, tensors: list[T]) -> list[BatchDim] | None:
        x = tensors[0]
        v = x.value
        n = len(step.out_shapes)
        kind, default = ALONG.get(op) or RESIZING_ALONG[op]
        implicit = False
        if op in RESIZING_ALONG:  # topk(x, k, dim), kthvalue(x, k, dim)
            dim = kwargs.get("dim", args[2] if len(args) > 2 else default)
        elif op == "normalize":
            dim = kwargs.get("dim", args[2] if len(args) > 2 else default)
        elif op == "diff":
            dim = kwargs.get("dim", args[2] if len(args) > 2 else default)
        else:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else default)
        if dim is None and kind == "softmax" and op != "gumbel_softmax":
            dim, implicit = (0 if x.ndim in (0, 1, 3) else 1), True  # PyTorch's legacy choice
        if dim is None and kind in ("cumulate",) or not isinstance(dim, int) or isinstance(dim, bool):
            return None
        dim %= max(x.ndim, 1)
        if v.state == SCRAMBLED:
            return [_unknown_like([v])] * n
        if v.state != AT:
            return [v] * n
        if dim != v.dim:
            return [v] * n
        what = f"{op} over dim {dim}" + (" (no dim given: PyTorch's default for a "
                                         f"{x.ndim}-D input)" if implicit else "")
        mixed = self.mix(step, kind, x, what, implicit=implicit)
        if op in RESIZING_ALONG:
            return [mixed.but(state=UNKNOWN, dim=None)] * n
        return [mixed] * n

    def _loss(self, step: Step, kwargs, tensors: list[T]) -> list[BatchDim]:
        live = [t for t in tensors if t.value.state == AT]
        if kwargs.get("reduction", "mean") == "none" or not live:
            return [_unknown_like([t.value for t in tensors])] * len(step.out_shapes)
        mixed = self.mix(step, "loss", live[0], "a loss averaged over the batch")
        return [mixed.but(state=GONE, dim=None)] * len(step.out_shapes)

    # --- contractions ----------------------------------------------------------------------------
    def _contract(self, step: Step, op: str, args, kwargs, tensors: list[T]) -> list[BatchDim] | None:
        out = step.out_shapes[0]
        if op == "einsum":
            return [self._einsum(step, args, tensors)]
        if op == "linear":
            x, rest = tensors[0], tensors[1:]
            if any(t.value.state != FREE for t in rest):
                return None
            return [self._matmul_like(step, x, None, out, contract_last=True)]
        if op in ("addmm", "baddbmm", "addbmm"):
            bias, a, b = (tensors + [None, None, None])[:3]
            if a is None or b is None:
                return None
            value = self._matmul_like(step, a, b, out)
            return [combine([T(value, out), bias], out)] if bias is not None else [value]
        if op in ("mm", "matmul", "bmm", "mv", "dot", "inner", "outer", "ger"):
            if len(tensors) < 2:
                return None
            a, b = tensors[0], tensors[1]
            if op in ("outer", "ger"):
                a, b = T(a.value, a.shape + (1,)), T(b.value, (1,) + b.shape)
            return [self._matmul_like(step, a, b, out)]
        if op in ("cdist",):
            a, b = tensors[0], tensors[1]
            return [self._matmul_like(step, a, T(b.value, b.shape[:-2] + (b.shape[-1], b.shape[-2])), out)]
        return None

    def _matmul_like(self, step: Step, a: T, b: T | None, out: tuple[int, ...],
                     contract_last: bool = False) -> BatchDim:
        """a @ b (b None: a's last dim contracted with a weight, as a Linear)."""
        va = a.value
        vb = b.value if b is not None else NO_BATCH
        for t in (a, b):
            if t is not None and t.value.state in (SCRAMBLED, UNKNOWN):
                return _unknown_like([va, vb])
        if va.state != AT and vb.state != AT:
            return combine([T(va, ()), T(vb, ())], out) if (va.state == GONE or vb.state == GONE) else NO_BATCH
        na = a.ndim
        nb = b.ndim if b is not None else 2
        # Positions in the output: broadcast batch dims, then a's rows, then b's columns.
        batch_out = len(out) - (1 if na >= 2 else 0) - (1 if nb >= 2 else 0)
        where = []
        for t, n, side in ((a, na, "a"), (b, nb, "b")):
            if t is None or t.value.state != AT:
                continue
            d = t.value.dim
            if side == "a":
                if d == na - 1:
                    where.append(("contract", t))
                elif na >= 2 and d == na - 2:
                    where.append(("rows", t, batch_out))
                else:
                    where.append(("batch", t, d + batch_out - (na - 2)))
            else:
                if (nb >= 2 and d == nb - 2) or nb == 1:
                    where.append(("contract", t))
                elif d == nb - 1:
                    where.append(("cols", t, len(out) - 1))
                else:
                    where.append(("batch", t, d + batch_out - (nb - 2)))
        for entry in where:
            if entry[0] == "contract":
                t = entry[1]
                kind = "contract"
                what = ("a linear layer over dim " if contract_last or b is None else "a matrix product over dim ") \
                    + str(t.value.dim)
                mixed = self.mix(step, kind, t, what)
                others = [e[1].value for e in where if e[1] is not t]
                return _merge_meta(mixed.but(state=GONE, dim=None), others)
        if len(where) == 1:
            kind, t, position = where[0]
            v = t.value
            return v.but(dim=position, moved=v.moved if position == v.dim else
                         (None if position == v.home and v.inner == v.outer == 1 else step.name),
                         mixed=_union([va.mixed, vb.mixed]))
        (k1, t1, p1), (k2, t2, p2) = where
        if k1 == k2 == "batch" and p1 == p2 and (t1.value.inner, t1.value.outer) == (t2.value.inner, t2.value.outer):
            self.confirm(step, t1.value)
            self.confirm(step, t2.value)
            v = t1.value
            return v.but(dim=p1, mixed=_union([va.mixed, vb.mixed]),
                         sources=va.sources | vb.sources)
        # Rows of one sample against columns of another (a similarity matrix across the batch,
        # a contrastive loss's logits): every pair, on purpose.
        return _unknown_like([va, vb])

    def _einsum(self, step: Step, args, tensors: list[T]) -> BatchDim:
        equation = args[0] if args and isinstance(args[0], str) else None
        if equation is None:
            return _unknown_like([t.value for t in tensors])
        equation = equation.replace(" ", "")
        if "->" in equation:
            lhs, rhs = equation.split("->")
        else:
            lhs = equation
            letters = [c for c in lhs if c.isalpha()]
            rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
        terms = lhs.split(",")
        if len(terms) != len(tensors):
            return _unknown_like([t.value for t in tensors])
        spare = iter(c for c in string.ascii_letters if c not in equation)
        ellipsis = None
        subscripts = []
        for term, t in zip(terms, tensors):
            if "..." in term:
                n = t.ndim - (len(term) - 3)
                if ellipsis is None or len(ellipsis) < n:
                    ellipsis = (ellipsis or "") + "".join(next(spare) for _ in range(n - len(ellipsis or "")))
                term = term.replace("...", ellipsis[len(ellipsis) - n:] if n else "")
            subscripts.append(term)
        if "..." in rhs:
            rhs = rhs.replace("...", ellipsis or "")
        carried = []
        for term, t in zip(subscripts, tensors):
            v = t.value
            if v.state in (SCRAMBLED, UNKNOWN):
                return _unknown_like([x.value for x in tensors])
            if v.state == AT:
                if v.dim >= len(term):
                    return _unknown_like([x.value for x in tensors])
                carried.append((term[v.dim], t))
        if not carried:
            return combine([T(t.value, ()) for t in tensors if t.value.state == GONE], ()) \
                if any(t.value.state == GONE for t in tensors) else NO_BATCH
        for letter, t in carried:
            if letter not in rhs:
                mixed = self.mix(step, "contract", t, f"einsum {equation} over '{letter}' (dim {t.value.dim})")
                return mixed.but(state=GONE, dim=None)
        letters = {c for c, _ in carried}
        layouts = {(t.value.inner, t.value.outer) for _, t in carried}
        if len(letters) != 1 or len(layouts) != 1:
            return _unknown_like([t.value for _, t in carried])
        letter, first = carried[0]
        if len(carried) > 1:
            for _, t in carried:
                self.confirm(step, t.value)
        position = rhs.index(letter)
        v = first.value
        moved = v.moved if position == v.dim else (None if position == v.home and v.inner == v.outer == 1 else step.name)
        return v.but(dim=position, moved=moved, mixed=_union(t.value.mixed for t in tensors),
                     sources=frozenset().union(*(t.value.sources for t in tensors)))

    def _sdpa(self, step: Step, tensors: list[T]) -> list[BatchDim] | None:
        q, k, v = (tensors + [None] * 3)[:3]
        if v is None:
            return None
        values = [q.value, k.value, v.value]
        if any(x.state in (SCRAMBLED, UNKNOWN) for x in values):
            return [_unknown_like(values)] * len(step.out_shapes)
        for t, mixing_dims in ((q, (q.ndim - 1,)), (k, (k.ndim - 2, k.ndim - 1)), (v, (v.ndim - 2,))):
            if t.value.state == AT and t.value.dim in mixing_dims:
                mixed = self.mix(step, "attend", t, f"attention over dim {t.value.dim}")
                if t is k and t.value.dim == k.ndim - 2 and q.value.state == AT and q.value.dim == q.ndim - 2:
                    return [mixed] + [_unknown_like([mixed])] * (len(step.out_shapes) - 1)
                return [mixed.but(state=UNKNOWN, dim=None)] * len(step.out_shapes)
        carried = [t for t in (q, k, v) if t.value.state == AT]
        if not carried:
            return [NO_BATCH] * len(step.out_shapes)
        out = step.out_shapes[0]
        positions = {t.value.dim + len(out) - t.ndim for t in carried}
        layouts = {(t.value.inner, t.value.outer) for t in carried}
        if len(positions) != 1 or len(layouts) != 1:
            return [_unknown_like(values)] * len(step.out_shapes)
        if len(carried) > 1:
            for t in carried:
                self.confirm(step, t.value)
        first = carried[0].value
        value = first.but(dim=positions.pop(), mixed=_union(x.mixed for x in values),
                          sources=frozenset().union(*(x.sources for x in values)))
        return [value] + [_unknown_like(values) for _ in step.out_shapes[1:]]

    # --- convolutions, pools and norms -------------------------------------------------------
    def _conv(self, step: Step, x: T, weight: T | None, groups: int, spatial: int, transposed: bool,
              out: tuple[int, ...], kernel: tuple[int, ...] | None) -> BatchDim:
        v = x.value
        w = weight.value if weight is not None else NO_BATCH
        if v.state in (SCRAMBLED, UNKNOWN) or w.state in (SCRAMBLED, UNKNOWN, GONE):
            return _unknown_like([v, w])
        batched = x.ndim == spatial + 2
        channel_dim = 1 if batched else 0
        if v.state == FREE and w.state == FREE:
            return NO_BATCH
        if v.state == GONE:
            return v if w.state == FREE else _unknown_like([v, w])
        out_channels = out[channel_dim] if len(out) > channel_dim else None
        if v.state == AT and batched and v.dim == 0:
            if w.state != FREE:
                return _unknown_like([v, w])
            self.confirm(step, v)
            return v
        if v.state == AT and v.dim == channel_dim:
            in_channels = x.shape[channel_dim]
            per_group = in_channels // groups if groups else 0
            if per_group and v.inner % per_group == 0 and out_channels:
                # Groups that each read one sample's channels (StyleGAN2's modulated conv:
                # the batch folded into the channels, groups=B).
                out_per_group = out_channels // groups
                inner = out_per_group * (v.inner // per_group)
                if w.state == AT:
                    want = inner if not transposed else v.inner
                    if w.dim != 0 or w.inner != want:
                        return _unknown_like([v, w])
                return v.but(inner=inner, outer=max(1, out_channels // (self.batch * inner)),
                             mixed=_union([v.mixed, w.mixed]))
            mixed = self.mix(step, "conv", x, f"a convolution over its channels (dim {channel_dim})")
            return mixed.but(state=GONE, dim=None)
        if v.state == FREE and w.state == AT and w.dim == 0 and not transposed and out_channels:
            # One kernel per sample on a shared input: output channel j is sample j // inner's.
            return w.but(dim=channel_dim, outer=max(1, out_channels // (self.batch * w.inner)))
        if v.state == AT and v.dim > channel_dim and kernel is not None:
            axis = v.dim - channel_dim - 1
            if axis < len(kernel) and kernel[axis] > 1:
                mixed = self.mix(step, "conv", x, f"a convolution along dim {v.dim}")
                return mixed.but(state=GONE, dim=None)
        return _unknown_like([v, w])

    def _conv_call(self, step: Step, op: str, args, kwargs, tensors: list[T]) -> list[BatchDim] | None:
        x = tensors[0]
        weight = tensors[1] if len(tensors) > 1 else None
        if weight is None:
            return None
        if op == "convolution":  # aten: (x, w, b, stride, padding, dilation, transposed, out_pad, groups)
            transposed = bool(args[6]) if len(args) > 6 else False
            groups = args[8] if len(args) > 8 else 1
            spatial = weight.ndim - 2
        else:
            spatial = CONVS[op]
            transposed = "transpose" in op
            position = 6 if transposed else 6
            groups = kwargs.get("groups", args[position] if len(args) > position else 1)
        if not isinstance(groups, int):
            return None
        kernel = tuple(weight.shape[2:])
        return [self._conv(step, x, weight, groups, spatial, transposed, step.out_shapes[0], kernel)]

    def _spatial(self, step: Step, x: T, spatial: int, kernel: tuple[int, ...] | None,
                 shrinks: bool) -> BatchDim:
        """Pools, resizes and pads: each (sample, channel) plane alone, along its last
        `spatial` dims."""
        v = x.value
        if v.state != AT:
            return v if v.state in (FREE, GONE) else _unknown_like([v])
        first_spatial = x.ndim - spatial
        if v.dim < first_spatial:
            if v.dim == 0 and x.ndim == spatial + 2:
                self.confirm(step, v)
            return v
        axis = v.dim - first_spatial
        if shrinks and kernel is not None and axis < len(kernel) and kernel[axis] > 1:
            mixed = self.mix(step, "pool", x, f"pooling along dim {v.dim}")
            return mixed.but(state=GONE, dim=None)
        return _unknown_like([v])

    def _spatial_call(self, step: Step, op: str, args, kwargs, tensors: list[T]) -> list[BatchDim] | None:
        x = tensors[0]
        n = len(step.out_shapes)
        if op in ("roll", "flip"):
            v = x.value
            dims = kwargs.get("dims", args[2] if op == "roll" and len(args) > 2 else args[1] if len(args) > 1 else None)
            dims = self._dims(dims, x.ndim) if dims is not None else None
            if v.state == AT and dims is not None and v.dim not in dims:
                return [v]
            return [v if v.state in (FREE, GONE) else _unknown_like([v])]
        if op in ("pad", "constant_pad_nd", "_patch_merging_pad") or op.startswith(("reflection_pad", "replication_pad")):
            pads = args[1] if len(args) > 1 else kwargs.get("pad")
            v = x.value
            if v.state != AT:
                return [v if v.state in (FREE, GONE) else _unknown_like([v])]
            if isinstance(pads, (list, tuple)):
                # pads cover the last len(pads) // 2 dims; sizes read at run time are node names
                if v.dim < x.ndim - len(pads) // 2:
                    return [v]
                if all(isinstance(p, int) for p in pads):
                    touched = {x.ndim - 1 - i // 2 for i, p in enumerate(pads) if p}
                    return [v if v.dim not in touched else _unknown_like([v])]
                return [_unknown_like([v])]
            if op == "_patch_merging_pad" and v.dim == 0:
                return [v]
            return [_unknown_like([v])]
        if op in ("grid_sample", "grid_sampler", "grid_sampler_2d"):
            # Each (sample, channel) plane read at its sample's grid points: the batch of the
            # input and of the grid, dim 0 of both.
            grid = tensors[1] if len(tensors) > 1 else None
            vs = [t.value for t in (x, grid) if t is not None and t.value.state != FREE]
            if vs and all(t.state == AT and t.dim == 0 for t in vs) and \
                    len({(t.inner, t.outer) for t in vs}) == 1:
                for t in vs:
                    self.confirm(step, t)
                return [vs[0].but(mixed=_union(t.mixed for t in vs))]
            return [_unknown_like(vs)]
        match = re.search(r"(\d)d", op)
        spatial = int(match.group(1)) if match else max(x.ndim - 2, 1)
        if op in ("pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "unfold", "fold"):
            v = x.value
            if v.state == AT and v.dim == 0 and x.ndim >= 3:
                self.confirm(step, v)
                return [v]
            return [v if v.state in (FREE, GONE) else _unknown_like([v])]
        shrinks = "pool" in op
        kernel = None
        if shrinks:
            out = step.out_shapes[0]
            kernel = tuple(max(1, a - b + 1) if a != b else 1 for a, b in zip(x.shape[-spatial:], out[-spatial:]))
        values = [self._spatial(step, x, spatial, kernel, shrinks)]
        return values + [values[0] for _ in range(n - 1)]

    def _norm(self, step: Step, x: T, dims: list[int], what: str) -> BatchDim:
        v = x.value
        if v.state != AT:
            return v if v.state in (FREE, GONE) else _unknown_like([v])
        if v.dim in dims:
            return self.mix(step, "normalize", x, what)
        return v

    def _group_norm(self, step: Step, x: T, groups: int) -> BatchDim:
        v = x.value
        if v.state != AT:
            return v if v.state in (FREE, GONE) else _unknown_like([v])
        if v.dim == 0:
            self.confirm(step, v)
            return v
        if v.dim == 1 and groups and v.inner % max(1, x.shape[1] // groups) == 0:
            return v  # each group inside one sample's channels
        return self.mix(step, "normalize", x, f"GroupNorm over dims 1..{x.ndim - 1}")

    def _norm_call(self, step: Step, op: str, args, kwargs, tensors: list[T]) -> list[BatchDim] | None:
        x = tensors[0]
        n = len(step.out_shapes)
        if op in ("layer_norm", "native_layer_norm", "rms_norm"):
            shape = kwargs.get("normalized_shape", args[1] if len(args) > 1 else None)
            if isinstance(shape, int):
                shape = (shape,)
            if not isinstance(shape, (list, tuple)):
                return None
            dims = list(range(x.ndim - len(shape), x.ndim))
            value = self._norm(step, x, dims, f"LayerNorm over {_dims_text(dims, x.ndim)}")
            return [value] + [_unknown_like([value])] * (n - 1)
        if op in ("group_norm", "native_group_norm"):
            groups = kwargs.get("num_groups", args[1] if len(args) > 1 and op == "group_norm" else
                                args[6] if len(args) > 6 else None)
            if not isinstance(groups, int):
                return None
            value = self._group_norm(step, x, groups)
            return [value] + [_unknown_like([value])] * (n - 1)
        if op == "instance_norm":
            value = self._norm(step, x, list(range(2, x.ndim)), "InstanceNorm over the spatial dims")
            if value.state == AT and value.dim == 0:
                self.confirm(step, value)
            return [value] * n
        if op == "local_response_norm":
            return [self._norm(step, x, [1], "LocalResponseNorm across the channels")] * n
        return None

    def _embedding(self, step: Step, op: str, tensors: list[T]) -> list[BatchDim] | None:
        live = [t for t in tensors if t.value.state != FREE]
        if len(live) != 1:
            return None
        t = live[0]
        if op == "embedding_bag":
            return None
        out = step.out_shapes[0]
        if t.value.state == AT and len(out) == t.ndim + 1:
            return [t.value]
        return [_unknown_like([t.value])]

    # --- modules ---------------------------------------------------------------------------------
    def _module(self, step: Step) -> list[BatchDim] | None:
        m = step.module
        tensors = self._tensors(step)
        out = step.out_shapes
        if not tensors:
            return [NO_BATCH for _ in out]
        if all(t.value.state == FREE for t in tensors):
            return [NO_BATCH for _ in out]
        x = tensors[0]
        if isinstance(m, BATCH_NORM_TYPES):
            # Batch statistics in training are BatchNorm's design (the documented exception);
            # in eval mode it is a per-channel affine map.
            if x.value.state == AT and x.value.dim == 0:
                self.confirm(step, x.value)
            return [x.value]
        if isinstance(m, nn.GroupNorm):
            return [self._group_norm(step, x, m.num_groups)]
        if isinstance(m, nn.LayerNorm) or type(m).__name__ == "RMSNorm" and hasattr(m, "normalized_shape"):
            k = len(m.normalized_shape)
            dims = list(range(x.ndim - k, x.ndim))
            return [self._norm(step, x, dims, f"LayerNorm over {_dims_text(dims, x.ndim)}")]
        if isinstance(m, INSTANCE_NORM_TYPES):
            spatial = int(re.search(r"(\d)d", type(m).__name__).group(1)) if re.search(r"(\d)d", type(m).__name__) else 1
            dims = list(range(x.ndim - spatial, x.ndim))
            value = self._norm(step, x, dims, "InstanceNorm over the spatial dims")
            if value.state == AT and value.dim == 0 and x.ndim == spatial + 2:
                self.confirm(step, value)
            return [value]
        if isinstance(m, (nn.LocalResponseNorm, nn.CrossMapLRN2d)):
            return [self._norm(step, x, [1], "LocalResponseNorm across the channels")]
        if isinstance(m, nn.modules.conv._ConvNd):
            return [self._conv(step, x, None, m.groups, len(m.kernel_size), m.transposed, out[0],
                               tuple(m.kernel_size))]
        if isinstance(m, POOL_TYPES):
            spatial = int(re.search(r"(\d)d", type(m).__name__).group(1))
            kernel = None
            if out and len(out[0]) == x.ndim:
                kernel = tuple(max(1, a - b + 1) if a != b else 1
                               for a, b in zip(x.shape[-spatial:], out[0][-spatial:]))
                if not isinstance(m, (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)):
                    ks = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * spatial
                    kernel = tuple(ks)
            value = self._spatial(step, x, spatial, kernel, True)
            return [value] * len(out)
        if isinstance(m, RESAMPLE_MODULES + PAD_TYPES):
            v = x.value
            if v.state == AT and v.dim == 0 and x.ndim >= 3:
                self.confirm(step, v)
                return [v]
            if isinstance(m, PAD_TYPES) and v.state == AT:
                pads = m.padding if isinstance(m.padding, tuple) else (m.padding,)
                touched = {x.ndim - 1 - i // 2 for i, p in enumerate(pads) if p}
                return [v if v.dim not in touched else _unknown_like([v])]
            return [v if v.state in (FREE, GONE) else _unknown_like([v])]
        if isinstance(m, nn.Linear):
            return [self._matmul_like(step, x, None, out[0], contract_last=True)]
        if isinstance(m, nn.Bilinear):
            return None
        if isinstance(m, nn.Embedding):
            return self._embedding(step, "embedding", tensors[:1])
        if isinstance(m, SOFTMAX_MODULES) or isinstance(m, nn.Softmax2d):
            dim = -3 if isinstance(m, nn.Softmax2d) else m.dim
            name = {nn.LogSoftmax: "log_softmax", nn.Softmin: "softmin"}.get(type(m), "softmax")
            return self._along(step, name, (x, dim), {}, [x])
        if isinstance(m, nn.GLU):
            v = x.value
            return [v if v.state != AT or v.dim != m.dim % x.ndim else _unknown_like([v])]
        if isinstance(m, ELEMENTWISE_MODULES):
            return [x.value]
        if isinstance(m, IDENTITY_TYPES):  # Flatten, Unflatten
            value = reshaped(x.value, x.shape, out[0], self.batch, step.name)
            if isinstance(m, nn.Flatten) and m.start_dim == 1 and x.value.state == AT and x.value.dim == 0:
                self.confirm(step, x.value)
            return [value]
        if isinstance(m, nn.MultiheadAttention):
            return self._attention_module(step, tensors, m.batch_first, len(out))
        if isinstance(m, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.TransformerEncoder,
                          nn.TransformerDecoder, nn.Transformer)):
            return self._attention_module(step, tensors, _batch_first(m), len(out))
        if isinstance(m, nn.RNNBase):
            return self._recurrent(step, x, m.batch_first, len(out))
        if isinstance(m, nn.RNNCellBase):
            v = x.value
            if v.state == AT and v.dim == 0 and x.ndim == 2:
                return [v] * len(out)
            if v.state == AT:
                return [self.mix(step, "recur", x, f"an RNN cell over dim {v.dim}").but(state=UNKNOWN)] * len(out)
            return None
        if isinstance(m, (nn.CosineSimilarity, nn.PairwiseDistance)):
            dim = getattr(m, "dim", -1)
            if all(t.value.state == AT and t.value.dim != dim % t.ndim for t in tensors[:2]):
                return [combine(tensors[:2], out[0])]
            return None
        if isinstance(m, nn.modules.loss._Loss):
            return self._loss(step, {"reduction": m.reduction}, tensors)
        return None

    def _attention_module(self, step: Step, tensors: list[T], batch_first: bool | None,
                          outputs: int) -> list[BatchDim] | None:
        if batch_first is None:
            return None
        tensors = [t for t in tensors[:3] if t.ndim >= 2] or tensors[:1]
        values = [t.value for t in tensors]
        if any(v.state in (SCRAMBLED, UNKNOWN) for v in values):
            return [_unknown_like(values)] * outputs
        x = tensors[0]
        if x.ndim != 3:
            if any(v.state == AT for v in values):
                t = next(t for t in tensors if t.value.state == AT)
                mixed = self.mix(step, "attend", t, f"attention over dim {t.value.dim} (an unbatched input)")
                return [mixed.but(state=UNKNOWN, dim=None)] * outputs
            return [NO_BATCH] * outputs
        batch_dim, seq_dim = (0, 1) if batch_first else (1, 0)
        for t in tensors:
            v = t.value
            if v.state == AT and v.dim != batch_dim:
                where = "the sequence" if v.dim == seq_dim else "the features"
                mixed = self.mix(step, "attend", t, f"attention over dim {v.dim}, which it reads as {where} "
                                                    f"(batch_first={batch_first})")
                if t is tensors[0] and v.dim == seq_dim:
                    # each query row keeps its place and now depends on the other samples
                    return [mixed] + [_unknown_like([mixed])] * (outputs - 1)
                return [mixed.but(state=UNKNOWN, dim=None)] * outputs
        carried = [t.value for t in tensors if t.value.state == AT]
        if not carried:
            return [NO_BATCH] * outputs
        if len({(v.inner, v.outer) for v in carried}) != 1:
            return [_unknown_like(values)] * outputs
        for v in carried:
            self.confirm(step, v)
        first = carried[0].but(mixed=_union(v.mixed for v in values),
                               sources=frozenset().union(*(v.sources for v in values)))
        result = [first]
        if outputs > 1:  # attention weights: (N, L, S) or (N, H, L, S)
            result += [first.but(dim=0, moved=None if first.home == 0 else step.name)
                       if len(step.out_shapes[1]) >= 3 else _unknown_like([first])]
            result += [_unknown_like([first])] * (outputs - 2)
        return result

    def _recurrent(self, step: Step, x: T, batch_first: bool, outputs: int) -> list[BatchDim]:
        v = x.value
        if v.state != AT:
            return [v if v.state in (FREE, GONE) else _unknown_like([v])] * outputs
        if x.ndim != 3:
            mixed = self.mix(step, "recur", x, f"a recurrence over dim {v.dim} (an unbatched input)")
            return [mixed.but(state=UNKNOWN, dim=None)] * outputs
        batch_dim = 0 if batch_first else 1
        if v.dim != batch_dim:
            what = "time" if v.dim == 1 - batch_dim else "the features"
            mixed = self.mix(step, "recur", x, f"a recurrence over dim {v.dim}, which it reads as {what} "
                                               f"(batch_first={batch_first})")
            if v.dim == 1 - batch_dim:  # each time step's output keeps its place
                return [mixed] + [_unknown_like([mixed])] * (outputs - 1)
            return [mixed.but(state=UNKNOWN, dim=None)] * outputs
        self.confirm(step, v)
        # output keeps the input's layout; h_n and c_n are (layers * directions, N, H)
        state = v.but(dim=1, moved=None if v.home == 1 and v.inner == v.outer == 1 else step.name)
        return [v] + [state] * (outputs - 1)


# --- helpers -------------------------------------------------------------------------------------

def combine(tensors: list[T], out: tuple[int, ...]) -> BatchDim:
    """The batch of an elementwise result of `tensors`, broadcast to `out`."""
    live = [t for t in tensors if isinstance(t, T) and t.value.state != FREE]
    if not live:
        return NO_BATCH
    values = [t.value for t in live]
    if any(v.state in (UNKNOWN, SCRAMBLED) for v in values):
        return _unknown_like(values)
    carried = [t for t in live if t.value.state == AT]
    mixed = _union(v.mixed for v in values)
    sources = frozenset().union(*(v.sources for v in values))
    if not carried:
        return values[0].but(mixed=mixed, sources=sources)
    placed = []
    for t in carried:
        d = t.value.dim + len(out) - t.ndim
        if d < 0 or (out and t.shape[t.value.dim] != out[d]):
            return _unknown_like(values)
        placed.append(t.value.but(dim=d) if d != t.value.dim else t.value)
    first = placed[0]
    if any((p.dim, p.inner, p.outer) != (first.dim, first.inner, first.outer) for p in placed):
        return _unknown_like(values)  # samples set against other samples: every pair
    moved = next((p.moved for p in placed if p.moved), None) if first.displaced else None
    return first.but(mixed=mixed, sources=sources, moved=moved)


def feature_dims(layer, ndim: int) -> set[int]:
    """The dims of its (first) input an op reads as features, where a batch would be mixed:
    a Linear's or matrix product's last, a conv's or norm's channels."""
    module = layer.module
    if layer.kind == Kind.MODULE:
        if isinstance(module, (nn.Linear, nn.Bilinear)):
            return {ndim - 1}
        if isinstance(module, nn.LayerNorm):
            return set(range(ndim - len(module.normalized_shape), ndim))
        if isinstance(module, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                               INSTANCE_NORM_TYPES)):
            return {1} if ndim >= 3 else {0, ndim - 1}
        if isinstance(module, (nn.MultiheadAttention, nn.RNNBase)):
            return {ndim - 1}
        return set()
    if layer.op in ("linear", "matmul", "mm", "bmm", "addmm", "einsum"):
        return {ndim - 1}
    if layer.op in CONVS or layer.op in ("layer_norm", "group_norm", "batch_norm", "convolution"):
        return {1, ndim - 1}
    if layer.op in ("view", "reshape"):
        return set(range(ndim))
    return set()


def _batch_first(module) -> bool | None:
    value = getattr(module, "batch_first", None)
    if value is None:
        layers = getattr(module, "layers", None)
        if layers is not None and len(layers):
            value = getattr(layers[0], "batch_first", None)
        encoder = getattr(module, "encoder", None)
        if value is None and encoder is not None:
            value = _batch_first(encoder)
    if value is None and hasattr(module, "self_attn"):
        value = getattr(module.self_attn, "batch_first", None)
    return value


def _item(flat: list, index, shapes: list[tuple[int, ...]]) -> list[BatchDim] | None:
    """Element `index` of a tuple output, from its tensors flattened: `(out, (h, c))` of an LSTM
    is three tensors, and its element 1 is the last two."""
    flat = [t for t in flat if isinstance(t, T)]
    if isinstance(index, slice):
        picked = flat[index]
        return [t.value for t in picked] if [t.shape for t in picked] == list(shapes) else None
    if not isinstance(index, int) or not shapes:
        return None
    index %= max(len(flat), 1)
    if [t.shape for t in flat[index:index + len(shapes)]] == list(shapes):
        return [t.value for t in flat[index:index + len(shapes)]]
    offsets = [o for o in range(len(flat) - len(shapes) + 1)
               if [t.shape for t in flat[o:o + len(shapes)]] == list(shapes)]
    if len({tuple(t.value for t in flat[o:o + len(shapes)]) for o in offsets}) == 1:
        return [t.value for t in flat[offsets[0]:offsets[0] + len(shapes)]]
    return None


def _tensor_index_carries_batch(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, T) and i.value.state != FREE for i in items)


def _union(groups) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for group in groups:
        for name in group:
            seen.setdefault(name, None)
    return tuple(seen)


def _merge_meta(value: BatchDim, others: list[BatchDim]) -> BatchDim:
    return value.but(mixed=_union([value.mixed] + [o.mixed for o in others]),
                     sources=value.sources.union(*(o.sources for o in others)))


def _unknown_like(values) -> BatchDim:
    values = [v for v in values if v is not None]
    return BatchDim(UNKNOWN, mixed=_union(v.mixed for v in values),
                    sources=frozenset().union(*(v.sources for v in values)) if values else frozenset())


def _dims_text(dims: list[int], ndim: int) -> str:
    if len(dims) == ndim:
        return "every dim"
    return f"dim {dims[0]}" if len(dims) == 1 else "dims (" + ", ".join(map(str, dims)) + ")"
