"""R001 receptive-field-short: a network whose last map sees too little of its input."""
from __future__ import annotations

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph.ops import LINEAR_FUNCTIONS, MATMUL_FUNCTIONS, Kind, is_call_of
from archlint.rule import Option, Rule

from ..helpers import shape_text, spatial


# Products of two activations; addmm is a Linear layer's bias-and-matmul.
_PRODUCTS = MATMUL_FUNCTIONS - LINEAR_FUNCTIONS


class ReceptiveFieldShort(Rule):
    code = "R001"
    name = "receptive-field-short"
    severity = Severity.INFO
    summary = "The last feature map's receptive field is smaller than the input."
    what = """
        Computes the theoretical receptive field of the model's last spatial feature map (the
        last map before global pooling or the output map of a dense model) and reports it when
        it is smaller than the input along some axis. Models that give that map global context
        are left alone: a squeeze-and-excitation or image-pooling branch mixed back into later
        maps, attention over the positions (ViT), or a fully connected layer over the flattened
        map (VGG, AlexNet). Global average pooling alone does not count: it averages local
        features, each of which still sees only its own window. A model whose output is a map
        of single-channel scores (a PatchGAN discriminator, one real/fake score per patch) is
        left alone too: its small field is the design.
        """
    why = """
        A position of a feature map can only respond to the input pixels inside its receptive
        field. When the last map's field is smaller than the image, no unit of the network
        ever relates the two far ends of the image: a classifier that pools such a map is a
        bag of local features, and a segmentation or detection head cannot use context beyond
        the field for large objects. The theoretical field is also an upper bound: the
        effective field, where most of the weight lies, is a good deal smaller.
        """
    how_to_fix = """
        Grow the field: more downsampling (each stride-2 step doubles how far later 3x3 convs
        reach), more depth at the lowest resolution, dilated convs (rates without a common
        factor, see K005), or a global context block. The fix prints the stride-2 stage that
        would bring the field past the input.
        """
    references = (
        "Araujo et al., Computing Receptive Fields of Convolutional Neural Networks, Distill 2019",
        "Luo et al., Understanding the Effective Receptive Field in Deep Convolutional Neural Networks, NeurIPS 2016",
        "Understanding the receptive field of deep convolutional networks, AI Summer (https://theaisummer.com/receptive-field/)",
    )
    options = {"min-coverage": Option(1.0, "report when the field is below this fraction of the input side")}
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )
        example_input = torch.randn(1, 3, 64, 64)    # the last map sees 9x9 of 64x64
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        def stage(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU(),
                                 nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU())

        model = nn.Sequential(
            stage(3, 16), stage(16, 32), stage(32, 64), stage(64, 128),  # field 91 > 64
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
        )
        example_input = torch.randn(1, 3, 64, 64)
        """,
        """
        import torch
        from torch import nn

        model = nn.Sequential(                       # small field, but the linear layer sees the whole map
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(16 * 16 * 16, 10),
        )
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        if not graph.input_shapes or len(graph.input_shapes[0]) < 3:
            return
        image = graph.input_shapes[0][2:]
        ndim = len(image)
        maps = [l for l in graph if _is_map(l, ndim)]
        local = [l for l in maps if not l.rf.is_global]
        if not local:
            return
        last = local[-1]
        later = [l for l in maps if l.index > last.index]
        # A later map that is global yet not pooled down to one position got global context
        # mixed in (squeeze-excitation, an image-pooling branch): the field is the whole input.
        if any(any(s > 1 for s in spatial(l.out_shape)) for l in later):
            return
        short = [a for a in range(ndim) if last.rf.size[a] < ctx["min-coverage"] * image[a]]
        if not short:
            return
        if any(_mixes_positions(graph, l) for l in graph if l.index > last.index):
            return
        pooled = any(l.rf is not None and l.rf.is_global for l in graph if l.index > last.index)
        if not pooled and _patch_scores(graph):
            return  # a PatchGAN discriminator: one score per patch, the small field is the design
        yield self._finding(last, self._origin(graph, last), image, ndim, pooled)

    @staticmethod
    def _origin(graph, layer):
        """The layer that last grew the field (the conv, not the ReLU after it): the line to
        change."""
        while True:
            fields = [p for p in graph.predecessors(layer) if p.rf is not None]
            if len(fields) != 1 or (fields[0].rf.size, fields[0].rf.jump) != (layer.rf.size, layer.rf.jump):
                return layer
            layer = fields[0]

    def _finding(self, last, origin, image, ndim, pooled):
        rf = last.rf
        size, jump = list(rf.size), [int(j) if float(j).is_integer() else j for j in rf.jump]
        extra, field = self._stride2_steps(size, list(rf.jump), image)
        channels = last.out_shape[1]
        sides = spatial(last.out_shape)
        fits = all(s >= 2 ** extra for s in sides)
        conv = f"nn.Conv{ndim}d" if ndim in (1, 2, 3) else "nn.Conv2d"
        norm = f"nn.BatchNorm{ndim}d" if ndim in (1, 2, 3) else "nn.BatchNorm2d"
        step = f"    {conv}({channels}, {channels}, 3, stride=2, padding=1, bias=False), {norm}({channels}), nn.ReLU(inplace=True),"
        k3 = "x".join(["3"] * ndim)
        code = "nn.Sequential(\n" + "\n".join([step] * extra) + "\n)" if fits and extra and pooled else None
        where = last.qualname or last.op
        if code:
            advice = (f"after {where}, add {extra} stride-2 {k3} conv{'s' if extra > 1 else ''} "
                      f"(field {shape_text(field)})")
        elif pooled:
            advice = (f"the {shape_text(sides)} map is too small to downsample {extra} more times: add "
                      f"dilated {k3} convs (rates 1, 2, 5, ...) or a global context block")
        else:  # a dense output: grow the field where the resolution is lowest, not after the output
            advice = (f"add a downsampling level to the encoder, or dilated {k3} convs (rates 1, 2, 5, "
                      "...) or a global context block at its lowest resolution")
        return self.finding(
            origin,
            f"the last feature map ({where}, {shape_text(sides)}) has a receptive field of "
            f"{shape_text(size)} on a {shape_text(image)} input: no position of it sees the whole "
            f"image",
            evidence={"layer": where, "receptive_field": size, "input_size": list(image),
                      "jump": jump, "stride2_steps_needed": extra},
            fix=Fix(f"grow the receptive field past the input: {advice}"
                    + (", or use more depth at low resolution or dilation" if pooled else ""), code),
        )

    @staticmethod
    def _stride2_steps(size, jump, image) -> tuple[int, list[int]]:
        """How many stride-2 3x3 convs after the map bring its field past the input, and the
        field they reach: each adds 2 * jump, then doubles the jump."""
        size, jump = list(size), list(jump)
        steps = 0
        while any(s < i for s, i in zip(size, image)) and steps < 16:
            size = [int(s + 2 * j) for s, j in zip(size, jump)]
            jump = [2 * j for j in jump]
            steps += 1
        return steps, size


def _is_map(layer, ndim: int) -> bool:
    return (layer.kind not in (Kind.INPUT, Kind.ATTR, Kind.OUTPUT) and layer.rf is not None
            and layer.out_shape is not None and len(layer.out_shape) == ndim + 2)


def _mixes_positions(graph, layer) -> bool:
    """Attention, a product of two activations, or a fully connected layer over a flattened
    map that still holds separate positions: each output then depends on every position."""
    if isinstance(layer.module, nn.MultiheadAttention) or "attention" in layer.op.lower():
        return True
    if is_call_of(layer, _PRODUCTS):
        activations = [p for p in graph.predecessors(layer) if p.kind != Kind.ATTR and p.out_shapes]
        return len(activations) >= 2
    linear = isinstance(layer.module, nn.Linear) or (layer.module is None and layer.op in LINEAR_FUNCTIONS)
    if linear and layer.in_shape is not None and len(layer.in_shape) <= 2:
        # Dropout or an activation between the flatten and the linear layer does not change
        # what it reads; the receptive field marks those as global, so look past them.
        def same_shape(l) -> bool:
            return l.kind not in (Kind.INPUT, Kind.ATTR) and l.out_shape is not None and l.in_shape == l.out_shape

        sources = [p for p in graph.previous_layers(layer, through=same_shape) if p.kind != Kind.ATTR]
        fields = [p.rf for p in sources if p.rf is not None]
        return bool(fields) and not any(f.is_global for f in fields)
    return False


def _patch_scores(graph) -> bool:
    """Every output is a map of single-channel scores over more than one position (a
    PatchGAN discriminator's N x 1 x H' x W' real/fake map)."""
    shapes = [(o.in_shapes or o.out_shapes or [None])[0] for o in graph.outputs]
    return bool(shapes) and all(s is not None and len(s) >= 3 and s[1] == 1 and any(n > 1 for n in s[2:])
                                for s in shapes)
