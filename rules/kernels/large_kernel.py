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
        backpropagation. Where the input has few channels (an RGB stem) the stack can hold more
        weights than the single conv; for the strided stem of a backbone it is still the better
        choice, measured (ResNet-C: +0.4% ImageNet top-1 in Bag of Tricks), and the finding's
        evidence gives both counts. A stride-1 conv whose stack would hold more weights (LeNet's
        5x5 convs widening 3->6->16 channels) is left alone: neither argument holds there.
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
            norm, act = norm_and_activation(graph, layer)
            depth = (k - 1 + 1) // 2  # ceil((k-1)/2) 3x3 convs span k (k odd) or k+1 (k even)
            c_in, c_out = conv.in_channels, conv.out_channels
            bias = conv.bias is not None
            now = conv_weights(k, c_in, c_out, bias=bias)
            after = conv_weights(3, c_in, c_out, bias=bias) + (depth - 1) * conv_weights(3, c_out, c_out, bias=bias)
            stride = conv.stride
            s = square(stride) or 1
            if s == 1 and after >= now:
                continue  # the stack would cost more weights and no measured result backs it
            span = 3 + 2 * s * (depth - 1)  # the first 3x3 carries the stride
            paddings = self._paddings(graph, layer, depth)
            steps = []
            for i in range(depth):
                first = i == 0
                call = conv_call(conv, in_channels=c_in if first else c_out, kernel_size=(3, 3),
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
    def _paddings(graph, layer, depth: int) -> list[int]:
        """Each 3x3's padding, so that the stack pads as much as the conv did: a 5x5 with
        padding 2 becomes two 3x3s with padding 1, LeNet's unpadded 5x5 two unpadded 3x3s, and
        a CycleGAN stem's ReflectionPad2d(3) in front stays and pads for all of them."""
        conv = layer.module
        own = conv.padding
        if isinstance(own, str):  # "same" pads k//2 (each 3x3 one); "valid" none
            own = (depth if own == "same" else 0,) * 2
        base, extra = divmod(max(own), depth)
        return [base + (1 if i < extra else 0) for i in range(depth)]


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
    nxt = graph.next_layers(layer, through=passes_through)
    return bool(nxt) and all(l.is_a(nn.LayerNorm) or l.op in ("layer_norm",) for l in nxt)
