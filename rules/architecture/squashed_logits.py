"""A004 squashed-logits: a classifier whose scores pass through ReLU, Sigmoid or Tanh on the way out."""
from __future__ import annotations

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph import Layer
from archlint.graph.ops import Kind, is_call_of
from archlint.rule import Rule

from ..helpers import classifier_of, only_at_inference, reshapes_only

_SQUASHERS = {
    "ReLU": ((nn.ReLU, nn.ReLU6), frozenset({"relu", "relu_", "relu6"})),
    "Sigmoid": ((nn.Sigmoid,), frozenset({"sigmoid", "sigmoid_"})),
    "Tanh": ((nn.Tanh,), frozenset({"tanh", "tanh_"})),
}


class SquashedLogits(Rule):
    code = "A004"
    name = "squashed-logits"
    severity = Severity.WARNING
    summary = "A classifier's scores pass through ReLU, Sigmoid or Tanh before the model returns them."
    what = """
        Finds a ReLU, Sigmoid or Tanh (module, F.* or torch.* call, or tensor method) applied to
        the scores of a Linear or conv classifier and returned, through reshapes only, as a
        (batch, classes) output; a conv head's N x C x 1 x 1 map counts as (N, C).
        - ReLU on two or more outputs: warning, no score can be negative.
        - Sigmoid on more than two outputs: warning, every score is squashed into (0, 1).
        - Tanh on more than two outputs: information (bounded outputs are also what a policy's
          actions or a regression in [-1, 1] look like).
        - Sigmoid on one or two outputs, a binary head returning probabilities: information.
        Image-shaped outputs (a GAN generator's Tanh on N x 3 x H x W) are not classifier heads
        and are left alone, as is one ReLU output (a non-negative regression), a squashing
        applied only when not `self.training`, a model that also returns the raw scores, and a
        Linear as wide out as in (BERT's pooler: dense + Tanh over the [CLS] features is a
        sentence embedding, not class scores).
        """
    why = """
        Classification losses take unbounded logits. nn.CrossEntropyLoss applies log-softmax to
        whatever it is given: after a ReLU every negative score is clipped to 0, and its
        gradient is zero, so a class whose score went negative gets no signal to recover; after
        a Sigmoid or Tanh all scores lie in an interval of width 1 or 2, the softmax over them
        can never be confident, the loss cannot approach zero, and gradients vanish as the
        squashing saturates. Sigmoid probabilities fed to nn.BCELoss work, but lose precision:
        the loss has to take log(sigmoid(x)) of a rounded probability, which PyTorch clamps at
        -100, where nn.BCEWithLogitsLoss computes it exactly from the logit (log-sum-exp).
        """
    how_to_fix = """
        Return the classifier's raw scores. Train multi-class heads with nn.CrossEntropyLoss,
        binary and multi-label heads with nn.BCEWithLogitsLoss, and apply softmax or sigmoid only
        where probabilities are needed (at inference, in metrics), or only when
        `not self.training`.
        """
    references = (
        "PyTorch docs, CrossEntropyLoss: 'The input is expected to contain the unnormalized logits for each class' (https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html)",
        "PyTorch docs, BCEWithLogitsLoss: 'more numerically stable than using a plain Sigmoid followed by a BCELoss' (https://pytorch.org/docs/stable/generated/torch.nn.BCEWithLogitsLoss.html)",
        "PyTorch docs, BCELoss: log outputs are clamped to be greater than or equal to -100 (https://pytorch.org/docs/stable/generated/torch.nn.BCELoss.html)",
    )
    options = {}
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Flatten(), nn.Linear(784, 128), nn.ReLU(),
            nn.Linear(128, 10), nn.ReLU(),          # logits can no longer be negative
        )
        example_input = torch.randn(2, 1, 28, 28)
        """,
        """
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(nn.Linear(32, 64), nn.ReLU())
                self.head = nn.Linear(64, 5)

            def forward(self, x):
                return torch.sigmoid(self.head(self.body(x)))   # 5 classes squashed into (0, 1)

        model = Net()
        example_input = torch.randn(2, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(nn.Linear(32, 64), nn.ReLU())
                self.head = nn.Linear(64, 5)

            def forward(self, x):
                logits = self.head(self.body(x))
                if not self.training:
                    return torch.sigmoid(logits)   # probabilities only at inference
                return logits

        model = Net()
        example_input = torch.randn(2, 32)
        """,
        """
        import torch
        from torch import nn

        model = nn.Sequential(                     # a generator: Tanh on an image is right
            nn.ConvTranspose2d(100, 32, 4, 1, 0), nn.BatchNorm2d(32), nn.ReLU(),
            nn.ConvTranspose2d(32, 3, 4, 2, 1), nn.Tanh(),
        )
        example_input = torch.randn(2, 100, 1, 1)
        """,
    )

    def check(self, graph, ctx):
        for out in graph.outputs:
            returned = graph.previous_layers(out, through=reshapes_only)
            returned_names = {l.name for l in returned}
            for layer in returned:
                kind = squasher(layer)
                if kind is None or only_at_inference(layer):
                    continue
                classes = _classes(layer.out_shape)
                if classes is None:
                    continue
                classifier = classifier_of(graph, layer)
                if classifier is None or classifier.name in returned_names or _keeps_width(classifier):
                    continue
                severity = _severity(kind, classes)
                if severity is not None:
                    yield self._report(layer, kind, classes, classifier, severity)

    def _report(self, layer: Layer, kind: str, classes: int, classifier: Layer, severity: Severity):
        shape = "x".join(map(str, layer.out_shape))
        if kind == "ReLU":
            effect = "no score can be negative and clipped scores get no gradient"
        else:
            low, high = ("0", "1") if kind == "Sigmoid" else ("-1", "1")
            effect = f"every score lies between {low} and {high}"
        binary = kind == "Sigmoid" and classes <= 2
        if binary:
            message = (f"the model returns sigmoid probabilities of {classifier.qualname} ({shape}): "
                       "nn.BCEWithLogitsLoss on the raw logit is exact where nn.BCELoss on a "
                       "rounded probability is clamped")
            loss = "nn.BCEWithLogitsLoss"
        else:
            message = (f"the scores of {classifier.qualname} ({shape}) pass through {kind} on the way "
                       f"out: {effect}, so a classification loss cannot push them apart")
            loss = "nn.CrossEntropyLoss (or nn.BCEWithLogitsLoss for multi-label)"
        prob = "torch.sigmoid(model(x))" if kind == "Sigmoid" else "torch.softmax(model(x), dim=-1)"
        code = (f"# in forward: return the scores of {classifier.qualname} without the {kind};\n"
                f"# train with {loss}; where probabilities are needed:\n"
                f"probs = {prob}")
        return self.finding(
            layer, message,
            evidence={"activation": kind, "classes": classes, "classifier": classifier.qualname,
                      "output_shape": list(layer.out_shape)},
            fix=Fix(f"return the raw logits and train with {loss}", code),
            severity=severity, prefer="call",
        )


def _keeps_width(layer: Layer) -> bool:
    """A Linear as wide out as in: a pooler or projection (BERT's pooler, dense + Tanh over the
    [CLS] features, returns a sentence embedding), not a head that scores classes."""
    return layer.is_a(nn.Linear) and layer.module.in_features == layer.module.out_features


def squasher(layer: Layer) -> str | None:
    """'ReLU', 'Sigmoid' or 'Tanh' when the layer is one of them (module or call)."""
    for kind, (types, functions) in _SQUASHERS.items():
        if layer.kind == Kind.MODULE and type(layer.module) in types:
            return kind
        if is_call_of(layer, functions):
            return kind
    return None


def _classes(shape) -> int | None:
    """The number of scores of a (batch, classes) output; a conv head's (N, C, 1, 1) counts."""
    if shape is None or len(shape) < 2 or any(s != 1 for s in shape[2:]):
        return None
    return shape[1]


def _severity(kind: str, classes: int) -> Severity | None:
    if kind == "ReLU":
        return Severity.WARNING if classes >= 2 else None
    if kind == "Sigmoid":
        return Severity.WARNING if classes > 2 else Severity.INFO
    return Severity.INFO if classes > 2 else None
