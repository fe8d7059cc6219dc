"""Where layers come from in source code.

Two questions per layer: which line *built* it (the `nn.Conv2d(...)` call in some `__init__`)
and which line *called* it (the `self.conv(x)` in some `forward`). The first is recorded while
the model is constructed (`record_construction`); the second comes from the tracer's stack trace.
Each is a list of frames, innermost first, with torch's own frames removed; `pick` chooses the
frame to show: the innermost one in the user's own code, else the innermost one at all.
"""
from __future__ import annotations

import inspect
import linecache
import os
import re
import sys
import sysconfig
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from .findings import Location

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_ARCHLINT_DIR = os.path.dirname(__file__) + os.sep
_LIBRARY_DIRS = tuple(
    os.path.realpath(p) + os.sep
    for p in {sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")}
)


@dataclass(frozen=True)
class Frame:
    path: str  # absolute
    line: int

    @property
    def is_user_code(self) -> bool:
        return not os.path.realpath(self.path).startswith(_LIBRARY_DIRS)

    def location(self) -> Location:
        return Location(display_path(self.path), self.line, os.path.realpath(self.path))

    def source(self) -> str:
        return linecache.getline(self.path, self.line).rstrip("\n")


_internal: dict[str, bool] = {}  # per file: asked for every frame of every traced node


def is_internal(path: str) -> bool:
    known = _internal.get(path)
    if known is None:
        known = _internal[path] = (
            path.startswith(_TORCH_DIR)
            or path.startswith(_ARCHLINT_DIR)
            or path.startswith("<")
            or "importlib" in path
        )
    return known


def display_path(path: str) -> str:
    """A path as a person reads it: relative to the working folder, or to site-packages."""
    real = os.path.realpath(path)
    cwd = os.path.realpath(os.getcwd()) + os.sep
    if real.startswith(cwd):
        return real[len(cwd):]
    for lib in _LIBRARY_DIRS:
        if real.startswith(lib):
            return real[len(lib):]
    return path


def pick(frames: tuple[Frame, ...] | None) -> Frame | None:
    """The frame to show: the innermost one in the user's code, else the innermost one."""
    if not frames:
        return None
    for frame in frames:
        if frame.is_user_code:
            return frame
    return frames[0]


# --- where a module was built -------------------------------------------------------------

_construction_sites: "weakref.WeakKeyDictionary[nn.Module, tuple[Frame, ...]]" = (
    weakref.WeakKeyDictionary()
)


def _frames_from(frame, module: nn.Module) -> tuple[Frame, ...]:
    frames = []
    while frame is not None:
        code = frame.f_code
        # Skip the constructor chain of the module itself (its own __init__ and super().__init__).
        # f_locals builds a dict of the frame's variables: only read it when it can matter.
        if not is_internal(code.co_filename) and not (
                code.co_name == "__init__" and frame.f_locals.get("self") is module):
            frames.append(Frame(code.co_filename, frame.f_lineno))
        frame = frame.f_back
    return tuple(frames)


@contextmanager
def record_construction() -> Iterator[None]:
    """While active, remember the call stack at which every nn.Module is constructed."""
    original = nn.Module.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self not in _construction_sites:
            _construction_sites[self] = _frames_from(sys._getframe(1), self)

    nn.Module.__init__ = init
    try:
        yield
    finally:
        nn.Module.__init__ = original


def construction_frames(module: nn.Module) -> tuple[Frame, ...]:
    return _construction_sites.get(module, ())


# --- where forward called it --------------------------------------------------------------

_FRAME_RE = re.compile(r'File "(?P<path>[^"]+)", line (?P<line>\d+)')


def frames_from_stack_trace(stack_trace: str | None) -> tuple[Frame, ...]:
    """Parse a tracer's stack trace (outermost first) into frames, innermost first."""
    if not stack_trace:
        return ()
    frames = [
        Frame(m["path"], int(m["line"]))
        for m in _FRAME_RE.finditer(stack_trace)
        if not is_internal(m["path"])
    ]
    return tuple(reversed(frames))


# A generator's frame is resumed by whoever calls next(): the stack above it can change while
# it lives, so what is above it is never remembered.
_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


class CallStacks:
    """The call stacks of one trace's nodes, up to (not including) the frame `stop`.

    Asked for every traced node, and most of a node's stack is the same as its neighbours':
    the model's forward, then each module's down to the layer's. A frame's callers stay where
    they are for as long as the frame runs, so the user frames above each user frame are
    remembered (with the frame, which keeps its id its own) and a walk stops at the first
    remembered one: a few frames a node rather than the whole stack, a sixth of a 1000-block
    net's trace. Made per trace, as it keeps the frames it has seen alive."""

    def __init__(self, stop=None):
        self.stop = stop
        self._above: dict[int, tuple[Any, tuple[Frame, ...]]] = {}

    def here(self) -> tuple[Frame, ...]:
        """The caller's stack as frames, innermost first, torch's and archlint's own left out."""
        frame = sys._getframe(1)
        frames: list[Frame] = []
        walked = []  # (user frame, its index in frames) to remember what is above each
        tail: tuple[Frame, ...] = ()
        above = self._above
        while frame is not None and frame is not self.stop:
            path = frame.f_code.co_filename
            internal = _internal.get(path)
            if internal is None:
                internal = is_internal(path)
            if not internal:
                key = (path, frame.f_lineno)
                found = _frames.get(key)
                if found is None:
                    found = _frames[key] = Frame(path, frame.f_lineno)
                frames.append(found)
                if not frame.f_code.co_flags & _GENERATOR_FLAGS:
                    known = above.get(id(frame))
                    if known is not None and known[0] is frame:
                        tail = known[1]
                        break
                    walked.append((frame, len(frames)))
            frame = frame.f_back
        stack = tuple(frames) + tail if tail else tuple(frames)
        for seen, index in walked:
            above[id(seen)] = (seen, stack[index:])
        return stack


_frames: dict[tuple[str, int], Frame] = {}


_SUPPRESS_RE = re.compile(r"#\s*archlint:\s*disable\s*=\s*([A-Za-z0-9_,\s]+)")


def suppressed_codes(frame: Frame | None) -> set[str]:
    """Codes silenced by a `# archlint: disable=K001,N001` comment on the frame's line."""
    if frame is None:
        return set()
    codes: set[str] = set()
    for text in _statement_lines(frame.path, frame.line):
        match = _SUPPRESS_RE.search(text)
        if match:
            codes |= {c.strip().upper() for c in match.group(1).split(",") if c.strip()}
    return codes


def _statement_lines(path: str, line: int, limit: int = 30) -> Iterator[str]:
    """The lines of the statement starting at `line`: a call may span several lines and the
    comment may sit on its last one."""
    depth = 0
    for number in range(line, line + limit):
        text = linecache.getline(path, number)
        if not text:
            return
        yield text
        code = text.split("#", 1)[0]
        depth += sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}")
        if depth <= 0:
            return
