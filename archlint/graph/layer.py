"""The record rules read: one `Layer` per operation of the forward pass."""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .. import sources
from ..findings import Location
from ..sources import Frame
from .ops import Kind
from .receptive_field import ReceptiveField
from .windows import Window

Shape = tuple[int, ...]


# Slotted: a graph holds one per node, and their attribute dicts were a tenth of the objects the
# collector walks once a 1000-block net is linted.
@dataclass(eq=False, slots=True)
class Layer:
    """One operation in the forward pass, as rules see it."""

    name: str  # unique node id
    index: int  # position in execution order
    kind: Kind
    op: str  # module: class name ("Conv2d"); function or method: its name ("add", "view")
    qualname: str  # module: name as in model.named_modules(); otherwise the enclosing module
    module: nn.Module | None = None
    inputs: list[str] = field(default_factory=list)
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    in_shapes: list[Shape] = field(default_factory=list)
    out_shapes: list[Shape] = field(default_factory=list)
    dtype: str | None = None
    params: int = 0  # parameters this layer owns (counted again where a module is reused)
    macs: int = 0
    rf: ReceptiveField | None = None
    window: Window | None = None  # convs and pools: where they read their input
    writes: list[str] = field(default_factory=list)  # inputs it modifies in place
    alias_of: str | None = None
    built_frames: tuple[Frame, ...] = ()
    call_frames: tuple[Frame, ...] = ()
    opaque: bool = False  # an op the tracer could not open: the layers inside are not here

    # --- convenience for rules --------------------------------------------------------------
    @property
    def out_shape(self) -> Shape | None:
        return self.out_shapes[0] if self.out_shapes else None

    @property
    def in_shape(self) -> Shape | None:
        return self.in_shapes[0] if self.in_shapes else None

    @property
    def inplace(self) -> bool:
        return bool(self.writes)

    def is_a(self, *types: type) -> bool:
        return self.module is not None and isinstance(self.module, types)

    @property
    def built_frame(self) -> Frame | None:
        return sources.pick(self.built_frames)

    @property
    def call_frame(self) -> Frame | None:
        return sources.pick(self.call_frames)

    @property
    def built_at(self) -> Location | None:
        frame = self.built_frame
        return frame.location() if frame else None

    @property
    def called_at(self) -> Location | None:
        frame = self.call_frame
        return frame.location() if frame else None

    def frame(self, prefer: str = "built") -> Frame | None:
        """The line to point at: the preferred one if it is in the user's code, else the other
        if that is, else whichever exists."""
        order = [self.built_frame, self.call_frame]
        if prefer == "call":
            order.reverse()
        for frame in order:
            if frame is not None and frame.is_user_code:
                return frame
        return next((f for f in order if f is not None), None)

    def __repr__(self) -> str:
        return f"<Layer {self.qualname or self.name} {self.op} {self.out_shape}>"
