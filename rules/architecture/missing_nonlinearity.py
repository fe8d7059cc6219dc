"""A001 missing-nonlinearity: two linear layers in a row that compose into one linear map."""
from __future__ import annotations

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph import Layer
from archlint.graph.ops import (BATCH_NORM_TYPES, CONV_TYPES, DROPOUT_TYPES, INSTANCE_NORM_TYPES,
                                Kind, is_norm, keeps_linearity)
from archlint.rule import Rule

from ..helpers import conv_call, human


class MissingNonlinearity(Rule):
    code = "A001"
    name = "missing-nonlinearity"
    severity = Severity.WARNING
    summary = "Two convs (k > 1) or two Linear layers in a row with no activation between collapse into one."
    what = """
        Finds two convolutions with spatial kernels (some side > 1), or two Linear layers,
        where the output of the first reaches the second through nothing but normalization,
        dropout, identities and reshapes, and nothing else reads the tensors in between (a
        tensor that a shortcut also reads is a representation of its own). Left alone: a
        1x1 conv on either side (a depthwise kxk followed by a pointwise 1x1 is a
        factorization, and MobileNetV2's linear bottleneck projects with a 1x1 on purpose),
        a 1xk conv followed by a kx1 one, and two Linear layers with a narrower middle (a
        low-rank bottleneck). Attention's qkv and output projections are separated by the
        attention itself, so they are not in a row.
        """
    why = """
        Batch normalization and dropout are affine at inference time, so the pair computes
        one linear map: two 3x3 convs equal one 5x5 conv, two Linear layers equal one Linear.
        (Layer and group normalization only rescale each sample or group as a whole; no
        design relies on that for expressiveness.) The second layer adds parameters, compute
        and depth but no expressive power, and expressive power is the point of stacking
        small filters (CS231n: 'with non-linearities in between, of course'). It is usually a
        forgotten activation.
        """
    how_to_fix = """
        Put an activation (ReLU, GELU, SiLU) after the normalization between the two layers.
        If a single linear map is what you want, use one layer: a conv with the combined
        kernel, or one Linear.
        """
    references = (
        "CS231n, Convolutional Networks: stacks of small filters 'with non-linearities in between, of course' (https://cs231n.github.io/convolutional-networks/)",
        "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018 (where leaving the activation out is deliberate)",
    )
    options = {}
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32),   # no activation
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )
        example_input = torch.randn(1, 3, 32, 32)
        """,
        """
        import torch
        from torch import nn

        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.Dropout(0.2), nn.Linear(512, 10))
        example_input = torch.randn(1, 1, 28, 28)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32),  # depthwise ...
            nn.Conv2d(32, 64, 1), nn.BatchNorm2d(64), nn.ReLU(),              # ... then pointwise: fine
            nn.Conv2d(64, 64, (1, 7), padding=(0, 3)),                         # 1x7 then 7x1: a factorization
            nn.Conv2d(64, 64, (7, 1), padding=(3, 0)), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * 32 * 32, 32), nn.Linear(32, 64 * 4),  # narrower middle: low rank
        )
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        for first in graph:
            kind = _linear_kind(first)
            if kind is None:
                continue
            for second in graph.next_layers(first, through=keeps_linearity):
                if _linear_kind(second) != kind or second.module is first.module:
                    continue
                path = _between(graph, first, second)
                if path is None:
                    continue
                if kind == "conv":
                    if _is_factorized(first, second) or not _same_axis(first, path, 1):
                        continue
                    yield self._conv_finding(first, second, path)
                else:
                    a, b, c = first.module.in_features, first.module.out_features, second.module.out_features
                    if b < min(a, c) or not _same_axis(first, path, -1):
                        continue  # a bottleneck: the pair is a deliberate low-rank factorization
                    yield self._linear_finding(first, second, path)

    def _fix(self, first, second, path, activation: str) -> Fix:
        # The activation goes after the last norm (conv-BN-ReLU), before any dropout.
        norms = [i for i, l in enumerate(path) if is_norm(l)]
        cut = norms[-1] + 1 if norms else 0
        after = path[cut - 1] if cut else first
        lines = [_module_code(first)] + [c for c in map(_module_code, path[:cut]) if c]
        lines.append(f"{activation},  # the missing nonlinearity")
        lines += [c for c in map(_module_code, path[cut:]) if c] + [_module_code(second)]
        code = "nn.Sequential(\n" + "".join(
            f"    {line}\n" if line.endswith("nonlinearity") else f"    {line},\n" for line in lines) + ")"
        return Fix(f"add an activation after {after.qualname or after.op}, before {second.qualname}", code)

    def _joined_by(self, path) -> str:
        names = [l.op for l in path]
        return f"are joined by {', '.join(names)} only" if names else "follow each other directly"

    def _conv_finding(self, first, second, path):
        k1, k2 = _kernel(first.module), _kernel(second.module)
        s1 = first.module.stride if isinstance(first.module.stride, tuple) else (first.module.stride,) * len(k1)
        combined = tuple(a + (b - 1) * s for a, b, s in zip(k1, k2, s1))
        text = lambda k: "x".join(map(str, k))  # noqa: E731
        return self.finding(
            second,
            f"{first.qualname} ({text(k1)}) and {second.qualname} ({text(k2)}) "
            f"{self._joined_by(path)}: together one linear {text(combined)} conv, no more expressive "
            f"than a single layer ({human(first.params + second.params)} weights)",
            evidence={"first": first.qualname, "second": second.qualname, "between": [l.op for l in path],
                      "kernels": [list(k1), list(k2)], "combined_kernel": list(combined),
                      "params": first.params + second.params},
            fix=self._fix(first, second, path, "nn.ReLU(inplace=True)"),
        )

    def _linear_finding(self, first, second, path):
        a, b, c = first.module.in_features, first.module.out_features, second.module.out_features
        single = a * c + (c if second.module.bias is not None else 0)
        return self.finding(
            second,
            f"{first.qualname} ({a}->{b}) and {second.qualname} ({b}->{c}) "
            f"{self._joined_by(path)}: their product is one {a}->{c} linear map "
            f"({human(first.params + second.params)} weights where {human(single)} would do)",
            evidence={"first": first.qualname, "second": second.qualname, "between": [l.op for l in path],
                      "features": [a, b, c], "params": first.params + second.params, "params_single": single},
            fix=self._fix(first, second, path, "nn.GELU()" if len(first.out_shape) >= 3 else "nn.ReLU(inplace=True)"),
        )


def _kernel(module) -> tuple[int, ...]:
    k = module.kernel_size
    return tuple(k) if isinstance(k, (tuple, list)) else (k,)


def _linear_kind(layer: Layer) -> str | None:
    """'conv' for a conv with a spatial kernel (some side > 1), 'linear' for nn.Linear."""
    if layer.kind != Kind.MODULE:
        return None
    if isinstance(layer.module, CONV_TYPES) and any(k > 1 for k in _kernel(layer.module)):
        return "conv"
    if isinstance(layer.module, nn.Linear):
        return "linear"
    return None


def _between(graph, first: Layer, second: Layer) -> list[Layer] | None:
    """The layers on the path from `first` to `second`, or None unless that path is all the
    intermediate tensors are for. A tensor that a shortcut also reads (ConvNeXt's block
    input after its downsampling conv) is a representation in its own right, not a step
    inside one linear map."""
    path = []
    current = second
    while True:
        producers = graph.predecessors(current)
        data = [p for p in producers if p.out_shapes and p.kind != Kind.ATTR]
        if len(data) != 1 or len(_tensor_consumers(graph, data[0])) != 1:
            return None
        p = data[0]
        if p is first:
            return list(reversed(path))
        if not keeps_linearity(p):
            return None
        path.append(p)
        current = p


def _tensor_consumers(graph, layer: Layer) -> list[Layer]:
    """Consumers that compute a tensor from it (not x.shape or x.size())."""
    return [s for s in graph.successors(layer) if s.out_shapes]


def _is_factorized(first, second) -> bool:
    """1xk then kx1 (or the reverse): a deliberate low-rank factorization of a kxk kernel."""
    a, b = _kernel(first.module), _kernel(second.module)
    if len(a) != 2 or len(b) != 2:
        return False
    return (a[0] == 1) != (a[1] == 1) and (b[0] == 1) != (b[1] == 1) and (a[0] == 1) != (b[0] == 1)


def _same_axis(first: Layer, path: list[Layer], axis: int) -> bool:
    """Whether the features the first layer produced stay on the axis the second reads."""
    width = first.out_shape[axis] if first.out_shape else None
    for layer in path:
        shape = layer.out_shape
        if shape is None or len(shape) != len(first.out_shape) or shape[axis] != width:
            return False
    return True


def _module_code(layer: Layer) -> str | None:
    if layer.kind != Kind.MODULE:
        return None
    if isinstance(layer.module, nn.Linear):
        m = layer.module
        return f"nn.Linear({m.in_features}, {m.out_features}{'' if m.bias is not None else ', bias=False'})"
    if isinstance(layer.module, CONV_TYPES):
        return conv_call(layer.module)
    m = layer.module
    kind = type(m).__name__
    if isinstance(m, (*BATCH_NORM_TYPES, *INSTANCE_NORM_TYPES)):
        return f"nn.{kind}({m.num_features})"
    if isinstance(m, nn.GroupNorm):
        return f"nn.GroupNorm({m.num_groups}, {m.num_channels})"
    if isinstance(m, nn.LayerNorm):
        shape = m.normalized_shape
        return f"nn.LayerNorm({shape[0] if len(shape) == 1 else tuple(shape)})"
    if isinstance(m, DROPOUT_TYPES):
        return f"nn.{kind}({m.p})"
    if type(m).__module__.startswith("torch.nn"):
        return "nn." + repr(m).replace("\n", " ")
    return None  # a user's own module: leave it where it is
