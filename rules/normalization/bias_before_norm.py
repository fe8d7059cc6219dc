"""N002 bias-before-norm: a conv or linear bias that the norm right after it subtracts again."""
from __future__ import annotations

from collections import defaultdict

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph.ops import (ANY_CONV_TYPES, BATCH_NORM_TYPES, CONV_TYPES, INSTANCE_NORM_TYPES,
                                TRANSPOSED_CONV_TYPES, Kind)
from archlint.rule import Rule

from ..helpers import conv_call, frozen_batchnorm, human


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
        for layer in graph.modules(*CONV_TYPES, *TRANSPOSED_CONV_TYPES, nn.Linear):
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
        if all(c.kind == Kind.MODULE and c.inputs[:1] == [layer.name]
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
        frame = layer.frame("built")
        where = f" on line {frame.line}" if frame else ""
        if _has_shift(norm.module):
            shift = "the norm's own shift (beta) provides the offset"
        else:
            shift = (f"the {norm.op} has no learned shift (affine=False), and the output is the same "
                     f"without the bias")
        return self.finding(
            layer, message,
            evidence={"bias_params": n_bias, "layers": [l.qualname for l, _ in unique],
                      "norms": [n.qualname for _, n in unique], "norm_type": norm.op,
                      "norm_has_shift": _has_shift(norm.module)},
            fix=Fix(f"add bias=False{where}; {shift}",
                    "\n".join(calls[:6]) + (f"\n# ... and {len(calls) - 6} more" if len(calls) > 6 else "")),
        )


def _has_shift(norm: nn.Module | None) -> bool:
    """Whether the norm adds a learned per-channel shift of its own (beta)."""
    if norm is None:
        return True
    if hasattr(norm, "elementwise_affine"):  # LayerNorm
        return bool(norm.elementwise_affine) and getattr(norm, "bias", None) is not None
    if hasattr(norm, "affine"):
        return bool(norm.affine)
    return getattr(norm, "bias", None) is not None


def _channel_dim(layer) -> int | None:
    """The dimension along which a conv or linear layer's bias varies in its output."""
    shape = layer.out_shape
    if shape is None:
        return None
    if isinstance(layer.module, ANY_CONV_TYPES):
        return 1
    if isinstance(layer.module, nn.Linear):
        return len(shape) - 1
    return None


def _cancels_bias(norm_layer, channel_dim: int, rank: int, model_training: bool = True) -> bool:
    """Whether the norm subtracts a mean taken separately for every index of `channel_dim`: then
    a bias that varies only along that dimension is removed exactly."""
    module = norm_layer.module
    if isinstance(module, BATCH_NORM_TYPES):
        if frozen_batchnorm(module, model_training) and module.track_running_stats:
            return False  # frozen: it subtracts a fixed mean, and the bias still trains
        return channel_dim == 1 and rank >= 2
    if isinstance(module, INSTANCE_NORM_TYPES):
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
