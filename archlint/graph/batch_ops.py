"""How tensor ops move, keep or mix the batch: the interpreter of graph/batch.py.

One method per family of ops (reshapes, permutes, indexing, concatenation, reductions, softmaxes
and sorts along a dim, losses), reading the op's arguments (tensors replaced by their `BatchDim`
and shape) and the shapes it produced at the analysis batch; layers (convs, norms, matrix
products, attention, recurrences) are `batch_layers`. An op neither knows gives `unknown`,
unless the traced and the rerun shapes show one output dim that holds exactly the batch (the op
is then taken to keep samples apart, which can only hide a mixing, never invent one).
"""
from __future__ import annotations

from typing import Any

from .batch import (AT, FREE, GONE, NO_BATCH, SCRAMBLED, UNKNOWN, BatchDim, BatchFlow, Mixing, Step, T,
                    batch_dim_of, combine, dims_text, reshaped, union, unknown_like)
from .batch_layers import CONVS, LayerTransfers
from .ops import CALLS, Kind

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
SPLITS = frozenset({"chunk", "split", "unbind", "tensor_split", "split_with_sizes",
                    "unsafe_split", "unsafe_chunk"})
CONCATS = frozenset({"cat", "concat", "concatenate", "stack", "hstack", "vstack"})
SELECTS = frozenset({"select", "slice", "narrow", "index_select", "gather", "take_along_dim"})
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


def _base(op: str) -> str:
    """`add_` is `add` that writes its input: the batch moves the same way."""
    return op[:-1] if op.endswith("_") and not op.endswith("__") and op[:-1] else op


# --- the interpreter -------------------------------------------------------------------------------

class Interpreter(LayerTransfers):
    """Follows the batch through `steps` in order, filling `flow`."""

    def __init__(self, flow: BatchFlow, steps: list[Step], example: int,
                 reference: dict[str, list[tuple[int, ...]]] | None, second: bool = False):
        self.flow, self.steps, self.example, self.reference = flow, steps, example, reference
        self.second = second  # (1, 1, ...) inputs read with the batch in dim 1
        self.batch = flow.batch
        self.sizes: dict[str, Any] = {}  # what ops returned when not a tensor: sizes
        self.by_name = {step.name: step for step in steps}

    def run(self) -> None:
        for step in self.steps:
            self.flow.shapes[step.name] = step.out_shapes
            if step.value is not None:
                self.sizes[step.name] = step.value
            try:
                values = self.step(step)
            except Exception as exc:  # arguments this analysis did not expect: quiet, and noted
                self.flow.unknown_ops.append(f"{step.op} ({type(exc).__name__}: {str(exc)[:80]})")
                values = None
            if values is None:
                values = self._unknown(step)
            values = tuple(values)
            if len(values) != len(step.out_shapes):
                values = tuple(unknown_like(self._operand_values(step)) for _ in step.out_shapes)
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
            return [unknown_like(operands) for _ in step.out_shapes]
        out = []
        for i, shape in enumerate(step.out_shapes):
            before = self.reference[step.name][i] if i < len(self.reference[step.name]) else None
            dims = [] if before is None or len(before) != len(shape) else \
                [d for d, (a, b) in enumerate(zip(before, shape)) if a != b]
            if len(dims) == 1 and before[dims[0]] == self.example and shape[dims[0]] == self.batch \
                    and all(v.state == AT for v in live):
                first = live[0]
                home = first.home
                out.append(BatchDim(AT, dims[0], home=home, mixed=union(v.mixed for v in live),
                                    moved=None if dims[0] == home else step.name,
                                    sources=frozenset().union(*(v.sources for v in live))))
            else:
                out.append(unknown_like(operands))
        return out

    def _batch_one_only(self, step: Step, values: tuple[BatchDim, ...]) -> tuple[BatchDim, ...]:
        """Where the output's rank differs between the traced batch and the analysis batch
        (`x.squeeze(0)` of a batch of one), the model treats a batch of one apart: unknown."""
        if self.reference is None or step.name not in self.reference:
            return values
        before = self.reference[step.name]
        if len(before) == len(step.out_shapes) and all(len(a) == len(b) for a, b in zip(before, step.out_shapes)):
            return values
        return tuple(v if v.state == FREE else unknown_like([v]) for v in values)

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
        if base in ("type_as", "to"):
            return [combine(tensors[:1], out[0])]  # the values are the first tensor's
        if base in ELEMENTWISE:
            return [combine(tensors, shape) for shape in out]
        if base in RESHAPES or base in ("expand", "expand_as", "broadcast_to"):
            x = tensors[0]
            if base in ("expand", "expand_as", "broadcast_to"):
                return [combine([x], out[0])]
            value = reshaped(x.value, x.shape, out[0], self.batch, step.name)
            if value.proper and value.dim == 0 and x.value.proper and x.value.dim == 0 and \
                    (base == "flatten" or self._reads_batch_size(step, x.value)):
                self.confirm(step, x.value)  # x.flatten(1), x.view(x.size(0), -1): dim 0 is a batch
            return [value]
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
                    "einsum", "outer", "inner", "ger"):
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
            return [x.value] + [unknown_like([x.value]) for _ in out[1:]]
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
    def _reads_batch_size(self, step: Step, value: BatchDim) -> bool:
        """A reshape whose first size is read off a tensor's batch dim at run time
        (`x.view(x.size(0), -1)`, `x.reshape(x.shape[0], ...)`)."""
        sizes = list(step.args[1:])
        if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
            sizes = list(sizes[0])
        first = sizes[0] if sizes else None
        producer = self.by_name.get(first) if isinstance(first, str) else None
        if producer is None:
            return False
        if producer.op == "size" and producer.args[1:2] == (0,):
            source = producer.args[0]
        elif producer.op == "getitem" and producer.args[1:2] == (0,) and producer.args[0] in self.by_name:
            shape = self.by_name[producer.args[0]]
            if not (shape.op == "getattr" and shape.args[1:2] == ("shape",)) and shape.op != "size":
                return False
            source = shape.args[0]
        else:
            return False
        read = self.flow.values.get(source, ())
        return len(read) == 1 and read[0].proper and read[0].dim == 0 and read[0].sources == value.sources

    def _permute(self, step: Step, op: str, args, kwargs, x: T) -> BatchDim:
        v = x.value
        if v.state != AT:
            return v if v.state in (FREE, GONE, UNKNOWN) else unknown_like([v])
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
            return unknown_like([v])
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
            return [unknown_like([v])]
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
            in_before = sum(1 for i in expanded[:first] if i is not None)
            if v.dim >= in_before or any(isinstance(i, T) and i.value.state != FREE for i in advanced):
                return [unknown_like([v])]
        for item in expanded:
            if item is None:
                out_dim += 1
                continue
            if position == v.dim:
                if isinstance(item, slice) and item == slice(None, None, None):
                    return [v if out_dim == v.dim else v.but(dim=out_dim, moved=v.moved)]
                return [unknown_like([v])]  # a sample or some samples picked out
            if not isinstance(item, int):
                out_dim += 1
            position += 1
        return [unknown_like([v])]

    def _select(self, step: Step, op: str, args, kwargs, tensors: list[T]) -> BatchDim:
        x = tensors[0]
        v = x.value
        if v.state != AT:
            return v if v.state in (FREE, GONE) else unknown_like([v])
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if not isinstance(dim, int):
            return unknown_like([v])
        dim %= x.ndim
        others = [t for t in tensors[1:] if t.value.state != FREE]
        if dim == v.dim:
            if op == "slice":  # aten: slice(x, dim, start, end, step) over the whole dim keeps it
                start = args[2] if len(args) > 2 else 0
                end = args[3] if len(args) > 3 else None
                stride = args[4] if len(args) > 4 else 1
                if start in (0, None) and (end is None or end >= x.shape[dim]) and stride == 1:
                    return v
            return unknown_like([v])
        if others and not (op in ("gather", "take_along_dim") and all(
                t.value.state == AT and (t.value.dim, t.value.inner, t.value.outer) == (v.dim, v.inner, v.outer)
                for t in others)):
            return unknown_like([v])
        if op == "select" and dim < v.dim:
            return v.but(dim=v.dim - 1)
        return v

    def _split(self, step: Step, op: str, args, kwargs, x: T) -> list[BatchDim]:
        v = x.value
        n = len(step.out_shapes)
        if v.state != AT:
            return [v if v.state in (FREE, GONE) else unknown_like([v])] * n
        default = 0
        dim = kwargs.get("dim", args[2] if len(args) > 2 else default)
        if op == "unbind":
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        if not isinstance(dim, int):
            return [unknown_like([v])] * n
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
                out.append(unknown_like([v]))
        return out

    def _concat(self, step: Step, op: str, args, kwargs) -> BatchDim:
        parts = args[0] if args else kwargs.get("tensors")
        if isinstance(parts, T):
            parts = [parts]
        parts = [p for p in (parts or []) if isinstance(p, T)]
        out = step.out_shapes[0]
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        if not isinstance(dim, int) or not parts:
            return unknown_like([p.value for p in parts])
        stack = op == "stack"
        dim %= len(out)
        live = [p for p in parts if p.value.state != FREE]
        if not live:
            return NO_BATCH
        carried = [p for p in live if p.value.state == AT]
        gone = [p for p in live if p.value.state == GONE]
        if len(carried) + len(gone) != len(live) or not carried:
            return unknown_like([p.value for p in parts])
        first = carried[0].value
        position = first.dim + (1 if stack and dim <= first.dim else 0)
        if any((p.value.dim, p.value.inner, p.value.outer) != (first.dim, first.inner, first.outer)
               for p in carried):
            return unknown_like([p.value for p in parts])
        mixed = union(p.value.mixed for p in live)
        sources = frozenset().union(*(p.value.sources for p in live))
        if not stack and dim == first.dim:
            # Batches laid end to end (two views of each image, a cat([x, x])): each index still
            # holds one sample when every part is the same batch, equally merged.
            if gone or len(carried) != len(parts) or len({p.shape[dim] for p in carried}) != 1:
                return unknown_like([p.value for p in parts])
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
            return [unknown_like([v])] * n
        if v.state != AT:
            return [v] * n
        if v.dim in dims:
            what = f"{op} over {dims_text(dims, x.ndim)}"
            mixed = self.mix(step, "reduce", x, what)
            if v.dim == 0 and v.proper and x.ndim >= 3 and set(dims) == set(range(x.ndim)) - {1}:
                # per-channel statistics over the batch and the positions: a hand-written
                # BatchNorm, the designed exception
                self.flow.deliberate.add(step.name)
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
            return [unknown_like([v])] * n
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
            return [unknown_like([t.value for t in tensors])] * len(step.out_shapes)
        mixed = self.mix(step, "loss", live[0], "a loss averaged over the batch")
        return [mixed.but(state=GONE, dim=None)] * len(step.out_shapes)

# --- helpers -------------------------------------------------------------------------------------

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
