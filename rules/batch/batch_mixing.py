"""B001 batch-mixing: an op that mixes the samples of a batch the model should keep apart."""
from __future__ import annotations

import math

import torch
from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph import Layer
from archlint.graph.batch import AT, GONE, SCRAMBLED, BatchDim, BatchFlow, Mixing, batch_flow, reshaped
from archlint.graph.ops import CALLS, Kind, is_conv, is_pool, is_upsampling
from archlint.rule import Option, Rule

from ..helpers import shape_text

# What each kind of mixing does to a sample's output, said once.
_CONSEQUENCE = {
    "softmax": "each sample's scores are normalized against the other samples' instead of its own classes",
    "reduce": "a statistic of the whole batch reaches every sample's output",
    "normalize": "each sample is normalized with statistics that include the other samples",
    "contract": "it sums over the samples of the batch",
    "conv": "the convolution sums over the samples of the batch",
    "pool": "pooling combines neighbouring samples",
    "attend": "each sample attends to the other samples of the batch",
    "recur": "the recurrence carries state from one sample into the next",
    "sort": "the samples are ranked against each other",
    "cumulate": "each sample accumulates the samples before it",
    "normalize-vector": "each sample is scaled by a norm taken over the batch",
}
_RESHAPES = frozenset({"view", "reshape", "_unsafe_view", "flatten"})
_PERMUTES = frozenset({"permute", "transpose", "t", "swapaxes", "swapdims", "movedim", "moveaxis"})
_SOFTMAXES = {"softmax": "softmax", "_softmax": "softmax", "log_softmax": "log_softmax",
              "_log_softmax": "log_softmax", "softmin": "softmin"}


class BatchMixing(Rule):
    code = "B001"
    name = "batch-mixing"
    severity = Severity.WARNING
    summary = "An op mixes the samples of a batch: one sample's output depends on the others."
    what = """
        Follows the batch through the traced forward pass and finds the ops that combine the
        values of different samples where the model's outputs are per sample: a softmax,
        log-softmax, sort or cumulative sum over the batch dim; a mean, sum, max, var or any
        other reduction over it whose result flows back into each sample's output; a
        LayerNorm, GroupNorm or InstanceNorm whose statistics span it; a Linear, matrix product,
        einsum, convolution, attention or RNN that contracts or runs over it (nn.MultiheadAttention
        or nn.LSTM with the default batch_first=False fed a batch-first tensor); a view or
        reshape that merges the batch into the features or splits it, so that the model's
        output batch is not its input batch (`x.view(-1)`, `x.view(1, -1)`) or the model works
        with a batch of one only; and a transpose or permute that moves the batch into the
        features of a later contraction.

        A trace with a batch of one cannot tell the batch from any other size-1 dim, so the
        forward is run again on meta tensors with a batch of two, only for this rule, and the
        batch is followed op by op (archlint/graph/batch.py): a dim can carry the batch merged
        with heads or windows (`(B*H, N, D)` in multi-head attention, `(B*nW, ...)` in Swin's
        window partition) and be split back, which is not mixing as long as nothing reduces
        over that dim. Ops it cannot follow make it quiet, not loud.

        Left alone: BatchNorm and SyncBatchNorm, which use batch statistics by design, and the
        same statistics written by hand (a mean or var per channel over the batch and the
        positions, dims (0, 2, 3)); statistics of the batch concatenated as extra features (minibatch discrimination,
        ProGAN's minibatch standard deviation); a loss computed in forward (its output has no
        batch); similarity matrices across the batch (contrastive logits `q @ k.T`); indexing
        with a permutation (mixup). An output that keeps no batch axis after a reduction over
        the samples (`logits.mean(0)`: a set's embedding, class prototypes) is information,
        not a warning. The finding is a warning when a layer of the model reads dim 0 of the
        input as its batch (a conv, pool or norm, a batch-first attention or RNN, a batched
        matmul, `flatten(1)`); otherwise dim 0 may be nodes of a graph or instances of a bag,
        and the finding says info (option `unconfirmed`).
        """
    why = """
        Training and evaluation assume that a model maps each sample on its own: minibatch
        SGD averages per-sample gradients as independent estimates, and a model evaluated one
        image at a time must give what it gave inside a batch. An op that mixes samples breaks
        both silently: the model can read the labels of other samples through the batch (a
        softmax over dim 0 of the logits is normalized across samples, so a sample's
        "probability" depends on which samples share its batch), its accuracy changes with the
        batch size and order, and at inference with a batch of one it sees a different input
        distribution. Nothing fails: the shapes are the same, the loss goes down. The common
        causes are an axis slip (`dim=0` for `dim=1`, `mean(0)` for `mean(1)`, a softmax with
        no dim on a 3-D tensor, which PyTorch takes as dim 0), a `view`/`reshape` used where
        a `permute` was meant, `x.view(-1)` where `x.view(x.size(0), -1)` was meant (which
        runs only with a batch of one), and batch-first tensors fed to layers whose default is
        sequence-first. Karpathy's recipe checks exactly this: make the loss depend on sample i
        only and see that the gradient reaches input i only. BatchNorm is the designed
        exception: it normalizes with the batch's statistics in training and with running
        statistics at inference (Ioffe & Szegedy).
        """
    how_to_fix = """
        Take softmaxes, norms and reductions over the feature dims (`dim=1` or `dim=-1`), never
        over dim 0; flatten per sample (`x.flatten(1)` or `x.view(x.size(0), -1)`), never the
        whole batch (`x.view(-1)`); use `permute`/`transpose` to reorder dims (a `view` does not
        move values); keep the batch as the dim the next layer treats as its batch, or pass
        `batch_first=True` to attention and RNN layers fed (batch, sequence, features). Where the
        mixing is intended (batch statistics as a feature, a set model), silence the line with
        `# archlint: disable=B001`. The finding's fix shows the corrected call where it is clear;
        archlint runs it on the op's input, and checks at a batch of two that it keeps the batch.
        """
    references = (
        "Karpathy, A Recipe for Training Neural Networks, 2019: 'use backprop to chart dependencies', the view-instead-of-permute bug that mixes information across the batch (http://karpathy.github.io/2019/04/25/recipe/)",
        "Goodfellow, Bengio, Courville, Deep Learning, 2016, section 8.1.3: minibatch gradients as averages of independent samples (https://www.deeplearningbook.org/contents/optimization.html)",
        "Ioffe, Szegedy, Batch Normalization, ICML 2015: batch statistics in training, population statistics at inference, the one designed exception (https://arxiv.org/abs/1502.03167)",
        "PyTorch docs, torch.nn.functional.softmax: the implicit dim choice is deprecated (dim 0 for 0-, 1- and 3-D inputs) (https://pytorch.org/docs/stable/generated/torch.nn.functional.softmax.html)",
        "PyTorch docs, nn.MultiheadAttention and nn.LSTM: batch_first defaults to False, (seq, batch, feature) (https://pytorch.org/docs/stable/generated/torch.nn.MultiheadAttention.html)",
        "Salimans et al., Improved Techniques for Training GANs, 2016, and Karras et al., Progressive Growing of GANs, 2018: minibatch discrimination and minibatch stddev, mixing the batch on purpose (https://arxiv.org/abs/1606.03498)",
    )
    options = {
        "unconfirmed": Option("info", "what to report when no layer reads dim 0 of the input as a batch "
                                      "(an MLP on N x F rows may see graph nodes or bag instances)",
                              choices=("info", "warning", "ignore")),
        "merged-rows": Option("info", "what to report when the output's first dim is the batch merged with "
                                      "positions, one sample per row (token logits flattened to (B*L, C))",
                              choices=("info", "warning", "ignore")),
    }
    bad = (
        """
        import torch
        from torch import nn

        class Classifier(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                              nn.AdaptiveAvgPool2d(1), nn.Flatten())
                self.fc = nn.Linear(16, 10)
                self.softmax = nn.Softmax(dim=0)   # meant dim=1: this normalizes across the batch

            def forward(self, x):
                return self.softmax(self.fc(self.features(x)))

        model = Classifier()
        example_input = torch.randn(1, 3, 32, 32)
        """,
        """
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3, padding=1)
                self.fc = nn.Linear(8 * 16 * 16, 10)

            def forward(self, x):
                x = torch.relu(self.conv(x))
                x = x.view(-1)                     # meant x.view(x.size(0), -1): runs at batch 1 only
                return self.fc(x)

        model = Net()
        example_input = torch.randn(1, 3, 16, 16)
        """,
        """
        import torch
        from torch import nn

        class Encoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Conv1d(4, 32, 3, padding=1)
                self.attn = nn.MultiheadAttention(32, 4)   # batch_first=False: reads dim 0 as the sequence

            def forward(self, x):                          # x: (batch, channels, length)
                tokens = self.embed(x).transpose(1, 2)     # (batch, length, 32)
                out, _ = self.attn(tokens, tokens, tokens)
                return out

        model = Encoder()
        example_input = torch.randn(1, 4, 20)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        class Attention(nn.Module):
            def __init__(self, dim=32, heads=4):
                super().__init__()
                self.heads = heads
                self.qkv = nn.Linear(dim, 3 * dim)
                self.proj = nn.Linear(dim, dim)

            def forward(self, x):                          # (B, N, C)
                B, N, C = x.shape
                q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
                q, k, v = (t.reshape(B * self.heads, N, -1) for t in (q, k, v))   # heads merged into the batch
                attn = (q @ k.transpose(1, 2)).softmax(dim=-1)
                x = (attn @ v).reshape(B, self.heads, N, -1).transpose(1, 2).reshape(B, N, C)
                return self.proj(x)

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.stem = nn.Conv2d(3, 32, 4, stride=4)
                self.norm = nn.BatchNorm2d(32)             # batch statistics: the designed exception
                self.attn = Attention()
                self.seq_first = nn.MultiheadAttention(32, 4)
                self.head = nn.Linear(32, 10)

            def forward(self, x):
                x = self.norm(self.stem(x)).flatten(2).transpose(1, 2)   # (B, N, 32)
                x = x + self.attn(x)
                t = x.transpose(0, 1)                                     # (N, B, 32) for batch_first=False
                x = x + self.seq_first(t, t, t)[0].transpose(0, 1)
                return self.head(x.mean(dim=1)).log_softmax(dim=1)

        model = Net()
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        flow = batch_flow(graph)
        if not flow.available:
            return
        report = _Report(self, graph, flow, ctx)
        if flow.failure is not None and flow.failure.culprit:
            report.failure()
        for value, shape in flow.returned(graph):
            report.output(value, shape)
        yield from report.findings()


class _Report:
    """The findings of one graph: at most one per op, the most severe kept."""

    def __init__(self, rule: BatchMixing, graph, flow: BatchFlow, ctx):
        self.rule, self.graph, self.flow, self.ctx = rule, graph, flow, ctx
        self.found: dict[str, tuple[Severity, object]] = {}

    def findings(self):
        for _, finding in sorted(self.found.values(), key=lambda item: -int(item[0])):
            yield finding

    def _severity(self, sources, severity: Severity, option: str | None = None) -> Severity | None:
        """`severity` (or what `option` says) where a layer confirmed the batch; else at most
        what `unconfirmed` says."""
        if option is not None:
            if self.ctx[option] == "ignore":
                return None
            severity = Severity.parse(self.ctx[option])
        if self.flow.is_confirmed(sources):
            return severity
        if self.ctx["unconfirmed"] == "ignore":
            return None
        return min(severity, Severity.parse(self.ctx["unconfirmed"]))

    def _add(self, layer: Layer, severity: Severity | None, message: str, evidence: dict, fix: Fix) -> None:
        if severity is None:
            return
        if layer.name in self.found and self.found[layer.name][0] >= severity:
            return
        finding = self.rule.finding(layer, message, evidence={"node": layer.name, **evidence}, fix=fix,
                                    severity=severity, prefer="call")
        self.found[layer.name] = (severity, finding)

    def _confirmation(self, sources) -> dict:
        by = [self.flow.confirmed[s] for s in sorted(sources) if s in self.flow.confirmed]
        return {"batch_confirmed_by": [_label(self.graph.layer(b)) for b in by if self.graph.has(b)]}

    # --- what reaches an output ------------------------------------------------------------
    def output(self, value: BatchDim, shape: tuple[int, ...]) -> None:
        events = [self.flow.events[n] for n in value.mixed if n in self.flow.events
                  and n not in self.flow.deliberate and self.flow.events[n].kind != "loss"]
        if events:
            if value.state == GONE and math.prod(shape) <= 1:
                return  # a loss or a score of the whole batch
            for event in events:
                self.mixing(event, value, shape)
            return
        if value.state == AT and not value.proper and value.moved:
            self.merged_output(value, shape)
        elif value.state == SCRAMBLED and value.moved:
            self.merged_output(value, shape)

    def mixing(self, event: Mixing, value: BatchDim, shape: tuple[int, ...]) -> None:
        mixer = self.graph.layer(event.layer)
        moved = self.graph.layer(event.moved) if event.moved and event.moved in self.graph.g else None
        consequence = _CONSEQUENCE.get(event.kind, "samples are combined")
        if event.dim < 0:
            where = "the batch is spread over its input"
        elif event.merged:
            where = f"dim {event.dim} holds the samples, merged with other positions"
        else:
            where = f"dim {event.dim} holds the batch"
        if moved is not None:
            where += f", put there by {_label(moved)}"
        if not self.flow.is_confirmed(event.sources):
            where += ", if dim 0 of the input is the batch: no layer reads it as one"
        if value.state == AT:
            severity = self._severity(event.sources, Severity.WARNING)
            tail = "so each sample's output depends on the other samples in its batch"
        elif value.state == GONE:
            severity = self._severity(event.sources, Severity.INFO)
            tail = (f"and the output ({shape_text(shape)} for a batch of {self.flow.batch}) keeps no "
                    "batch dim: one result for the whole batch (intended for a set, a bag or class "
                    "prototypes; a bug where one result per sample was meant)")
        else:
            severity = self._severity(event.sources, Severity.INFO)
            tail = "and the result reaches the output"
        message = f"{event.what} runs across the samples of the batch ({where}): {consequence}, {tail}"
        evidence = {"mixes": event.kind, "op": event.what, "batch_dim": event.dim,
                    "analysis_batch": self.flow.batch, "output_shape": list(shape),
                    **self._confirmation(event.sources)}
        if moved is not None:
            evidence["moved_by"] = _label(moved)
        fix = self._mixing_fix(event, mixer, moved)
        self._add(moved if moved is not None and moved.kind in CALLS else mixer, severity, message, evidence, fix)

    def merged_output(self, value: BatchDim, shape: tuple[int, ...]) -> None:
        culprit = self.graph.layer(value.moved) if value.moved in self.graph.g else None
        if culprit is None:
            return
        batch = self.flow.batch
        shown = f"{shape_text(shape)} for a batch of {batch}"
        if value.state == SCRAMBLED:
            what = f"spreads the samples over several dims of the output ({shown}): rows mix samples"
            severity = self._severity(value.sources, Severity.WARNING)
        elif value.dim == 0 and (value.inner > 1 and value.outer == 1 and len(shape) >= 2 or
                                 value.inner == 1 and value.outer > 1):
            if value.outer > 1:
                what = f"leaves the output with {shape[0]} rows for {batch} samples ({shown}): each sample {value.outer} times"
            else:
                what = (f"merges the batch with {value.inner} positions into the output's first dim ({shown}): "
                        "one row per (sample, position), not per sample")
            severity = self._severity(value.sources, Severity.WARNING, "merged-rows")
        elif value.dim == 0:
            what = (f"flattens the batch together with the features ({shown}): the output has "
                    f"{shape[0]} values in one dim, not {batch} rows")
            severity = self._severity(value.sources, Severity.WARNING)
        else:
            what = (f"moves the batch into dim {value.dim} of the output, merged with other values ({shown}): "
                    f"the output has {shape[0]} row{'s' if shape[0] != 1 else ''}, not {batch}")
            severity = self._severity(value.sources, Severity.WARNING)
        message = f"{_label(culprit)} {what}; the model's output batch is not its input batch"
        evidence = {"output_shape": list(shape), "analysis_batch": batch, "batch_dim": value.dim,
                    "merged_with": value.inner, **self._confirmation(value.sources)}
        self._add(culprit, severity, message, evidence, self._reshape_fix(culprit))

    def failure(self) -> None:
        failure = self.flow.failure
        culprit = self.graph.layer(failure.culprit)
        failing = self.graph.layer(failure.layer)
        value = next((v for name in culprit.inputs for v in self.flow.of(name) if v.state == AT), None)
        sources = value.sources if value is not None else frozenset()
        severity = self._severity(sources, Severity.WARNING)
        verb = "moves" if culprit.kind in CALLS and culprit.op in _PERMUTES else "merges"
        message = (f"{_label(culprit)} {verb} the batch into the features that {_label(failing)} reads, "
                   f"so the model runs only with a batch of 1: at a batch of {self.flow.batch} it fails "
                   f"({failure.error})")
        evidence = {"fails_at": _label(failing), "analysis_batch": self.flow.batch, "error": failure.error,
                    **self._confirmation(sources)}
        self._add(culprit, severity, message, evidence, self._reshape_fix(culprit))

    # --- fixes ----------------------------------------------------------------------------------
    def _mixing_fix(self, event: Mixing, mixer: Layer, moved: Layer | None) -> Fix:
        line = _line(moved or mixer)
        if moved is not None and moved.kind in CALLS and moved.op in _RESHAPES:
            return self._reshape_fix(moved)
        if moved is not None:
            return Fix(f"keep the batch where the layers after it expect it: on {line}, reorder "
                       "only the feature dims (`permute`/`transpose` that leave dim 0 in place), or "
                       "move the batch back before the op that mixes it")
        if event.kind == "softmax":
            return self._softmax_fix(event, mixer, line)
        if event.kind in ("attend", "recur") and mixer.kind == Kind.MODULE:
            code = _batch_first_call(mixer.module)
            return Fix("the layer reads dim 0 as the sequence: build it with batch_first=True for "
                       "(batch, sequence, features) inputs, or transpose to (sequence, batch, features) "
                       "before it and back after", code)
        if event.kind == "reduce":
            return Fix(f"on {line}, reduce over the feature or position dims (dim=1, dim=-1, or dims 2 "
                       "and 3 of a feature map), not over dim 0; for batch statistics on purpose, use "
                       "nn.BatchNorm (running statistics at inference)")
        if event.kind == "normalize":
            return Fix(f"normalize each sample over its own features: on {line}, a norm whose dims "
                       "leave out dim 0 (LayerNorm over the last dims, GroupNorm over the channels)")
        return Fix(f"on {line}, keep the op to the dims of one sample: the batch is dim {event.dim} there")

    def _softmax_fix(self, event: Mixing, mixer: Layer, line: str) -> Fix:
        """The softmax over the sample's own classes, as code where that dim is certain: the
        other dim of a (batch, classes) matrix, the channels of a conv's (N, C, ...) map."""
        values = self.flow.of(mixer.inputs[0]) if mixer.inputs else ()
        shapes = self.flow.shapes.get(mixer.inputs[0], []) if mixer.inputs else []
        said = "no dim (PyTorch then takes dim 0)" if event.implicit else f"dim={event.dim}"
        advice = (f"on {line}, take the softmax over the dim that holds one sample's alternatives "
                  f"(its classes, tokens or slots), not {said}, which is the batch")
        if not shapes or not values or values[0].state != AT:
            return Fix(advice)
        ndim = len(shapes[0])
        if ndim == 2:
            dim = 1 - event.dim
        elif event.dim == 0 and _channels_first(self.graph, mixer):
            dim = 1
        else:
            return Fix(advice)
        name = _SOFTMAXES.get(mixer.op, "softmax") if mixer.kind in CALLS else None
        if mixer.kind == Kind.MODULE:
            if not isinstance(mixer.module, (nn.Softmax, nn.LogSoftmax, nn.Softmin)):
                return Fix(advice)
            code = f"nn.{type(mixer.module).__name__}(dim={dim})"
        elif mixer.kind == Kind.METHOD:
            code = f"x.{name}(dim={dim})"
        else:
            code = f"F.{name}(x, dim={dim})"
        if not _keeps_batch(code, shapes[0], values[0], self.flow.batch):
            return Fix(advice)
        where = "; x is the tensor it is applied to" if mixer.kind in CALLS else ""
        return Fix(f"take the softmax over the classes: dim={dim}, not {said}, which is the batch "
                   f"(on {line}{where})", code)

    def _reshape_fix(self, culprit: Layer) -> Fix:
        line = _line(culprit)
        advice = (f"keep the batch as dim 0 on {line}: flatten or reshape per sample "
                  "(`x.flatten(1)`, `x.view(x.size(0), -1)`), and use permute/transpose, not view, "
                  "to reorder dims")
        if culprit.kind not in CALLS or culprit.op not in _RESHAPES or not culprit.inputs:
            return Fix(advice)
        source = culprit.inputs[0]
        values, shapes = self.flow.of(source), self.flow.shapes.get(source, [])
        if not values or not shapes or not values[0].proper or values[0].dim != 0:
            return Fix(advice)
        traced_in, traced_out = culprit.in_shape, culprit.out_shape
        if traced_in is None or traced_out is None or traced_in[0] != 1:
            return Fix(advice)
        per_sample = math.prod(traced_in[1:])
        if tuple(traced_out) in ((per_sample,), (1, per_sample)):
            code = "x.flatten(1)"
        elif traced_out[0] == 1 and len(traced_out) > 1:
            code = f"x.reshape(x.size(0), {', '.join(str(s) for s in traced_out[1:])})"
        else:
            order = _as_permute(tuple(shapes[0]), tuple(self.flow.shapes.get(culprit.name, [()])[0]))
            if order is None:
                return Fix(advice)
            return Fix(f"a view does not move values: to swap dims on {line}, permute "
                       "(x is the tensor it is called on)", f"x.permute{order}")
        if not _keeps_batch(code, shapes[0], values[0], self.flow.batch):
            return Fix(advice)
        return Fix(f"keep the batch as dim 0: on {line}, {code} (x is the tensor it is called on)", code)


# --- helpers ---------------------------------------------------------------------------------------

def _label(layer: Layer) -> str:
    """`x.view(-1)` (line 12), or fc (Linear)."""
    frame = layer.frame("call")
    if layer.kind == Kind.MODULE:
        return f"{layer.qualname} ({layer.op})"
    code = frame.source().split("#", 1)[0].strip() if frame is not None and frame.is_user_code else ""
    where = f" at line {frame.line}" if frame is not None and frame.is_user_code else ""
    if code and len(code) <= 80:
        return f"`{code}`{where}"
    return f"{layer.op}{where}" + (f" in {layer.qualname}" if layer.qualname else "")


def _line(layer: Layer) -> str:
    frame = layer.frame("call")
    return f"line {frame.line}" if frame is not None else (layer.qualname or "forward")


def _channels_first(graph, layer: Layer) -> bool:
    """The tensor comes from a conv, pool or resize (N, C, ...) through elementwise ops."""
    from archlint.graph.ops import ACTIVATION_TYPES, is_dropout, is_norm

    def through(l):
        return (l.kind == Kind.MODULE and isinstance(l.module, ACTIVATION_TYPES)) or is_dropout(l) or is_norm(l) \
            or (l.kind in CALLS and l.op in ("add", "mul", "relu", "sigmoid", "tanh", "gelu", "silu"))
    return any(is_conv(p) or is_pool(p) or is_upsampling(p) for p in graph.previous_layers(layer, through=through))


def _keeps_batch(code: str, shape, value: BatchDim, batch: int) -> bool:
    """The fix's code, run on the op's input at the analysis batch, keeps the batch in one dim
    of its own: no longer mixed, no longer merged."""
    try:
        with torch.no_grad():
            out = eval(code, {"torch": torch, "nn": nn, "F": torch.nn.functional,  # noqa: S307
                              "x": torch.empty(tuple(shape), device="meta")})
    except Exception:
        return False
    if isinstance(out, nn.Module):
        out = out(torch.empty(tuple(shape), device="meta"))
    if not isinstance(out, torch.Tensor):
        return False
    if tuple(out.shape) == tuple(shape):
        return True  # a softmax on another dim: the batch stays where it was, unmixed
    after = reshaped(value, tuple(shape), tuple(out.shape), batch, "fix")
    return after.proper


def _as_permute(before: tuple[int, ...], after: tuple[int, ...]) -> tuple[int, ...] | None:
    """The permutation that gives `after` from `before`, when a view was written for one: the
    sizes are the same, all different, in another order."""
    if len(before) != len(after) or sorted(before) != sorted(after) or len(set(before)) != len(before) \
            or before == after:
        return None
    return tuple(before.index(s) for s in after)


def _batch_first_call(module: nn.Module) -> str | None:
    if isinstance(module, nn.MultiheadAttention):
        parts = [str(module.embed_dim), str(module.num_heads)]
        if module.dropout:
            parts.append(f"dropout={module.dropout}")
        if module.in_proj_bias is None and module.out_proj.bias is None:
            parts.append("bias=False")
        if module.kdim != module.embed_dim:
            parts.append(f"kdim={module.kdim}")
        if module.vdim != module.embed_dim:
            parts.append(f"vdim={module.vdim}")
        return f"nn.MultiheadAttention({', '.join(parts + ['batch_first=True'])})"
    if isinstance(module, nn.RNNBase) and type(module) in (nn.LSTM, nn.GRU, nn.RNN):
        parts = [str(module.input_size), str(module.hidden_size)]
        if module.num_layers != 1:
            parts.append(f"num_layers={module.num_layers}")
        if not module.bias:
            parts.append("bias=False")
        if module.dropout:
            parts.append(f"dropout={module.dropout}")
        if module.bidirectional:
            parts.append("bidirectional=True")
        if getattr(module, "proj_size", 0):
            parts.append(f"proj_size={module.proj_size}")
        if type(module) is nn.RNN and module.nonlinearity != "tanh":
            parts.append(f"nonlinearity={module.nonlinearity!r}")
        return f"nn.{type(module).__name__}({', '.join(parts + ['batch_first=True'])})"
    return None
