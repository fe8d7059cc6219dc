"""Receptive field: how much of the input one output position can see.

Per spatial axis, three numbers propagate through the graph (Araujo et al., "Computing
Receptive Fields of Convolutional Neural Networks", Distill 2019):

    size_out  = size_in + (k_eff - 1) * jump_in        with k_eff = d (k - 1) + 1
    jump_out  = jump_in * stride
    start_out = start_in + ((k_eff - 1) / 2 - padding) * jump_in

A stack of three 3x3 stride-1 convs gives 3 -> 5 -> 7. Where branches merge (add, cat) the
larger field wins. A global pooling makes the field cover the whole input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence



@dataclass(frozen=True)
class ReceptiveField:
    size: tuple[int, ...]
    jump: tuple[float, ...]
    start: tuple[float, ...]
    is_global: bool = False

    @classmethod
    def identity(cls, ndim: int) -> "ReceptiveField":
        return cls((1,) * ndim, (1.0,) * ndim, (0.5,) * ndim)

    def through_window(self, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                       dilation: Sequence[int]) -> "ReceptiveField":
        size, jump, start = [], [], []
        for axis in range(len(self.size)):
            k_eff = dilation[axis] * (kernel[axis] - 1) + 1
            size.append(int(self.size[axis] + (k_eff - 1) * self.jump[axis]))
            start.append(self.start[axis] + ((k_eff - 1) / 2 - padding[axis]) * self.jump[axis])
            jump.append(self.jump[axis] * stride[axis])
        return ReceptiveField(tuple(size), tuple(jump), tuple(start), self.is_global)

    def transposed(self, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                   dilation: Sequence[int]) -> "ReceptiveField":
        """A transposed conv: the jump shrinks by the stride, and one output position gathers
        up to ceil(k_eff / stride) input positions, so the field grows by that many minus one."""
        size = []
        for axis in range(len(self.size)):
            k_eff = dilation[axis] * (kernel[axis] - 1) + 1
            reads = -(-k_eff // stride[axis])
            size.append(int(self.size[axis] + (reads - 1) * self.jump[axis]))
        grown = ReceptiveField(tuple(size), self.jump, self.start, self.is_global)
        return grown.scaled(stride)

    def scaled(self, factors: Sequence[float]) -> "ReceptiveField":
        """Upsampling by `factors` divides the jump."""
        return ReceptiveField(self.size, tuple(j / f for j, f in zip(self.jump, factors)),
                              self.start, self.is_global)

    def whole(self, input_size: Sequence[int]) -> "ReceptiveField":
        return ReceptiveField(tuple(max(s, i) for s, i in zip(self.size, input_size)),
                              self.jump, self.start, True)

    @staticmethod
    def widest(fields: Sequence["ReceptiveField"]) -> "ReceptiveField":
        return max(fields, key=lambda f: (f.is_global, max(f.size)))
