"""A: architecture. Nonlinearities, what the model returns, and depth without skips."""
from __future__ import annotations

import ast
from functools import lru_cache

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph import Layer
from archlint.rule import Option, Rule

from ._common import (conv_call, data_dependent, human, is_depthwise, is_dropout, is_identity, is_norm, is_pool,
                      is_shape_op, is_weighted, keeps_linearity, tensor_inputs)

_PLAIN_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _kernel(module) -> tuple[int, ...]:
    k = module.kernel_size
    return tuple(k) if isinstance(k, (tuple, list)) else (k,)


def _linear_kind(layer: Layer) -> str | None:
    """'conv' for a conv with a spatial kernel (some side > 1), 'linear' for nn.Linear."""
    if layer.kind != "module":
        return None
    if isinstance(layer.module, _PLAIN_CONVS) and any(k > 1 for k in _kernel(layer.module)):
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
        data = [p for p in producers if p.out_shapes and p.kind != "attr"]
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
    if layer.kind != "module":
        return None
    if isinstance(layer.module, nn.Linear):
        m = layer.module
        return f"nn.Linear({m.in_features}, {m.out_features}{'' if m.bias is not None else ', bias=False'})"
    if isinstance(layer.module, _PLAIN_CONVS):
        return conv_call(layer.module)
    m = layer.module
    kind = type(m).__name__
    if isinstance(m, nn.modules.batchnorm._BatchNorm) or isinstance(m, nn.modules.instancenorm._InstanceNorm):
        return f"nn.{kind}({m.num_features})"
    if isinstance(m, nn.GroupNorm):
        return f"nn.GroupNorm({m.num_groups}, {m.num_channels})"
    if isinstance(m, nn.LayerNorm):
        shape = m.normalized_shape
        return f"nn.LayerNorm({shape[0] if len(shape) == 1 else tuple(shape)})"
    if isinstance(m, nn.modules.dropout._DropoutNd):
        return f"nn.{kind}({m.p})"
    if type(m).__module__.startswith("torch.nn"):
        return "nn." + repr(m).replace("\n", " ")
    return None  # a user's own module: leave it where it is


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


_SOFTMAX_MODULES = (nn.Softmax, nn.LogSoftmax, nn.Softmax2d)
_SOFTMAX_FUNCTIONS = {"softmax", "log_softmax", "_softmax", "_log_softmax"}


def _is_softmax(layer: Layer) -> bool:
    if layer.kind == "module":
        return isinstance(layer.module, _SOFTMAX_MODULES)
    return layer.kind in ("function", "method") and layer.op in _SOFTMAX_FUNCTIONS


def _is_log(layer: Layer) -> bool:
    return isinstance(layer.module, nn.LogSoftmax) or "log" in layer.op.lower()


def _reshapes_only(layer: Layer) -> bool:
    return is_shape_op(layer) or is_identity(layer) or is_dropout(layer)


def _classifier_of(graph, softmax: Layer) -> Layer | None:
    """The Linear or conv whose scores the softmax normalizes (through pooling and reshapes)."""
    for p in graph.previous_layers(softmax, through=lambda l: _reshapes_only(l) or is_pool(l)):
        if is_weighted(p):
            return p
    return None


@lru_cache(maxsize=128)
def _guarded_lines(path: str) -> tuple[tuple[int, int], ...]:
    """Line ranges of `if` blocks whose condition reads `training` (eval-only code)."""
    try:
        tree = ast.parse(open(path, encoding="utf-8").read())
    except (OSError, SyntaxError, ValueError):
        return ()
    ranges = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.If, ast.IfExp)) and "training" in ast.unparse(node.test):
            ranges.append((node.lineno, node.end_lineno or node.lineno))
    return tuple(ranges)


def _only_at_inference(layer: Layer) -> bool:
    frame = layer.call_frame
    if frame is None or not frame.is_user_code:
        return False
    return any(a <= frame.line <= b for a, b in _guarded_lines(frame.path))


class SoftmaxOutput(Rule):
    code = "A002"
    name = "softmax-output"
    severity = Severity.WARNING
    summary = "The model returns softmax probabilities of a classifier, where losses expect logits."
    what = """
        Finds a Softmax (module, F.softmax, torch.softmax or .softmax()) applied to the scores
        of a Linear or conv classifier and returned as the model's output. A LogSoftmax output
        is reported as information only: it is right for nn.NLLLoss and harmless, if
        redundant, under nn.CrossEntropyLoss. Quiet when the model also returns the logits
        themselves, or when the softmax sits under an `if` on `self.training` (applied only
        at inference).
        """
    why = """
        nn.CrossEntropyLoss (and F.cross_entropy, and BCEWithLogitsLoss for the sigmoid case)
        applies log-softmax itself. Fed probabilities, it takes the softmax of a softmax:
        every input lies in [0, 1], so the probabilities it computes differ by a factor of at
        most e, the loss can never approach zero, and gradients shrink as the network grows
        confident. The
        model trains slowly or stalls, with no error to point at the cause. Returning
        probabilities also loses precision compared with working in log space.
        """
    how_to_fix = """
        Return the logits from forward and apply softmax where probabilities are needed (at
        inference, in metrics). If the model must return probabilities when deployed, apply
        softmax only when `not self.training`.
        """
    references = (
        "PyTorch docs, CrossEntropyLoss: 'The input is expected to contain the unnormalized logits for each class' (https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html)",
        "PyTorch docs, LogSoftmax / NLLLoss",
    )
    options = {}
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(16, 10), nn.Softmax(dim=1),
        )
        example_input = torch.randn(1, 3, 32, 32)
        """,
        """
        import torch
        from torch import nn
        import torch.nn.functional as F

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(32, 5)

            def forward(self, x):
                return F.softmax(self.fc(x), dim=-1)

        model = Net()
        example_input = torch.randn(2, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                              nn.AdaptiveAvgPool2d(1), nn.Flatten())
                self.fc = nn.Linear(16, 10)

            def forward(self, x):
                logits = self.fc(self.features(x))
                if not self.training:
                    return logits.softmax(dim=1)  # probabilities only at inference
                return logits

        model = Net()
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        for out in graph.outputs:
            returned = graph.previous_layers(out, through=_reshapes_only)
            returned_names = {l.name for l in returned}
            for softmax in returned:
                if not _is_softmax(softmax) or _only_at_inference(softmax):
                    continue
                classifier = _classifier_of(graph, softmax)
                if classifier is None or classifier.name in returned_names:
                    continue
                yield self._report(softmax, classifier)

    def _report(self, softmax: Layer, classifier: Layer):
        log = _is_log(softmax)
        name = "LogSoftmax" if log else "Softmax"
        fn = "log_softmax" if log else "softmax"
        dim = softmax.kwargs.get("dim", getattr(softmax.module, "dim", None))
        if dim is None and len(softmax.args) > 1 and isinstance(softmax.args[1], int):
            dim = softmax.args[1]
        dim = 1 if dim is None else dim
        code = (f"# in forward: return the scores of {classifier.qualname} without the {name}\n"
                f"# where probabilities are needed:\n"
                f"probs = torch.{fn}(model(x), dim={dim})")
        if log:
            message = (f"the model returns LogSoftmax of {classifier.qualname}: right for nn.NLLLoss, "
                       "redundant under nn.CrossEntropyLoss, which applies log-softmax itself")
            return self.finding(
                softmax, message,
                evidence={"function": name, "classifier": classifier.qualname, "dim": dim},
                fix=Fix("keep it if you train with nn.NLLLoss; with nn.CrossEntropyLoss return the logits", code),
                severity=Severity.INFO, prefer="call",
            )
        return self.finding(
            softmax,
            f"the model returns Softmax of {classifier.qualname}: nn.CrossEntropyLoss expects logits and "
            "would apply softmax a second time, capping confidence and shrinking gradients",
            evidence={"function": name, "classifier": classifier.qualname, "dim": dim},
            fix=Fix("return the logits and apply softmax only where probabilities are needed", code),
            prefer="call",
        )


class DeepPlainStack(Rule):
    code = "A003"
    name = "deep-plain-stack"
    severity = Severity.WARNING
    summary = "More than 20 weighted layers in a row with no skip connection or merge."
    what = """
        Finds the longest chains of convolutions and Linear layers through which the data
        flows one layer after the other, with no residual addition, concatenation or other
        merge of two branches along the way, and reports a chain longer than
        `max-plain-depth` weighted layers (VGG-16's 16 are allowed). Normalization,
        activation, pooling and reshapes do not count as layers and do not break a chain; a
        depthwise conv and the pointwise conv after it count as one layer.
        """
    why = """
        Plain networks get worse as they get deeper past a point, and not from overfitting:
        He et al. found a 56-layer plain network had higher *training* error than a 20-layer
        one, with batch normalization in both, so not from vanishing gradients either: the
        deeper plain stack is harder to optimize. A skip connection gives every block an
        identity path, so extra blocks only have to learn a correction (or nothing) rather
        than a whole mapping; ResNets train well at 152 layers and beyond.
        """
    how_to_fix = """
        Group the layers into residual blocks (y = x + F(x), with a 1x1 projection on the
        shortcut where shapes change), or make the stack shallower.
        """
    references = (
        "He et al., Deep Residual Learning for Image Recognition, CVPR 2016 (https://arxiv.org/abs/1512.03385)",
        "AI Summer, Intuitive Explanation of Skip Connections in Deep Learning (https://theaisummer.com/skip-connections/)",
    )
    options = {"max-plain-depth": Option(20, "longest allowed chain of weighted layers with no skip or merge")}
    bad = (
        """
        import torch
        from torch import nn

        layers = [nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()]
        for _ in range(24):
            layers += [nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()]
        model = nn.Sequential(*layers)
        example_input = torch.randn(1, 3, 16, 16)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        class Residual(nn.Module):
            def __init__(self, c):
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                          nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))

            def forward(self, x):
                return torch.relu(x + self.body(x))

        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), *[Residual(16) for _ in range(12)])
        example_input = torch.randn(1, 3, 16, 16)
        """,
    )

    def check(self, graph, ctx):
        limit = ctx["max-plain-depth"]
        for count, first, last in longest_plain_chains(graph):
            if count > limit:
                yield self._report(graph, count, first, last, limit)

    def _report(self, graph, count, first, last, limit):
        code = _residual_code(first)
        return self.finding(
            last,
            f"{count} weighted layers run in series from {first.qualname} to {last.qualname} with no skip "
            f"connection or merge (limit {limit}): deep plain stacks train worse than shallow ones",
            evidence={"plain_depth": count, "limit": limit, "first": first.qualname, "last": last.qualname},
            fix=Fix("wrap groups of two or three layers in residual blocks (y = x + F(x))", code),
        )


def _counts_as_layer(layer: Layer) -> bool:
    """Convs and Linear layers; a depthwise conv and the pointwise conv after it count once,
    as the one factorized conv they are (MobileNet)."""
    return is_weighted(layer) and not (layer.kind == "module" and is_depthwise(layer.module))


def longest_plain_chains(graph) -> list[tuple[int, Layer, Layer]]:
    """(weighted layers, first, last) of the longest plain chain starting at each chain
    start, found in one pass in execution order: a layer with one data input extends its
    producer's chain, a merge (two or more data inputs) starts a new one."""
    dependent = data_dependent(graph)
    state: dict[str, tuple[int, Layer | None, Layer | None]] = {}
    best: dict[str, tuple[int, Layer, Layer]] = {}
    for layer in graph:
        if layer.name not in dependent:
            continue
        producers = tensor_inputs(graph, layer, dependent)
        count, first, last = state.get(producers[0].name, (0, None, None)) if len(producers) == 1 else (0, None, None)
        if _counts_as_layer(layer):
            count, first, last = count + 1, first or layer, layer
        state[layer.name] = (count, first, last)
        if first is not None and count > best.get(first.name, (0,))[0]:
            best[first.name] = (count, first, last)
    return sorted(best.values(), key=lambda item: -item[0])


def _residual_code(first: Layer) -> str:
    shape = first.out_shape
    if isinstance(first.module, nn.Linear) or not shape or len(shape) < 3:
        width = first.module.out_features if isinstance(first.module, nn.Linear) else 64
        body = "nn.Linear(c, c), nn.ReLU(inplace=True),\n            nn.Linear(c, c)"
    else:
        width, n = shape[1], len(shape) - 2
        body = (f"nn.Conv{n}d(c, c, 3, padding=1, bias=False), nn.BatchNorm{n}d(c), nn.ReLU(inplace=True),\n"
                f"            nn.Conv{n}d(c, c, 3, padding=1, bias=False), nn.BatchNorm{n}d(c)")
    return (
        "class Residual(nn.Module):\n"
        "    def __init__(self, c):\n"
        "        super().__init__()\n"
        f"        self.body = nn.Sequential(\n            {body},\n        )\n\n"
        "    def forward(self, x):\n"
        "        return torch.relu(x + self.body(x))\n\n"
        f"# replace each pair of {width}-wide layers in the chain by Residual({width})"
    )
