"""I: in-place operations that destroy a tensor something else still needs.

The tracer records, per op, which inputs it modified in place (`Layer.writes`) and which earlier
op's storage its output shares (`Layer.alias_of`). Together with execution order that tells who
read a storage before and after it was overwritten.
"""
from __future__ import annotations

import re
import weakref
from collections import defaultdict

from torch import nn

from archlint.findings import Fix, Severity
from archlint.rule import Rule

from ._common import CONV_TYPES, NORM_TYPES

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
_SAVES_INPUT_MODULES = (*CONV_TYPES, nn.modules.conv._ConvTransposeNd, nn.Linear, nn.Bilinear,
                        *NORM_TYPES, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Hardtanh, nn.ReLU6,
                        nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Softplus, nn.PReLU,
                        nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_SAVES_INPUT_OPS = {"conv1d", "conv2d", "conv3d", "convolution", "linear", "matmul", "mm", "bmm",
                    "addmm", "baddbmm", "einsum", "layer_norm", "native_layer_norm", "group_norm",
                    "native_group_norm", "batch_norm", "silu", "gelu", "hardswish", "mish",
                    "softplus", "max_pool2d", "max_pool2d_with_indices", "pow"}
_PAIRWISE_SAVES_INPUT = {"mul", "div", "truediv"}  # when both operands are tensors


# --- the storage model -----------------------------------------------------------------------

class Storage:
    """Who shares storage with whom, who modified what, and what carries gradients."""

    def __init__(self, graph):
        self.graph = graph
        self.root: dict[str, str] = {}
        self.parent: dict[str, str | None] = {}
        self.children: dict[str, list[str]] = defaultdict(list)
        self.grad: dict[str, bool] = {}
        self.index = {layer.name: layer.index for layer in graph}
        self.made: dict[str, list] = defaultdict(list)  # root -> layers whose output is that storage
        self.read: dict[str, list] = defaultdict(list)  # root -> (layer, input name) reading it
        for layer in graph:
            self.root[layer.name] = self._root_of(layer)
            parent = self._parent_of(layer)
            self.parent[layer.name] = parent
            if parent is not None:
                self.children[parent].append(layer.name)
            # Parameters (an attr node of a parameter has params > 0; a buffer has none) start
            # the gradient; it flows to everything computed from them.
            self.grad[layer.name] = bool(layer.params) or any(self.grad.get(i, False) for i in layer.inputs)
            self.made[self.root[layer.name]].append(layer)
            for name in layer.inputs:
                if name in self.root:
                    self.read[self.root[name]].append((layer, name))

    _cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, graph) -> "Storage":
        """One storage model per graph, shared by the three I rules."""
        if graph not in cls._cache:
            cls._cache[graph] = cls(graph)
        return cls._cache[graph]

    def _root_of(self, layer) -> str:
        alias = layer.alias_of
        if not alias or alias == layer.name:
            return layer.name
        return self.root.get(alias, alias)  # aliases point backwards, so theirs is known

    def _parent_of(self, layer) -> str | None:
        """The input this layer's output is a view of (or, for an in-place op, wrote)."""
        if not layer.alias_of:
            return None
        root = self.root[layer.name]
        for name in layer.writes + layer.inputs:
            if self.root.get(name) == root:
                return name
        return None

    def ancestors(self, name: str) -> list[str]:
        chain = []
        parent = self.parent.get(name)
        while parent is not None and parent not in chain:
            chain.append(parent)
            parent = self.parent.get(parent)
        return chain

    def overlapping(self, written: str, before: int) -> set[str]:
        """Tensors made before index `before` whose values an in-place write to `written`
        changes: the tensor itself, what it is a view of, and views taken of it. Sibling views
        (two chunks of one tensor) may be disjoint and are left out."""
        names = {written, *self.ancestors(written)}
        frontier = [written]
        while frontier:
            for child in self.children.get(frontier.pop(), ()):
                if self.index[child] < before and child not in names:
                    names.add(child)
                    frontier.append(child)
        return names


def _is_getitem(layer) -> bool:
    return layer.kind in ("function", "method") and layer.op in ("getitem", "__getitem__", "select", "slice")


def _saves_output(layer) -> bool:
    if layer.kind == "module":
        if isinstance(layer.module, _SAVES_OUTPUT_MODULES):
            return True
        return bool(layer.writes) and isinstance(layer.module, _SAVES_OUTPUT_IN_PLACE_MODULES)
    if layer.kind in ("function", "method"):
        return layer.op in _SAVES_OUTPUT_OPS or (bool(layer.writes) and layer.op in _SAVES_OUTPUT_IN_PLACE_OPS)
    return False


def _saves_input(layer, storage: Storage, name: str) -> bool:
    """Whether `layer` keeps its input `name` for its backward."""
    if name in layer.writes:
        return False  # an in-place op keeps its result, if anything
    if layer.kind == "module":
        if not isinstance(layer.module, _SAVES_INPUT_MODULES):
            return False
        return bool(layer.params) or storage.grad.get(name, False)
    if layer.kind not in ("function", "method"):
        return False
    tensors = [a for a in layer.args if isinstance(a, str) and a in layer.inputs]
    others_need_grad = any(storage.grad.get(t, False) for t in tensors if t != name)
    if layer.op in _SAVES_INPUT_OPS:
        return storage.grad.get(name, False) or others_need_grad
    if layer.op in _PAIRWISE_SAVES_INPUT and len(tensors) == 2:
        return others_need_grad
    return False


# --- how to say it and how to fix it -----------------------------------------------------------

def _describe(layer) -> str:
    if layer.kind == "module":
        return f"{layer.op} {layer.qualname}"
    if layer.kind == "input":
        return f"the input {layer.name}"
    if layer.kind == "output":
        return "the model's output"
    frame = layer.frame("call")
    if frame is not None:
        return f"{layer.op} at line {frame.line}"
    return f"{layer.op} in {layer.qualname}" if layer.qualname else layer.op


def _writer_text(layer) -> str:
    if layer.kind == "module":
        return f"{layer.op}(inplace=True) {layer.qualname}"
    frame = layer.frame("call")
    code = frame.source().split("#", 1)[0].strip() if frame is not None else ""
    if code:
        return f"`{code}`"
    return f"{layer.op} in {layer.qualname or 'forward'}"


_AUGMENTED_RE = re.compile(r"^(\s*)([\w.\[\]]+)\s*(\*\*|//|<<|>>|[-+*/@%&|^])=\s*(.+?)\s*$")
_METHOD_RE = re.compile(r"\.(\w+)_\(")
_INPLACE_KW_RE = re.compile(r",?\s*inplace\s*=\s*True")


def out_of_place(layer) -> str | None:
    """The writing op rewritten to make a new tensor: a constructor for a module, the forward
    line for a function or method."""
    if layer.kind == "module":
        module = layer.module
        if getattr(module, "inplace", False):
            args = _INPLACE_KW_RE.sub("", module.extra_repr()).strip(", ")
            kind = type(module)
            prefix = "nn." if kind.__module__.startswith("torch.nn") else ""
            return f"{prefix}{kind.__name__}({args})"
        return None
    frame = layer.frame("call")
    line = frame.source() if frame is not None else ""
    if not line.strip():
        return None
    code, sep, comment = line.partition("#")
    augmented = _AUGMENTED_RE.match(code)
    if augmented:
        indent, target, op, value = augmented.groups()
        return f"{indent.strip()}{target} = {target} {op} {value}".strip()
    changed = _METHOD_RE.sub(lambda m: f".{m.group(1)}(", code)
    changed = _INPLACE_KW_RE.sub("", changed)
    if changed != code:
        result = changed.strip()
        bare = re.match(r"^([\w.]+)\.(\w+)\(", result)
        if bare and "=" not in result.split("(")[0]:
            result = f"{bare.group(1)} = {result}"  # `x.relu_()` alone: keep the result
        return result
    return None


def _writers(graph):
    return [l for l in graph if l.writes and l.kind in ("module", "function", "method")]


# --- I001 ------------------------------------------------------------------------------------

class InplaceOverwritesShared(Rule):
    code = "I001"
    name = "inplace-overwrites-shared"
    severity = Severity.ERROR
    summary = "An in-place op overwrites a tensor that another op reads afterwards."
    what = """
        Finds an in-place operation (a layer built with `inplace=True`, `F.relu(x, inplace=True)`,
        a `x.relu_()`-style method, `out += y` on a tensor) whose result is used, while another
        op that runs later still reads the tensor it overwrote under its old name: a skip
        connection taken before the in-place activation, a feature map returned next to its
        activated version. Views count: writing a view changes the tensor it views, and views
        taken before the write change with it. Two chunks of one tensor may not overlap and are
        not linked. An in-place call whose result is thrown away (`x.relu_()` on a line of its
        own) is taken to be meant as a mutation and left alone. On models only torch.export can
        trace the rule sees less: export follows tensor objects, not the names forward used, so
        a later read of the old name looks like a read of the new value.
        """
    why = """
        An in-place op writes its result over its input's memory, and every name that pointed to
        that memory now sees the new values. The reader expected the tensor as it was. Nothing
        raises: the model trains and predicts with silently different numbers. Measured here with
        real tensors: `y = conv1(x); out = conv2(relu_inplace(y)) + y` differs from the same code
        with an out-of-place ReLU by up to 2.05 per value, because the skip path lost the 44% of
        y that was negative. The seed notes put it plainly: `inplace=True` destroys the original
        input, and it is only safe where nothing else needs it.
        """
    how_to_fix = """
        Make the op out of place (`nn.ReLU()`, `out = out + y`, `x = x.relu()`): the memory it
        saved is one activation, the bug it causes is silent. The finding's fix is the rewritten
        constructor or forward line. Alternatively keep the old value with `.clone()` before
        the in-place op.
        """
    references = (
        "PyTorch docs, Autograd mechanics: In-place operations with autograd (https://pytorch.org/docs/stable/notes/autograd.html#in-place-operations-with-autograd)",
        "PyTorch docs, torch.nn.ReLU: inplace 'can optionally do the operation in-place' (https://pytorch.org/docs/stable/generated/torch.nn.ReLU.html)",
    )
    bad = (
        """
        import torch
        from torch import nn


        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(16, 16, 3, padding=1)
                self.relu = nn.ReLU(inplace=True)
                self.conv2 = nn.Conv2d(16, 16, 3, padding=1)

            def forward(self, x):
                y = self.conv1(x)
                out = self.relu(y)  # overwrites y
                return self.conv2(out) + y  # y is no longer the conv output


        model = Block()
        example_input = torch.randn(1, 16, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn


        class BasicBlock(nn.Module):  # torchvision's ResNet block: in place, and safe
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
                self.bn1 = nn.BatchNorm2d(16)
                self.relu = nn.ReLU(inplace=True)
                self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
                self.bn2 = nn.BatchNorm2d(16)

            def forward(self, x):
                identity = x
                out = self.relu(self.bn1(self.conv1(x)))
                out = self.bn2(self.conv2(out))
                out += identity
                return self.relu(out)


        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True), BasicBlock(), BasicBlock())
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        storage = Storage.of(graph)
        for writer in _writers(graph):
            if not graph.successors(writer):
                continue  # result discarded: the mutation is the point
            for written in writer.writes:
                if written not in graph.g:
                    continue
                old = storage.overlapping(written, writer.index)
                ancestors = set(storage.ancestors(written))
                readers = {r.name: r for name in old for r in graph.successors(graph.layer(name))
                           if r.index > writer.index and not (name in ancestors and _is_getitem(r))}
                readers = sorted(readers.values(), key=lambda r: r.index)
                if not readers:
                    continue
                yield self._finding(graph, writer, graph.layer(written), readers)

    def _finding(self, graph, writer, written, readers):
        first = readers[0]
        names = [_describe(r) for r in readers]
        fixed = out_of_place(writer)
        return self.finding(
            writer,
            f"{_writer_text(writer)} overwrites the output of {_describe(written)}, which "
            f"{_describe(first)}{f' and {len(readers) - 1} more' if len(readers) > 1 else ''} "
            f"still read{'s' if len(readers) == 1 else ''} afterwards: "
            f"{'it gets' if len(readers) == 1 else 'they get'} the overwritten values, silently",
            evidence={"writer": writer.name, "overwritten": written.name,
                      "overwritten_shape": list(written.out_shape or ()), "readers_after": names},
            fix=Fix("make the op out of place (or .clone() the tensor the later reader needs)", fixed),
            prefer="call",
        )


# --- I002 ------------------------------------------------------------------------------------

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
        for writer in _writers(graph):
            roots = {storage.root.get(w, w) for w in writer.writes}
            saver, why = self._saver(graph, storage, writer, roots)
            if saver is None:
                continue
            yield self.finding(
                writer,
                f"{_writer_text(writer)} modifies {why} of {_describe(saver)}, which autograd "
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


# --- I003 ------------------------------------------------------------------------------------

class InplaceOnInput(Rule):
    code = "I003"
    name = "inplace-on-input"
    severity = Severity.ERROR
    summary = "forward modifies its own input tensor in place: the caller's batch changes."
    what = """
        Finds an in-place operation in forward that writes the model's input tensor or a view of
        it: `x /= 255`, `x.sub_(mean)`, a first layer built with `inplace=True`.
        """
    why = """
        The caller still holds the tensor it passed in. After forward it holds different
        numbers: a batch reused for a second model, logged, or fed again in the next epoch of a
        cached dataset is silently transformed twice. If the input requires grad (adversarial
        training, input attribution), autograd refuses the write outright: "a leaf Variable
        that requires grad is being used in an in-place operation".
        """
    how_to_fix = """
        Make the op out of place (`x = x / 255`), or copy once at the top of forward
        (`x = x.clone()`). The finding's fix is the rewritten line or constructor.
        """
    references = (
        "PyTorch docs, Autograd mechanics: In-place operations with autograd (https://pytorch.org/docs/stable/notes/autograd.html#in-place-operations-with-autograd)",
        "PyTorch docs, Autograd mechanics: In-place correctness checks (https://pytorch.org/docs/stable/notes/autograd.html#in-place-correctness-checks)",
    )
    bad = (
        """
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 16, 3, padding=1)

            def forward(self, x):
                x /= 255  # changes the caller's tensor
                return self.conv(x)


        model = Net()
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 16, 3, padding=1)
                self.act = nn.ReLU(inplace=True)  # writes the conv output, not the input

            def forward(self, x):
                x = x / 255
                return self.act(self.conv(x))


        model = Net()
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        storage = Storage.of(graph)
        inputs = {l.name: l for l in graph.inputs}
        for writer in _writers(graph):
            hit = next((storage.root.get(w, w) for w in writer.writes if storage.root.get(w, w) in inputs), None)
            if hit is None:
                continue
            source = inputs[hit]
            yield self.finding(
                writer,
                f"{_writer_text(writer)} modifies the model's input {source.name} "
                f"({'x'.join(map(str, source.out_shape or ()))}) in place: the caller's tensor "
                f"changes under it",
                evidence={"writer": writer.name, "input": source.name,
                          "input_shape": list(source.out_shape or ())},
                fix=Fix("make the op out of place, or copy the input first with x = x.clone()",
                        out_of_place(writer) or f"{source.name} = {source.name}.clone()  # first line of forward"),
                prefer="call",
            )
