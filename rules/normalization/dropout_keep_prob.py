"""N006 dropout-keep-prob: a dropout rate that reads like TensorFlow's keep_prob."""
from __future__ import annotations

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph.ops import Kind, is_call_of
from archlint.rule import Option, Rule

from ..helpers import dropout_rate, is_generative

# Dropout that zeroes whole channels of a feature map, and the calls that do the same.
_CHANNEL_DROPOUT_TYPES = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.FeatureAlphaDropout)
_CHANNEL_DROPOUT_FUNCTIONS = frozenset({"dropout1d", "dropout2d", "dropout3d", "feature_dropout",
                                        "feature_alpha_dropout"})


class DropoutKeepProb(Rule):
    code = "N006"
    name = "dropout-keep-prob"
    severity = Severity.WARNING
    summary = "A dropout p above 0.5: PyTorch's p is the probability to drop, not TensorFlow's keep_prob."
    what = """
        Finds dropout layers and calls (nn.Dropout, Dropout1d/2d/3d, AlphaDropout, F.dropout and
        friends) whose p is above `max-p` (0.5): most of the activations are zeroed on every
        training step. At exactly 0.5 on a conv feature map (channel dropout, or any dropout on an
        N x C x H x W tensor) it reports information: half of a conv map is a heavy rate. Quiet
        at 0.5 on fully connected features, the classic AlexNet/VGG classifier value, on
        tokens, and in models that generate images (pix2pix's U-Net generator uses dropout 0.5
        in its decoder as its noise source).
        """
    why = """
        In PyTorch, nn.Dropout(p) zeroes each element with probability p and scales the rest by
        1/(1-p). TensorFlow 1's tf.nn.dropout(x, keep_prob) took the opposite number, and code
        ported from it (or written from memory) ends up with Dropout(0.8) or Dropout(0.9) where
        keep_prob 0.8 or 0.9 was meant: 80-90% of the features are dropped and the survivors
        are multiplied by 5-10, so the network trains on a fraction of its signal with a large
        variance between train and eval. It still trains, slowly and to a worse accuracy, with no
        error to point at the cause. Conv feature maps are spatially correlated, so rates used on
        them are usually 0.1-0.2 (Tompson et al., SpatialDropout; Ghiasi et al., DropBlock).
        """
    how_to_fix = """
        If the value was meant as a keep probability, use 1 - p (Dropout(0.9) becomes
        Dropout(0.1)). If a rate that high is intended, keep it and ignore this rule for the
        line. On conv feature maps prefer a small rate, with Dropout2d to drop whole channels.
        """
    references = (
        "PyTorch docs, Dropout: 'p - probability of an element to be zeroed' (https://pytorch.org/docs/stable/generated/torch.nn.Dropout.html)",
        "TensorFlow 1.x API, tf.nn.dropout(x, keep_prob): keep_prob is the probability that each element is kept (TensorFlow 2 replaced it with rate = 1 - keep_prob)",
        "Srivastava et al., Dropout: A Simple Way to Prevent Neural Networks from Overfitting, JMLR 2014: p is the retention probability, 0.5 for hidden units",
        "Tompson et al., Efficient Object Localization Using Convolutional Networks, CVPR 2015 (SpatialDropout)",
        "Isola et al., Image-to-Image Translation with Conditional Adversarial Networks (pix2pix), CVPR 2017: dropout as the generator's noise",
    )
    options = {
        "max-p": Option(0.5, "the highest drop probability not reported as a warning", float),
    }
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Flatten(), nn.Linear(784, 256), nn.ReLU(),
            nn.Dropout(0.9),              # meant keep_prob=0.9: drops 90%
            nn.Linear(256, 10),
        )
        example_input = torch.randn(2, 1, 28, 28)
        """,
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
            nn.Dropout2d(0.5),            # half of every conv map's channels
            nn.Conv2d(32, 32, 3, padding=1),
        )
        example_input = torch.randn(2, 3, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(             # AlexNet/VGG's classifier
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.1),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Dropout(0.5), nn.Linear(256, 128), nn.ReLU(),
            nn.Dropout(0.5), nn.Linear(128, 10),
        )
        example_input = torch.randn(2, 3, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        limit = ctx["max-p"]
        # pix2pix's generator drops half of its decoder maps as its only source of noise (Isola
        # et al.): in a model that generates images, 0.5 there is the design.
        noise_source = is_generative(graph)
        for layer in graph:
            p = dropout_rate(layer, graph.model.training, alpha=True)
            if p is None:
                continue
            feature_map = _on_feature_map(layer)
            if p > limit:
                yield self._report(layer, p, feature_map, Severity.WARNING)
            elif p == 0.5 and feature_map and not noise_source:
                yield self._report(layer, p, feature_map, Severity.INFO)

    def _report(self, layer, p: float, feature_map: bool, severity: Severity):
        kind = layer.op if layer.kind == Kind.MODULE else f"F.{layer.op}"
        shape = "x".join(map(str, layer.in_shape)) if layer.in_shape else "?"
        keep = 1 - p
        if severity == Severity.WARNING:
            new_p = round(keep, 6)
            message = (f"{kind}(p={p:g}) zeroes {p:.0%} of its {shape} input on every training step "
                       f"and scales the rest by {1 / keep:.3g}" if keep > 0 else
                       f"{kind}(p={p:g}) zeroes all of its {shape} input in training")
            message += (": PyTorch's p is the probability to drop; if keep_prob="
                        f"{p:g} was meant, that is p={new_p:g}")
            description = f"p is the drop probability: use p={new_p:g} if {p:g} was meant as keep_prob"
        else:
            new_p = 0.1
            message = (f"{kind}(p=0.5) drops half of the conv feature map {shape}: a heavy rate for "
                       "spatially correlated features, where 0.1-0.2 is usual")
            description = "keep it if half is meant; on conv feature maps a rate of 0.1-0.2 is usual"
        code = None
        if layer.kind == Kind.MODULE:
            code = f"nn.{type(layer.module).__name__}(p={new_p:g})"
            if type(layer.module).__module__.split(".")[0] != "torch":
                code = None
        else:
            description += f" (pass p={new_p:g} in the call)"
        return self.finding(
            layer, message,
            evidence={"p": p, "keep_probability": round(keep, 6), "input_shape": list(layer.in_shape or ()),
                      "feature_map": feature_map, "suggested_p": new_p},
            fix=Fix(description, code), severity=severity,
        )


def _on_feature_map(layer) -> bool:
    """Dropout over a conv feature map: channel dropout, or any dropout on N x C x H x W."""
    if layer.kind == Kind.MODULE and isinstance(layer.module, _CHANNEL_DROPOUT_TYPES):
        return True
    if is_call_of(layer, _CHANNEL_DROPOUT_FUNCTIONS):
        return True
    return layer.in_shape is not None and len(layer.in_shape) >= 4
