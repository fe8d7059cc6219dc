"""Models that cannot be traced whole: parts linted alone, eval-mode retry, crashing rules.

Each test here is a regression test for a failure seen in the model-zoo corpus (bench/corpus.py).
"""
import torch
import torchvision
from torch import nn

import archlint
from archlint.pipeline import analyze
from archlint.engine import run_rules
from archlint.errors import ShapeError
from archlint.findings import Severity
from archlint.graph import ArchGraph
from archlint.inputs import ExampleInputs, from_shapes
from archlint.rule import Rule
from archlint.rules.kernels.large_kernel import LargeKernel
from archlint.config import Settings

from .helpers import lint_source


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 7, stride=2, padding=3)  # K001 fires here
        self.body = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, x):
        return self.body(self.stem(x))


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.cls = nn.Conv2d(32, 4, 1)
        self.box = nn.Conv2d(32, 4, 1)

    def forward(self, features):
        return [self.cls(f) for f in features], [self.box(f) for f in features]


class Refiner(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, boxes):
        return self.fc(boxes)


class Detector(nn.Module):
    """A toy two-stage detector: the proposal filter's output size depends on the scores."""

    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.head = Head()
        self.refine = Refiner()

    def forward(self, x):
        feature = self.backbone(x)
        scores, boxes = self.head([feature])
        if scores[0].max().item() < 0.5:  # needs real values: no tracer, and no meta run, gets past it
            return boxes[0].new_zeros(0, 4)
        return self.refine(boxes[0].flatten().view(-1, 4))


def test_untraceable_detector_lints_its_parts_with_qualified_names():
    report = archlint.lint(Detector(), input_shape=(1, 3, 64, 64), select=["K001"])
    assert report.error is None
    assert report.tracer == "parts"
    linted = {p["module"] for p in report.parts if "skipped" not in p}
    assert linted == {"backbone", "head"}
    skipped = {p["module"]: p["skipped"] for p in report.parts if "skipped" in p}
    assert skipped == {"refine": "did not run before the forward pass failed"}
    assert any(n.startswith("The whole model could not be traced") and "backbone" in n for n in report.notes)
    assert any(n.startswith("Skipped refine") for n in report.notes)
    # Findings keep the module's name in the whole model, not in the part.
    assert [f.module for f in report.findings] == ["backbone.stem"]
    assert report.summary["layers"] == 3 + 2  # stem, body.0, body.1 + cls, box
    assert report.to_dict()["parts"][0]["module"] == "backbone"


def test_receptive_fields_of_parts_fed_feature_maps_are_left_unknown():
    report = archlint.lint(Detector(), input_shape=(1, 3, 64, 64), select=["R"])
    assert not [f for f in report.findings if f.module.startswith("head.")]


def test_parts_captured_inputs_have_the_real_shapes():
    report = archlint.lint(Detector(), input_shape=(1, 3, 64, 64), select=["K001"])
    head = next(p for p in report.parts if p["module"] == "head")
    assert head["inputs"] == [[1, 32, 16, 16]]


def test_nothing_traceable_keeps_the_exit_2_error(tmp_path):
    source = """
        import torch
        from torch import nn

        class Thresholded(nn.Module):
            def forward(self, x):
                if x.sum() > 0:
                    return x.relu()
                return x
        model = Thresholded()
        example_input = torch.randn(1, 3, 8, 8)
    """
    report = lint_source(source, tmp_path)
    assert report.exit_code(Severity.WARNING) == 2
    assert report.models[0].error is not None
    assert "Traceback" not in str(report.models[0].error)


def test_a_real_shape_error_is_not_papered_over_by_parts():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(10, 2))
    try:
        archlint.lint(model, input_shape=(1, 3, 32, 32))
    except ShapeError as exc:
        assert "1." in str(exc) or "Linear" in str(exc)
    else:
        raise AssertionError("a Linear fed the wrong width must stay an error")


class NeedsTargets(nn.Module):
    """As torchvision's detection models: training mode needs targets, eval mode does not."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        if self.training:  # the real ones compute losses from targets passed in training
            raise ValueError("targets should not be none when in training mode")
        return self.conv(x)


def test_a_model_that_only_runs_in_eval_mode_is_traced_in_eval_mode():
    model = NeedsTargets()
    report = archlint.lint(model, input_shape=(1, 3, 32, 32))
    assert report.error is None and report.tracer == "torch.fx"
    assert any(n.startswith("traced in eval mode") and "targets should not be none" in n
               for n in report.notes)
    assert model.training, "the user's model must not be switched to eval mode"


def test_wrapped_function_that_edits_its_list_argument():
    """torchvision's swin3d: an fx-wrapped helper mutates a list it is given."""
    report = archlint.lint(_ListEditing(), input_shape=(1, 3, 8, 8))
    assert report.error is None and report.tracer == "torch.fx"


@torch.fx.wrap
def _clip_window(window, size):
    for i in range(len(window)):
        window[i] = min(window[i], size[i])
    return window


class _ListEditing(nn.Module):
    def forward(self, x):
        window = _clip_window([4, 4], x.shape[2:])
        return torch.nn.functional.avg_pool2d(x, window)


class _Crashing(Rule, abstract=True):
    code, name, severity = "Z999", "always-crashes", Severity.WARNING

    def check(self, graph, ctx):
        raise ValueError("boom")
        yield  # pragma: no cover


def test_a_crashing_rule_is_reported_and_the_others_still_run():
    model = nn.Sequential(nn.Conv2d(8, 8, 7))
    inputs = ExampleInputs(from_shapes([(1, 8, 32, 32)]), "test")
    graph, _ = analyze(model, inputs)
    problems: list[str] = []
    found = run_rules(graph, [_Crashing, LargeKernel], Settings(), problems=problems)
    assert [f.code for f in found] == ["K001"]
    assert len(problems) == 1 and "Z999" in problems[0] and "ValueError: boom" in problems[0]


def test_partial_traces_whole_when_possible():
    graph, _ = analyze(Backbone(), ExampleInputs(from_shapes([(1, 3, 32, 32)]), "test"))
    assert isinstance(graph, ArchGraph) and graph.tracer == "torch.fx"


class _LatentQuery(nn.Module):
    """timm's AttentionPoolLatent: a learned query fed straight into a Linear."""

    def __init__(self):
        super().__init__()
        self.latent = nn.Parameter(torch.zeros(1, 1, 16))
        self.q = nn.Linear(16, 16)
        self.proj = nn.Linear(16, 16)

    def forward(self, x):
        return self.proj(x) + self.q(self.latent)


def test_a_parameter_fed_straight_into_a_layer():
    report = archlint.lint(_LatentQuery(), input_shape=(1, 4, 16))
    assert report.error is None and report.tracer == "torch.fx"
    assert report.summary["macs"] == 4 * 16 * 16 + 16 * 16


def test_meta_build_skips_weight_initialization_but_keeps_real_buffers():
    from archlint.load import building

    calls = []

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)
            nn.init.trunc_normal_(self.fc.weight, std=0.02)
            self.register_buffer("index", torch.arange(4).float())
            self.index.mul_(2)  # a real buffer: the write must happen
            calls.append(self.fc.weight.is_meta)

        def forward(self, x):
            return self.fc(x)

    with building(on_meta=True):
        net = Net()
    assert calls == [True]
    assert net.index.tolist() == [0.0, 2.0, 4.0, 6.0]
    report = archlint.lint(net, input_shape=(2, 8))
    assert report.error is None and report.summary["params"] == 72


class TwoStage(nn.Module):
    """Proposals filtered by score and NMS, then a second-stage head on the survivors."""

    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.proposals = nn.Conv2d(32, 5, 1)  # 4 box coordinates + 1 score per position
        self.box_head = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 4))

    def forward(self, x):
        out = self.proposals(self.backbone(x)).flatten(2)[0].t()
        boxes, scores = out[:, :4], out[:, 4]
        keep = torch.nonzero(scores > 0.5).squeeze(1)
        boxes, scores = boxes[keep], scores[keep]
        if boxes.numel() == 0:
            return boxes
        keep = torchvision.ops.nms(boxes, scores, 0.5)
        return self.box_head(boxes[keep])


def test_second_stage_heads_are_reached_by_keeping_every_candidate():
    report = archlint.lint(TwoStage(), input_shape=(1, 3, 64, 64), select=["K001"])
    assert report.tracer == "parts"
    parts = {p["module"]: p for p in report.parts}
    assert "skipped" not in parts["box_head"]
    assert parts["box_head"]["inputs"] == [[16 * 16, 4]]  # every one of the 16x16 proposals
    assert any("keep every candidate" in n for n in report.notes)


def test_a_part_that_needs_data_is_not_a_shape_error():
    from archlint.trace.diagnose import needs_data

    assert needs_data(NotImplementedError("aten::_unique2: no Meta kernel"))
    assert not needs_data(RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x10 and 12x2)"))


def test_real_buffer_filled_from_meta_values_still_builds_on_meta():
    """timm swinv2: a buffer is filled (copy_) from a table computed on the parameters' device."""
    from archlint.load import building

    class Table(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(4))
            self.register_buffer("table", torch.zeros(4))
            self.table.copy_(torch.arange(4, device=self.scale.device) * 2.0)

        def forward(self, x):
            return x * self.scale + self.table

    with building(on_meta=True):
        net = Table()
    assert net.scale.is_meta and not net.table.is_meta


def test_constructor_that_measures_a_feature_size_with_a_dummy_forward_builds_on_meta():
    """timm's HybridEmbed and YOLO run their layers once on torch.zeros(...) while building."""
    from archlint.load import building

    class Hybrid(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.LayerNorm([16, 15, 15]))
            with torch.no_grad():
                features = self.stem(torch.zeros(1, 3, 32, 32))
            self.head = nn.Linear(features.shape[1] * features.shape[2] * features.shape[3], 10)

        def forward(self, x):
            return self.head(self.stem(x).flatten(1))

    with building(on_meta=True):
        net = Hybrid()
    assert all(p.is_meta for p in net.parameters())
    assert net.head.in_features == 16 * 15 * 15


def test_unique_on_meta_takes_every_value_as_one():
    """batched NMS groups boxes by class with torch.unique, which has no meta kernel."""
    from archlint.trace.parts import _keep_every_candidate

    labels = torch.empty(2, 3, dtype=torch.long, device="meta")
    with _keep_every_candidate():
        values, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        plain = torch.unique(labels)
    # One value: batched NMS then runs one pass over every box instead of one per box.
    assert values.shape == (1,) and inverse.shape == (2, 3) and counts.shape == (1,)
    assert plain.shape == (1,)
