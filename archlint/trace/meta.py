"""The meta copy: the model with its weights on the meta device, so tracing costs no memory."""
from __future__ import annotations

import copy
import sys
from typing import Any

import torch
from torch import nn


def meta_copy(model: nn.Module, in_place: bool = False) -> nn.Module:
    """The model with its parameters and buffers on the meta device. Weight sharing is kept
    (two modules that share a Parameter share its meta copy) and no weight memory is allocated.
    By default the original is not touched (the structure is deep-copied around meta tensors);
    `in_place=True`, for models archlint built itself, swaps the tensors without a copy."""
    memo: dict[int, Any] = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) in memo or tensor.device.type == "meta" and in_place:
            continue
        meta = torch.empty_like(tensor, device="meta")
        if isinstance(tensor, nn.Parameter):
            meta = type(tensor)(meta, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = meta
    if not in_place:
        # deepcopy recurses a few frames per level of nesting: a Sequential 150 levels deep
        # overflows the default limit of 1000 although its copy is small.
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 20000))
        try:
            return copy.deepcopy(model, memo)
        finally:
            sys.setrecursionlimit(limit)
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for key, tensor in table.items():
                if tensor is not None and id(tensor) in memo:
                    table[key] = memo[id(tensor)]
    return model

