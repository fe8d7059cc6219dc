"""N: normalization. BatchNorm with too few samples, biases a norm cancels, norms shared or fed
by dropout."""
from __future__ import annotations

from collections import defaultdict

from torch import nn

from archlint.findings import Fix, Severity
from archlint.rule import Example, Option, Rule

from ._common import CONV_TYPES, conv_call, human

_BN = nn.modules.batchnorm._BatchNorm
_IN = nn.modules.instancenorm._InstanceNorm
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_DROPOUT_FUNCTIONS = ("dropout", "dropout1d", "dropout2d", "dropout3d", "feature_dropout")
# Norms that standardize each sample on its own: the same statistics at train and eval time.
_PER_SAMPLE_NORMS = (nn.GroupNorm, nn.LayerNorm, _IN)


# --- shared helpers --------------------------------------------------------------------------

def group_count(channels: int, max_groups: int = 32) -> int:
    """The most GroupNorm groups (up to `max_groups`) that divide `channels` and keep at least two
    channels per group: 64 -> 32, 24 -> 12, 3 -> 1."""
    return max(g for g in range(1, max_groups + 1)
               if channels % g == 0 and channels // g >= min(2, channels))


def norm_call(module: nn.Module) -> str:
    """The constructor call of a BatchNorm-like module, non-default arguments only."""
    parts = [str(module.num_features)]
    if module.eps != 1e-5:
        parts.append(f"eps={module.eps:g}")
    if module.momentum != 0.1:
        parts.append(f"momentum={module.momentum!r}")
    if not module.affine:
        parts.append("affine=False")
    if not module.track_running_stats:
        parts.append("track_running_stats=False")
    return f"nn.{type(module).__name__}({', '.join(parts)})"


def _where(layer) -> str:
    frame = layer.frame("built")
    return str(frame.location()) if frame else layer.qualname


# --- N001 --------------------------------------------------------------------------------------

_WS_CLASS = '''
class WS{kind}(nn.{kind}):
    """{kind} with Weight Standardization: every filter is rescaled to zero mean and unit
    variance before use, which keeps training stable under GroupNorm."""

    def forward(self, x):
        w = self.weight
        dims = tuple(range(1, w.dim()))
        w = (w - w.mean(dims, keepdim=True)) / torch.sqrt(w.var(dims, keepdim=True, unbiased=False) + 1e-6)
        return self._conv_forward(x, w, self.bias)
'''

_GROUP_NORM_HELPER = '''
def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the most groups (up to 32) that divide `channels`, two channels or more each."""
    groups = max(g for g in range(1, max_groups + 1)
                 if channels % g == 0 and channels // g >= min(2, channels))
    return nn.GroupNorm(groups, channels)
'''


class BatchNormTinyBatch(Rule):
    code = "N001"
    name = "batchnorm-tiny-batch"
    severity = Severity.WARNING
    summary = "BatchNorm trained with fewer samples per device than its statistics need."
    what = """
        Finds BatchNorm layers (BatchNorm1d/2d/3d and subclasses such as timm's BatchNormAct2d)
        when the per-device training batch is below `min-batch` (16). The rule needs the batch
        size and stays silent without it: pass `--batch-size 8` to `archlint check`, set
        `batch-size = 8` under `[tool.archlint]` in pyproject.toml, or call
        `archlint.lint(model, batch_size=8)`. Give the batch one device sees, not the global one:
        4096 images over 512 accelerators is 8.

        Left alone: SyncBatchNorm (its statistics span every device, so the global batch counts),
        FrozenBatchNorm2d (fixed statistics), and a BatchNorm put in eval mode inside a model that
        trains (frozen on purpose).

        One finding per model, not one per layer: ResNet-50 has 53 BatchNorms, and they share
        one cause (the batch size) and one remedy. The finding points at the first BatchNorm,
        counts them, and lists in its evidence every layer and every line that builds one, so
        the list of edits is complete. To accept BatchNorm at this batch size, ignore N001 in
        the config or put `# archlint: disable=N001` on the first BatchNorm's line.
        """
    why = """
        In training, BatchNorm normalizes every channel with the mean and variance of the current
        batch on this device. With a handful of samples those estimates are noisy, the noise
        differs from step to step, and the running averages used at test time drift away from
        what the layers saw in training. Wu & He measured it on ImageNet with ResNet-50: top-1
        error 23.6% at 32 images per GPU, 24.8% at 8, 27.3% at 4 and 34.7% at 2, while
        GroupNorm stayed at 24.0-24.2% for every batch size. Big Transfer (BiT) met the same
        problem at scale: a 4096-image batch spread over 512 TPU cores leaves 8 images per core,
        too few for good statistics, and synchronizing BatchNorm across cores costs communication
        at every layer. BiT replaced every BatchNorm by GroupNorm and standardized the weights of
        every conv (Weight Standardization): both work per sample, so the batch size no longer
        matters and no synchronization is needed. GroupNorm also has no running statistics to
        re-estimate when a pre-trained model is transferred to a new task.
        """
    how_to_fix = """
        Replace each BatchNorm by GroupNorm over the same channels, with 32 groups or the
        largest count up to 32 that divides the channels, and make the conv in front of it a
        weight-standardized conv (WSConv2d). The finding's fix holds both classes, ready to paste,
        and the GroupNorm for each channel count it saw. For library models, pass the norm layer
        in (torchvision ResNets take `norm_layer=lambda c: nn.GroupNorm(32, c)`) or use a model
        built that way (timm `resnetv2_50x1_bit`). Alternatives: SyncBatchNorm, if the devices
        together see enough samples and the extra communication is acceptable; or a larger
        per-device batch.
        """
    references = (
        "Wu & He, Group Normalization, ECCV 2018 (ImageNet error of BatchNorm and GroupNorm against the batch size, section 4.1)",
        "Kolesnikov et al., Big Transfer (BiT): General Visual Representation Learning, ECCV 2020 (GroupNorm + Weight Standardization)",
        "Qiao et al., Micro-Batch Training with Batch-Channel Normalization and Weight Standardization, 2019",
        "AI Summer, In-layer normalization techniques for training very deep neural networks (https://theaisummer.com/normalization/)",
    )
    options = {"min-batch": Option(16, "smallest per-device batch at which BatchNorm is left alone")}
    bad = (
        Example(
            """
            import torch
            from torch import nn

            model = nn.Sequential(
                nn.Conv2d(3, 64, 3, padding=1, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
            )
            example_input = torch.randn(1, 3, 64, 64)
            """,
            settings={"batch-size": 4},
        ),
    )
    good = (
        Example(
            """
            import torch
            from torch import nn


            class WSConv2d(nn.Conv2d):
                def forward(self, x):
                    w = self.weight
                    dims = tuple(range(1, w.dim()))
                    w = (w - w.mean(dims, keepdim=True)) / torch.sqrt(w.var(dims, keepdim=True, unbiased=False) + 1e-6)
                    return self._conv_forward(x, w, self.bias)


            model = nn.Sequential(
                WSConv2d(3, 64, 3, padding=1, bias=False),
                nn.GroupNorm(32, 64),
                nn.ReLU(inplace=True),
            )
            example_input = torch.randn(1, 3, 64, 64)
            """,
            settings={"batch-size": 4},
        ),
        Example(
            """
            import torch
            from torch import nn

            model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
            example_input = torch.randn(1, 3, 64, 64)
            """,
            settings={"batch-size": 64},
        ),
    )

    def check(self, graph, ctx):
        batch = ctx.batch_size
        if batch is None or batch >= ctx["min-batch"]:
            return
        layers, seen = [], set()
        for layer in graph.modules(_BN):
            module = layer.module
            if id(module) in seen or isinstance(module, nn.SyncBatchNorm):
                continue
            seen.add(id(module))
            if not module.training and graph.model.training:
                continue  # frozen on purpose inside a model that trains
            layers.append(layer)
        if layers:
            yield self._finding(graph, layers, batch, ctx["min-batch"])

    def _finding(self, graph, members, batch, minimum):
        # One finding per model: every BatchNorm shares the cause (the batch size) and the
        # remedy; the evidence lists each layer and each line that builds one.
        first = members[0]
        names = [l.qualname for l in members]
        channels = sorted({l.module.num_features for l in members})
        lines = []
        for layer in members:
            frame = layer.frame("built")
            where = str(frame.location()) if frame else layer.qualname
            if where not in lines:
                lines.append(where)
        convs = self._preceding_convs(graph, members)
        what = (f"{len(members)} BatchNorm layers ({first.qualname}, ...) normalize"
                if len(members) > 1 else f"{first.op} {first.qualname} normalizes")
        message = (f"{what} with statistics of {batch} samples per device "
                   f"(fewer than {minimum}): the estimates are noisy and the running averages drift; "
                   f"GroupNorm + Weight Standardization do not depend on the batch")
        library = not (first.built_frames and first.built_frames[0].is_user_code)
        description = ("replace BatchNorm by GroupNorm and standardize the weights of the conv before it"
                       + (f" at {len(lines)} places (evidence: built_at)" if len(lines) > 1 else "")
                       + (" (these layers are built inside a library: pass a norm_layer if its constructor "
                          "takes one, e.g. torchvision resnet50(norm_layer=group_norm))" if library else ""))
        return self.finding(
            first, message,
            evidence={"batch_size": batch, "min_batch": minimum, "batchnorm_layers": len(members),
                      "channels": channels, "layers": names, "built_at": lines},
            fix=Fix(description, self._fix_code(members, convs)),
        )

    @staticmethod
    def _preceding_convs(graph, members):
        convs = []
        for layer in members:
            for p in graph.predecessors(layer):
                if isinstance(p.module, CONV_TYPES) and p.module.groups == 1 and p not in convs:
                    convs.append(p)
        return convs

    @staticmethod
    def _fix_code(members, convs) -> str:
        kinds = sorted({type(c.module).__name__ for c in convs})
        parts = ["import torch", "from torch import nn", ""]
        for kind in kinds:
            parts.append(_WS_CLASS.format(kind=kind).rstrip())
            parts.append("")
        parts.append(_GROUP_NORM_HELPER.rstrip())
        parts += ["", "", "# in __init__:"]
        done = set()
        for layer in members:
            module = layer.module
            before = norm_call(module)
            if before in done:
                continue
            done.add(before)
            c = module.num_features
            parts.append(f"#   {before}  ->  nn.GroupNorm({group_count(c)}, {c})  # group_norm({c}), "
                         f"e.g. {_where(layer)}")
        shown = set()
        for conv in convs:
            call = conv_call(conv.module)
            if call in shown or len(shown) >= 6:
                continue
            shown.add(call)
            kind = type(conv.module).__name__
            parts.append(f"#   {call}  ->  {call.replace('nn.' + kind, 'WS' + kind, 1)}  # {_where(conv)}")
        return "\n".join(parts)


# --- N002 --------------------------------------------------------------------------------------

def _channel_dim(layer) -> int | None:
    """The dimension along which a conv or linear layer's bias varies in its output."""
    shape = layer.out_shape
    if shape is None:
        return None
    if isinstance(layer.module, (nn.modules.conv._ConvNd,)):
        return 1
    if isinstance(layer.module, nn.Linear):
        return len(shape) - 1
    return None


def _cancels_bias(norm_layer, channel_dim: int, rank: int, model_training: bool = True) -> bool:
    """Whether the norm subtracts a mean taken separately for every index of `channel_dim`: then
    a bias that varies only along that dimension is removed exactly."""
    module = norm_layer.module
    if isinstance(module, _BN):
        if model_training and not module.training and module.track_running_stats:
            return False  # frozen: it subtracts a fixed mean, and the bias still trains
        return channel_dim == 1 and rank >= 2
    if isinstance(module, _IN):
        return channel_dim == 1 and rank >= 3
    if isinstance(module, nn.GroupNorm):
        # Groups of several channels keep the differences between their channels' biases.
        return channel_dim == 1 and module.num_groups == module.num_channels
    if isinstance(module, nn.LayerNorm):
        if type(module).__name__.endswith("LayerNorm2d"):  # timm/torchvision: over dim 1 of NCHW
            return False
        reduced = range(rank - len(module.normalized_shape), rank)
        return channel_dim not in reduced
    return False


class BiasBeforeNorm(Rule):
    code = "N002"
    name = "bias-before-norm"
    severity = Severity.WARNING
    summary = "A conv or linear bias that the normalization right after it subtracts away."
    what = """
        Finds a Conv or Linear layer with `bias=True` whose output goes only into a normalization
        that subtracts a mean taken per channel of that layer: BatchNorm (any), InstanceNorm,
        GroupNorm with one channel per group, or a LayerNorm whose normalized dimensions leave
        the channel dimension out. It stays quiet where the bias survives the norm: GroupNorm
        with several channels per group and LayerNorm over the features after a Linear subtract
        one mean across channels, which removes only the average of the biases, not their
        differences; RMSNorm subtracts no mean at all; a BatchNorm frozen in eval mode inside a
        training model subtracts a fixed mean. It also stays quiet when the output feeds
        anything besides the norm. Layers built by one line (a conv+BN helper, a library's
        `make_layers`) make one finding that lists them all: one edit fixes them.
        """
    why = """
        A bias adds the same number to every value of a channel. A norm that subtracts that
        channel's mean takes the number straight back out, so the bias has no effect on the
        output and gets no gradient: measured here on real tensors, a Conv2d bias in front of
        BatchNorm2d receives gradients below 1e-5 (float rounding), against 26 in front of
        GroupNorm(2, 8). The parameters are dead weight that still costs optimizer state,
        weight decay and an addition per activation; the norm's own shift (beta) already does
        what the bias was meant to do.
        """
    how_to_fix = """
        Build the layer with `bias=False`, as torchvision and timm do for every conv in front of
        a BatchNorm. The finding's fix is the constructor call with that change.
        """
    references = (
        "PyTorch Performance Tuning Guide: 'Disable bias for convolutions directly followed by a batch norm' (https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html)",
        "Ioffe & Szegedy, Batch Normalization, ICML 2015 (section 3.2: the bias is subsumed by beta)",
    )
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1),  # bias=True by default
            nn.BatchNorm2d(64),
            nn.ReLU(),
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
        """
        import torch
        from torch import nn

        model = nn.Sequential(nn.Linear(128, 64), nn.BatchNorm1d(64), nn.ReLU())
        example_input = torch.randn(2, 128)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),  # GroupNorm with 2 channels per group keeps the bias
            nn.GroupNorm(32, 64),
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
        """
        import torch
        from torch import nn

        model = nn.Sequential(nn.Linear(128, 64), nn.LayerNorm(64), nn.GELU())  # LN over features keeps it
        example_input = torch.randn(2, 16, 128)
        """,
    )

    def check(self, graph, ctx):
        groups: dict[object, list] = defaultdict(list)
        for layer in graph.modules(*CONV_TYPES, nn.modules.conv._ConvTransposeNd, nn.Linear):
            norm = self._cancelling_norm(graph, layer)
            if norm is not None:
                # One finding per line that builds such layers: a helper that builds every
                # conv+BN pair of a model is one edit, not one per pair.
                frame = layer.frame("built")
                groups[(frame.path, frame.line) if frame else layer.name].append((layer, norm))
        for pairs in groups.values():
            yield self._finding(pairs)

    @staticmethod
    def _cancelling_norm(graph, layer):
        """The norm that removes this layer's bias, if its output goes nowhere else."""
        module = layer.module
        if module.bias is None or layer.out_shape is None:
            return None
        channel = _channel_dim(layer)
        consumers = graph.successors(layer)
        if channel is None or not consumers:
            return None
        rank = len(layer.out_shape)
        if all(c.kind == "module" and c.inputs[:1] == [layer.name]
               and _cancels_bias(c, channel, rank, graph.model.training) for c in consumers):
            return consumers[0]
        return None

    def _finding(self, pairs):
        layer, norm = pairs[0]
        module = layer.module
        seen, unique = set(), []
        for l, n in pairs:  # a module called twice is reported once
            if id(l.module) not in seen:
                seen.add(id(l.module))
                unique.append((l, n))
        n_bias = sum(l.module.bias.numel() for l, _ in unique)
        calls = []
        for l, _ in unique:
            m = l.module
            call = (f"nn.Linear({m.in_features}, {m.out_features}, bias=False)" if isinstance(m, nn.Linear)
                    else conv_call(m, bias=False))
            if call not in calls:
                calls.append(call)
        kind = type(module).__name__
        if len(unique) == 1:
            message = (f"{kind} bias ({n_bias} values) is removed by {norm.op} {norm.qualname}, which "
                       f"subtracts each channel's mean right after: the bias has no effect and gets no gradient")
        else:
            message = (f"{len(unique)} {kind} layers built here ({layer.qualname}, ...) carry biases "
                       f"({human(n_bias)} values) that the {norm.op} right after each removes: "
                       f"they have no effect and get no gradient")
        return self.finding(
            layer, message,
            evidence={"bias_params": n_bias, "layers": [l.qualname for l, _ in unique],
                      "norms": [n.qualname for _, n in unique], "norm_type": norm.op},
            fix=Fix("build the layer without a bias (bias=False); the norm's beta provides the shift",
                    "\n".join(calls[:6]) + (f"\n# ... and {len(calls) - 6} more" if len(calls) > 6 else "")),
        )


# --- N003 --------------------------------------------------------------------------------------

class SharedNormModule(Rule):
    code = "N003"
    name = "shared-norm-module"
    severity = Severity.ERROR
    summary = "One BatchNorm module applied to different tensors: its running statistics mix them."
    what = """
        Finds a BatchNorm module (with running statistics) that forward calls more than once on
        tensors from different places: after two different layers, or on a tensor that an earlier
        call of the same BatchNorm already fed (a loop that reuses one block at several depths).
        A module applied the same way to several inputs, as a siamese encoder runs one backbone
        on two images, is left alone: its BatchNorms see the same kind of tensor each time.
        """
    why = """
        BatchNorm keeps one running mean and variance per channel, updated at every call. Two
        call sites with different statistics (features of different layers, or of different
        depths of an unrolled loop) pull those averages back and forth, so at eval time the layer
        normalizes with a blend that matches neither site. The model then behaves differently in
        eval than in training, with no error anywhere. The learned scale and shift are shared
        too, which forces both sites to want the same affine map.
        """
    how_to_fix = """
        Give every call site its own BatchNorm. If the surrounding weights are shared on purpose
        (a recurrent block), keep them shared and create one BatchNorm per step, as recurrent
        batch normalization does. The finding's fix lists the modules to create.
        """
    references = (
        "Ioffe & Szegedy, Batch Normalization, ICML 2015 (running statistics for inference)",
        "Cooijmans et al., Recurrent Batch Normalization, ICLR 2017 (separate statistics per time step)",
    )
    bad = (
        """
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(3, 32, 3, padding=1, bias=False)
                self.conv2 = nn.Conv2d(32, 32, 3, padding=1, bias=False)
                self.bn = nn.BatchNorm2d(32)

            def forward(self, x):
                x = torch.relu(self.bn(self.conv1(x)))
                return torch.relu(self.bn(self.conv2(x)))  # the same BatchNorm again


        model = Net()
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(3, 32, 3, padding=1, bias=False)
                self.conv2 = nn.Conv2d(32, 32, 3, padding=1, bias=False)
                self.bn1 = nn.BatchNorm2d(32)
                self.bn2 = nn.BatchNorm2d(32)

            def forward(self, x):
                x = torch.relu(self.bn1(self.conv1(x)))
                return torch.relu(self.bn2(self.conv2(x)))


        model = Net()
        example_input = torch.randn(1, 3, 32, 32)
        """,
        """
        import torch
        from torch import nn


        class Siamese(nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = nn.Sequential(nn.Conv2d(3, 16, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU())

            def forward(self, a, b):
                return self.encoder(a) - self.encoder(b)  # one encoder on two images of one kind


        model = Siamese()
        example_input = (torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32))
        """,
    )

    def check(self, graph, ctx):
        calls: dict[int, list] = defaultdict(list)
        for layer in graph.modules(_BN):
            if layer.module.track_running_stats:
                calls[id(layer.module)].append(layer)
        for members in calls.values():
            if len(members) < 2:
                continue
            reason = self._mixes(graph, members)
            if reason is None:
                continue
            first, module = members[0], members[0].module
            sites = [str(l.called_at) if l.called_at else l.name for l in members]
            sources = [", ".join(self._sources(graph, l)) or "?" for l in members]
            base = first.qualname.rsplit(".", 1)[-1] or "bn"
            code = "\n".join(f"self.{base}_{i + 1} = {norm_call(module)}  # for the call at {site}"
                             for i, site in enumerate(sites))
            yield self.finding(
                first,
                f"{first.op} {first.qualname} is called {len(members)} times ({reason}): its running "
                f"mean and variance average {len(members)} different distributions, and eval mode "
                f"normalizes with a blend that fits none of them",
                evidence={"calls": len(members), "call_sites": sites, "inputs_from": sources,
                          "channels": module.num_features},
                fix=Fix("create one BatchNorm per call site and call each once", code),
            )

    @staticmethod
    def _sources(graph, layer) -> list[str]:
        """The nearest modules (or graph inputs) whose output reaches this call."""
        found = graph.previous_layers(layer, through=lambda l: l.kind not in ("module", "input"))
        return sorted({l.qualname if l.kind == "module" else "input" for l in found})

    def _mixes(self, graph, members) -> str | None:
        signatures = {tuple(self._sources(graph, l)) for l in members}
        if len(signatures) > 1:
            return "on outputs of different layers"
        for a in members:
            for b in members:
                if a.index < b.index and _reaches(graph, a, b):
                    return "each call feeds the next: one module at several depths"
        return None


def _reaches(graph, start, goal) -> bool:
    import networkx as nx

    return nx.has_path(graph.g, start.name, goal.name)


# --- N004 --------------------------------------------------------------------------------------

def _dropout_rate(layer, model_training: bool = True) -> float | None:
    """The drop probability of a dropout layer or call, None if it is not one. A call traced
    with training=False in a model that trains was switched off on purpose; in a model traced
    in eval mode, `training=self.training` reads False too, and the dropout is real."""
    if layer.kind == "module":
        if isinstance(layer.module, _DROPOUTS) and not isinstance(layer.module, (nn.AlphaDropout,)):
            return float(layer.module.p)
        return None
    if layer.kind in ("function", "method") and layer.op in _DROPOUT_FUNCTIONS:
        training = layer.kwargs.get("training", layer.args[2] if len(layer.args) > 2 else True)
        if training is False and model_training:
            return None
        p = layer.kwargs.get("p", layer.args[1] if len(layer.args) > 1 else 0.5)
        return float(p) if isinstance(p, (int, float)) else None
    return None


class DropoutBeforeBatchNorm(Rule):
    code = "N004"
    name = "dropout-before-batchnorm"
    severity = Severity.WARNING
    summary = "Dropout whose output reaches a BatchNorm: the variance differs between train and eval."
    what = """
        Finds a dropout layer or call (Dropout, Dropout1d/2d/3d, F.dropout) with p > 0 whose
        output reaches a BatchNorm with no other normalization on the way (convs, linears,
        activations and additions pass the problem through). A GroupNorm, LayerNorm or
        InstanceNorm in between ends the search: they normalize every sample on its own, at
        train and eval time alike. Dropout with p=0, AlphaDropout (built to keep the variance)
        and stochastic depth are left alone.
        """
    why = """
        In training, dropout zeroes a fraction p of the values and scales the rest by 1/(1-p);
        that keeps the mean but raises the variance. In eval mode dropout does nothing, so the
        variance is lower. The BatchNorm below learned its running variance from the training
        distribution and, at test time, divides by the wrong number: every layer after it sees
        activations with a different scale than in training. Li et al. call this variance shift
        and show it costs accuracy on CIFAR and ImageNet models; their remedy is to put dropout
        only after the last BatchNorm.
        """
    how_to_fix = """
        Move the dropout after the last BatchNorm, typically right before the classifier. If the
        regularization is needed inside the network, use a per-sample norm (GroupNorm/LayerNorm)
        after the dropout, or stochastic depth on residual branches.
        """
    references = (
        "Li et al., Understanding the Disharmony between Dropout and Batch Normalization by Variance Shift, CVPR 2019",
        "Srivastava et al., Dropout: A Simple Way to Prevent Neural Networks from Overfitting, JMLR 2014",
    )
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Dropout(0.3),
            nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        )
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Dropout(0.0),  # p=0: does nothing
            nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Dropout(0.3),  # after the last BatchNorm: fine
            nn.Linear(32, 10),
        )
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        for layer in graph:
            p = _dropout_rate(layer, graph.model.training)
            if not p or p >= 1:
                continue
            reached = graph.next_layers(
                layer, through=lambda l: not (l.kind == "module" and isinstance(l.module, (_BN, *_PER_SAMPLE_NORMS)))
                and l.kind != "output")
            bns = [l for l in reached if l.kind == "module" and isinstance(l.module, _BN)]
            if not bns:
                continue
            bn = min(bns, key=lambda l: l.index)
            last_bn = max(graph.modules(_BN), key=lambda l: l.index)
            kind = layer.op if layer.kind == "module" else f"F.{layer.op}"
            code = (f"# remove the {kind}(p={p:g}) at {_where(layer)} and apply it after the last "
                    f"BatchNorm ({last_bn.qualname}), e.g. just before the classifier:\n"
                    f"self.dropout = nn.Dropout(p={p:g})\n"
                    f"...\n"
                    f"x = self.dropout(x)  # after {last_bn.qualname}")
            yield self.finding(
                layer,
                f"{kind}(p={p:g}) feeds {bn.op} {bn.qualname} with no norm between: in training it "
                f"scales kept values by {1 / (1 - p):.3g} and raises their variance, in eval it does "
                f"nothing, so the BatchNorm's running variance is wrong at test time",
                evidence={"p": p, "train_scale": round(1 / (1 - p), 4), "batchnorm": bn.qualname,
                          "batchnorms_reached": len(bns), "last_batchnorm": last_bn.qualname},
                fix=Fix("move the dropout after the last BatchNorm", code),
            )
