"""C001 low-coverage: the linted graph reached too little of the model to vouch for it."""
from __future__ import annotations

from archlint import sources
from archlint.findings import Finding, Fix, Severity
from archlint.rule import Example, Option, Rule

from ..helpers import human


# One model for both examples; only forward differs.
_DETECTOR = """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.head = nn.Sequential(nn.Linear(8 * 32 * 32, 512), nn.Linear(512, 10))

        def forward(self, x):{forward}

    model = Net()
    example_input = torch.randn(1, 3, 32, 32)
"""


class LowCoverage(Rule):
    code = "C001"
    name = "low-coverage"
    severity = Severity.WARNING
    summary = "archlint's graph reached less of the model than the coverage threshold"
    what = """
        Measures the share of the model's parameters that the traced graph reached (layers it
        called, parameters it read) and reports when it is below `min-coverage`, naming the
        modules that were not reached and why: a part skipped because it could not be traced on
        its own, code behind an op the tracer could not open, or modules forward never called.
    """
    why = """
        No findings on a model archlint saw a third of is not a clean bill of health. Without
        this warning a CI job with `--fail-on warning` would pass green on a model whose
        decoder, head or checkpointed blocks were never linted.
    """
    how_to_fix = """
        Make the unreached part traceable (shape checks instead of value checks, no
        data-dependent branches in forward), lint it as its own target
        (`archlint check file.py::model.head`), or, when the modules are deliberately unused,
        remove them from the model. Lower `min-coverage` only for a model you have reviewed.
    """
    references = (
        "torch.export, non-strict mode and its limits: https://pytorch.org/docs/stable/export.html",
        "torch.fx symbolic tracing limitations: https://pytorch.org/docs/stable/fx.html#limitations-of-symbolic-tracing",
    )
    options = {
        "min-coverage": Option(90.0, "Lowest share of parameters reached, in percent, that passes.",
                               type=float),
    }
    bad = (Example(_DETECTOR.format(forward="""
            x = self.backbone(x)
            if x.sum() > 0:  # a value-dependent branch: no tracer follows it
                return self.head(x.flatten(1))
            return x""")),)
    good = (Example(_DETECTOR.format(forward="""
            return self.head(self.backbone(x).flatten(1))""")),)

    def check(self, graph, ctx):
        coverage = graph.coverage
        if coverage is None or coverage.share * 100 >= ctx["min-coverage"]:
            return
        missing = "; ".join(f"{name or 'the model'} ({human(params)} params: {why})"
                            for name, params, why in coverage.unreached[:5])
        more = len(coverage.unreached) - 5
        if more > 0:
            missing += f"; and {more} more"
        first = coverage.unreached[0][0] if coverage.unreached else ""
        frames = graph.construction.get(first, ())
        frame = sources.pick(frames)
        yield Finding(
            code=self.code, name=self.name, severity=self.severity, module=first,
            message=(f"the linted graph reached only {coverage.describe()}; the findings cover "
                     f"that part alone. Not reached: {missing}"),
            location=frame.location() if frame else None,
            evidence={"params_reached": coverage.params_reached, "params_total": coverage.params_total,
                      "modules_reached": coverage.modules_reached,
                      "modules_total": coverage.modules_total,
                      "not_reached": [name for name, _, _ in coverage.unreached]},
            fix=Fix("make the unreached part traceable or lint it as its own target "
                    f"(archlint check file.py::NAME.{first})" if first else
                    "make the model traceable or lint its parts as their own targets"),
        )
