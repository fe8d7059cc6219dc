"""N001 batchnorm-tiny-batch: BatchNorm trained on too few samples per batch for its statistics."""
from __future__ import annotations

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph.ops import BATCH_NORM_TYPES, CONV_TYPES
from archlint.rule import Example, Option, Rule

from ..helpers import built_where, conv_call, frozen_batchnorm, norm_call


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
        FrozenBatchNorm2d (fixed statistics), a BatchNorm put in eval mode inside a model that
        trains (frozen on purpose, as MMDetection's `norm_eval=True` does), and, in a model
        traced in eval mode, a BatchNorm whose parameters do not require grad.

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
        for layer in graph.modules(*BATCH_NORM_TYPES):
            module = layer.module
            if id(module) in seen or isinstance(module, nn.SyncBatchNorm):
                continue
            seen.add(id(module))
            if frozen_batchnorm(module, graph.model.training):
                continue  # frozen on purpose: fixed statistics, whatever the batch
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
                         f"e.g. {built_where(layer)}")
        shown = set()
        for conv in convs:
            call = conv_call(conv.module)
            if call in shown or len(shown) >= 6:
                continue
            shown.add(call)
            kind = type(conv.module).__name__
            parts.append(f"#   {call}  ->  {call.replace('nn.' + kind, 'WS' + kind, 1)}  # {built_where(conv)}")
        return "\n".join(parts)


def group_count(channels: int, max_groups: int = 32) -> int:
    """The most GroupNorm groups (up to `max_groups`) that divide `channels` and keep at least two
    channels per group: 64 -> 32, 24 -> 12, 3 -> 1."""
    return max(g for g in range(1, max_groups + 1)
               if channels % g == 0 and channels // g >= min(2, channels))
