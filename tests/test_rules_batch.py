"""B001 beyond its own examples: on small real CPU tensors, output row i changes when only input
row j != i changes for every model B001 warns about, and for no model it leaves alone (the
numeric test checks the verdict against the model's real behaviour); the batch followed through
reshapes; the fixes, applied, keep the samples apart; models that mix the batch on purpose;
reference models quiet."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import archlint
from archlint.findings import Severity
from archlint.graph.batch import AT, SCRAMBLED, BatchDim, batch_flow, reshaped

from . import batch_models as M
from .helpers import timm_model, torchvision_model

# ImplicitSoftmax calls F.softmax without dim on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Implicit dimension choice for softmax")

IMAGE = [(1, 3, 8, 8)]
SMALL_IMAGE = [(1, 3, 16, 16)]
SEQUENCE = [(1, 4, 10)]


def lint(model, shapes, **options):
    return archlint.lint(model, input_shape=shapes if len(shapes) > 1 else shapes[0], select=["B001"], **options)


def b001(report, severity=None):
    return [f for f in report.findings if f.code == "B001" and (severity is None or f.severity == severity)]


# --- the verdict against real tensors ------------------------------------------------------------

MIXING = [  # (model, input shapes, words the message must hold)
    (M.SoftmaxOverBatch, IMAGE, "softmax over dim 0"),
    (M.ImplicitSoftmax, SMALL_IMAGE, "no dim given"),
    (M.BatchCentering, IMAGE, "mean over dim 0"),
    (M.OneRowOutput, IMAGE, "output batch is not its input batch"),
    (M.HalfBatchOutput, IMAGE, "output batch is not its input batch"),
    (M.SeqFirstAttentionFedBatchFirst, SEQUENCE, "batch_first=False"),
    (M.SeqFirstLSTMFedBatchFirst, SEQUENCE, "recurrence over dim 0"),
    (M.GramAcrossBatch, SEQUENCE, "put there by"),
    (M.ViewForTranspose, [(1, 4, 6)], "merged with other positions"),
    (M.LayerNormOverEverything, SMALL_IMAGE, "LayerNorm over every dim"),
    (M.SortedOverBatch, IMAGE, "sort over dim 0"),
    (M.RowsAcrossSamples, IMAGE, "rows mix samples"),
    (M.MetaRungSoftmax, IMAGE, "softmax over dim 0"),
    (M.ExportRungSoftmax, IMAGE, "log_softmax over dim 0"),
    # as found in real code (the upstream fixes changed only the dim)
    (M.SeqFirstMixtureHead, [(16, 1, 3), (16, 1, 4)], "log_softmax over dim 1"),
    (M.CellMixtureHead, [(1, 3), (1, 4)], "log_softmax over dim 0"),
    (M.SoftMoEDispatch, [(1, 16, 8)], "softmax over dim 0"),
]
APART = [
    (M.HeadsMergedIntoBatch, SMALL_IMAGE, 0),
    (M.WindowAttention, SMALL_IMAGE, 0),
    (M.ClassTokenViT, SMALL_IMAGE, 0),
    (M.SeqFirstTransformer, [(10, 1, 16)], 1),
    (M.ModulatedConv, [(1, 4, 8, 8), (1, 8)], 0),
    (M.RecurrentBothWays, SEQUENCE, 0),
    (M.PerSampleFlattens, IMAGE, 0),
    (M.RegressionHead, IMAGE, 0),
    (M.EinsumAttention, SMALL_IMAGE, 0),
    (M.TwoViewsInOneBatch, IMAGE, 0),
    (M.BatchNormNet, IMAGE, 0),
    (M.StyleList, [(1, 1, 8)], (1, 0)),
    # the fixed versions of the real-code bugs above
    (lambda: M.SeqFirstMixtureHead(dim=-1), [(16, 1, 3), (16, 1, 4)], 1),
    (lambda: M.CellMixtureHead(dim=-1), [(1, 3), (1, 4)], 0),
    (lambda: M.SoftMoEDispatch(dim=1), [(1, 16, 8)], 0),
]


@pytest.mark.parametrize("cls, shapes, words", MIXING, ids=[c[0].__name__ for c in MIXING])
def test_b001_warns_where_output_rows_depend_on_other_samples(cls, shapes, words):
    torch.manual_seed(0)
    model = cls()
    batch_dim = 1 if cls is M.SeqFirstMixtureHead else 0
    assert M.mixes(model, shapes, batch=2, batch_dim=batch_dim)
    assert M.mixes(model, shapes, batch=4, batch_dim=batch_dim)
    found = b001(lint(model, shapes))
    assert [f.severity for f in found] == [Severity.WARNING], found
    assert words in found[0].message
    assert found[0].location is not None and found[0].fix is not None


@pytest.mark.parametrize("cls, shapes, batch_dim", APART,
                         ids=[getattr(c[0], "__name__", "fixed") for c in APART])
def test_b001_quiet_where_samples_stay_apart(cls, shapes, batch_dim):
    torch.manual_seed(0)
    model = cls()
    batch_dim, out_dim = batch_dim if isinstance(batch_dim, tuple) else (batch_dim, batch_dim)
    assert not M.mixes(model, shapes, batch=2, batch_dim=batch_dim, out_dim=out_dim)
    assert not M.mixes(model, shapes, batch=4, batch_dim=batch_dim, out_dim=out_dim)
    report = lint(model, shapes)
    assert report.error is None and b001(report) == []
    flow = batch_flow(report.graph)
    assert flow.available and not flow.events
    # The batch was followed to the end, not lost: every output holds it in one dim.
    assert all(v.proper for v, _ in flow.returned(report.graph)), flow.returned(report.graph)


def test_b001_a_merged_batch_that_fails_at_batch_two_is_the_view_to_blame():
    model = M.FlattenWholeBatch()
    assert M.runs_at(model, IMAGE, 1) and not M.runs_at(model, IMAGE, 3)
    [f] = b001(lint(model, IMAGE))
    assert f.severity == Severity.WARNING
    assert "runs only with a batch of 1" in f.message and "fc (Linear)" in f.message
    assert f.evidence["fails_at"] == "fc (Linear)"
    assert f.fix.code == "x.flatten(1)" and f.fix.checked == "changes-output"
    fixed = M.FlattenWholeBatch(fixed=True)
    fixed.load_state_dict(model.state_dict())
    assert M.runs_at(fixed, IMAGE, 3) and not M.mixes(fixed, IMAGE, batch=3)


def test_b001_a_transpose_into_the_channels_of_a_conv_is_to_blame():
    model = M.TransposeIntoChannels()
    assert M.runs_at(model, SEQUENCE, 1) and not M.runs_at(model, SEQUENCE, 2)
    [f] = b001(lint(model, SEQUENCE))
    assert f.severity == Severity.WARNING and f.evidence["fails_at"] == "b (Conv1d)"
    assert "moves the batch into the features" in f.message and "transpose(0, 1)" in f.message


@pytest.mark.parametrize("cls, shapes", [(M.BatchNormNet, IMAGE), (M.HandWrittenBatchNorm, IMAGE),
                                          (M.MinibatchStdDev, [(1, 3, 4, 4)]), (M.ContrastiveLogits, IMAGE),
                                          (M.MixupInForward, IMAGE)],
                         ids=["BatchNorm-training", "BatchNorm-by-hand", "MinibatchStdDev", "ContrastiveLogits",
                              "Mixup"])
def test_b001_quiet_where_the_batch_is_mixed_on_purpose(cls, shapes):
    torch.manual_seed(0)
    model = cls()
    # These do mix (BatchNorm in training mode): the rule leaves them alone by design.
    assert M.mixes(model, shapes, batch=4, train=cls is M.BatchNormNet)
    assert b001(lint(model, shapes)) == []


def test_b001_quiet_on_a_loss_computed_in_forward():
    assert b001(lint(M.LossInForward(), IMAGE)) == []


@pytest.mark.parametrize("cls, shapes", [(M.SetMLP, [(1, 6)]), (M.Prototype, IMAGE),
                                          (M.FlattenedTokenLogits, [(1, 4, 5)])],
                         ids=["unconfirmed-batch", "set-embedding", "flattened-token-logits"])
def test_b001_says_information_where_intent_is_unclear(cls, shapes):
    model = cls()
    assert M.mixes(model, shapes, batch=2)  # the rows do depend on other samples
    found = b001(lint(model, shapes))
    assert [f.severity for f in found] == [Severity.INFO], found


def test_b001_options():
    unconfirmed = b001(lint(M.SetMLP(), [(1, 6)], rules={"B001": {"unconfirmed": "warning"}}))
    assert [f.severity for f in unconfirmed] == [Severity.WARNING]
    assert b001(lint(M.SetMLP(), [(1, 6)], rules={"B001": {"unconfirmed": "ignore"}})) == []
    rows = b001(lint(M.FlattenedTokenLogits(), [(1, 4, 5)], rules={"B001": {"merged-rows": "warning"}}))
    assert [f.severity for f in rows] == [Severity.WARNING]
    assert b001(lint(M.FlattenedTokenLogits(), [(1, 4, 5)], rules={"B001": {"merged-rows": "ignore"}})) == []
    with pytest.raises(archlint.errors.ConfigError):
        lint(M.SetMLP(), [(1, 6)], rules={"B001": {"unconfirmed": "loud"}})


# --- fixes: built, run on the op's input, and keeping the samples apart once applied ---------

def test_b001_softmax_fix_is_the_module_on_dim_one_and_stops_the_mixing():
    model = M.SoftmaxOverBatch()
    [f] = b001(lint(model, IMAGE))
    assert f.fix.code == "nn.Softmax(dim=1)" and f.fix.checked == "runs"
    model.softmax = eval(f.fix.code, {"nn": nn})
    assert not M.mixes(model, IMAGE, batch=3)


def test_b001_implicit_softmax_on_tokens_gets_advice_not_a_guessed_dim():
    # (B, N, C): the classes may be dim 2, or the tokens dim 1 (Soft-MoE's dispatch weights,
    # fixed upstream from dim=0 to dim=1): no code where the intended dim is not certain.
    [f] = b001(lint(M.ImplicitSoftmax(), SMALL_IMAGE))
    assert f.fix.code is None and "not no dim (PyTorch then takes dim 0)" in f.fix.description
    assert f.evidence["op"].startswith("softmax over dim 0 (no dim given")
    assert not M.mixes(M.ImplicitSoftmax(dim=-1), SMALL_IMAGE, batch=3)


def test_b001_functional_softmax_fix_on_a_matrix_of_scores():
    [f] = b001(lint(M.SetMLP(), [(1, 6)]))
    assert f.fix.code == "F.softmax(x, dim=1)" and f.fix.checked == "runs"


@pytest.mark.parametrize("cls, code", [
    (M.SeqFirstAttentionFedBatchFirst, "nn.MultiheadAttention(32, 4, batch_first=True)"),
    (M.SeqFirstLSTMFedBatchFirst, "nn.LSTM(16, 8, batch_first=True)")])
def test_b001_sequence_first_layer_fix_is_batch_first(cls, code):
    model = cls()
    [f] = b001(lint(model, SEQUENCE))
    assert f.fix.code == code and f.fix.checked == "runs"
    fixed = cls(batch_first=True)
    assert not M.mixes(fixed, SEQUENCE, batch=3)


def test_b001_view_written_for_a_transpose_gets_the_permute():
    model = M.ViewForTranspose()
    [f] = b001(lint(model, [(1, 4, 6)]))
    assert f.fix.code == "x.permute(1, 0, 2)" and f.fix.checked == "runs"
    fixed = M.ViewForTranspose(fixed=True)
    fixed.load_state_dict(model.state_dict())
    assert not M.mixes(fixed, [(1, 4, 6)], batch=3)


def test_b001_output_view_fix_keeps_the_batch_first():
    [f] = b001(lint(M.OneRowOutput(), IMAGE))
    assert f.fix.code == "x.flatten(1)" and f.fix.checked == "runs"


# --- the batch through reshapes (graph/batch.py) ------------------------------------------------

def at(dim, inner=1, outer=1):
    return BatchDim(AT, dim, inner, outer)


@pytest.mark.parametrize("before, after, value, expected", [
    ((2, 8), (16,), at(0), (0, 8, 1)),                       # x.view(-1): one dim, 8 values per sample
    ((2, 8), (1, 16), at(0), (1, 8, 1)),                     # x.view(1, -1): the batch inside dim 1
    ((2, 4, 6), (2, 24), at(0), (0, 1, 1)),                  # x.flatten(1): still the batch
    ((2, 4, 5, 3), (8, 5, 3), at(0), (0, 4, 1)),             # heads merged: (B*H, N, D)
    ((8, 5, 3), (2, 4, 5, 3), at(0, 4), (0, 1, 1)),          # and split back
    ((2, 4, 4, 3), (2, 2, 2, 2, 2, 3), at(0), (0, 1, 1)),    # window partition keeps dim 0
    ((2, 3, 16), (3, 2, 16), at(0), None),                   # view(N, B, D) for a transpose
])
def test_reshapes_move_the_batch_as_row_major_order_says(before, after, value, expected):
    result = reshaped(value, before, after, 2, "view")
    if expected is None:
        assert result.state == SCRAMBLED
    else:
        assert (result.state, result.dim, result.inner, result.outer) == (AT,) + expected


def test_view_for_a_transpose_keeps_the_samples_in_blocks_of_rows():
    # (B, N, D) read as (N, B, D) with N = 4: rows 0-1 are sample 0's, rows 2-3 sample 1's.
    result = reshaped(at(0), (2, 4, 16), (4, 2, 16), 2, "view")
    assert (result.state, result.dim, result.inner, result.outer) == (AT, 0, 2, 1)
    x = torch.arange(2 * 4 * 16).view(2, 4, 16)
    sample_of_row = (x.view(4, 2, 16)[:, :, 0] // (4 * 16))
    assert sample_of_row[:, 0].tolist() == [0, 0, 1, 1] == [r // 2 for r in range(4)]


def test_batch_flow_is_computed_once_per_graph():
    report = lint(M.HeadsMergedIntoBatch(), SMALL_IMAGE)
    assert batch_flow(report.graph) is batch_flow(report.graph)


def test_no_batch_analysis_without_a_rerun():
    # A part of a detector fed with captured feature maps has none (pipeline.lint_parts): its
    # inputs' first dims are not known to be images of a batch.
    graph = archlint.lint(M.SoftmaxOverBatch(), input_shape=IMAGE[0], select=["K001"]).graph
    graph.rerun = None
    flow = batch_flow(graph)
    assert not flow.available and "cannot be run again" in flow.reason


def test_b001_costs_nothing_when_not_selected():
    graph = archlint.lint(M.SoftmaxOverBatch(), input_shape=IMAGE[0], select=["K001"]).graph
    from archlint.graph import batch as batch_module

    assert graph not in batch_module._cache  # the rerun runs only when B001 asks


# --- reference models -------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("source, name, shape", [
    ("torchvision", "resnet50", (1, 3, 224, 224)), ("torchvision", "vit_b_16", (1, 3, 224, 224)),
    ("torchvision", "swin_t", (1, 3, 224, 224)), ("torchvision", "maxvit_t", (1, 3, 224, 224)),
    ("torchvision", "mobilenet_v3_large", (1, 3, 224, 224)), ("torchvision", "inception_v3", (1, 3, 299, 299)),
    ("timm", "swin_tiny_patch4_window7_224", None), ("timm", "vit_small_patch16_224", None),
    ("timm", "convnext_nano", None), ("timm", "coatnet_0_rw_224", None)])
def test_b001_quiet_on_reference_models_and_follows_their_batch(source, name, shape):
    model = torchvision_model(name) if source == "torchvision" else timm_model(name)
    report = archlint.lint(model, input_shape=shape, select=["B001"]) if shape else \
        archlint.lint(model, select=["B001"])
    assert b001(report) == []
    flow = batch_flow(report.graph)
    assert flow.available and not flow.events
    assert "x" in flow.confirmed
    assert all(v.proper and v.dim == 0 for v, _ in flow.returned(report.graph))


def test_a_reshape_that_keeps_the_size_read_off_dim_0_confirms_the_batch():
    class Rows(nn.Module):
        def __init__(self, keep: bool):
            super().__init__()
            self.keep = keep
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            x = x.view(x.size(0), -1) if self.keep else x.view(-1, 6)
            return torch.softmax(self.fc(x), dim=0)

    kept = b001(lint(Rows(keep=True), [(1, 2, 3)]))
    assert [f.severity for f in kept] == [Severity.WARNING]
    assert kept[0].evidence["batch_confirmed_by"]
    assert [f.severity for f in b001(lint(Rows(keep=False), [(1, 2, 3)]))] == [Severity.INFO]


# --- graphs whose ops all keep the samples apart: the flow without the rerun ------------------

class _Broadcast(nn.Module):
    """A per-sample vector added to a feature map of another rank: at a batch of one it
    broadcasts without error, at a batch of two the samples meet (or the forward fails)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 8)

    def forward(self, x):
        y = self.conv(x)
        return y + self.fc(torch.flatten(self.pool(y), 1))  # (1, 8) aligned with (H, W) = (8, 8)


@pytest.mark.parametrize("cls, shapes, words", MIXING, ids=[c[0].__name__ for c in MIXING])
def test_every_mixing_model_goes_to_the_full_analysis(cls, shapes, words):
    from archlint.graph.batch_apart import flow_if_apart

    report = lint(cls(), shapes)
    assert flow_if_apart(report.graph) is None


def test_a_lower_rank_operand_goes_to_the_full_analysis():
    from archlint.graph.batch_apart import flow_if_apart

    assert flow_if_apart(lint(_Broadcast(), IMAGE).graph) is None


@pytest.mark.parametrize("build", [
    lambda: torchvision_model("resnet18"), lambda: torchvision_model("mobilenet_v3_small"),
    lambda: torchvision_model("densenet121"), lambda: torchvision_model("efficientnet_b0"),
    M.BatchNormNet,
], ids=["resnet18", "mobilenet_v3_small", "densenet121", "efficientnet_b0", "BatchNormNet"])
def test_without_the_rerun_the_flow_is_the_full_analysis(build):
    """Where every op keeps each sample apart, the flow read off the graph says what the rerun
    at a batch of two finds: every output at dim 0, nothing mixed, the same inputs confirmed."""
    from archlint.graph import batch as B
    from archlint.graph.batch_apart import flow_if_apart
    from archlint.inputs import ExampleInputs, from_shapes
    from archlint.pipeline import analyze

    model = build().to("meta")
    shapes = IMAGE if isinstance(model, M.BatchNormNet) else [(1, 3, 64, 64)]
    # The graph before the rules: a lint's report lets go of the reruns once they are done.
    graph, _ = analyze(model, ExampleInputs(from_shapes(shapes), "test"), owned=True)
    fast, full = flow_if_apart(graph), B._analyze(graph)
    assert fast is not None and full.available and not full.events and not fast.events
    returned = lambda flow: [(v.state, v.dim, v.proper, s) for v, s in flow.returned(graph)]
    assert returned(fast) == returned(full)
    assert set(fast.confirmed) == set(full.confirmed)
