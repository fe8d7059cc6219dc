"""K001 large-kernel: a k x k conv (k >= 5) that stacked 3x3 convs would replace with more depth."""
from __future__ import annotations

from torch import nn

from archlint.findings import Fix, Severity
from archlint.rule import Option, Rule

from archlint.graph.ops import FLATTEN_FUNCTIONS, Kind, is_call_of, is_norm, is_shape_op, is_weighted

from ..helpers import (conv_call, conv_weights, human, is_standard_conv, kept_pad_text,
                       norm_and_activation, passes_through, square)

class LargeKernel(Rule):
    code = "K001"
    name = "large-kernel"
    severity = Severity.WARNING
    summary = "A k x k conv (k >= 5) that a stack of 3x3 convs would replace with more depth."
    what = """
        Finds standard 2-D convolutions (groups=1, dilation 1) with a square kernel of 5x5 or
        larger. Depthwise convs (one filter per channel, as in ConvNeXt and MobileNet) and
        factorized 1xk / kx1 kernels are left alone: their cost grows with k, not with k x C^2.
        So are patchify convs whose stride equals the kernel (a ViT's 16x16/16 patch
        embedding): they cut the image into tokens that do not overlap, which no stack of 3x3
        convs reproduces.
        Projections into and out of image space in image-to-image nets (GAN generators,
        super-resolution, style transfer, diffusion UNets: every output is a map with at most 4
        channels) are left alone: the stem that reads the <= 4-channel image and the conv that
        writes it are cheap single linear maps by design, and in such a net with no
        normalization at all (SRCNN, ESPCN) the kernel sizes are the studied design. So are
        convolutional token embeddings (stride >= 4 and turned into tokens before any activation
        or pool, or a LayerNorm right after: CvT, PVT).
        """
    why = """
        A stack of (k-1)/2 3x3 convs sees the same k x k window as one k x k conv, but puts a
        nonlinearity between each step, so it can express more than the single linear map, and
        with C channels in and out it needs fewer weights: three 3x3 convs hold 27C^2 weights
        where one 7x7 holds 49C^2. The cost is memory for the intermediate activations during
        backpropagation. A conv that widens (AlexNet's 64->192 5x5) is stacked at its input's
        width, then widened by the last 3x3, which keeps the stack the cheaper one. Where the
        input has few channels (an RGB stem) the stack can hold more weights than the single
        conv; for the strided stem of a backbone it is still the better choice, measured
        (ResNet-C: +0.4% ImageNet top-1 in Bag of Tricks), and the finding's evidence gives
        both counts. A stride-1 conv that no stack beats on weights without a bottleneck
        narrower than 16 channels (LeNet's 5x5s on 3 and 6 channels) is left alone: neither
        argument holds there.
        """
    how_to_fix = """
        Replace the conv by (k-1)/2 3x3 convs with a normalization and activation between each
        (the first one carries the stride). The finding's fix prints the replacement for the
        layer's own channels and stride, with the norm and activation that follow the conv in
        the model (InstanceNorm, GroupNorm or none; LeakyReLU, SiLU...), never a BatchNorm the
        model does not have.
        """
    references = (
        "CS231n, Convolutional Networks: 'Prefer a stack of small filter CONV to one large receptive field CONV layer' (https://cs231n.github.io/convolutional-networks/)",
        "Simonyan & Zisserman, Very Deep Convolutional Networks (VGG), ICLR 2015",
        "He et al., Bag of Tricks for Image Classification (ResNet-C stem), CVPR 2019",
    )
    options = {"min-kernel": Option(5, "smallest square kernel side that is reported")}
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(64, 64, kernel_size=7, padding=3),
            nn.ReLU(),
        )
        example_input = torch.randn(1, 64, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 7, padding=3, groups=64),  # depthwise 7x7 is cheap: fine
            nn.Conv2d(64, 64, (1, 7), padding=(0, 3)),   # factorized: fine
            nn.Conv2d(64, 96, 8, stride=8),              # patchify: non-overlapping tokens, fine
        )
        example_input = torch.randn(1, 64, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        image_net = _image_to_image(graph)
        norm_free = not any(is_norm(l) for l in graph)
        for layer in graph.modules(nn.Conv2d):
            conv = layer.module
            k = square(conv.kernel_size)
            if not is_standard_conv(layer) or k is None or k < ctx["min-kernel"] or square(conv.dilation) != 1:
                continue
            if square(conv.stride) == k:
                continue  # patchify (ViT's 16x16/16 embedding): windows do not overlap, nothing to stack
            if (square(conv.stride) or 0) >= 4 and _becomes_tokens(graph, layer) or _layer_norm_next(graph, layer):
                continue  # convolutional token embedding (CvT's 7x7/4 + LayerNorm): the tokenizer's design
            if image_net and (norm_free or _reads_image(graph, layer) or _writes_image(graph, layer)):
                continue  # projection into / out of image space of an image-to-image net
            depth = (k - 1 + 1) // 2  # ceil((k-1)/2) 3x3 convs span k (k odd) or k+1 (k even)
            c_in, c_out = conv.in_channels, conv.out_channels
            bias = conv.bias is not None
            now = conv_weights(k, c_in, c_out, bias=bias)
            stride = conv.stride
            s = square(stride) or 1
            plan = self._stack(graph, layer, depth, now, strided=s > 1)
            if plan is None:
                continue  # every stack would cost more weights, and no measured result backs it
            widths, norm, act, after = plan
            span = 3 + 2 * s * (depth - 1)  # the first 3x3 carries the stride
            paddings = self._paddings(graph, layer, depth)
            steps = []
            for i in range(depth):
                first = i == 0
                call = conv_call(conv, in_channels=widths[i], out_channels=widths[i + 1], kernel_size=(3, 3),
                                 stride=stride if first else (1, 1), padding=(paddings[i],) * 2, dilation=(1, 1))
                steps.append(f"    {call},")
                if i < depth - 1:
                    steps.append(f"    {norm + ', ' if norm else ''}{act},")
            code = "nn.Sequential(\n" + "\n".join(steps) + "\n)"
            yield self.finding(
                layer,
                f"{k}x{k} conv ({c_in}->{c_out} channels) applies one linear map to a {k}x{k} window; "
                f"{depth} stacked 3x3 convs see {span}x{span} with {depth - 1} "
                f"nonlinearities between ({human(now)} -> {human(after)} weights)",
                evidence={"kernel": k, "in_channels": c_in, "out_channels": c_out,
                          "params_now": now, "params_after": after, "stacked_3x3": depth,
                          "receptive_field_after": span},
                fix=Fix(f"replace the {k}x{k} conv by {depth} stacked 3x3 convs with "
                        f"{_short(norm) + '+' if norm else ''}{_short(act)} between{kept_pad_text(graph, layer.window) if layer.window else ''}", code),
            )

    @staticmethod
    def _stack(graph, layer, depth: int, now: int, strided: bool):
        """The 3x3 stack to suggest: its channel widths, norm, activation and weight count.
        Its hidden layers take the output's width (VGG's choice); for a stride-1 conv that
        widens (AlexNet's 64->192 5x5) that can hold more weights than the conv, so the
        input's width is tried next, if it is no bottleneck (16 channels or more). A strided
        stem keeps the output's width whatever it costs (ResNet-C is measured); otherwise
        None when no stack holds fewer weights than the conv: LeNet's 5x5s on 3 and 6
        channels stay alone."""
        conv = layer.module
        c_in, c_out, bias = conv.in_channels, conv.out_channels, conv.bias is not None
        norm_after, _ = norm_and_activation(graph, layer)
        for mid in (c_out, c_in):
            if mid != c_out and mid < 16:
                break
            widths = [c_in] + [mid] * (depth - 1) + [c_out]
            after = sum(conv_weights(3, a, b, bias=bias) for a, b in zip(widths, widths[1:]))
            norm, act = norm_and_activation(graph, layer, width=mid)
            if norm_after is not None and norm is None:
                continue  # the model's GroupNorm does not divide this width
            if strided or after < now:
                return widths, norm, act, after
        return None

    @staticmethod
    def _paddings(graph, layer, depth: int) -> list[int]:
        """Each 3x3's padding, chosen so that the stack's output has the conv's size where some
        choice does: a 5x5 with padding 2 becomes two 3x3s with padding 1, LeNet's unpadded
        5x5 two unpadded 3x3s, a CycleGAN stem's ReflectionPad2d(3) in front stays and pads
        for all of them. Otherwise (some strided convs) each pads 1, and the fix check says
        how the output changes."""
        conv = layer.module
        k, s = square(conv.kernel_size), square(conv.stride) or 1
        sizes = set(layer.in_shape[2:]) if layer.in_shape and len(layer.in_shape) == 4 else set()
        own = conv.padding
        if isinstance(own, str):  # "same" pads k//2; "valid" none
            own = ((k - 1) // 2 if own == "same" else 0,) * 2
        if len(sizes) == 1 and len(set(own)) == 1:
            n, p = sizes.pop(), own[0]
            target = (n + 2 * p - k) // s + 1
            for first in (1, 0, 2):
                after_first = (n + 2 * first - 3) // s + 1
                rest = target - after_first + 2 * (depth - 1)  # twice the padding the rest need
                if rest % 2 == 0 and 0 <= rest // 2 <= 2 * (depth - 1):
                    base, extra = divmod(rest // 2, depth - 1) if depth > 1 else (0, 0)
                    return [first] + [base + (1 if i < extra else 0) for i in range(depth - 1)]
        return [1] * depth


def _short(call: str) -> str:
    return call.split("(")[0].removeprefix("nn.")


def _image_to_image(graph) -> bool:
    """Every output of the model is an image: a 4-D map with at most 4 channels."""
    shapes = []
    for o in graph.outputs:
        shape = (o.in_shapes or o.out_shapes or [None])[0]
        if shape is None:  # an export trace's output node: the shapes of what it returns
            shapes += [p.out_shape for p in graph.predecessors(o)]
        else:
            shapes.append(shape)
    return bool(shapes) and all(s is not None and len(s) == 4 and s[1] <= 4 for s in shapes)


def _reads_image(graph, layer) -> bool:
    """The stem: a conv on <= 4 channels with no weighted layer between it and the input."""
    if layer.module.in_channels > 4:
        return False
    before = graph.previous_layers(layer, through=lambda l: not is_weighted(l) and l.kind != Kind.INPUT)
    before = [l for l in before if l.kind != Kind.ATTR]  # its own weight and bias (torch.export)
    return bool(before) and all(l.kind == Kind.INPUT for l in before)


def _writes_image(graph, layer) -> bool:
    """The output conv: <= 4 channels out, no weighted layer between it and the output."""
    if layer.module.out_channels > 4:
        return False
    after = graph.next_layers(layer, through=lambda l: not is_weighted(l) and l.kind != Kind.OUTPUT)
    return bool(after) and all(l.kind == Kind.OUTPUT for l in after)


def _becomes_tokens(graph, layer) -> bool:
    """The conv's output becomes a sequence of tokens (N, L, C) before any activation or pool
    reads it: a tokenizer (CvT, PVT), not a CNN stem like AlexNet's 11x11/4 with its ReLU."""
    current = layer
    for _ in range(4):
        nxt = graph.successors(current)
        if len(nxt) != 1:
            return False
        current = nxt[0]
        shape = current.out_shape
        if shape is not None and len(shape) == 3:
            return True
        # Reshapes, norms and further convs of the embedding may come first; an activation or a
        # pool means a CNN stem.
        if not (is_shape_op(current) or is_call_of(current, FLATTEN_FUNCTIONS) or current.is_a(nn.Flatten)
                or is_norm(current) or current.is_a(nn.Conv2d)):
            return False
    return False


def _layer_norm_next(graph, layer) -> bool:
    """A LayerNorm reads the conv's output: torch's, or a model's own channel LayerNorm that
    the tracer opened into mean, var and arithmetic (vit-pytorch's CvT), known by its class."""
    nxt = graph.next_layers(layer, through=passes_through)
    return bool(nxt) and all(l.is_a(nn.LayerNorm) or l.op in ("layer_norm",)
                             or _inside_layer_norm(graph, l, layer) for l in nxt)


def _inside_layer_norm(graph, op, conv) -> bool:
    if not op.qualname or op.qualname == conv.qualname or op.kind == Kind.MODULE:
        return False
    try:
        module = graph.model.get_submodule(op.qualname)
    except AttributeError:
        return False
    return "LayerNorm" in type(module).__name__
