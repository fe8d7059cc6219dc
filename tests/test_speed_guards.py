"""Speed guards (issue 14): a plain CNN is linted without importing torch._dynamo, sympy,
the FLOP counter or networkx, and the closed-form shapes that make that possible agree with
torch's own meta kernels.

The first op a process runs through torch's Python references imports torch._dynamo and sympy
(1-2 s): one common op left without a closed form brings the whole cost back, silently. The FLOP
counter imports triton where it is installed (0.3 s), for the MACs of an op with no closed form.
networkx (0.1 s, a fifth of a small model's check) is imported only by the graph algorithms
that need it (ArchGraph.g).
Timings are measured by bench/bench_speed.py, never here.
"""
from __future__ import annotations

import json
import operator
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archlint.trace import shapes

from .helpers import write_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("torch._dynamo", "sympy", "torch.utils.flop_counter", "networkx")

CHILD = r"""
import json, sys
from archlint.cli import main
sys.argv = ["archlint", "check", "--no-cache", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print(json.dumps({name: name in sys.modules for name in %r}))
""" % (HEAVY,)


def imported_after_check(*paths: str) -> dict[str, bool]:
    out = subprocess.run([sys.executable, "-c", CHILD, *paths], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


FUNCTIONAL_CNN = '''
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 16, 3, padding=1)
            self.b = nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(16)
            self.act = nn.SiLU(inplace=True)
            self.drop = nn.Dropout(0.1)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            x = F.relu(self.a(x))
            y = self.act(self.bn(self.b(x)))
            y = y + F.max_pool2d(x, 2) * 0.5
            y = torch.cat([y, torch.sigmoid(y)], dim=1)
            y = F.gelu(y).mean((2, 3))
            return self.fc(self.drop(y)).softmax(-1)

    model = Net()
    example_input = torch.randn(2, 3, 32, 32)
'''


def test_a_small_cnn_is_linted_without_dynamo_sympy_the_flop_counter_or_networkx():
    assert imported_after_check("examples/small_cnn.py") == {name: False for name in HEAVY}


def test_functional_forms_of_the_common_ops_need_no_dynamo(tmp_path):
    path = write_model(tmp_path, FUNCTIONAL_CNN)
    assert imported_after_check(str(path)) == {name: False for name in HEAVY}


# --- the closed forms agree with torch ---------------------------------------------------------

def meta(*shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")


MODULE_CASES = [
    (nn.Conv2d(3, 8, 3), meta(1, 3, 17, 17)),
    (nn.Conv2d(3, 8, 5, stride=2, padding=2, dilation=1), meta(2, 3, 33, 31)),
    (nn.Conv2d(8, 8, 3, stride=3, padding=4, dilation=2, groups=4), meta(1, 8, 20, 9)),
    (nn.Conv2d(3, 8, 3, padding="same", dilation=2), meta(1, 3, 10, 10)),
    (nn.Conv2d(3, 8, (1, 7), padding=(0, 3)), meta(3, 12, 12)),
    (nn.Conv1d(4, 6, 3, stride=2), meta(2, 4, 50)),
    (nn.Conv3d(2, 4, 3, padding=1), meta(1, 2, 5, 6, 7)),
    (nn.Linear(16, 4), meta(2, 7, 16)),
    (nn.Linear(16, 4, bias=False), meta(16)),
    (nn.ReLU(), meta(2, 3)), (nn.GELU(approximate="tanh"), meta(4, 5)), (nn.Hardswish(), meta(1, 2, 3)),
    (nn.Softmax(dim=1), meta(2, 5)), (nn.Dropout(0.3), meta(3, 3)),
    (nn.MaxPool2d(3, 2, 1), meta(1, 4, 15, 15)),
    (nn.MaxPool2d(3, 2, ceil_mode=True), meta(1, 4, 14, 14)),
    (nn.MaxPool2d(2, 2, 1, dilation=1, ceil_mode=True), meta(1, 4, 7, 7)),
    (nn.AvgPool2d(3, 2, 1, ceil_mode=True), meta(1, 4, 8, 9)),
    (nn.MaxPool1d(4), meta(2, 3, 17)), (nn.AvgPool3d(2), meta(1, 1, 4, 5, 6)),
    (nn.AdaptiveAvgPool2d(1), meta(2, 8, 7, 7)), (nn.AdaptiveAvgPool2d((None, 3)), meta(8, 7, 7)),
    (nn.BatchNorm2d(8), meta(2, 8, 4, 4)), (nn.GroupNorm(2, 8), meta(2, 8, 4)),
    (nn.LayerNorm(6), meta(2, 3, 6)),
]


@pytest.mark.parametrize("module,x", MODULE_CASES, ids=lambda v: repr(v)[:40])
def test_module_closed_forms_match_torch(module, x):
    module = module.to("meta")
    expected = module(x)
    got = shapes.module_output(module, (x,), {})
    assert got is not None
    assert (got.shape, got.dtype, got.stride()) == (expected.shape, expected.dtype, expected.stride())


def test_an_input_a_layer_rejects_is_left_to_torch():
    assert shapes.module_output(nn.Conv2d(4, 8, 3).to("meta"), (meta(1, 3, 8, 8),), {}) is None
    assert shapes.module_output(nn.Conv2d(3, 8, 5).to("meta"), (meta(1, 3, 4, 4),), {}) is None
    assert shapes.module_output(nn.Linear(5, 2).to("meta"), (meta(2, 4),), {}) is None
    assert shapes.module_output(nn.MaxPool2d(2, padding=2).to("meta"), (meta(1, 1, 8, 8),), {}) is None
    assert shapes.module_output(nn.BatchNorm2d(8).to("meta"), (meta(1, 8, 1, 1),), {}) is None
    half = meta(1, 3, 8, 8, dtype=torch.float16)
    assert shapes.module_output(nn.Conv2d(3, 8, 3).to("meta"), (half,), {}) is None
    channels_last = meta(1, 3, 8, 8).to(memory_format=torch.channels_last)
    assert shapes.module_output(nn.Conv2d(3, 8, 3).to("meta"), (channels_last,), {}) is None


def test_an_in_place_layer_writes_its_input():
    x = meta(2, 3)
    before = x._version
    assert shapes.module_output(nn.ReLU(inplace=True), (x,), {}) is x
    assert x._version > before


x4 = meta(2, 8, 6, 6)
FUNCTION_CASES = [
    (F.relu, (x4,), {}), (F.relu, (meta(3),), {"inplace": False}), (F.gelu, (x4,), {}),
    (F.leaky_relu, (x4, 0.2), {}), (torch.sigmoid, (x4,), {}), (F.softmax, (x4, 1), {}),
    (F.dropout, (x4, 0.5, False), {}), (F.dropout, (x4,), {"p": 0.2, "training": True}),
    (torch.add, (x4, meta(8, 1, 1)), {}), (torch.mul, (meta(1, 6), meta(5, 1)), {}),
    (torch.add, (x4, 1), {"alpha": 2}),
    (operator.mul, (0.5, x4), {}), (operator.add, (1, x4), {}), (operator.sub, (1.0, x4), {}),
    (torch.pow, (x4, 3.0), {}), (operator.pow, (x4, 2), {}), (operator.pow, (2.0, x4), {}),
    (torch.mean, (x4, (2, 3)), {}), (torch.mean, (x4,), {"dim": -1, "keepdim": True}),
    (torch.mean, (x4,), {}), (torch.sum, (x4, 1), {}),
    (torch.cat, ([x4, meta(2, 3, 6, 6)],), {"dim": 1}), (torch.cat, ((x4, x4), -1), {}),
    (F.linear, (meta(3, 5), meta(7, 5), meta(7)), {}),
    (F.conv2d, (x4, meta(4, 4, 3, 3)), {"stride": 2, "groups": 2}),
    (F.conv1d, (meta(1, 2, 9), meta(3, 2, 2), None, 1, 1, 2), {}),
    (F.max_pool2d, (x4, 3, 2, 1), {}), (F.avg_pool2d, (x4, 2), {"ceil_mode": True}),
    (F.adaptive_avg_pool2d, (x4, 1), {}), (F.adaptive_avg_pool2d, (x4, (2, 3)), {}),
]


@pytest.mark.parametrize("fn,args,kwargs", FUNCTION_CASES, ids=lambda v: getattr(v, "__name__", "")[:20])
def test_function_closed_forms_match_torch(fn, args, kwargs):
    expected = fn(*args, **kwargs)
    got = shapes.function_output(fn, args, kwargs)
    assert got is not None
    assert (got.shape, got.dtype, got.stride()) == (expected.shape, expected.dtype, expected.stride())


METHOD_CASES = [("mean", (x4, (2, 3)), {}), ("mean", (x4,), {"dim": 1, "keepdim": True}),
                ("sum", (x4,), {}), ("softmax", (x4, -1), {}), ("relu", (x4,), {}),
                ("add", (x4, x4), {}), ("mul", (x4, 2.0), {}), ("pow", (x4, 3), {})]


@pytest.mark.parametrize("name,args,kwargs", METHOD_CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_method_closed_forms_match_torch(name, args, kwargs):
    expected = getattr(args[0], name)(*args[1:], **kwargs)
    got = shapes.method_output(name, args, kwargs)
    assert got is not None
    assert (got.shape, got.dtype, got.stride()) == (expected.shape, expected.dtype, expected.stride())


def test_what_torch_would_reject_is_left_to_torch():
    assert shapes.function_output(torch.add, (meta(2, 3), meta(4, 3)), {}) is None
    assert shapes.function_output(torch.add, (meta(2, 3), meta(2, 3, dtype=torch.float16)), {}) is None
    assert shapes.function_output(torch.cat, ([meta(2, 3), meta(3, 4)], 1), {}) is None
    assert shapes.function_output(torch.mean, (meta(2, 3), 2), {}) is None
    assert shapes.function_output(torch.mean, (meta(2, 3, dtype=torch.long),), {}) is None
    assert shapes.method_output("add_", (meta(1, 3), meta(2, 3)), {}) is None
    assert shapes.function_output(F.linear, (meta(3, 4), meta(7, 5)), {}) is None


q4, k4, v4 = meta(2, 4, 6, 8), meta(2, 4, 5, 8), meta(2, 4, 5, 3)
PRODUCT_CASES = [
    (torch.matmul, (meta(3, 4), meta(4, 5)), {}), (operator.matmul, (meta(2, 3, 4), meta(4, 5)), {}),
    (torch.matmul, (meta(2, 1, 3, 4), meta(5, 4, 6)), {}), (torch.bmm, (meta(2, 3, 4), meta(2, 4, 5)), {}),
    (operator.matmul, (q4, k4.transpose(-2, -1)), {}),  # a transposed key: any layout
    (torch.addmm, (meta(5), meta(3, 4), meta(4, 5)), {}), (torch.addmm, (meta(3, 5), meta(3, 4), meta(4, 5)), {}),
    (torch.addmm, (meta(5), meta(3, 4), meta(4, 5)), {"beta": 0.5, "alpha": 2}),
    (F.scaled_dot_product_attention, (q4, k4, v4), {}),
    (F.scaled_dot_product_attention, (q4, k4, v4), {"is_causal": True}),
    (F.scaled_dot_product_attention, (q4, k4, v4, meta(6, 5)), {}),
    (F.scaled_dot_product_attention, (q4, k4, v4), {"attn_mask": torch.empty(2, 1, 6, 5, dtype=torch.bool, device="meta")}),
    (F.scaled_dot_product_attention, (q4, meta(2, 2, 5, 8), meta(2, 2, 5, 3)), {"enable_gqa": True}),
    (F.scaled_dot_product_attention, (meta(3, 6, 8), meta(3, 5, 8), meta(3, 5, 8)), {"scale": 0.5}),
]


@pytest.mark.parametrize("fn,args,kwargs", PRODUCT_CASES, ids=lambda v: getattr(v, "__name__", "")[:20])
def test_products_and_attention_match_torch_and_its_flop_count(fn, args, kwargs):
    """Shapes in closed form, and the MACs FlopCounterMode would have counted running the op."""
    from torch.utils.flop_counter import FlopCounterMode

    from archlint.graph import macs
    from archlint.graph.ops import op_name

    with FlopCounterMode(display=False) as counter:
        expected = fn(*args, **kwargs)
    got = shapes.function_output(fn, args, kwargs)
    assert got is not None
    assert (got.shape, got.dtype) == (expected.shape, expected.dtype)
    assert macs.of_products(op_name(fn), args, kwargs, got) == counter.get_total_flops() // 2


def test_products_torch_would_reject_are_left_to_torch():
    assert shapes.function_output(torch.matmul, (meta(3, 4), meta(5, 6)), {}) is None
    assert shapes.function_output(torch.matmul, (meta(2, 3, 4), meta(3, 4, 5)), {}) is None
    assert shapes.function_output(torch.matmul, (meta(4), meta(4, 5)), {}) is None  # vectors: torch's
    assert shapes.function_output(torch.bmm, (meta(2, 3, 4), meta(3, 4, 5)), {}) is None
    assert shapes.function_output(torch.addmm, (meta(4), meta(3, 4), meta(4, 5)), {}) is None  # bias
    assert shapes.function_output(torch.addmm, (meta(5), meta(3, 4), meta(3, 5)), {}) is None
    sdpa = F.scaled_dot_product_attention
    assert shapes.function_output(sdpa, (q4, meta(2, 4, 5, 7), v4), {}) is None  # key width
    assert shapes.function_output(sdpa, (q4, k4, meta(2, 4, 4, 3)), {}) is None  # value length
    assert shapes.function_output(sdpa, (q4, k4, v4, meta(6, 4)), {}) is None  # mask shape
    assert shapes.function_output(sdpa, (q4, k4, v4, meta(6, 5)), {"is_causal": True}) is None
    assert shapes.function_output(sdpa, (q4, meta(2, 2, 5, 8), meta(2, 2, 5, 3)), {}) is None  # heads
    assert shapes.function_output(sdpa, (q4, meta(2, 3, 5, 8), meta(2, 3, 5, 3)), {"enable_gqa": True}) is None


class _Conv1D(nn.Module):
    """Hugging Face's linear layer as an addmm on its own weights (GPT-2's)."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        size = x.size()[:-1] + (self.weight.shape[1],)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size)


class _WidthChecked(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = _Conv1D(32, 16)
        self.norm = nn.LayerNorm(32)

    def forward(self, x):
        if x.shape[-1] % 16:  # Python on a size: plain fx cannot trace this, the meta rung can
            raise ValueError("width")
        return self.norm(self.proj(x))


def test_the_meta_rung_takes_weights_into_the_closed_forms(monkeypatch):
    """A proxy's value on the meta rung comes from the same closed forms as the interpreter's,
    weights (Parameters that require grad) included: without them, GPT-2's addmm ran torch's
    Python decomposition once per layer."""
    import archlint

    real = shapes._OTHER_FUNCTIONS[torch.addmm]
    answered = []
    monkeypatch.setitem(shapes._OTHER_FUNCTIONS, torch.addmm,
                        lambda args, kwargs: answered.append(real(args, kwargs)) or answered[-1])
    report = archlint.lint(_WidthChecked(), torch.randn(1, 8, 16))
    assert report.tracer == "torch.fx (meta)"
    assert len(answered) >= 2 and all(out is not None for out in answered)  # the tracer's and the interpreter's
    proj = next(l for l in report.graph if l.op == "addmm")
    assert proj.out_shape == (8, 32) and proj.macs == 8 * 16 * 32


def test_graph_neighbours_keep_the_order_and_repeats_of_the_inputs():
    """Kept as lists when each layer is added: a layer's producers (`y + y` has one) and its
    users once each, in execution order."""
    import archlint

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.other = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return y + y, self.other(y)

    graph = archlint.lint(Twice(), torch.randn(1, 3, 8, 8)).graph
    relu = next(l for l in graph if l.op == "relu")
    add = next(l for l in graph if l.op == "add")
    assert [p.name for p in graph.predecessors(add)] == [relu.name]
    users = graph.successors(relu)
    assert [u.op for u in users] == ["add", "Conv2d"]
    assert [u.index for u in users] == sorted(u.index for u in users)


def test_the_graph_module_table_is_the_models_own():
    """One walk of the modules serves the trace, the graph and the coverage: the table must
    be what torch's own walks give, shared modules and tied weights included, and the
    user's model must come back with its weights and train/eval modes."""
    import archlint

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.again = self.block  # one module under two names
            self.head = nn.Linear(8, 8)
            self.tail = nn.Linear(8, 8)
            self.tail.weight = self.head.weight  # tied
            self.unused = nn.Linear(8, 2)

        def forward(self, x):
            x = self.again(self.block(self.stem(x))).mean((2, 3))
            return self.tail(self.head(x))

    model = Shared()
    model.block[1].eval()
    weight = model.stem.weight
    graph = archlint.lint(model, torch.randn(2, 3, 8, 8)).graph
    assert [(n, id(m)) for n, m in graph.named_modules()] == [(n, id(m)) for n, m in model.named_modules()]
    assert graph.params == sum(p.numel() for p in model.parameters())
    assert graph.coverage.modules_reached == graph.coverage.modules_total - 1  # `unused`
    assert model.stem.weight is weight and not weight.is_meta
    assert model.training and not model.block[1].training


def test_the_rules_caches_let_a_graph_go():
    """The facts rules compute once per graph (rules/helpers.per_graph) are weakly keyed on
    it: nothing cached may refer back to the graph, or every graph an API user lints stays in
    memory."""
    import gc
    import weakref

    import archlint

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3), nn.Upsample(scale_factor=2))
    report = archlint.lint(model, torch.randn(1, 3, 16, 16))
    graph = weakref.ref(report.graph)
    del report
    gc.collect()
    assert graph() is None


def test_a_lints_trace_records_are_freed_without_the_cyclic_collector():
    """The fx tracer keeps the frame it was called from, to cut call stacks there. Held past
    the trace, that frame (and its callers' locals, the trace among them) made a cycle: every
    record of the trace waited for the cyclic collector, a pass that cost a fifteenth of a
    1000-block net's lint."""
    import gc

    import archlint
    from archlint.trace.records import Op, Trace

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3))
    archlint.lint(model, torch.randn(1, 3, 16, 16))
    gc.collect()
    was = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept in gc.garbage to be read
    try:
        del gc.garbage[:]
        report = archlint.lint(model, torch.randn(1, 3, 16, 16))
        del report
        gc.collect()
        cyclic = [type(o).__name__ for o in gc.garbage if isinstance(o, (Trace, Op))]
    finally:
        gc.set_debug(was)
        del gc.garbage[:]
    assert cyclic == []


def test_a_report_does_not_hold_its_traced_fx_graph(monkeypatch):
    """An fx graph's nodes link to each other, so a graph outliving the lint in its report was
    cyclic garbage once the report went: API lints in a loop then paid a full collection of the
    process's heap (half a second) every ten or so."""
    import gc
    import weakref

    import archlint
    from archlint.trace import fx as archlint_fx

    graphs = []
    trace = archlint_fx.LeafTracer.trace

    def recorded(self, root, concrete_args=None):
        graph = trace(self, root, concrete_args)
        graphs.append(weakref.ref(graph))
        return graph

    monkeypatch.setattr(archlint_fx.LeafTracer, "trace", recorded)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Softmax(dim=0))
    report = archlint.lint(model, torch.randn(2, 3, 8, 8))  # B001 runs the graph again
    assert report.findings and graphs
    gc.collect()
    assert [ref() for ref in graphs] == [None] * len(graphs)
