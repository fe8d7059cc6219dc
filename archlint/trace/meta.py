"""Weightless copies of a model for tracing: on the meta device, or as fake CPU tensors.

Both cost no memory for weights. Meta tensors are the cheapest; fake tensors (torch's
FakeTensorMode) carry a device, so under them `x.device.type == "cpu"`, `x.is_cuda` and
`.cpu()` behave as on the user's CPU and a model with a CUDA fast path and a CPU fallback is
traced through the fallback it really runs here.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from contextlib import contextmanager
import sys
from typing import Any, Iterator

import torch
from torch import nn

from ..graph.weights import module_table


def meta_copy(model: nn.Module, in_place: bool = False,
              modules: dict[str, nn.Module] | None = None) -> nn.Module:
    """The model with its parameters and buffers on the meta device. Weight sharing is kept
    (two modules that share a Parameter share its meta copy) and no weight memory is allocated.
    By default the original is not touched (the structure is deep-copied around meta tensors);
    `in_place=True`, for models archlint built itself, swaps the tensors without a copy
    (`modules`: the model's named modules, if the caller has them)."""
    if in_place:
        _swap_to_meta(unique_modules(modules) if modules is not None else list(model.modules()))
        return model
    memo: dict[int, Any] = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in memo:
            # Already weightless (a model built on meta): the copy may share it, as a trace
            # changes nothing in a tensor that has no data. Copying cost 1 s at 1000 blocks.
            memo[id(tensor)] = tensor if tensor.is_meta else _meta_of(tensor)
    # deepcopy recurses a few frames per level of nesting: a Sequential 150 levels deep
    # overflows the default limit of 1000 although its copy is small.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))
    try:
        return _structural_copy(model, memo) or copy.deepcopy(model, memo)
    finally:
        sys.setrecursionlimit(limit)


_META = torch.device("meta")


def unique_modules(modules: dict[str, nn.Module]) -> list[nn.Module]:
    """The modules of a named-module table (duplicates kept), each once, in its order:
    `model.modules()` without another walk."""
    return list({id(m): m for m in modules.values()}.values())


def _meta_of(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor's weightless twin: same class, shape, strides, dtype and requires_grad.
    (empty_like keeps a contiguous tensor's strides at half empty_strided's cost.)"""
    if tensor.is_contiguous():
        meta = torch.empty_like(tensor, device=_META)
    else:
        meta = torch.empty_strided(tensor.size(), tensor.stride(), dtype=tensor.dtype, device=_META)
    cls = type(tensor)
    if cls is nn.Parameter:  # what Parameter.__new__ does for a plain tensor, less its Python
        return torch.Tensor._make_subclass(cls, meta, tensor.requires_grad)
    if issubclass(cls, nn.Parameter):  # not isinstance: Parameter's own check runs Python
        meta = cls(meta, requires_grad=tensor.requires_grad)
    return meta


def _swap_to_meta(modules: list[nn.Module]) -> list[tuple[dict, str, torch.Tensor]]:
    """Every parameter and buffer of `modules` (a model's) not on meta replaced by its meta
    twin (a tensor two modules share gets one twin); what was replaced is returned as
    (table, key, tensor) so that it can be put back."""
    twins: dict[int, torch.Tensor] = {}
    swapped = []
    for module in modules:
        for table in (module._parameters, module._buffers):
            for key, tensor in table.items():
                if tensor is None or tensor.is_meta:
                    continue
                twin = twins.get(id(tensor))
                if twin is None:
                    twin = twins[id(tensor)] = _meta_of(tensor)
                swapped.append((table, key, tensor))
    for table, key, tensor in swapped:  # after the walk: no table changes while it is read
        table[key] = twins[id(tensor)]
    return swapped


_ATOMS = frozenset({int, float, bool, str, type(None), torch.dtype, torch.device})


@contextmanager
def weights_on_meta(model: nn.Module, modules: dict[str, nn.Module] | None = None) -> Iterator[nn.Module]:
    """`model` itself with its parameters and buffers on the meta device while active (sharing
    kept), and its own tensors put back after, however the block ends. The API lints a user's
    live model this way: a copy of the module tree cost a sixth of a 1000-block net's lint.
    The trace restores whatever forward assigns to its modules (ModuleState); the modules'
    train/eval modes are put back here. `modules`: the model's named modules, if the caller
    has them."""
    modules = unique_modules(modules) if modules is not None else list(model.modules())
    modes = [(module, module.training) for module in modules]  # an eval-mode retry switches them
    saved = []
    try:
        saved = _swap_to_meta(modules)
        yield model
    finally:
        for table, key, tensor in saved:
            table[key] = tensor
        for module, training in modes:
            if module.training != training:  # nn.Module's __setattr__ is slow: only the changed
                module.training = training


def _holds_model_state(value: Any) -> bool:
    if isinstance(value, (nn.Module, torch.Tensor)):
        return True
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, (list, tuple, set)):
        return False
    return bool(value) and any(isinstance(v, (nn.Module, torch.Tensor)) for v in value)


_TABLES = ("_parameters", "_buffers", "_modules")  # filled in afterwards, around the meta tensors
# A module's dozen hook tables are OrderedDicts: their own copy() is ten times faster than
# copy.copy, which goes through __reduce_ex__ (2.6 s of a 1000-block net's lint).
_PLAIN_CONTAINERS = (dict, list, set, OrderedDict)


def _copy_container(value: Any) -> Any:
    if type(value) in _PLAIN_CONTAINERS:
        # Most hook tables are empty, and a new empty OrderedDict is 20 times cheaper than a
        # copy of one (5 us: a tenth of a small model's lint over its dozen tables per module).
        return type(value)() if not value else value.copy()
    return copy.copy(value) if isinstance(value, (dict, list, set)) else value


def _structural_copy(model: nn.Module, memo: dict[int, Any]) -> nn.Module | None:
    """The module tree copied around `memo`'s meta tensors, without deep-copying everything
    else (a fifth of a warm resnet50 lint went to deepcopy). Other attributes are shared with
    the original, their containers copied one level. None, and so a deepcopy, when a module
    keeps modules or tensors anywhere but its registered tables (a plain list of layers, a
    tensor attribute), or copies itself its own way."""
    modules = list(model.modules())
    copyable: dict[type, bool] = {}
    copies: dict[int, nn.Module] = {}
    for module in modules:  # one pass over the attributes: checked and copied together
        cls = type(module)
        if cls not in copyable:
            copyable[cls] = not (hasattr(cls, "__deepcopy__") or issubclass(cls, torch.jit.ScriptModule))
        if not copyable[cls]:
            return None
        attrs = {}
        for key, value in module.__dict__.items():
            if type(value) in _ATOMS:  # most attributes: nothing to check or copy
                attrs[key] = value
            elif key not in _TABLES:
                if _holds_model_state(value):
                    return None
                attrs[key] = _copy_container(value)
        clone = cls.__new__(cls)
        clone.__dict__.update(attrs)
        copies[id(module)] = clone
    for module in modules:
        # Into the clone's __dict__ directly: nn.Module.__setattr__'s checks are for user code.
        tables = copies[id(module)].__dict__
        tables["_parameters"] = {k: None if v is None else memo.get(id(v), v)
                                 for k, v in module._parameters.items()}
        tables["_buffers"] = {k: None if v is None else memo.get(id(v), v) for k, v in module._buffers.items()}
        tables["_modules"] = {k: None if v is None else copies[id(v)] for k, v in module._modules.items()}
    return copies[id(model)]


def fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    # Tensors a forward builds from module attributes that are not buffers (a real CPU tensor
    # made in __init__) are turned fake on use rather than rejected.
    return FakeTensorMode(allow_non_fake_inputs=True)


def _fake_cpu(tensor: torch.Tensor, mode) -> torch.Tensor:
    from torch._subclasses.fake_tensor import FakeTensor

    meta = tensor if tensor.is_meta else torch.empty_like(tensor, device="meta")
    return FakeTensor(mode, meta, torch.device("cpu"))


@contextmanager
def fake_cpu_weights(model: nn.Module, mode) -> Iterator[nn.Module]:
    """`model` with its parameters and buffers swapped for fake CPU tensors of `mode` (weight
    sharing kept) while active, and its own tensors put back after. Swapping in place rather
    than copying: a copy of a detector's backbone per traced part cost minutes."""
    fakes: dict[int, Any] = {}
    saved = []
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for key, tensor in list(table.items()):
                if tensor is None:
                    continue
                if id(tensor) not in fakes:
                    fake = _fake_cpu(tensor, mode)
                    if isinstance(tensor, nn.Parameter):
                        fake = nn.Parameter(fake, requires_grad=tensor.requires_grad)
                    fakes[id(tensor)] = fake
                saved.append((table, key, tensor))
                table[key] = fakes[id(tensor)]
    try:
        yield model
    finally:
        for table, key, tensor in saved:
            table[key] = tensor


def fake_cpu_inputs(inputs: Any, mode) -> Any:
    """Example inputs (meta tensors, possibly nested) as fake CPU tensors of `mode`."""
    return torch.utils._pytree.tree_map(
        lambda v: _fake_cpu(v, mode) if isinstance(v, torch.Tensor) else v, inputs)


class ModuleState:
    """The attributes of every module of a model, to put back after a tracing attempt: a
    forward that assigns to its module (`self.mean = self.mean.type_as(x)`, EDSR and SwinIR)
    leaves fx Proxies or fake tensors there, which break the next attempt and the rules."""

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module] | None = None):
        # The model's named modules, duplicates kept: made once here, the one walk of a big
        # model's modules that the trace, the graph and the coverage then share (`modules`:
        # the caller's own table of them, if it has one).
        self.modules = module_table(model, modules)
        self._saved = [(m, m.__dict__.copy(), m._parameters.copy(), m._buffers.copy(), m._modules.copy())
                       for m in unique_modules(self.modules)]

    def restore(self) -> None:
        """Put back what was there; keep what tracing added (fx's `_tensor_constant0`)."""
        for module, attrs, params, buffers, children in self._saved:
            module.__dict__.update(attrs)
            for table, saved in ((module._parameters, params), (module._buffers, buffers),
                                 (module._modules, children)):
                table.update(saved)
