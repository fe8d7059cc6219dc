"""N004 dropout-before-batchnorm: dropout feeding BatchNorm, which shifts its statistics between train and eval."""
from __future__ import annotations

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph.ops import (BATCH_NORM_TYPES, INSTANCE_NORM_TYPES, Kind, is_batch_norm, is_merge,
                                is_softmax)
from archlint.rule import Option, Rule

from ..helpers import built_where, dropout_rate


# Norms that standardize each sample on its own: the same statistics at train and eval time.
_PER_SAMPLE_NORMS = (nn.GroupNorm, nn.LayerNorm, *INSTANCE_NORM_TYPES)


class DropoutBeforeBatchNorm(Rule):
    code = "N004"
    name = "dropout-before-batchnorm"
    severity = Severity.WARNING
    summary = "Dropout whose output reaches a BatchNorm: the variance differs between train and eval."
    what = """
        Finds a dropout layer or call (Dropout, Dropout1d/2d/3d, F.dropout) with p > 0 whose
        output reaches a BatchNorm with no other normalization on the way (convs, linears,
        activations and additions pass the problem through). A GroupNorm, LayerNorm or
        InstanceNorm in between ends the search: they normalize every sample on its own, at
        train and eval time alike. So does a merge (an addition or concatenation): a dropout at
        the end of a residual or attention branch is summed with the identity, which dilutes
        the shift, and a dropout feeding a skip concatenation (pix2pix's generator noise) is
        one input among several. Dropout with p <= 0.1 (the shift is at most 1.11x, reported
        negligible), dropout on attention weights (right after a softmax), p=0, AlphaDropout
        (built to keep the variance) and stochastic depth are left alone.
        """
    why = """
        In training, dropout zeroes a fraction p of the values and scales the rest by 1/(1-p);
        that keeps the mean but raises the variance. In eval mode dropout does nothing, so the
        variance is lower. The BatchNorm below learned its running variance from the training
        distribution and, at test time, divides by the wrong number: every layer after it sees
        activations with a different scale than in training. Li et al. call this variance shift
        and show it costs accuracy on CIFAR and ImageNet models; their remedy is to put dropout
        only after the last BatchNorm.
        """
    how_to_fix = """
        Move the dropout after the last BatchNorm, typically right before the classifier. If the
        regularization is needed inside the network, use a per-sample norm (GroupNorm/LayerNorm)
        after the dropout, or stochastic depth on residual branches.
        """
    references = (
        "Li et al., Understanding the Disharmony between Dropout and Batch Normalization by Variance Shift, CVPR 2019",
        "Srivastava et al., Dropout: A Simple Way to Prevent Neural Networks from Overfitting, JMLR 2014",
    )
    options = {"min-p": Option(0.1, "dropout with p at or below this is not reported")}
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Dropout(0.3),
            nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        )
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Dropout(0.0),  # p=0: does nothing
            nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Dropout(0.3),  # after the last BatchNorm: fine
            nn.Linear(32, 10),
        )
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        for layer in graph:
            p = dropout_rate(layer, graph.model.training)
            if not p or p >= 1 or p <= ctx["min-p"]:
                continue
            if any(is_softmax(l) for l in graph.predecessors(layer)):
                continue  # attention-weight dropout: rows of probabilities, not features
            reached = graph.next_layers(
                layer, through=lambda l: not (l.kind == Kind.MODULE and isinstance(l.module, (*BATCH_NORM_TYPES, *_PER_SAMPLE_NORMS)))
                and l.kind != Kind.OUTPUT and not is_merge(l))
            bns = [l for l in reached if is_batch_norm(l)]
            if not bns:
                continue
            bn = min(bns, key=lambda l: l.index)
            last_bn = max(graph.modules(*BATCH_NORM_TYPES), key=lambda l: l.index)
            kind = layer.op if layer.kind == Kind.MODULE else f"F.{layer.op}"
            code = (f"# remove the {kind}(p={p:g}) at {built_where(layer)} and apply it after the last "
                    f"BatchNorm ({last_bn.qualname}), e.g. just before the classifier:\n"
                    f"self.dropout = nn.Dropout(p={p:g})\n"
                    f"...\n"
                    f"x = self.dropout(x)  # after {last_bn.qualname}")
            yield self.finding(
                layer,
                f"{kind}(p={p:g}) feeds {bn.op} {bn.qualname} with no norm between: in training it "
                f"scales kept values by {1 / (1 - p):.3g} and raises their variance, in eval it does "
                f"nothing, so the BatchNorm's running variance is wrong at test time",
                evidence={"p": p, "train_scale": round(1 / (1 - p), 4), "batchnorm": bn.qualname,
                          "batchnorms_reached": len(bns), "last_batchnorm": last_bn.qualname},
                fix=Fix("move the dropout after the last BatchNorm", code),
            )
