"""Training memory at a batch size: weights, gradients, optimizer state, and the activations
autograd saves for backward, measured rather than estimated.

The saved activations come from running the model's forward in training mode under fake tensors
(`FakeTensorMode`: shapes and dtypes, no memory, no compute) inside
`torch.autograd.graph.saved_tensors_hooks`. Every tensor autograd keeps for backward passes
through the pack hook; its storage is counted once however many ops save it (a ReLU's output is
also the next conv's input), and storages that belong to parameters or buffers are left out,
since those are counted as weights. Each storage is charged to the innermost module running
when it was first saved.

    usage = measure(graph.model, [(32, 3, 224, 224)], ["float32"])
    usage.saved_total, usage.saved_by_module["layer1"], usage.peak("adam")

`saved_storages` is the counting rule on its own, so a test can apply the same hooks to a real
CPU forward and compare.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef

# Optimizer state per trainable parameter, in units of the parameter's own size: Adam keeps
# two running moments (its step counter is a scalar per tensor, left out), SGD with momentum
# one buffer, plain SGD none.
OPTIMIZER_STATE = {"adam": 2, "adamw": 2, "sgd-momentum": 1, "sgd": 0}


@dataclass
class SavedStorage:
    nbytes: int
    savers: set[str] = field(default_factory=set)  # modules (qualified names) that saved it
    first: str = ""  # the innermost module running when it was first saved


@dataclass
class MemoryUsage:
    """Bytes a training step holds at `batch_size`."""

    batch_size: int
    weights: int  # parameters
    buffers: int  # BatchNorm statistics and other registered buffers
    trainable: int  # bytes of parameters that get gradients
    saved: dict[Any, SavedStorage]  # storage -> what saved it
    stage_inputs: dict[str, set[Any]]  # module -> storages of the inputs of its calls
    input_bytes: dict[Any, int] = field(default_factory=dict)  # size of each such storage

    @property
    def gradients(self) -> int:
        return self.trainable

    def optimizer_state(self, optimizer: str = "adam") -> int:
        return OPTIMIZER_STATE[optimizer] * self.trainable

    @property
    def saved_total(self) -> int:
        return sum(s.nbytes for s in self.saved.values())

    @property
    def saved_by_module(self) -> dict[str, int]:
        """Saved bytes per module, each module's total including its submodules'."""
        totals: dict[str, int] = {}
        for storage in self.saved.values():
            for name in _ancestors(storage.first):
                totals[name] = totals.get(name, 0) + storage.nbytes
        return totals

    def peak(self, optimizer: str = "adam") -> int:
        """What is held when backward starts: every saved activation is still alive, and the
        weights, their gradients (kept from the previous step unless zero_grad frees them) and
        the optimizer's state. Transient tensors that autograd does not keep are left out."""
        return (self.weights + self.buffers + self.gradients + self.optimizer_state(optimizer)
                + self.saved_total)

    def checkpointed(self, stages: Sequence[str]) -> tuple[int, int]:
        """(saved bytes, extra bytes during backward) with `torch.utils.checkpoint` around each
        of `stages`: a stage then keeps only its inputs, and everything saved inside it alone is
        dropped; backward recomputes one stage at a time, so the largest dropped stage comes
        back for a while."""
        chosen = set(stages)

        def stage_of(name: str) -> str | None:
            return next((s for s in _ancestors(name) if s in chosen), None)

        kept: dict[Any, int] = {}
        dropped = dict.fromkeys(stages, 0)
        for key, storage in self.saved.items():
            # Still saved if any op outside the checkpointed stages saves it too.
            if any(stage_of(saver) is None for saver in storage.savers):
                kept[key] = storage.nbytes
            else:
                dropped[stage_of(storage.first)] += storage.nbytes
        for stage in stages:
            for key in self.stage_inputs.get(stage, ()):
                kept[key] = self.input_bytes.get(key, 0)
        return sum(kept.values()), max(dropped.values(), default=0)


def _ancestors(qualname: str) -> list[str]:
    """'' (the model), then 'layer1', 'layer1.0', ... down to `qualname` itself."""
    names = [""]
    parts = qualname.split(".") if qualname else []
    for i in range(len(parts)):
        names.append(".".join(parts[: i + 1]))
    return names


def storage_key(t: torch.Tensor) -> Any:
    return StorageWeakRef(t.untyped_storage())


@contextlib.contextmanager
def saved_storages(exclude: Sequence[torch.Tensor] = (),
                   where: Callable[[], str] = lambda: "") -> Iterator[dict[Any, SavedStorage]]:
    """Record every storage autograd saves for backward while active, except those of
    `exclude` (the weights). `where()` names the module running at the time."""
    skip = {storage_key(t) for t in exclude}
    saved: dict[Any, SavedStorage] = {}

    def pack(t: torch.Tensor):
        key = storage_key(t)
        if key not in skip:
            here = where()
            entry = saved.get(key)
            if entry is None:
                entry = saved[key] = SavedStorage(t.untyped_storage().nbytes(), first=here)
            entry.savers.add(here)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield saved


class _ModuleStack:
    """Which module is running: forward hooks on every submodule push and pop its name, and
    pre-hooks note the storages of its inputs (what a checkpoint around it would keep)."""

    def __init__(self, model: nn.Module):
        self.stack = [""]
        self.inputs: dict[str, set[Any]] = {}
        self.input_bytes: dict[Any, int] = {}
        # Storages are told apart by address: holding the inputs until the end keeps a freed
        # input's address from being reused by a later storage within the same run.
        self.held: list[torch.Tensor] = []
        self.handles = []
        for name, module in model.named_modules():
            if name:
                self.handles.append(module.register_forward_pre_hook(self._enter(name), with_kwargs=True))
                self.handles.append(module.register_forward_hook(self._leave, with_kwargs=True,
                                                                 always_call=True))

    def _enter(self, name: str):
        def hook(module, args, kwargs):
            self.stack.append(name)
            keys = self.inputs.setdefault(name, set())
            for value in list(args) + list(kwargs.values()):
                if isinstance(value, torch.Tensor):
                    key = storage_key(value)
                    keys.add(key)
                    self.input_bytes[key] = value.untyped_storage().nbytes()
                    self.held.append(value)
        return hook

    def _leave(self, module, args, kwargs, output):
        self.stack.pop()

    def current(self) -> str:
        return self.stack[-1]

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.held.clear()


def _fake_like(t: torch.Tensor, requires_grad: bool) -> torch.Tensor:
    fake = torch.empty(t.shape, dtype=t.dtype, device="cpu")
    return fake.requires_grad_(requires_grad) if fake.is_floating_point() else fake


def _example(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    if dtype.is_floating_point or dtype.is_complex:
        return torch.empty(tuple(shape), dtype=dtype, device="cpu")
    # Token ids and labels: the values index embeddings, so keep them in range.
    return torch.zeros(tuple(shape), dtype=dtype, device="cpu")


def _nbytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def measure(model: nn.Module, input_shapes: Sequence[Sequence[int]], input_dtypes: Sequence[str],
            batch_size: int | None = None) -> MemoryUsage:
    """Run one training-mode forward of `model` (its tensors may live on the meta device) under
    fake tensors at `batch_size` (default: the inputs' own first dimension) and record what
    autograd saves. The model's own tensors are not touched: fake ones are swapped in for the
    call (torch.func.functional_call)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    shapes = [list(s) for s in input_shapes]
    if batch_size is not None:
        for shape in shapes:
            if shape:
                shape[0] = batch_size
    batch = batch_size if batch_size is not None else (shapes[0][0] if shapes and shapes[0] else 1)
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    usage = MemoryUsage(
        batch_size=batch, weights=_nbytes(params.values()), buffers=_nbytes(buffers.values()),
        trainable=_nbytes(p for p in params.values() if p.requires_grad), saved={}, stage_inputs={})
    was_training = model.training
    stack = _ModuleStack(model)
    try:
        # Constant tensors a module keeps as plain attributes are real; let them in as fakes.
        with FakeTensorMode(allow_non_fake_inputs=True):
            fakes: dict[int, torch.Tensor] = {}
            tensors = {}
            for name, t in list(params.items()) + list(buffers.items()):
                if id(t) not in fakes:  # tied weights stay tied
                    fakes[id(t)] = _fake_like(t, requires_grad=name in params and t.requires_grad)
                tensors[name] = fakes[id(t)]
            inputs = [_example(s, getattr(torch, d or "float32")) for s, d in zip(shapes, input_dtypes)]
            model.train()
            with saved_storages(list(fakes.values()), stack.current) as saved:
                torch.func.functional_call(model, tensors, tuple(inputs), tie_weights=False)
    finally:
        stack.close()
        model.train(was_training)
    usage.saved = saved
    usage.stage_inputs = stack.inputs
    usage.input_bytes = stack.input_bytes
    return usage
