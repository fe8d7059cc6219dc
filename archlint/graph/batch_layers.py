"""How layers move, keep or mix the batch: matrix products, convolutions, pools and resizes,
norms, embeddings, attention and recurrences, as functions and as torch.nn modules.

`LayerTransfers` is the part of graph/batch_ops.py's interpreter that reads layers: each
method gets the layer's tensor arguments (`T`: a `BatchDim` and a shape at the analysis batch)
and returns the batch of each of its outputs, recording a mixing where the layer contracts,
normalizes, pools or attends over a dim that holds the batch, and a confirmation where it reads
the input's batch as its own batch dim (a conv's or norm's N, a batch-first RNN's batch).
"""
from __future__ import annotations

import re
import string

from torch import nn

from .batch import (AT, FREE, GONE, NO_BATCH, SCRAMBLED, UNKNOWN, BatchDim, Step, T, combine, dims_text,
                    merge_meta, reshaped, union, unknown_like)
from .ops import (ACTIVATION_TYPES, BATCH_NORM_TYPES, DROPOUT_TYPES, IDENTITY_TYPES, INSTANCE_NORM_TYPES,
                  PAD_TYPES, POOL_TYPES, UPSAMPLE_TYPES, Kind)

CONVS = {"conv1d": 1, "conv2d": 2, "conv3d": 3, "conv_transpose1d": 1, "conv_transpose2d": 2,
         "conv_transpose3d": 3}
ELEMENTWISE_MODULES = ACTIVATION_TYPES + DROPOUT_TYPES + (nn.Identity, nn.Softplus, nn.Hardshrink,
                                                         nn.Softshrink, nn.RReLU)
SOFTMAX_MODULES = (nn.Softmax, nn.LogSoftmax, nn.Softmin)
RESAMPLE_MODULES = tuple(t for t in UPSAMPLE_TYPES if not issubclass(t, nn.modules.conv._ConvNd)) + (
    nn.PixelUnshuffle, nn.ChannelShuffle, nn.Fold, nn.Unfold)


class LayerTransfers:
    """The layer methods of the batch interpreter (graph/batch_ops.Interpreter)."""

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
        return None

    def _matmul_like(self, step: Step, a: T, b: T | None, out: tuple[int, ...],
                     contract_last: bool = False) -> BatchDim:
        """a @ b (b None: a's last dim contracted with a weight, as a Linear)."""
        va = a.value
        vb = b.value if b is not None else NO_BATCH
        for t in (a, b):
            if t is not None and t.value.state in (SCRAMBLED, UNKNOWN):
                return unknown_like([va, vb])
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
                return merge_meta(mixed.but(state=GONE, dim=None), others)
        if len(where) == 1:
            kind, t, position = where[0]
            v = t.value
            return v.but(dim=position, moved=v.moved if position == v.dim else
                         (None if position == v.home and v.inner == v.outer == 1 else step.name),
                         mixed=union([va.mixed, vb.mixed]), sources=va.sources | vb.sources)
        (k1, t1, p1), (k2, t2, p2) = where
        if k1 == k2 == "batch" and p1 == p2 and (t1.value.inner, t1.value.outer) == (t2.value.inner, t2.value.outer):
            self.confirm(step, t1.value)
            self.confirm(step, t2.value)
            v = t1.value
            return v.but(dim=p1, mixed=union([va.mixed, vb.mixed]),
                         sources=va.sources | vb.sources)
        # Rows of one sample against columns of another (a similarity matrix across the batch,
        # a contrastive loss's logits): every pair, on purpose.
        return unknown_like([va, vb])

    def _einsum(self, step: Step, args, tensors: list[T]) -> BatchDim:
        equation = args[0] if args and isinstance(args[0], str) else None
        if equation is None:
            return unknown_like([t.value for t in tensors])
        equation = equation.replace(" ", "")
        if "->" in equation:
            lhs, rhs = equation.split("->")
        else:
            lhs = equation
            letters = [c for c in lhs if c.isalpha()]
            rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
        terms = lhs.split(",")
        if len(terms) != len(tensors):
            return unknown_like([t.value for t in tensors])
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
                return unknown_like([x.value for x in tensors])
            if v.state == AT:
                if v.dim >= len(term):
                    return unknown_like([x.value for x in tensors])
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
            return unknown_like([t.value for _, t in carried])
        letter, first = carried[0]
        if len(carried) > 1:
            for _, t in carried:
                self.confirm(step, t.value)
        position = rhs.index(letter)
        v = first.value
        moved = v.moved if position == v.dim else (None if position == v.home and v.inner == v.outer == 1 else step.name)
        return v.but(dim=position, moved=moved, mixed=union(t.value.mixed for t in tensors),
                     sources=frozenset().union(*(t.value.sources for t in tensors)))

    def _sdpa(self, step: Step, tensors: list[T]) -> list[BatchDim] | None:
        q, k, v = (tensors + [None] * 3)[:3]
        if v is None:
            return None
        values = [q.value, k.value, v.value]
        if any(x.state in (SCRAMBLED, UNKNOWN) for x in values):
            return [unknown_like(values)] * len(step.out_shapes)
        for t, mixing_dims in ((q, (q.ndim - 1,)), (k, (k.ndim - 2, k.ndim - 1)), (v, (v.ndim - 2,))):
            if t.value.state == AT and t.value.dim in mixing_dims:
                mixed = self.mix(step, "attend", t, f"attention over dim {t.value.dim}")
                if t is k and t.value.dim == k.ndim - 2 and q.value.state == AT and q.value.dim == q.ndim - 2:
                    return [mixed] + [unknown_like([mixed])] * (len(step.out_shapes) - 1)
                return [mixed.but(state=UNKNOWN, dim=None)] * len(step.out_shapes)
        carried = [t for t in (q, k, v) if t.value.state == AT]
        if not carried:
            return [NO_BATCH] * len(step.out_shapes)
        out = step.out_shapes[0]
        positions = {t.value.dim + len(out) - t.ndim for t in carried}
        layouts = {(t.value.inner, t.value.outer) for t in carried}
        if len(positions) != 1 or len(layouts) != 1:
            return [unknown_like(values)] * len(step.out_shapes)
        if len(carried) > 1:
            for t in carried:
                self.confirm(step, t.value)
        first = carried[0].value
        value = first.but(dim=positions.pop(), mixed=union(x.mixed for x in values),
                          sources=frozenset().union(*(x.sources for x in values)))
        return [value] + [unknown_like(values) for _ in step.out_shapes[1:]]

    def _conv(self, step: Step, x: T, weight: T | None, groups: int, spatial: int, transposed: bool,
              out: tuple[int, ...], kernel: tuple[int, ...] | None) -> BatchDim:
        v = x.value
        w = weight.value if weight is not None else NO_BATCH
        if v.state in (SCRAMBLED, UNKNOWN) or w.state in (SCRAMBLED, UNKNOWN, GONE):
            return unknown_like([v, w])
        batched = x.ndim == spatial + 2
        channel_dim = 1 if batched else 0
        if v.state == FREE and w.state == FREE:
            return NO_BATCH
        if v.state == GONE:
            return v if w.state == FREE else unknown_like([v, w])
        out_channels = out[channel_dim] if len(out) > channel_dim else None
        if v.state == AT and batched and v.dim == 0:
            if w.state != FREE:
                return unknown_like([v, w])
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
                        return unknown_like([v, w])
                return v.but(inner=inner, outer=max(1, out_channels // (self.batch * inner)),
                             mixed=union([v.mixed, w.mixed]))
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
        return unknown_like([v, w])

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
            return v if v.state in (FREE, GONE) else unknown_like([v])
        first_spatial = x.ndim - spatial
        if v.dim < first_spatial:
            if v.dim == 0 and x.ndim == spatial + 2:
                self.confirm(step, v)
            return v
        axis = v.dim - first_spatial
        if shrinks and kernel is not None and axis < len(kernel) and kernel[axis] > 1:
            mixed = self.mix(step, "pool", x, f"pooling along dim {v.dim}")
            return mixed.but(state=GONE, dim=None)
        return unknown_like([v])

    def _spatial_call(self, step: Step, op: str, args, kwargs, tensors: list[T]) -> list[BatchDim] | None:
        x = tensors[0]
        n = len(step.out_shapes)
        if op in ("roll", "flip"):
            v = x.value
            dims = kwargs.get("dims", args[2] if op == "roll" and len(args) > 2 else args[1] if len(args) > 1 else None)
            dims = self._dims(dims, x.ndim) if dims is not None else None
            if v.state == AT and dims is not None and v.dim not in dims:
                return [v]
            return [v if v.state in (FREE, GONE) else unknown_like([v])]
        if op in ("pad", "constant_pad_nd", "_patch_merging_pad") or op.startswith(("reflection_pad", "replication_pad")):
            pads = args[1] if len(args) > 1 else kwargs.get("pad")
            v = x.value
            if v.state != AT:
                return [v if v.state in (FREE, GONE) else unknown_like([v])]
            if isinstance(pads, (list, tuple)):
                # pads cover the last len(pads) // 2 dims; sizes read at run time are node names
                if v.dim < x.ndim - len(pads) // 2:
                    return [v]
                if all(isinstance(p, int) for p in pads):
                    touched = {x.ndim - 1 - i // 2 for i, p in enumerate(pads) if p}
                    return [v if v.dim not in touched else unknown_like([v])]
                return [unknown_like([v])]
            if op == "_patch_merging_pad" and v.dim == 0:
                return [v]
            return [unknown_like([v])]
        if op in ("grid_sample", "grid_sampler", "grid_sampler_2d"):
            # Each (sample, channel) plane read at its sample's grid points: the batch of the
            # input and of the grid, dim 0 of both.
            grid = tensors[1] if len(tensors) > 1 else None
            vs = [t.value for t in (x, grid) if t is not None and t.value.state != FREE]
            if vs and all(t.state == AT and t.dim == 0 for t in vs) and \
                    len({(t.inner, t.outer) for t in vs}) == 1:
                for t in vs:
                    self.confirm(step, t)
                return [vs[0].but(mixed=union(t.mixed for t in vs))]
            return [unknown_like(vs)]
        match = re.search(r"(\d)d", op)
        spatial = int(match.group(1)) if match else max(x.ndim - 2, 1)
        if op in ("pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "unfold", "fold"):
            v = x.value
            if v.state == AT and v.dim == 0 and x.ndim >= 3:
                self.confirm(step, v)
                return [v]
            return [v if v.state in (FREE, GONE) else unknown_like([v])]
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
            return v if v.state in (FREE, GONE) else unknown_like([v])
        if v.dim in dims:
            return self.mix(step, "normalize", x, what)
        return v

    def _group_norm(self, step: Step, x: T, groups: int) -> BatchDim:
        v = x.value
        if v.state != AT:
            return v if v.state in (FREE, GONE) else unknown_like([v])
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
            value = self._norm(step, x, dims, f"LayerNorm over {dims_text(dims, x.ndim)}")
            return [value] + [unknown_like([value])] * (n - 1)
        if op in ("group_norm", "native_group_norm"):
            groups = kwargs.get("num_groups", args[1] if len(args) > 1 and op == "group_norm" else
                                args[6] if len(args) > 6 else None)
            if not isinstance(groups, int):
                return None
            value = self._group_norm(step, x, groups)
            return [value] + [unknown_like([value])] * (n - 1)
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
        return [unknown_like([t.value])]

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
            return [self._norm(step, x, dims, f"LayerNorm over {dims_text(dims, x.ndim)}")]
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
                return [v if v.dim not in touched else unknown_like([v])]
            return [v if v.state in (FREE, GONE) else unknown_like([v])]
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
            return [v if v.state != AT or v.dim != m.dim % x.ndim else unknown_like([v])]
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
                self.confirm(step, v)  # an RNN cell's input is (N, features)
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
            return [unknown_like(values)] * outputs
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
                    return [mixed] + [unknown_like([mixed])] * (outputs - 1)
                return [mixed.but(state=UNKNOWN, dim=None)] * outputs
        carried = [t.value for t in tensors if t.value.state == AT]
        if not carried:
            return [NO_BATCH] * outputs
        if len({(v.inner, v.outer) for v in carried}) != 1:
            return [unknown_like(values)] * outputs
        for v in carried:
            self.confirm(step, v)
        first = carried[0].but(mixed=union(v.mixed for v in values),
                               sources=frozenset().union(*(v.sources for v in values)))
        result = [first]
        if outputs > 1:  # attention weights: (N, L, S) or (N, H, L, S)
            result += [first.but(dim=0, moved=None if first.home == 0 else step.name)
                       if len(step.out_shapes[1]) >= 3 else unknown_like([first])]
            result += [unknown_like([first])] * (outputs - 2)
        return result

    def _recurrent(self, step: Step, x: T, batch_first: bool, outputs: int) -> list[BatchDim]:
        v = x.value
        if v.state != AT:
            return [v if v.state in (FREE, GONE) else unknown_like([v])] * outputs
        if x.ndim != 3:
            mixed = self.mix(step, "recur", x, f"a recurrence over dim {v.dim} (an unbatched input)")
            return [mixed.but(state=UNKNOWN, dim=None)] * outputs
        batch_dim = 0 if batch_first else 1
        if v.dim != batch_dim:
            what = "time" if v.dim == 1 - batch_dim else "the features"
            mixed = self.mix(step, "recur", x, f"a recurrence over dim {v.dim}, which it reads as {what} "
                                               f"(batch_first={batch_first})")
            if v.dim == 1 - batch_dim:  # each time step's output keeps its place
                return [mixed] + [unknown_like([mixed])] * (outputs - 1)
            return [mixed.but(state=UNKNOWN, dim=None)] * outputs
        self.confirm(step, v)
        # output keeps the input's layout; h_n and c_n are (layers * directions, N, H)
        state = v.but(dim=1, moved=None if v.home == 1 and v.inner == v.outer == 1 else step.name)
        return [v] + [state] * (outputs - 1)


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
