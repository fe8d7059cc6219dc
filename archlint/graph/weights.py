"""The tensors a layer holds. Rules and the graph ask this of every layer; a leaf layer (most
of them) answers from its own tables, without nn.Module's recursive generators (a walk each,
about 6 us: a tenth of the rules' time on a 1000-block net). A weight named by its path is read
from its module's tables too: get_parameter walks the path on every call.

Those lookups read a model's module table (qualified name -> module, duplicates kept), made
once per lint: each walk of a 1000-block net's modules costs about 6 ms."""
from __future__ import annotations

import torch
from torch import nn


def module_table(model: nn.Module, modules: dict[str, nn.Module] | None = None) -> dict[str, nn.Module]:
    """The model's module table: `modules` if the caller already has it, else one walk."""
    return modules if modules is not None else dict(model.named_modules(remove_duplicate=False))


def parameters_of(module: nn.Module) -> list[torch.Tensor]:
    """`module.parameters()`: its own and its submodules', each once."""
    if not module._modules:
        return list({id(p): p for p in module._parameters.values() if p is not None}.values())
    return list(module.parameters())


def has_buffers(module: nn.Module) -> bool:
    """Whether `module` or a submodule of it has a buffer (BatchNorm's running statistics)."""
    if not module._modules:
        return any(b is not None for b in module._buffers.values())
    return any(True for _ in module.buffers())


def registered(modules: dict[str, nn.Module], qualname: str, buffers: bool = True) -> torch.Tensor | None:
    """The parameter (with `buffers`, or the buffer) registered as `qualname`
    (`blocks.0.bn.weight`), read from its module in `modules` (qualified name -> module) as
    it is now; None if there is none."""
    path, _, key = qualname.rpartition(".")
    owner = modules.get(path)
    if owner is None:
        return None
    found = owner._parameters.get(key)
    if found is None and buffers:
        found = owner._buffers.get(key)
    return found
