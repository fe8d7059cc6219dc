"""P002 channels-not-multiple-of-8: layer widths that leave tensor cores partly idle."""
from __future__ import annotations

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph.ops import ANY_CONV_TYPES, is_weighted
from archlint.rule import Option, Rule

from ..helpers import conv_call


class ChannelsNotMultipleOf8(Rule):
    code = "P002"
    name = "channels-not-multiple-of-8"
    severity = Severity.INFO
    summary = "Conv/Linear channel counts that are not multiples of 8 keep Tensor Cores idle in fp16/bf16."
    what = """
        Collects the convolutions and Linear layers whose input or output channel count is
        not a multiple of 8, leaving out the input channels of the first such layers (3 for
        RGB, a generator's latent size) and the output channels of the last ones (the class
        count, a decoder's RGB image): the data and the task fix those, not the design. It reports once per
        model, when those layers do at least `min-macs-share` of the model's multiply-adds,
        pointing at the costliest one and listing all of them in the evidence.
        """
    why = """
        Tensor Cores, which do most of a modern NVIDIA GPU's fp16/bf16 math, work on tiles
        whose channel sides are multiples of 8 (16-bit types; 16 for int8). With other counts
        cuDNN and cuBLAS either pad the tensors or fall back to slower kernels, so a layer
        with 100 channels can run slower than one with 104. NVIDIA's performance guide
        recommends multiples of 8 for every channel count and hidden size.
        """
    how_to_fix = """
        Round each channel count up to the next multiple of 8 (a few percent more weights,
        often less time). Networks that scale widths by a factor use a helper for this, such
        as MobileNet's _make_divisible(c, 8).
        """
    references = (
        "NVIDIA Deep Learning Performance Guide: Tensor Core requirements, channels in multiples of 8 (https://docs.nvidia.com/deeplearning/performance/dl-performance-convolutional/index.html)",
        "Sandler et al., MobileNetV2 (_make_divisible in the reference implementation), CVPR 2018",
    )
    options = {
        "multiple": Option(8, "channel counts should be multiples of this (16 for int8)"),
        "min-macs-share": Option(0.01, "report only when the misaligned layers do at least this share of all MACs"),
    }
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 30, 3, padding=1), nn.BatchNorm2d(30), nn.ReLU(),
            nn.Conv2d(30, 60, 3, stride=2, padding=1), nn.BatchNorm2d(60), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(60, 10),
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),   # 3 input channels: fine
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),        # 10 classes: fine
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
    )

    def check(self, graph, ctx):
        multiple = ctx["multiple"]
        reads_input, writes_output = _input_readers(graph), _output_writers(graph)
        seen: set[int] = set()
        misaligned = []
        for layer in graph.modules(*ANY_CONV_TYPES, nn.Linear):
            if id(layer.module) in seen:
                continue
            seen.add(id(layer.module))
            c_in, c_out = _in_out(layer.module)
            if layer.is_a(*ANY_CONV_TYPES) and layer.module.groups == c_in and c_in > 1:
                continue  # depthwise: no channel mixing for Tensor Cores to do; its neighbours are checked
            bad_in = c_in % multiple and layer.name not in reads_input
            bad_out = c_out % multiple and layer.name not in writes_output
            if bad_in or bad_out:
                misaligned.append(layer)
        total = graph.macs
        macs = sum(l.macs for l in misaligned)
        if not misaligned or not total or macs / total < ctx["min-macs-share"]:
            return
        worst = max(misaligned, key=lambda l: l.macs)
        round_up = lambda c: -(-c // multiple) * multiple  # noqa: E731 - one-line arithmetic
        fixes = []
        for layer in sorted(misaligned, key=lambda l: -l.macs)[:12]:
            c_in, c_out = _in_out(layer.module)
            new_in = c_in if layer.name in reads_input else round_up(c_in)
            new_out = c_out if layer.name in writes_output else round_up(c_out)
            fixes.append(f"{_rebuilt(layer.module, new_in, new_out)}  # {layer.qualname}")
        yield self.finding(
            worst,
            f"{len(misaligned)} conv/linear layer(s) doing {macs / total:.0%} of the MACs have channel "
            f"counts that are not multiples of {multiple} (costliest: layer {worst.qualname}, "
            f"{'->'.join(map(str, _in_out(worst.module)))} channels); Tensor Cores cannot tile them in fp16/bf16",
            evidence={"layers": [{"module": l.qualname, "in": _in_out(l.module)[0], "out": _in_out(l.module)[1],
                                  "macs": l.macs} for l in misaligned],
                      "count": len(misaligned), "macs_share": round(macs / total, 4), "multiple": multiple},
            fix=Fix(f"round channel counts up to multiples of {multiple} (and the layers around them to match)",
                    "\n".join(fixes)),
        )


def _in_out(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels, module.out_channels


def _rebuilt(module: nn.Module, c_in: int, c_out: int) -> str:
    if isinstance(module, nn.Linear):
        bias = "" if module.bias is not None else ", bias=False"
        return f"nn.Linear({c_in}, {c_out}{bias})"
    groups = module.groups if c_in % module.groups == 0 and c_out % module.groups == 0 else 1
    return conv_call(module, in_channels=c_in, out_channels=c_out, groups=groups)


def _input_readers(graph) -> set[str]:
    """The first conv/linear layers on each path from the model's input: their input
    channels are the data's (3 for RGB, a latent size), not a design choice."""
    found = set()
    for start in graph.inputs:
        found.update(l.name for l in graph.next_layers(start, through=lambda l: not is_weighted(l)))
    return found


def _output_writers(graph) -> set[str]:
    """The last conv/linear layers on each path to the model's output: their output
    channels are the task's (the class count, a decoder's RGB image)."""
    found = set()
    for end in graph.outputs:
        found.update(l.name for l in graph.previous_layers(end, through=lambda l: not is_weighted(l)))
    return found
