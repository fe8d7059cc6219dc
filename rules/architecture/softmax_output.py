"""A002 softmax-output: a model that returns softmax probabilities instead of logits."""
from __future__ import annotations

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph import Layer
from archlint.graph.ops import is_softmax
from archlint.rule import Rule

from ..helpers import classifier_of, only_at_inference, reshapes_only


class SoftmaxOutput(Rule):
    code = "A002"
    name = "softmax-output"
    severity = Severity.WARNING
    summary = "The model returns softmax probabilities of a classifier, where losses expect logits."
    what = """
        Finds a Softmax (module, F.softmax, torch.softmax or .softmax()) applied to the scores
        of a Linear or conv classifier and returned as the model's output. A LogSoftmax output
        is reported as information only: it is right for nn.NLLLoss and harmless, if
        redundant, under nn.CrossEntropyLoss. Quiet when the model also returns the logits
        themselves, or when the softmax sits under an `if` on `self.training` (applied only
        at inference).
        """
    why = """
        nn.CrossEntropyLoss (and F.cross_entropy, and BCEWithLogitsLoss for the sigmoid case)
        applies log-softmax itself. Fed probabilities, it takes the softmax of a softmax:
        every input lies in [0, 1], so the probabilities it computes differ by a factor of at
        most e, the loss can never approach zero, and gradients shrink as the network grows
        confident. The
        model trains slowly or stalls, with no error to point at the cause. Returning
        probabilities also loses precision compared with working in log space.
        """
    how_to_fix = """
        Return the logits from forward and apply softmax where probabilities are needed (at
        inference, in metrics). If the model must return probabilities when deployed, apply
        softmax only when `not self.training`.
        """
    references = (
        "PyTorch docs, CrossEntropyLoss: 'The input is expected to contain the unnormalized logits for each class' (https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html)",
        "PyTorch docs, LogSoftmax / NLLLoss",
    )
    options = {}
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(16, 10), nn.Softmax(dim=1),
        )
        example_input = torch.randn(1, 3, 32, 32)
        """,
        """
        import torch
        from torch import nn
        import torch.nn.functional as F

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(32, 5)

            def forward(self, x):
                return F.softmax(self.fc(x), dim=-1)

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
                self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                              nn.AdaptiveAvgPool2d(1), nn.Flatten())
                self.fc = nn.Linear(16, 10)

            def forward(self, x):
                logits = self.fc(self.features(x))
                if not self.training:
                    return logits.softmax(dim=1)  # probabilities only at inference
                return logits

        model = Net()
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        for out in graph.outputs:
            returned = graph.previous_layers(out, through=reshapes_only)
            returned_names = {l.name for l in returned}
            for softmax in returned:
                if not is_softmax(softmax) or only_at_inference(softmax):
                    continue
                classifier = classifier_of(graph, softmax)
                if classifier is None or classifier.name in returned_names:
                    continue
                yield self._report(softmax, classifier)

    def _report(self, softmax: Layer, classifier: Layer):
        log = _is_log(softmax)
        name = "LogSoftmax" if log else "Softmax"
        fn = "log_softmax" if log else "softmax"
        dim = softmax.kwargs.get("dim", getattr(softmax.module, "dim", None))
        if dim is None and len(softmax.args) > 1 and isinstance(softmax.args[1], int):
            dim = softmax.args[1]
        dim = 1 if dim is None else dim
        code = (f"# in forward: return the scores of {classifier.qualname} without the {name}\n"
                f"# where probabilities are needed:\n"
                f"probs = torch.{fn}(model(x), dim={dim})")
        if log:
            message = (f"the model returns LogSoftmax of {classifier.qualname}: right for nn.NLLLoss, "
                       "redundant under nn.CrossEntropyLoss, which applies log-softmax itself")
            return self.finding(
                softmax, message,
                evidence={"function": name, "classifier": classifier.qualname, "dim": dim},
                fix=Fix("keep it if you train with nn.NLLLoss; with nn.CrossEntropyLoss return the logits", code),
                severity=Severity.INFO, prefer="call",
            )
        return self.finding(
            softmax,
            f"the model returns Softmax of {classifier.qualname}: nn.CrossEntropyLoss expects logits and "
            "would apply softmax a second time, capping confidence and shrinking gradients",
            evidence={"function": name, "classifier": classifier.qualname, "dim": dim},
            fix=Fix("return the logits and apply softmax only where probabilities are needed", code),
            prefer="call",
        )


def _is_log(layer: Layer) -> bool:
    return isinstance(layer.module, nn.LogSoftmax) or "log" in layer.op.lower()
