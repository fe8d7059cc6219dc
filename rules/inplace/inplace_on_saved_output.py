"""I002 inplace-on-saved-output: an in-place op on a tensor that backward still needs."""
from __future__ import annotations

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph.ops import ANY_CONV_TYPES, CALLS, NORM_TYPES, Kind
from archlint.rule import Rule

from ..helpers import Storage, describe, in_place_writers, out_of_place, writer_text


# Ops whose backward reads their own output, measured on torch 2.x: modifying that output in
# place later makes backward raise. The "only in place" ones save their output only when they
# themselves ran in place (their input is gone then).
_SAVES_OUTPUT_MODULES = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.LogSoftmax, nn.Softmax2d)

_SAVES_OUTPUT_OPS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "exp_",
                     "softmax", "_softmax", "log_softmax", "_log_softmax", "sqrt", "sqrt_",
                     "rsqrt", "rsqrt_"}

_SAVES_OUTPUT_IN_PLACE_MODULES = (nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.RReLU)

_SAVES_OUTPUT_IN_PLACE_OPS = {"leaky_relu", "leaky_relu_", "elu", "elu_", "celu", "celu_",
                              "selu", "selu_", "rrelu", "rrelu_"}

# Ops whose backward reads their input: weighted layers (for the weight gradient) and
# nonlinearities that do not keep their output instead.
_SAVES_INPUT_MODULES = (*ANY_CONV_TYPES, nn.Linear, nn.Bilinear,
                        *NORM_TYPES, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Hardtanh, nn.ReLU6,
                        nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Softplus, nn.PReLU,
                        nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)

_SAVES_INPUT_OPS = {"conv1d", "conv2d", "conv3d", "convolution", "linear", "matmul", "mm", "bmm",
                    "addmm", "baddbmm", "einsum", "layer_norm", "native_layer_norm", "group_norm",
                    "native_group_norm", "batch_norm", "silu", "gelu", "hardswish", "mish",
                    "softplus", "max_pool2d", "max_pool2d_with_indices", "pow"}

_PAIRWISE_SAVES_INPUT = {"mul", "div", "truediv"}  # when both operands are tensors


class InplaceOnSavedOutput(Rule):
    code = "I002"
    name = "inplace-on-saved-output"
    severity = Severity.ERROR
    summary = "An in-place op modifies a tensor autograd saved for backward: backward will raise."
    what = """
        Finds an in-place operation on a tensor that an earlier op keeps for its backward pass:
        the output of an op whose gradient is computed from its output (ReLU, sigmoid, tanh,
        exp, softmax, log-softmax, sqrt; LeakyReLU/ELU/SELU/CELU/RReLU when they ran in place),
        or the input of a layer whose gradient needs it (conv, linear, the norms, SiLU, GELU,
        max pooling, a product of two tensors). Any view of the saved tensor counts: views share
        one version counter.
        """
    why = """
        Autograd keeps the tensors a backward formula needs and checks, at backward time, that
        none was modified since. If one was, `loss.backward()` raises "one of the variables
        needed for gradient computation has been modified by an inplace operation". Verified
        here on real tensors: `torch.sigmoid(x).mul_(2)`, `F.relu(x).add_(1)` and
        `F.relu(torch.tanh(x), inplace=True)` all raise at backward, while `F.relu6(x).add_(1)`
        and `F.silu(x).add_(1)` do not (their backward reads the input). The forward pass runs
        fine, so the model passes a smoke test and fails at the first training step.
        """
    how_to_fix = """
        Make the op out of place, or give it a copy (`y = y.clone()`) when the memory matters.
        The finding's fix is the rewritten line or constructor.
        """
    references = (
        "PyTorch docs, Autograd mechanics: In-place correctness checks (https://pytorch.org/docs/stable/notes/autograd.html#in-place-correctness-checks)",
        "PyTorch docs, Saved tensors (https://pytorch.org/docs/stable/notes/autograd.html#saved-tensors)",
    )
    bad = (
        """
        import torch
        from torch import nn


        class Gate(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(16, 16, 1)

            def forward(self, x):
                g = torch.sigmoid(self.conv(x))
                g *= 2  # sigmoid's backward needs g as it was
                return x * g


        model = Gate()
        example_input = torch.randn(1, 16, 16, 16)
        """,
    )
    good = (
        """
        import torch
        from torch import nn


        class Gate(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(16, 16, 1)
                self.bn = nn.BatchNorm2d(16)
                self.act = nn.SiLU(inplace=True)  # in place on the BN output: nothing else keeps it

            def forward(self, x):
                g = torch.sigmoid(self.act(self.bn(self.conv(x))))
                g = g * 2
                return x * g


        model = Gate()
        example_input = torch.randn(1, 16, 16, 16)
        """,
    )

    def check(self, graph, ctx):
        storage = Storage.of(graph)
        for writer in in_place_writers(graph):
            roots = {storage.root.get(w, w) for w in writer.writes}
            saver, why = self._saver(graph, storage, writer, roots)
            if saver is None:
                continue
            yield self.finding(
                writer,
                f"{writer_text(writer)} modifies {why} of {describe(saver)}, which autograd "
                f"saved for the backward pass: loss.backward() will raise "
                f"'modified by an inplace operation'",
                evidence={"writer": writer.name, "saved_by": saver.name, "saved": why},
                fix=Fix("make the op out of place", out_of_place(writer)),
                prefer="call",
            )

    @staticmethod
    def _saver(graph, storage, writer, roots):
        """The first op before `writer` that keeps a tensor of the written storage."""
        found = []
        for root in roots:
            found += [(layer, "the output") for layer in storage.made.get(root, ())
                      if layer.index < writer.index and _saves_output(layer) and storage.grad[layer.name]]
            found += [(layer, "the input") for layer, name in storage.read.get(root, ())
                      if layer.index < writer.index and _saves_input(layer, storage, name)]
        return min(found, key=lambda pair: pair[0].index) if found else (None, "")


def _saves_output(layer) -> bool:
    if layer.kind == Kind.MODULE:
        if isinstance(layer.module, _SAVES_OUTPUT_MODULES):
            return True
        return bool(layer.writes) and isinstance(layer.module, _SAVES_OUTPUT_IN_PLACE_MODULES)
    if layer.kind in CALLS:
        return layer.op in _SAVES_OUTPUT_OPS or (bool(layer.writes) and layer.op in _SAVES_OUTPUT_IN_PLACE_OPS)
    return False


def _saves_input(layer, storage: Storage, name: str) -> bool:
    """Whether `layer` keeps its input `name` for its backward."""
    if name in layer.writes:
        return False  # an in-place op keeps its result, if anything
    if layer.kind == Kind.MODULE:
        if not isinstance(layer.module, _SAVES_INPUT_MODULES):
            return False
        return bool(layer.params) or storage.grad.get(name, False)
    if layer.kind not in CALLS:
        return False
    tensors = [a for a in layer.args if isinstance(a, str) and a in layer.inputs]
    others_need_grad = any(storage.grad.get(t, False) for t in tensors if t != name)
    if layer.op in _SAVES_INPUT_OPS:
        return storage.grad.get(name, False) or others_need_grad
    if layer.op in _PAIRWISE_SAVES_INPUT and len(tensors) == 2:
        return others_need_grad
    return False
