"""Rung 2: torch.fx with proxies backed by meta values, for forwards that branch on shapes.

Plain fx cannot follow `if x.shape[-1] != self.dim:`, `if H % p:` or `len(x)`: a proxy has
no shape. Here every proxy also carries the meta tensor its op produces (computed as the node
is recorded, as torch.fx.experimental.meta_tracer does), so `.shape`, `.size()`, `.dim()`,
`.ndim`, `.dtype` and `len()` are concrete values, the branch is decided, and the graph keeps
only the operations the forward really ran for this input. Still fx speed: timm's Swin, or a
same-padding conv, no longer needs torch.export (1-5 s). A proxy whose value could not be
computed falls back to plain fx behaviour, and data-dependent branches still fail, so the
ladder climbs to export for them.

`.device` reports the CPU, as the export rung's fake tensors do, so device checks take the
CPU path. Tensors forward then makes on that device outside the graph (Hugging Face's position
ids and masks) are real and small, so checks on their values are decided too; where they meet
meta values, or would be large, they are made on meta (`_MetaMeetsCpu`). With the positional
root of `fx.positional_forward` and the output unpacking of `outputs.py`, this is the rung
Hugging Face models take (GPT-2 2.4 s -> 0.5 s, against torch.export).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.fx as fx
from torch import nn
from torch.overrides import TorchFunctionMode

from . import shapes
from .fx import LeafTracer, retrace, trace_fx

_CPU = torch.device("cpu")
_META = torch.device("meta")


class MetaProxy(fx.Proxy):
    """A proxy that knows its meta value (`_meta`, None when it could not be computed)."""

    _meta: Any = None

    @property
    def shape(self):
        return self._meta.shape if isinstance(self._meta, torch.Tensor) else self._fallback("shape")

    @property
    def ndim(self):
        return self._meta.ndim if isinstance(self._meta, torch.Tensor) else self._fallback("ndim")

    @property
    def dtype(self):
        return self._meta.dtype if isinstance(self._meta, torch.Tensor) else self._fallback("dtype")

    @property
    def is_cuda(self):
        return False if isinstance(self._meta, torch.Tensor) else self._fallback("is_cuda")

    @property
    def device(self):
        return _CPU if isinstance(self._meta, torch.Tensor) else self._fallback("device")

    def _fallback(self, name: str):
        return self.tracer.create_proxy("call_function", getattr, (self, name), {})

    def size(self, dim: int | None = None):
        if isinstance(self._meta, torch.Tensor):
            return self._meta.size() if dim is None else self._meta.size(dim)
        return self.tracer.create_proxy("call_method", "size", (self,) if dim is None else (self, dim), {})

    def dim(self):
        if isinstance(self._meta, torch.Tensor):
            return self._meta.dim()
        return self.tracer.create_proxy("call_method", "dim", (self,), {})

    def numel(self):
        if isinstance(self._meta, torch.Tensor):
            return self._meta.numel()
        return self.tracer.create_proxy("call_method", "numel", (self,), {})

    def __len__(self):
        if isinstance(self._meta, (torch.Tensor, tuple, list)):
            return len(self._meta)
        return super().__len__()

    def __iter__(self):
        # Unpacking a proxy of known length (`a, b = x.chunk(2)`, `for t in x.unbind(1)`).
        if isinstance(self._meta, (torch.Tensor, tuple, list)):
            return iter([self[i] for i in range(len(self._meta))])
        return super().__iter__()


def _meta_of(value: Any) -> Any:
    if isinstance(value, MetaProxy):
        if value._meta is None:
            raise LookupError("unknown")
        value = value._meta
    elif isinstance(value, fx.Proxy):
        raise LookupError("unknown")
    if isinstance(value, torch.device):
        return _META
    if isinstance(value, torch.Tensor):
        if not value.is_meta:  # made for real while traced
            return value.to(_META)
        # A weight: values are computed under no_grad, where it makes no graph, and the
        # closed forms take it as the interpreter's detached copy (Hugging Face's Conv1D
        # addmm ran its Python decomposition instead: a quarter of GPT-2's trace).
        if value.requires_grad:
            return value.detach()
    return value


def _compute(tracer: "MetaLeafTracer", kind: str, target: Any, args: tuple, kwargs: dict) -> Any:
    args, kwargs = fx.node.map_aggregate((args, kwargs), _meta_of)
    if kind == "call_function":
        out = shapes.norm_output(kind, target, args, kwargs)
        if out is None:
            out = shapes.function_output(target, args, kwargs)
        return out if out is not None else target(*args, **kwargs)
    if kind == "call_method":
        out = shapes.method_output(target, args, kwargs)
        return out if out is not None else getattr(args[0], target)(*args[1:], **kwargs)
    if kind == "call_module":
        module = tracer.root.get_submodule(target)
        out = shapes.norm_output(kind, module, args, kwargs)
        if out is None:
            out = shapes.module_output(module, args, kwargs)
        return out if out is not None else module(*args, **kwargs)
    if kind == "get_attr":
        value = tracer.root
        for atom in target.split("."):
            value = getattr(value, atom)
        return value
    return None


class _MetaMeetsCpu(TorchFunctionMode):
    """The proxies say their tensors are on the CPU, so tensors forward makes for real beside
    them are made there (Hugging Face's `torch.arange(n, device=x.device)`), with their values:
    a position or mask check on them is decided as it is on the user's machine. Where such a
    tensor meets a meta one outside the graph (a meta buffer `.to(x.device)`, a CPU tensor
    concatenated with a meta value), the operation runs on meta. Operations on proxies are
    recorded as they are; the interpreter moves their devices to meta when it runs them."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _QUERIES:  # most calls: they make no tensor, on any device
            return func(*args, **(kwargs or {}))
        kwargs = kwargs or {}
        if isinstance(kwargs.get("device"), str):  # device="cpu" is the same as a torch.device
            kwargs = {**kwargs, "device": torch.device(kwargs["device"])}
        if not any(issubclass(t, fx.Proxy) for t in types):
            metas, others = _devices_in((args, kwargs))
            if metas and others:
                args, kwargs = fx.node.map_aggregate((args, kwargs), _on_meta)
            elif others:
                # Made for real only while small: timm's Gemma 4 one-hot encodes its position
                # ids (377 MB). Its size is known from a run on meta first; a large one stays
                # on meta, and a value read from it later sends the model to export as before.
                on_meta = fx.node.map_aggregate((args, kwargs), _on_meta)
                try:
                    out = func(*on_meta[0], **on_meta[1])
                except Exception:
                    out = None
                if _elements(out) > MAX_REAL_ELEMENTS:
                    return out
        return func(*args, **kwargs)


MAX_REAL_ELEMENTS = 1 << 24  # a 4096 x 4096 attention mask

# Reads of a tensor's properties, and the grad mode's switch, which return no tensor: passed
# through without looking at devices (four in five of the calls a trace makes).
_QUERIES = frozenset({
    torch._C._set_grad_enabled, torch.Tensor.is_contiguous, torch.Tensor.is_floating_point,
    torch.Tensor.size, torch.Tensor.dim, torch.Tensor.stride, torch.Tensor.numel,
    *(getattr(torch._C.TensorBase, name).__get__ for name in (
        "shape", "dtype", "device", "is_meta", "requires_grad", "ndim", "is_cuda", "layout"))})


def _elements(value: Any) -> int:
    return sum(t.numel() for t in torch.utils._pytree.tree_leaves(value) if isinstance(t, torch.Tensor))


def _devices_in(value: Any) -> tuple[bool, bool]:
    """(a meta tensor is among `value`'s leaves, a CPU tensor or a device other than meta is)."""
    metas = others = False

    def look(leaf):
        nonlocal metas, others
        if isinstance(leaf, torch.Tensor) and not isinstance(leaf, fx.Proxy):
            metas, others = metas or leaf.is_meta, others or not leaf.is_meta
        elif isinstance(leaf, torch.device) and leaf.type != "meta":
            others = True
        return leaf
    fx.node.map_aggregate(value, look)
    return metas, others


def _on_meta(leaf: Any) -> Any:
    if isinstance(leaf, torch.Tensor) and not isinstance(leaf, fx.Proxy) and not leaf.is_meta:
        return leaf.to(_META)
    if isinstance(leaf, torch.device) and leaf.type != "meta":
        return _META
    return leaf


class MetaLeafTracer(LeafTracer):
    """LeafTracer whose proxies carry meta values; `inputs` feed the placeholders in order."""

    def __init__(self, inputs: Sequence[Any]):
        super().__init__()
        self._inputs = list(inputs)
        self._placeholders = 0
        self._computing = 0  # > 0 while a proxy's meta value is being computed

    def trace(self, root, concrete_args=None):
        with _MetaMeetsCpu():
            return super().trace(root, concrete_args)

    def proxy(self, node: fx.Node) -> MetaProxy:
        return MetaProxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        if not isinstance(proxy, MetaProxy):
            return proxy
        if kind == "placeholder":
            if self._placeholders < len(self._inputs):
                proxy._meta = self._inputs[self._placeholders]
            self._placeholders += 1
            return proxy
        self._computing += 1
        try:
            with torch.no_grad():
                proxy._meta = _compute(self, kind, target, args, kwargs)
        except Exception:  # unknown: this proxy behaves as plain fx's
            proxy._meta = None
        finally:
            self._computing -= 1
        return proxy

    # While a value is computed, the layers run as they are: fx's patched Module.__call__ and
    # __getattr__ hand over to these two, which then record nothing. (Swapping the patches
    # out instead cost ~0.2 ms a node with a model zoo's subclasses of nn.Module loaded.)
    def call_module(self, m, forward, args, kwargs):
        if self._computing:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if self._computing:
            return attr_val
        proxy = super().getattr(attr, attr_val, parameter_proxy_cache)
        if isinstance(proxy, MetaProxy) and proxy._meta is None and isinstance(attr_val, torch.Tensor):
            proxy._meta = attr_val
        return proxy


def trace_meta_fx(model: nn.Module, inputs: Sequence[torch.Tensor], shapes_only: bool = False,
                  state=None):
    result = trace_fx(model, inputs, tracer=MetaLeafTracer(inputs), shapes_only=shapes_only, state=state)
    result.tracer = "torch.fx (meta)"
    # The graph holds the sizes this input gave (`B, N, C = x.shape` are numbers in it), so
    # another shape needs another trace, not another run of this graph; running the graph
    # again is a first look, right wherever the sizes it holds do not follow the input's.
    result.rerun_fast = result.rerun
    result.rerun = lambda transform: retrace(trace_meta_fx, model, inputs, transform)
    return result
