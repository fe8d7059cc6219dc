"""D: downsampling. How a network shrinks its feature maps, and what it does to channels then."""
from __future__ import annotations

from torch import nn

from archlint.findings import Fix, Severity
from archlint.rule import Option, Rule

from ._common import (conv_call, conv_weights, data_dependent, human, is_global, is_pool, is_upsampling,
                      is_weighted, keeps_linearity, reduction, shape_text, spatial, square)


def _dims(layer) -> int:
    return len(spatial(layer.in_shape) or (0, 0))


def _channels(layer) -> int | None:
    shape = layer.out_shape
    return shape[1] if shape is not None and len(shape) >= 3 else None


def _is_generative(graph) -> bool:
    """A model with an upsampling decoder that generates or reconstructs an image: its input
    is a latent code, or its output has the input's channels and size (autoencoders, VAEs,
    image-to-image). There pooling's fixed, gradient-sparse downsampling hurts most. A
    segmentation model, which decodes to class maps, or one that only resizes its final
    scores (FCN, DeepLab), is not one."""
    if not any(_decodes(graph, l) for l in graph if is_upsampling(l)):
        return False
    image = graph.input_shapes[0] if graph.input_shapes else None
    if image is None or len(image) < 3 or all(s == 1 for s in image[2:]):
        return True  # generated from a latent vector
    outputs = [p.out_shape for out in graph.outputs for p in graph.predecessors(out)]
    return any(o is not None and len(o) == len(image) and o[1] == image[1] and tuple(o[2:]) == tuple(image[2:])
               for o in outputs)


def _decodes(graph, upsampling) -> bool:
    """Learned upsampling, or upsampling that a conv or Linear layer computes on after."""
    if upsampling.is_a(nn.modules.conv._ConvTransposeNd):
        return True
    return any(is_weighted(l) for l in graph.next_layers(upsampling, through=lambda l: not is_weighted(l)))


def _feeds_only_pointwise(graph, layer) -> bool:
    """An average pool whose only consumer is a 1x1 conv: the ResNet-D projection shortcut,
    which is exactly what D002 recommends."""
    after = graph.successors(layer)
    return (len(after) == 1 and after[0].is_a(nn.modules.conv._ConvNd)
            and all(k == 1 for k in _tuple(after[0].module.kernel_size)))


def _tuple(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _strided_window(factor: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Kernel and padding of a conv that downsamples by `factor` per axis: 3x3 with padding
    1 for a factor of 2 (overlapping windows, as in ResNet), a non-overlapping patch otherwise."""
    kernel = tuple(3 if f == 2 else f for f in factor)
    padding = tuple(1 if f == 2 else 0 for f in factor)
    return kernel, padding


def _strided_conv(n: int, c: int, factor: tuple[int, ...]) -> str:
    kernel, padding = _strided_window(factor)
    one = lambda v: str(v[0]) if len(set(v)) == 1 else str(tuple(v))  # noqa: E731
    return (f"nn.Sequential(\n    nn.Conv{n}d({c}, {c}, kernel_size={one(kernel)}, stride={one(factor)}, "
            f"padding={one(padding)}, bias=False),\n    nn.BatchNorm{n}d({c}),\n    nn.ReLU(inplace=True),\n)")


class PoolDownsampling(Rule):
    code = "D001"
    name = "pool-downsampling"
    severity = Severity.INFO
    summary = "A pooling layer shrinks the feature map where a learned strided conv could."
    what = """
        Finds max, average and adaptive pooling that makes the feature map smaller (a stride
        above 1). Global pooling to one position per channel (a classifier head) is left
        alone, and so is an average pool that feeds straight into a 1x1 conv (the ResNet-D
        shortcut, the fix D002 recommends). In a generative model the finding is a warning:
        one with an upsampling decoder (transposed convs, or nn.Upsample/interpolate with a
        conv after) whose input is a latent code or whose output has the input's channels
        and size (GAN generators, autoencoders, VAEs, image-to-image models). Segmentation
        models, which decode to class maps, stay at information.
        """
    why = """
        A pooling layer throws away a fixed share of what it sees (three of every four values
        for a 2x2 max-pool) by a rule nobody trained. Springenberg et al. replaced every
        pooling layer by a conv with stride 2 and matched or beat the pooled networks on
        CIFAR-10 and CIFAR-100: the network learns how to summarize a neighbourhood instead
        of being told. In generative models (GANs, VAEs,
        decoders) the difference is larger: max-pooling sends gradient to one input in four,
        and DCGAN-style models train more stably with strided convs throughout. In a
        classifier this is a matter of taste, hence only information.
        """
    how_to_fix = """
        Replace the pool by a 3x3 conv with stride 2 (with its norm and activation), or give
        the conv before the pool the stride and delete the pool. The strided conv costs
        parameters (9C^2 for C channels); the evidence gives the count.
        """
    references = (
        "Springenberg et al., Striving for Simplicity: The All Convolutional Net, ICLR 2015 workshop (https://arxiv.org/abs/1412.6806)",
        "CS231n, Convolutional Networks: 'Getting rid of pooling' (https://cs231n.github.io/convolutional-networks/)",
        "Radford et al., Unsupervised Representation Learning with Deep Convolutional GANs (DCGAN), ICLR 2016",
    )
    options = {"warn-in-decoders": Option(True, "report as a warning in generative models (autoencoders, VAEs, generators)")}
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
        """
        import torch
        from torch import nn

        class AutoEncoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.encode = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
                self.decode = nn.Sequential(nn.ConvTranspose2d(32, 3, 2, stride=2), nn.Sigmoid())

            def forward(self, x):
                return self.decode(self.encode(x))

        model = AutoEncoder()
        example_input = torch.randn(1, 3, 64, 64)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),  # global pooling: fine
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
    )

    def check(self, graph, ctx):
        generative = ctx["warn-in-decoders"] and _is_generative(graph)
        for layer in graph:
            if not is_pool(layer) or is_global(layer):
                continue
            factor = reduction(layer)
            if factor is None:
                continue
            if layer.op.startswith(("AvgPool", "avg_pool")) and _feeds_only_pointwise(graph, layer):
                continue
            n = _dims(layer)
            c = layer.in_shape[1]
            stride = max(factor)
            conv_params = conv_weights(_strided_window(factor)[0], c, c, bias=False)
            where = "in a generative model (it decodes back to an image)" if generative else ""
            yield self.finding(
                layer,
                f"{layer.op} shrinks {shape_text(spatial(layer.in_shape))} to "
                f"{shape_text(spatial(layer.out_shape))} by a fixed rule {where}".rstrip()
                + f"; a stride-{stride} conv would learn the downsampling (+{human(conv_params)} weights)",
                evidence={"pool": layer.op, "channels": c, "reduction": list(factor),
                          "in_size": list(spatial(layer.in_shape)), "out_size": list(spatial(layer.out_shape)),
                          "values_kept": round(1 / _product(factor), 3),
                          "params_added": conv_params, "generative_model": generative},
                fix=Fix(f"replace the pool by a {stride}x-strided conv (or move the stride into the conv "
                        "before it and delete the pool)", _strided_conv(n, c, tuple(factor))),
                severity=Severity.WARNING if generative else None,
                prefer="built" if layer.kind == "module" else "call",
            )


def _product(values) -> int:
    total = 1
    for v in values:
        total *= v
    return total


class StridedPointwise(Rule):
    code = "D002"
    name = "strided-pointwise"
    severity = Severity.WARNING
    summary = "A 1x1 conv with stride > 1 reads only one of every stride^2 input positions."
    what = """
        Finds convolutions whose kernel is 1 along every axis and whose stride is above 1,
        typically the projection shortcut of a ResNet stage (`downsample.0`). The finding
        counts how many input positions the layer never looks at. A strided 1x1 branch that
        is summed with a kxk conv of the same input and stride (RepVGG, MobileOne) is left
        alone: it is the centre tap of that kernel, and the two fold into one kxk conv. So is
        a strided query projection in attention (HaloNet), whose keys and values read every
        position.
        """
    why = """
        A 1x1 kernel with stride 2 samples the grid: it reads the top-left value of each 2x2
        cell and ignores the other three, so 75% of the activations reaching it contribute
        nothing to its output and get no gradient through it. In a ResNet this is the only
        path from one stage to the next that is not a stack of convolutions, so the shortcut
        carries a quarter of the information it could. He et al. (Bag of Tricks, ResNet-D)
        average-pool before the 1x1 conv instead, which raised ResNet-50's ImageNet top-1
        accuracy (by about 0.3%, on top of their other stem and block tweaks) for a
        negligible amount of extra compute.
        """
    how_to_fix = """
        Average-pool with the stride first, then apply the 1x1 conv with stride 1 (ResNet-D);
        or make the conv 3x3 with the same stride so its windows cover every input position.
        """
    references = (
        "He et al., Bag of Tricks for Image Classification with Convolutional Neural Networks (ResNet-D), CVPR 2019 (https://arxiv.org/abs/1812.01187)",
        "timm resnet50d: avg_down=True shortcut (https://github.com/huggingface/pytorch-image-models)",
    )
    options = {}
    bad = (
        """
        import torch
        from torch import nn

        class Block(nn.Module):
            def __init__(self, c_in, c_out):
                super().__init__()
                self.body = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                    nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                )
                self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out))

            def forward(self, x):
                return torch.relu(self.body(x) + self.shortcut(x))

        model = Block(32, 64)
        example_input = torch.randn(1, 32, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        class Block(nn.Module):
            def __init__(self, c_in, c_out):
                super().__init__()
                self.body = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                    nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                )
                self.shortcut = nn.Sequential(  # ResNet-D: pool, then project
                    nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False),
                    nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
                )

            def forward(self, x):
                return torch.relu(self.body(x) + self.shortcut(x))

        model = Block(32, 64)
        example_input = torch.randn(1, 32, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        for layer in graph.modules(nn.modules.conv._ConvNd):
            conv = layer.module
            if isinstance(conv, nn.modules.conv._ConvTransposeNd):
                continue
            kernel, stride = _tuple(conv.kernel_size), _tuple(conv.stride)
            if any(k != 1 for k in kernel) or all(s == 1 for s in stride):
                continue
            size = spatial(layer.in_shape)
            if size is not None and all(s == 1 for s in size):
                continue  # a 1x1 map has nothing to skip
            if _reparameterizable(graph, layer) or _is_attention_query(graph, layer):
                continue
            n = len(kernel)
            step = _product(stride)
            pool_stride = square(conv.stride) if square(conv.stride) is not None else tuple(stride)
            code = (f"nn.Sequential(\n    nn.AvgPool{n}d({pool_stride}, {pool_stride}, ceil_mode=True, "
                    f"count_include_pad=False),\n    {conv_call(conv, stride=(1,) * n)},\n)")
            yield self.finding(
                layer,
                f"1x1 conv with stride {_compact(stride)} ({conv.in_channels}->{conv.out_channels} channels) "
                f"reads 1 of every {step} input positions and ignores the other {step - 1} "
                f"({1 - 1 / step:.0%} of its input)",
                evidence={"stride": list(stride), "in_channels": conv.in_channels,
                          "out_channels": conv.out_channels, "positions_read": round(1 / step, 4),
                          "positions_ignored": round(1 - 1 / step, 4),
                          "in_size": list(size) if size else None},
                fix=Fix("average-pool with the stride, then apply the 1x1 conv with stride 1 (ResNet-D); "
                        "or use a 3x3 kernel with the same stride", code),
            )


def _data_producers(graph, layer) -> set[str]:
    return {p.name for p in graph.predecessors(layer) if p.out_shapes and p.kind != "attr"}


def _reparameterizable(graph, pointwise) -> bool:
    """A strided 1x1 branch summed with a strided kxk conv of the same input (RepVGG,
    MobileOne, FastViT): the 1x1 is the kxk kernel's centre tap, the pair folds into one kxk
    conv at inference, and that conv reads every position."""
    source = _data_producers(graph, pointwise)
    stride = _tuple(pointwise.module.stride)
    frontier, seen = [pointwise], set()
    for _ in range(8):  # the branches meet within a few adds
        merges = [l for start in frontier for l in graph.next_layers(start, through=keeps_linearity)
                  if l.op in ("add", "add_", "iadd") and l.name not in seen]
        if not merges:
            return False
        for merge in merges:
            seen.add(merge.name)
            for other in graph.predecessors(merge):
                candidates = [other] if not keeps_linearity(other) else \
                    graph.previous_layers(other, through=keeps_linearity)
                for conv in candidates:
                    if (conv is not pointwise and conv.is_a(nn.modules.conv._ConvNd)
                            and any(k > 1 for k in _tuple(conv.module.kernel_size))
                            and _tuple(conv.module.stride) == stride
                            and _data_producers(graph, conv) & source):
                        return True
        frontier = merges
    return False


_ATTENTION_OPS = {"matmul", "bmm", "baddbmm", "einsum", "scaled_dot_product_attention",
                  "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention"}


def _is_attention_query(graph, pointwise) -> bool:
    """A strided 1x1 projection that reshapes into an attention product (HaloNet's strided
    queries): it picks which positions ask; the keys and values read every position."""
    reached = graph.next_layers(pointwise, through=keeps_linearity)
    return any(l.op in _ATTENTION_OPS for l in reached)


def _compact(stride) -> str:
    return str(stride[0]) if len(set(stride)) == 1 else str(tuple(stride))


class DownsampleWithoutWidening(Rule):
    code = "D003"
    name = "downsample-without-widening"
    severity = Severity.INFO
    summary = "A stride-2 step in the body keeps the channel count: each later layer does 4x less work."
    what = """
        Finds downsampling steps (a conv or pool with stride > 1) in the body of the network
        after which the widest layer at the new resolution has exactly as many channels as
        the narrowest tensor that fed the step. Comparing the stages on both sides, rather
        than one layer's input and output, keeps it quiet on pools followed by a widening
        conv (VGG), on depthwise convs inside inverted residual blocks that widen as a whole
        (MobileNet, EfficientNet) and on ResNet bottlenecks. Left alone: the stem (steps
        taken while the map is still larger than 1/`stem-stride` of the input, such as
        ResNet's max-pool), global pooling, steps whose output never reaches a conv with a
        kernel above 1 at the new resolution (GoogLeNet's auxiliary heads, MViT's pooled
        attention) or that are upsampled back (gates and other side branches), and steps
        that narrow on purpose (HRNet's lower-resolution branches).
        """
    why = """
        The cost of a conv layer is proportional to H x W x C_in x C_out. Halving H and W
        while keeping C divides every later layer's compute, and its capacity to represent
        features, by four: the network gets thinner exactly where its features become more
        abstract and numerous. VGG and ResNet double the channels whenever they halve the
        resolution, which keeps the time per layer roughly constant from stage to stage
        (He & Sun, Convolutional Neural Networks at Constrained Time Cost).
        """
    how_to_fix = """
        Double the channels when you halve the resolution: let the strided conv (or the first
        conv after the pool) output 2C channels, and widen the rest of the stage to match.
        """
    references = (
        "He & Sun, Convolutional Neural Networks at Constrained Time Cost, CVPR 2015 (https://arxiv.org/abs/1412.1710)",
        "He et al., Deep Residual Learning for Image Recognition, CVPR 2016: 'if the feature map size is halved, the number of filters is doubled'",
        "Simonyan & Zisserman, Very Deep Convolutional Networks (VGG), ICLR 2015",
    )
    options = {"stem-stride": Option(4, "steps taken before the map is this many times smaller than the input count as the stem")}
    bad = (
        """
        import torch
        from torch import nn

        def stage(c, stride):
            return nn.Sequential(nn.Conv2d(c, c, 3, stride=stride, padding=1), nn.BatchNorm2d(c), nn.ReLU())

        model = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=4, padding=1), nn.ReLU(),   # stem
            stage(64, 1), stage(64, 2), stage(64, 1), stage(64, 2), stage(64, 1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        def stage(c_in, c_out, stride):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())

        model = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=4, padding=1), nn.ReLU(),
            stage(64, 64, 1), stage(64, 128, 2), stage(128, 128, 1),
            nn.MaxPool2d(2), stage(128, 256, 1),  # the pool keeps 128, the stage after doubles it
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10),
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
    )

    def check(self, graph, ctx):
        image = spatial(graph.input_shapes[0]) if graph.input_shapes else None
        if image is None:
            return
        dependent = data_dependent(graph)
        for layer in graph:
            if not (is_pool(layer) or layer.is_a(nn.modules.conv._ConvNd)) or is_global(layer):
                continue
            if layer.is_a(nn.modules.conv._ConvTransposeNd):
                continue
            factor = reduction(layer)
            before = spatial(layer.in_shape)
            if factor is None or len(before) != len(image):
                continue
            if max(i / b for i, b in zip(image, before)) < ctx["stem-stride"]:
                continue  # still the stem: the input is being reduced cheaply on purpose
            narrowest = _narrowest_feeding(graph, layer, dependent)
            widest, stage_end, spatial_conv = _stage_after(graph, layer)
            if narrowest is None or widest != narrowest:
                continue  # widened (or narrowed on purpose, as HRNet's lower-resolution branches)
            if not spatial_conv:
                continue  # a head or pooled attention: no conv layer works at the new size
            yield self._report(layer, factor, narrowest, widest, stage_end)

    def _report(self, layer, factor, narrowest, widest, stage_end):
        drop = _product(factor)
        c_in = layer.in_shape[1]
        if layer.is_a(nn.modules.conv._ConvNd):
            conv = layer.module
            code = conv_call(conv, out_channels=2 * conv.out_channels)
            how = f"let this conv output {2 * conv.out_channels} channels and widen the layers after it to match"
        else:
            n = len(factor)
            code = f"nn.Conv{n}d({c_in}, {2 * c_in}, kernel_size=3, padding=1)  # first conv after the pool"
            how = f"let the first conv after the pool output {2 * c_in} channels and widen the stage to match"
        return self.finding(
            layer,
            f"{layer.op} shrinks {shape_text(spatial(layer.in_shape))} to {shape_text(spatial(layer.out_shape))} "
            f"and the layers after it stay at {widest} channels: "
            f"each later layer does {drop}x less work than one before it",
            evidence={"reduction": list(factor), "channels_before": narrowest, "widest_after": widest,
                      "compute_per_layer_drop": drop, "stage_ends_at": stage_end},
            fix=Fix(how, code),
            prefer="built" if layer.kind == "module" else "call",
        )


def _narrowest_feeding(graph, layer, dependent: set[str]) -> int | None:
    """The fewest channels on the way into `layer` at its input resolution, walking back
    along single-input layers (an inverted residual's expansion counts from the block's
    narrow input, a bottleneck's strided 3x3 from its reduced width)."""
    size = spatial(layer.in_shape)
    widths = []
    current = layer
    for _ in range(64):  # a block is short; this only bounds a pathological walk
        producers = [p for p in graph.predecessors(current) if p.out_shapes and p.kind != "attr"
                     and p.name in dependent]
        if len(producers) != 1:
            break
        p = producers[0]
        if spatial(p.out_shape) != size or p.out_shape is None or len(p.out_shape) != len(layer.in_shape):
            break
        widths.append(p.out_shape[1])
        if len([c for c in graph.successors(p) if c.out_shapes]) > 1:
            break  # a fork: the block's input, which a shortcut also reads
        current = p
    return min(widths) if widths else None


def _stage_after(graph, start) -> tuple[int, str, bool]:
    """What follows a downsampling step at its new resolution, walking forward from it while
    the map keeps that size: the most channels a conv, pool or merge there produces, the
    last such layer, and whether any conv with a kernel above 1 is among them. A side branch
    that pools further (GhostNetV2's attention gate) leaves the walk; the trunk stays in it.
    Without a spatial conv the step feeds a head (GoogLeNet's auxiliary classifiers pool,
    then project with 1x1 convs) or pooled attention keys and values (MViT), not a stage;
    a map that is upsampled back (GhostNetV2's gate, GC ViT's global queries) is a side
    branch, and counts as having none."""
    size, ndim = spatial(start.out_shape), len(start.out_shape)
    widest, last, spatial_conv = start.out_shape[1], start, False
    seen, frontier = {start.name}, [start]
    while frontier:
        layer = frontier.pop()
        for nxt in graph.successors(layer):
            if is_upsampling(nxt) and spatial(nxt.out_shape) != size:
                return widest, "", False  # brought back up: a gate or attention side branch
            if nxt.name in seen or nxt.out_shape is None or len(nxt.out_shape) != ndim \
                    or spatial(nxt.out_shape) != size:
                continue
            seen.add(nxt.name)
            frontier.append(nxt)
            is_conv = nxt.is_a(nn.modules.conv._ConvNd)
            if is_conv or is_pool(nxt) or nxt.op in ("add", "cat", "concat"):
                widest = max(widest, nxt.out_shape[1])
                last = max(last, nxt, key=lambda l: l.index)
            spatial_conv |= is_conv and any(k > 1 for k in _tuple(nxt.module.kernel_size))
    return widest, last.qualname or last.name, spatial_conv
