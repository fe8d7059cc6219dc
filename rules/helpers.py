"""What several rules share: how to print numbers, shapes and constructor calls, how to
walk an activation's data flow, and the storage model of the in-place (I) rules.

Op families and predicates live in `archlint.graph.ops`, window geometry in
`archlint.graph.windows`; helpers that serve one rule stay in that rule's file.
"""
from __future__ import annotations

import ast
import functools
import re
import weakref
from collections import defaultdict
from functools import lru_cache

from torch import nn

from archlint.graph import Layer
from archlint.graph.ops import (ACTIVATION_TYPES, CALLS, CONV_TYPES, TRANSPOSED_CONV_TYPES, Kind,
                                is_alpha_dropout, is_conv, is_dropout, is_identity, is_norm, is_pad,
                                is_pool, is_shape_op, is_upsampling, is_weighted)
from archlint.graph.windows import pad_amounts


# --- numbers, shapes and code ----------------------------------------------------------------

def human(n: float) -> str:
    """4.09G, 25.6M, 9.4K, 512."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.3g}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return f"{n:g}" if isinstance(n, float) else str(n)


def conv_weights(k: int | tuple[int, ...], c_in: int, c_out: int, groups: int = 1, bias: bool = True) -> int:
    """Parameters of a conv: k*k*(C_in/groups)*C_out + C_out (the seed notes' formula)."""
    kernel = 1
    for size in (k if isinstance(k, tuple) else (k, k)):
        kernel *= size
    return kernel * (c_in // groups) * c_out + (c_out if bias else 0)


def is_standard_conv(layer: Layer) -> bool:
    return isinstance(layer.module, CONV_TYPES) and layer.module.groups == 1


def is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, CONV_TYPES) and module.groups > 1 and module.groups == module.in_channels


def conv_call(module: nn.Module, **changes) -> str:
    """The constructor call that builds `module`, with `changes` applied: paste-able code."""
    kind = type(module).__name__
    k = changes.pop("kernel_size", module.kernel_size)
    fields = {
        "stride": changes.pop("stride", module.stride),
        "padding": changes.pop("padding", module.padding),
        "dilation": changes.pop("dilation", module.dilation),
        "groups": changes.pop("groups", module.groups),
        "bias": changes.pop("bias", module.bias is not None),
    }
    defaults = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "bias": True}
    c_in = changes.pop("in_channels", module.in_channels)
    c_out = changes.pop("out_channels", module.out_channels)
    parts = [str(c_in), str(c_out), _compact(k)]
    for key, value in fields.items():
        value = _compact(value) if not isinstance(value, (bool, str)) else repr(value) if isinstance(value, str) else value
        if str(value) != str(defaults[key]):
            parts.append(f"{key}={value}")
    return f"nn.{kind}({', '.join(parts)})"


def _compact(value) -> str:
    """(3, 3) -> '3'; (1, 3) -> '(1, 3)'."""
    if isinstance(value, tuple) and len(set(value)) == 1:
        return str(value[0])
    return str(value)


def square(value) -> int | None:
    """The side of a square kernel/stride/padding tuple, or None when the sides differ."""
    if isinstance(value, int):
        return value
    if isinstance(value, tuple) and len(set(value)) == 1:
        return value[0]
    return None


def pool_call(module: nn.Module, **changes) -> str:
    """The constructor call that builds pooling `module`, with `changes` applied."""
    kind = type(module).__name__
    fields = {"kernel_size": module.kernel_size, "stride": module.stride,
              "padding": getattr(module, "padding", 0)}
    if hasattr(module, "dilation"):
        fields["dilation"] = module.dilation
    fields["ceil_mode"] = getattr(module, "ceil_mode", False)
    if hasattr(module, "count_include_pad"):
        fields["count_include_pad"] = module.count_include_pad
    fields.update(changes)
    defaults = {"stride": fields["kernel_size"], "padding": 0, "dilation": 1, "ceil_mode": False,
                "count_include_pad": True}
    parts = [_compact(_tuple_or(fields.pop("kernel_size")))]
    for key, value in fields.items():
        if value is None or (key in defaults and _compact(_tuple_or(value)) == _compact(_tuple_or(defaults[key]))):
            continue
        parts.append(f"{key}={value if isinstance(value, bool) else _compact(_tuple_or(value))}")
    return f"nn.{kind}({', '.join(parts)})"


def _tuple_or(value):
    return tuple(value) if isinstance(value, list) else value

def shape_text(shape) -> str:
    """(56, 56) -> '56x56'."""
    return "x".join(str(s) for s in shape)


def as_tuple(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def conv_channels(layer: Layer) -> tuple[int, int, int, bool]:
    """(in, out, groups, has bias) of a conv layer or a functional conv call."""
    if layer.kind == Kind.MODULE:
        conv = layer.module
        return conv.in_channels, conv.out_channels, conv.groups, conv.bias is not None
    c_in, weight = layer.in_shape[1], layer.in_shapes[1]
    return c_in, weight[0], max(1, c_in // weight[1]), len(layer.in_shapes) > 2


def nn_class(module: nn.Module) -> str:
    """The torch.nn class a module is or subclasses, as fix code names it (`nn.BatchNorm2d`
    for timm's BatchNormAct2d, whose own name is not in torch.nn)."""
    for cls in type(module).__mro__:
        if cls.__module__.startswith("torch.nn") and getattr(nn, cls.__name__, None) is cls:
            return f"nn.{cls.__name__}"
    return f"nn.{type(module).__name__}"


def norm_call(module: nn.Module, num_features: int | None = None) -> str:
    """The constructor call of a BatchNorm-like module (for `num_features` channels if given),
    non-default arguments only."""
    parts = [str(num_features or module.num_features)]
    if module.eps != 1e-5:
        parts.append(f"eps={module.eps:g}")
    if module.momentum != 0.1:
        parts.append(f"momentum={module.momentum!r}")
    if not module.affine:
        parts.append("affine=False")
    if not module.track_running_stats:
        parts.append("track_running_stats=False")
    return f"{nn_class(module)}({', '.join(parts)})"


def frozen_batchnorm(module: nn.Module, model_training: bool) -> bool:
    """A BatchNorm in eval mode inside a model that trains (MMDetection's norm_eval), or in a
    model traced in eval mode with parameters that do not train (frozen stages)."""
    if module.training:
        return False
    params = list(module.parameters())
    return model_training or bool(params) and not any(p.requires_grad for p in params)


def built_where(layer) -> str:
    frame = layer.frame("built")
    return str(frame.location()) if frame else layer.qualname


# --- the graph: sizes, windows, data flow ----------------------------------------------------

def spatial(shape) -> tuple[int, ...] | None:
    """The spatial sizes of an (N, C, *spatial) tensor."""
    if shape is None or len(shape) < 3:
        return None
    return tuple(shape[2:])


def reduction(layer: Layer) -> tuple[int, ...] | None:
    """How many times smaller each spatial side gets across `layer` ((2, 2) for a stride-2
    step), or None when it does not shrink the input or its shapes are unknown."""
    before, after = spatial(layer.in_shape), spatial(layer.out_shape)
    if before is None or after is None or len(before) != len(after):
        return None
    if not any(a < b for a, b in zip(after, before)) or any(a > b for a, b in zip(after, before)):
        return None
    return tuple(max(1, round(b / a)) if a else b for a, b in zip(after, before))


def is_global(layer: Layer) -> bool:
    """Pools the whole map to one position per channel (a classifier head's pooling)."""
    after = spatial(layer.out_shape)
    return after is not None and all(a == 1 for a in after)


def per_graph(compute):
    """`compute(graph)` made once per graph, for the facts about a whole model that several
    rules ask for (each is a walk of every layer)."""
    results: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @functools.wraps(compute)
    def once(graph):
        found = results.get(graph)
        if found is None:
            found = results[graph] = compute(graph)
        return found
    return once


@per_graph
def data_dependent(graph) -> frozenset[str]:
    """Names of the layers whose output depends on the model's input. A parameter reshaped
    and multiplied in (layer scale, a position embedding) is not a second data branch."""
    names: set[str] = set()
    for layer in graph:
        if layer.kind == Kind.INPUT or any(p in names for p in layer.inputs):
            names.add(layer.name)
    return frozenset(names)


def tensor_inputs(graph, layer: Layer, dependent: set[str]) -> list[Layer]:
    """The distinct producers of the activation tensors `layer` reads (not sizes, not weights)."""
    seen: dict[str, Layer] = {}
    for p in graph.predecessors(layer):
        if p.name in dependent and p.out_shapes and p.name not in seen:
            seen[p.name] = p
    return list(seen.values())


def conv_windows(graph):
    """Forward convs (layers and functional calls, not transposed) with the window the graph
    measured for them."""
    for layer in graph:
        if is_conv(layer) and layer.window is not None:
            yield layer, layer.window


def explicit_pad(graph, window) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(before, after) per axis that an explicit pad in front of the layer adds to its window
    (`nn.ReflectionPad2d`, `F.pad`), or None when the layer pads only itself."""
    if window.pad_layer is None:
        return None
    amounts = pad_amounts(graph.layer(window.pad_layer), window.ndim)
    return None if amounts is None else amounts[:2]


def own_padding(graph, window, total) -> tuple[int, ...]:
    """The padding a fixed conv should take itself so that, with the explicit pad in front of
    it kept, it is padded by `total` before each axis: a fix must not silently pad twice."""
    pad = explicit_pad(graph, window)
    if pad is None:
        return tuple(total)
    return tuple(max(0, t - b) for t, b in zip(total, pad[0]))


def kept_pad_text(graph, window) -> str:
    """', keeping the ReflectionPad2d in front' when the window folds in an explicit pad."""
    if window.pad_layer is None:
        return ""
    pad = graph.layer(window.pad_layer)
    return f", keeping the {pad.op if pad.kind == Kind.MODULE else 'F.' + pad.op} in front"


def dropout_rate(layer, model_training: bool = True, alpha: bool = False) -> float | None:
    """The drop probability of a dropout layer or call, None if it is not one. A call traced
    with training=False in a model that trains was switched off on purpose; in a model traced
    in eval mode, `training=self.training` reads False too, and the dropout is real. Alpha dropout
    (SELU's) only with `alpha`."""
    if not is_dropout(layer) or (is_alpha_dropout(layer) and not alpha):
        return None
    if layer.kind == Kind.MODULE:
        return float(layer.module.p)
    training = layer.kwargs.get("training", layer.args[2] if len(layer.args) > 2 else True)
    if training is False and model_training:
        return None
    p = layer.kwargs.get("p", layer.args[1] if len(layer.args) > 1 else 0.5)
    return float(p) if isinstance(p, (int, float)) else None


# --- classifier heads (A002, A004) --------------------------------------------------------

def reshapes_only(layer: Layer) -> bool:
    return is_shape_op(layer) or is_identity(layer) or is_dropout(layer)


def classifier_of(graph, softmax: Layer) -> Layer | None:
    """The Linear or conv whose scores the softmax normalizes (through pooling and reshapes)."""
    for p in graph.previous_layers(softmax, through=lambda l: reshapes_only(l) or is_pool(l)):
        if is_weighted(p):
            return p
    return None


@lru_cache(maxsize=128)
def _guarded_lines(path: str) -> tuple[tuple[int, int], ...]:
    """Line ranges of `if` blocks whose condition reads `training` (eval-only code)."""
    try:
        tree = ast.parse(open(path, encoding="utf-8").read())
    except (OSError, SyntaxError, ValueError):
        return ()
    ranges = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.If, ast.IfExp)) and "training" in ast.unparse(node.test):
            ranges.append((node.lineno, node.end_lineno or node.lineno))
    return tuple(ranges)


def only_at_inference(layer: Layer) -> bool:
    frame = layer.call_frame
    if frame is None or not frame.is_user_code:
        return False
    return any(a <= frame.line <= b for a, b in _guarded_lines(frame.path))


# --- the storage model of the I rules --------------------------------------------------------

class Storage:
    """Who shares storage with whom, who modified what, and what carries gradients.

    The tracer records, per op, which inputs it modified in place (`Layer.writes`) and which
    earlier op's storage its output shares (`Layer.alias_of`). Together with execution order
    that tells who read a storage before and after it was overwritten.
    """

    def __init__(self, graph):
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

    @staticmethod
    @per_graph
    def of(graph) -> "Storage":
        """One storage model per graph, shared by the three I rules."""
        return Storage(graph)

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


# --- how the I rules say it and how to fix it -----------------------------------------------

def describe(layer) -> str:
    if layer.kind == Kind.MODULE:
        return f"{layer.op} {layer.qualname}"
    if layer.kind == Kind.INPUT:
        return f"the input {layer.name}"
    if layer.kind == Kind.OUTPUT:
        return "the model's output"
    frame = layer.frame("call")
    if frame is not None:
        return f"{layer.op} at line {frame.line}"
    return f"{layer.op} in {layer.qualname}" if layer.qualname else layer.op


def writer_text(layer) -> str:
    if layer.kind == Kind.MODULE:
        return f"{layer.op}(inplace=True) {layer.qualname}"
    frame = layer.frame("call")
    code = frame.source().split("#", 1)[0].strip() if frame is not None else ""
    if code:
        return f"`{code}`"
    return f"{layer.op} in {layer.qualname or 'forward'}"


_AUGMENTED = re.compile(r"^(\s*)([\w.\[\]]+)\s*(\*\*|//|<<|>>|[-+*/@%&|^])=\s*(.+?)\s*$")
_METHOD = re.compile(r"\.(\w+)_\(")
_INPLACE_KW = re.compile(r",?\s*inplace\s*=\s*True")


def out_of_place(layer) -> str | None:
    """The writing op rewritten to make a new tensor: a constructor for a module, the forward
    line for a function or method."""
    if layer.kind == Kind.MODULE:
        module = layer.module
        if getattr(module, "inplace", False):
            args = _INPLACE_KW.sub("", module.extra_repr()).strip(", ")
            kind = type(module)
            prefix = "nn." if kind.__module__.startswith("torch.nn") else ""
            return f"{prefix}{kind.__name__}({args})"
        return None
    frame = layer.frame("call")
    line = frame.source() if frame is not None else ""
    if not line.strip():
        return None
    code, sep, comment = line.partition("#")
    augmented = _AUGMENTED.match(code)
    if augmented:
        indent, target, op, value = augmented.groups()
        return f"{indent.strip()}{target} = {target} {op} {value}".strip()
    changed = _METHOD.sub(lambda m: f".{m.group(1)}(", code)
    changed = _INPLACE_KW.sub("", changed)
    if changed != code:
        result = changed.strip()
        bare = re.match(r"^([\w.]+)\.(\w+)\(", result)
        if bare and "=" not in result.split("(")[0]:
            result = f"{bare.group(1)} = {result}"  # `x.relu_()` alone: keep the result
        return result
    return None


def in_place_writers(graph):
    """The ops that write one of their inputs in place."""
    return [l for l in graph if l.writes and l.kind in (Kind.MODULE, *CALLS)]


# --- what kind of model ---------------------------------------------------------------------

@per_graph
def is_generative(graph) -> bool:
    """A model with an upsampling decoder that generates or reconstructs an image: its input
    is a latent code, or its output has the input's channels and size (autoencoders, VAEs,
    image-to-image, pix2pix and CycleGAN generators). A segmentation model, which decodes to class maps, or one that only resizes its final
    scores (FCN, DeepLab), is not one."""
    if not any(_decodes(graph, l) for l in graph if is_upsampling(l)):
        return False
    image = graph.input_shapes[0] if graph.input_shapes else None
    if image is None or len(image) < 3 or all(s == 1 for s in image[2:]):
        return True  # generated from a latent vector
    if image[1] > 4:
        return False  # fed feature maps, not an image (a detector's neck linted as a part)
    outputs = [p.out_shape for out in graph.outputs for p in graph.predecessors(out)]
    return any(o is not None and len(o) == len(image) and o[1] == image[1] and tuple(o[2:]) == tuple(image[2:])
               for o in outputs)


def _decodes(graph, upsampling) -> bool:
    """Learned upsampling, or upsampling that a conv or Linear layer computes on after."""
    if upsampling.is_a(*TRANSPOSED_CONV_TYPES):
        return True
    return any(is_weighted(l) for l in graph.next_layers(upsampling, through=lambda l: not is_weighted(l)))


# --- the model's own norm and activation, for fixes ----------------------------------------

# Functional activations and the module that replaces each in a fix.
_ACTIVATION_CALLS = {"relu": "nn.ReLU(inplace=True)", "relu_": "nn.ReLU(inplace=True)",
                     "leaky_relu": "nn.LeakyReLU(0.2, inplace=True)", "silu": "nn.SiLU()",
                     "gelu": "nn.GELU()", "hardswish": "nn.Hardswish()", "mish": "nn.Mish()",
                     "elu": "nn.ELU()", "relu6": "nn.ReLU6(inplace=True)"}


def passes_through(layer) -> bool:
    """Pads, identities and reshapes: between a conv and its norm, they change nothing."""
    return is_pad(layer) or is_identity(layer) or is_shape_op(layer)


def norm_and_activation(graph, layer, width: int | None = None) -> tuple[str | None, str]:
    """The norm and activation that follow `layer` in the model (or, for a layer that is not
    weighted, the conv that feeds it), as constructor calls for `width` channels (the norm's
    own by default): a fix's new convs keep the model's own choices. No norm after the conv
    gives none, and so does a GroupNorm whose groups do not divide `width` (see
    `norm_fits`); an activation nobody uses right after falls back to the model's most common
    one, then ReLU."""
    norm = act = None
    current = layer if is_weighted(layer) else _feeding_conv(graph, layer)
    for _ in range(6):
        nxt = [l for l in graph.successors(current)]
        if len(nxt) != 1:
            break
        current = nxt[0]
        if passes_through(current):
            continue
        if norm is None and act is None and current.kind == Kind.MODULE and is_norm(current):
            norm = _norm_text(current.module, width)
            if norm is None:
                break
            continue
        act = _activation_text(current)
        break
    if act is None:
        counts: dict[str, int] = {}
        for l in graph:
            text = _activation_text(l)
            if text and text not in ("nn.Sigmoid()", "nn.Tanh()"):
                counts[text] = counts.get(text, 0) + 1
        act = max(counts, key=counts.get) if counts else "nn.ReLU(inplace=True)"
    return norm, act


def _feeding_conv(graph, layer):
    """The weighted layer a single chain of norms, activations and reshapes leads back to."""
    current = layer
    for _ in range(6):
        before = [l for l in graph.predecessors(current) if l.kind != Kind.ATTR]
        if len(before) != 1 or before[0].kind == Kind.INPUT:
            return layer
        current = before[0]
        if is_weighted(current):
            return current
    return layer


def _norm_text(module, width: int | None = None) -> str | None:
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        return norm_call(module, width)
    if isinstance(module, nn.GroupNorm):
        width = width or module.num_channels
        if width % module.num_groups:
            return None
        extra = "" if module.affine else ", affine=False"
        return f"nn.GroupNorm({module.num_groups}, {width}{extra})"
    return None


def _activation_text(layer) -> str | None:
    if layer.kind == Kind.MODULE and isinstance(layer.module, ACTIVATION_TYPES):
        module = layer.module
        if isinstance(module, nn.PReLU):
            return f"nn.PReLU({module.num_parameters})" if module.num_parameters > 1 else "nn.PReLU()"
        if type(module).__module__.startswith("torch.nn"):
            return f"nn.{module!r}"
        return None
    if layer.kind in CALLS:
        return _ACTIVATION_CALLS.get(layer.op)
    return None
