"""P: parameters. Where the weights sit, whether the hardware can use them well, whether any
are dead."""
from __future__ import annotations

import ast
import inspect
import textwrap
from functools import lru_cache

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph import Layer
from archlint.rule import Option, Rule

from ._common import (conv_call, data_dependent, human, is_dropout, is_identity, is_weighted,
                      shape_text, tensor_inputs)

_FLATTENS = {"flatten", "view", "reshape", "_unsafe_view"}
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _flattened_map(graph, layer: Layer) -> Layer | None:
    """The flatten (or view/reshape) that turned a feature map into this Linear's input,
    walking back over dropout and identities: None when the input was pooled first."""
    dependent = data_dependent(graph)
    current = layer
    for _ in range(8):
        producers = tensor_inputs(graph, current, dependent)
        if len(producers) != 1:
            return None
        p = producers[0]
        flattens = p.is_a(nn.Flatten) or (p.kind in ("function", "method") and p.op in _FLATTENS)
        if flattens:
            shape = p.in_shape
            if shape is None or len(shape) < 3 or _positions(shape) <= 1:
                return None
            return p
        if not (is_dropout(p) or is_identity(p)):
            return None
        current = p
    return None


def _positions(shape) -> int:
    total = 1
    for s in shape[2:]:
        total *= s
    return total


class DenseHeadDominates(Rule):
    code = "P001"
    name = "dense-head-dominates"
    severity = Severity.WARNING
    summary = "A Linear layer on a flattened feature map holds most of the model's parameters."
    what = """
        Finds a fully connected layer whose input is a flattened C x H x W feature map (not
        one pooled to C values first) and which holds more than `max-share` of all the
        model's parameters.
        """
    why = """
        Flattening a 512 x 7 x 7 map gives 25,088 inputs, so a Linear layer to 4,096 units
        needs 103M weights: three quarters of VGG-16 sits in that one layer. Those weights
        memorize where on the map a feature appeared, which is what overfits, and they tie the
        model to one input size. Network in Network and GoogLeNet average each channel over
        the map first (global average pooling): the head then needs H x W times fewer weights,
        accepts any input size, and lost no accuracy in their experiments (GoogLeNet reports
        +0.6% top-1 from the switch).
        """
    how_to_fix = """
        Pool globally before the classifier: nn.AdaptiveAvgPool2d(1), nn.Flatten(), then a
        Linear from C features. The finding gives the replacement with this layer's sizes and
        the parameter count after.
        """
    references = (
        "Lin et al., Network In Network, ICLR 2014 (global average pooling) (https://arxiv.org/abs/1312.4400)",
        "Szegedy et al., Going Deeper with Convolutions (GoogLeNet), CVPR 2015",
        "CS231n, Convolutional Networks: case studies, VGGNet parameter count (https://cs231n.github.io/convolutional-networks/)",
    )
    options = {"max-share": Option(0.5, "largest share of all parameters one flattened-input Linear may hold")}
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 16 * 16, 256), nn.ReLU(),
            nn.Linear(256, 10),
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(64, 256), nn.ReLU(),
            nn.Linear(256, 10),
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
    )

    def check(self, graph, ctx):
        total = graph.params
        if not total:
            return
        for layer in graph.modules(nn.Linear):
            share = layer.params / total
            if share <= ctx["max-share"]:
                continue
            flatten = _flattened_map(graph, layer)
            if flatten is None:
                continue
            linear = layer.module
            channels = flatten.in_shape[1]
            bias = linear.bias is not None
            head_after = channels * linear.out_features + (linear.out_features if bias else 0)
            total_after = total - layer.params + head_after
            n = len(flatten.in_shape) - 2
            code = (f"nn.AdaptiveAvgPool{n}d(1),\nnn.Flatten(),\n"
                    f"nn.Linear({channels}, {linear.out_features}{'' if bias else ', bias=False'}),")
            yield self.finding(
                layer,
                f"Linear on a flattened {shape_text(flatten.in_shape[1:])} map holds {human(layer.params)} "
                f"weights, {share:.0%} of the model; pooling to {channels} features first needs "
                f"{human(head_after)} (model: {human(total)} -> {human(total_after)})",
                evidence={"params": layer.params, "share": round(share, 4), "model_params": total,
                          "flattened": list(flatten.in_shape[1:]), "params_after": head_after,
                          "model_params_after": total_after},
                fix=Fix(f"average-pool the map globally before the classifier and feed {channels} "
                        f"features to the Linear", code),
            )


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
        for layer in graph.modules(nn.modules.conv._ConvNd, nn.Linear):
            if id(layer.module) in seen:
                continue
            seen.add(id(layer.module))
            c_in, c_out = _in_out(layer.module)
            if layer.is_a(nn.modules.conv._ConvNd) and layer.module.groups == c_in and c_in > 1:
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


class UnusedParameters(Rule):
    code = "P003"
    name = "unused-parameters"
    severity = Severity.WARNING
    summary = "A submodule (or parameter) holds trainable weights that forward never uses."
    what = """
        Compares the model's trainable parameters with the ones the traced forward pass
        reads: through the layers it calls and the parameters it reads directly (a class
        token, a position embedding, `F.linear(x, self.fc.weight)`). A module shared by two
        names, or a parameter tied between two modules, counts as used when either use is
        reached. It reports the largest unused submodule rather than each of its layers.
        When the owning module's code does mention the submodule outside `__init__` (a branch
        the example input did not take, or another method), the finding is information only.
        """
    why = """
        Weights that never take part in forward get no gradient. DistributedDataParallel
        expects a gradient for every parameter and stops with "Expected to have finished
        reduction in the prior iteration" unless you pass find_unused_parameters=True, which
        costs an extra traversal of the graph on every step. Single-GPU training runs, but the
        optimizer still keeps state for them (Adam: two more copies), checkpoints carry them,
        and parameter counts overstate the model. Often it is a bug: a layer built and then
        forgotten in forward.
        """
    how_to_fix = """
        Call the layer in forward if it was meant to be used; otherwise delete it from
        `__init__`. If it is used only sometimes (auxiliary heads in training), keep it and
        construct DistributedDataParallel with find_unused_parameters=True, or freeze it with
        requires_grad_(False) while it is not used.
        """
    references = (
        "PyTorch docs, DistributedDataParallel: find_unused_parameters (https://pytorch.org/docs/stable/generated/torch.nn.parallel.DistributedDataParallel.html)",
        "PyTorch forums: 'Expected to have finished reduction in the prior iteration' (unused parameters under DDP)",
    )
    options = {}
    bad = (
        """
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
                self.dropout = nn.Dropout(0.2)
                self.head = nn.Linear(32, 10)
                self.extra = nn.Linear(32, 32)  # built, then forgotten

            def forward(self, x):
                return self.head(self.dropout(self.features(x).flatten(1)))

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
                self.embed = nn.Linear(16, 32)
                self.cls_token = nn.Parameter(torch.zeros(1, 1, 32))   # read directly: used
                self.head = nn.Linear(32, 16, bias=False)
                self.head.weight = self.embed.weight                   # tied: used through embed

            def forward(self, x):
                x = self.embed(x)
                x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
                return x @ self.head.weight

        model = Net()
        example_input = torch.randn(1, 4, 16)
        """,
    )

    def check(self, graph, ctx):
        used = _used_parameters(graph)
        model = graph.model
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        if not used or not trainable:
            return
        unused = trainable - used
        if not unused:
            return
        reported: set[int] = set()
        for name, module in model.named_modules():
            if not name:
                continue
            own = {id(p) for p in module.parameters() if p.requires_grad}
            if not own or not own <= unused or own <= reported:
                continue
            reported |= own
            yield self._report(graph, name, module, own)
        # Stray parameters registered on a module whose other weights are used.
        for name, param in model.named_parameters():
            if id(param) in unused and id(param) not in reported:
                reported.add(id(param))
                owner = model.get_submodule(name.rpartition(".")[0])
                yield self._report(graph, name, owner, {id(param)}, param=param)

    def _report(self, graph, name: str, module: nn.Module, ids: set[int], param=None):
        model = graph.model
        count = sum(p.numel() for p in model.parameters() if id(p) in ids)
        total = sum(p.numel() for p in model.parameters() if p.requires_grad)
        parent_name, _, attr = name.rpartition(".")
        owner_name = parent_name
        parent = model.get_submodule(parent_name)
        while isinstance(parent, _CONTAINERS) and parent_name:
            # blocks.3 unused: whether the code that owns `blocks` slices or loops over it
            parent_name, _, attr = parent_name.rpartition(".")
            parent = model.get_submodule(parent_name)
        mentioned = _mentioned_outside_init(type(parent), attr)
        if param is not None:
            layer = _called_layer(graph, module) or _stand_in(graph, owner_name, module)
            what = f"parameter {name} ({shape_text(tuple(param.shape))})"
        else:
            layer = _stand_in(graph, name, module)
            what = f"{type(module).__name__} {name}"
        if mentioned:
            message = (f"{what} holds {human(count)} trainable weights that the traced forward did not use; "
                       f"{type(parent).__name__} mentions self.{attr} outside __init__ (a branch this input "
                       "did not take?), so DistributedDataParallel needs find_unused_parameters=True")
            severity = Severity.INFO
            fix = Fix("if the layer is used only in some calls, construct DDP with find_unused_parameters=True "
                      "or freeze it while unused",
                      "model = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)")
        else:
            message = (f"{what} holds {human(count)} trainable weights ({count / total:.1%} of the model) "
                       "that forward never uses: DistributedDataParallel will stop with 'Expected to have "
                       "finished reduction' and the optimizer keeps state for them")
            severity = None
            fix = _deletion_fix(parent, attr, layer.built_frame if param is None else None)
        return self.finding(
            layer, message,
            evidence={"module": name, "unused_params": count, "share": round(count / total, 4),
                      "mentioned_outside_init": mentioned},
            fix=fix, severity=severity,
        )


def _deletion_fix(parent: nn.Module, attr: str, frame=None) -> Fix:
    kind = type(parent).__name__
    if type(parent).__module__.startswith("torch.nn") and attr == "bias":
        # forward read the layer's weight but never its bias (x @ layer.weight.T)
        return Fix(f"build the {kind} without a bias", f"nn.{kind}(..., bias=False)")
    built = frame.source().strip() if frame is not None and frame.is_user_code else ""
    if built.startswith(f"self.{attr}"):
        return Fix(f"delete self.{attr} from {kind}.__init__, or use it in forward",
                   f"# {frame.location()}: delete\n{built}")
    return Fix(f"delete self.{attr} from {kind}.__init__, or use it in forward",
               f"# in {kind}.__init__, delete the line that builds it:\n# self.{attr} = ...")


def _used_parameters(graph) -> set[int]:
    used: set[int] = set()
    for layer in graph:
        if layer.kind == "module" and layer.module is not None:
            used.update(id(p) for p in layer.module.parameters())
        elif layer.kind == "attr":
            try:
                used.add(id(graph.model.get_parameter(layer.qualname)))
            except AttributeError:
                pass
    return used


def _called_layer(graph, module: nn.Module) -> Layer | None:
    return next((l for l in graph if l.kind == "module" and l.module is module), None)


def _stand_in(graph, name: str, module: nn.Module) -> Layer:
    """A layer-shaped record for a module forward never calls, pointing at where it was built."""
    return Layer(name=name, index=-1, kind="module", op=type(module).__name__, qualname=name,
                 module=module, built_frames=getattr(graph, "construction", {}).get(name, ()))


@lru_cache(maxsize=256)
def _mentioned_outside_init(cls: type, attr: str) -> bool:
    """Whether any method of `cls` (or its user-defined bases) other than __init__ reads
    `self.<attr>` or getattr(self, "<attr>")."""
    for klass in cls.__mro__:
        if klass in (nn.Module, object) or klass.__module__.startswith("torch.nn"):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.name == "__init__":
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Attribute) and node.attr == attr and \
                        isinstance(node.value, ast.Name) and node.value.id == "self":
                    return True
                if isinstance(node, ast.Constant) and node.value == attr:
                    return True
    return False
