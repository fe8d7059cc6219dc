"""The report's plots as plain geometry: the feature pyramid, MACs per layer, receptive field
growth. Each plot is a handful of rectangles, a polyline and axis ticks; the template draws
them as inline SVG, so the page needs no plotting library and no network.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from archlint.graph import ArchGraph, Layer

from .html_graph import shorten
from .text import human


@dataclass
class Tick:
    pos: float  # px along its axis
    label: str


@dataclass
class Bar:
    x: float
    y: float
    w: float
    h: float
    tooltip: str
    marked: bool = False  # the layer has findings


@dataclass
class PyramidRow:
    y: float
    label: str  # the stage's layers
    spatial: str
    channels: str
    spatial_w: float  # bar width, left half
    channels_w: float  # bar width, right half
    tooltip: str


@dataclass
class Pyramid:
    width: float
    height: float
    mid: float  # x of the centre line
    half: float  # px available on each side
    rows: list[PyramidRow]
    row_h: float
    truncated: int = 0  # stages left out


@dataclass
class XYPlot:
    """A bar chart or a line over execution order, with its axes."""

    title: str
    y_label: str
    x_label: str
    width: float
    height: float
    left: float
    top: float
    plot_w: float
    plot_h: float
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    line: str = ""  # polyline points
    reference: float | None = None  # y px of the dashed line
    reference_label: str = ""
    points: list[Bar] = field(default_factory=list)  # marked points on the line


@dataclass
class Plots:
    pyramid: Pyramid | None
    macs: XYPlot | None
    rf: XYPlot | None
    notes: list[str] = field(default_factory=list)


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `top`: steps of 1, 2 or 5 times a power of ten."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _tick_label(value: float) -> str:
    return human(int(value)) if value >= 1000 else f"{value:g}"


# --- the pyramid ----------------------------------------------------------------------------------

@dataclass
class Stage:
    first: str
    last: str
    spatial: tuple[int, ...]
    channels: int
    count: int
    is_input: bool = False


def _name(layer: Layer) -> str:
    if layer.kind in ("module", "attr"):
        return layer.qualname
    if layer.kind == "input":
        return f"input {layer.name}"
    return f"{layer.qualname}›{layer.op}" if layer.qualname else layer.op


def stages(graph: ArchGraph) -> list[Stage]:
    """Runs of consecutive operations whose feature maps keep one spatial size."""
    if not graph.input_shapes:
        return []
    rank = len(graph.input_shapes[0])
    if rank < 3:
        return []
    result: list[Stage] = []
    for layer in graph:
        shape = layer.out_shape
        if layer.kind == "output" or not shape or len(shape) != rank:
            continue
        spatial = tuple(shape[2:])
        # Inputs get rows of their own: the pyramid starts from what the model is given.
        if result and result[-1].spatial == spatial and not result[-1].is_input and layer.kind != "input":
            stage = result[-1]
            stage.last, stage.count = _name(layer), stage.count + 1
            stage.channels = max(stage.channels, shape[1])
        else:
            result.append(Stage(_name(layer), _name(layer), spatial, shape[1], 1, layer.kind == "input"))
    return result


def _span_label(first: str, last: str, width: float) -> str:
    """"stages.1: 0.conv … 249.relu" for a run of layers, their shared module said once."""
    if first == last:
        return shorten(first, width)
    a, b = first.split("."), last.split(".")
    common = 0
    while common < min(len(a), len(b)) - 1 and a[common] == b[common]:
        common += 1
    if common:
        prefix = ".".join(a[:common])
        return shorten(f"{prefix}: {'.'.join(a[common:])} … {'.'.join(b[common:])}", width)
    return shorten(f"{first} … {last}", width)


def pyramid(graph: ArchGraph, limit: int = 60) -> Pyramid | None:
    found = stages(graph)
    if len(found) < 2:
        return None
    shown = found[:limit]
    row_h, width, label_w = 26.0, 760.0, 250.0
    half = (width - label_w) / 2 - 50
    mid = label_w + (width - label_w) / 2
    biggest_side = max(math.prod(s.spatial) for s in shown) ** (1 / len(shown[0].spatial))
    most_channels = max(s.channels for s in shown)
    rows = []
    for i, s in enumerate(shown):
        side = math.prod(s.spatial) ** (1 / len(s.spatial))
        spatial = "×".join(map(str, s.spatial))
        label = _span_label(s.first, s.last, label_w - 4)
        rows.append(PyramidRow(
            y=30 + i * row_h, label=label, spatial=spatial, channels=str(s.channels),
            spatial_w=max(2.0, half * side / biggest_side),
            channels_w=max(2.0, half * s.channels / most_channels),
            tooltip=f"{label}: {s.count} op{'s' if s.count != 1 else ''} at {spatial}, "
                    f"up to {s.channels} channels"))
    return Pyramid(width=width, height=30 + len(rows) * row_h + 8, mid=mid, half=half, rows=rows,
                   row_h=row_h, truncated=len(found) - len(shown))


# --- MACs per layer and receptive field growth ----------------------------------------------------

def _frame(title, y_label, x_label, count, top_value, width=760.0, height=240.0) -> XYPlot:
    plot = XYPlot(title, y_label, x_label, width, height, left=56, top=14,
                  plot_w=width - 56 - 16, plot_h=height - 14 - 40)
    values = nice_ticks(top_value)
    scale = values[-1] or 1
    plot.y_ticks = [Tick(plot.top + plot.plot_h * (1 - v / scale), _tick_label(v)) for v in values]
    step = max(1, math.ceil(count / 8))
    plot.x_ticks = [Tick(plot.left + plot.plot_w * (i + 0.5) / max(count, 1), str(i))
                    for i in range(0, count, step)]
    return plot


def macs_plot(graph: ArchGraph, marked: set[str]) -> XYPlot | None:
    layers = [l for l in graph if l.macs > 0]
    if not layers:
        return None
    top = max(l.macs for l in layers)
    plot = _frame("MACs per layer", "MACs", "layer (execution order, layers with MACs only)", len(layers), top)
    scale = nice_ticks(top)[-1]
    slot = plot.plot_w / len(layers)
    for i, layer in enumerate(layers):
        h = plot.plot_h * layer.macs / scale
        plot.bars.append(Bar(
            x=round(plot.left + i * slot + slot * 0.1, 2), y=round(plot.top + plot.plot_h - h, 2),
            w=round(max(slot * 0.8, 0.6), 2), h=round(max(h, 0.5), 2),
            tooltip=f"{i}: {_name(layer)} ({layer.op}) {human(layer.macs)} MACs",
            marked=layer.name in marked))
    return plot


def rf_plot(graph: ArchGraph) -> XYPlot | None:
    layers = [l for l in graph if l.rf is not None and l.kind not in ("input", "output")]
    if not layers or not graph.input_shapes or len(graph.input_shapes[0]) < 3:
        return None
    input_side = max(graph.input_shapes[0][2:])
    sizes = [max(l.rf.size) for l in layers]
    top = max(max(sizes), input_side) * 1.05
    plot = _frame("Receptive field growth", "receptive field (px)", "layer (execution order)", len(layers), top)
    scale = nice_ticks(top)[-1]
    slot = plot.plot_w / len(layers)

    def y_of(v: float) -> float:
        return round(plot.top + plot.plot_h * (1 - v / scale), 2)

    plot.line = " ".join(f"{plot.left + (i + 0.5) * slot:.1f},{y_of(s)}" for i, s in enumerate(sizes))
    plot.reference = y_of(input_side)
    plot.reference_label = f"input {input_side} px"
    first_global = next((i for i, l in enumerate(layers) if l.rf.is_global), None)
    crossing = next((i for i, s in enumerate(sizes) if s >= input_side), None)
    for i, why in ((crossing, "first covers the input"), (first_global, "global from here")):
        if i is not None:
            layer = layers[i]
            plot.points.append(Bar(x=round(plot.left + (i + 0.5) * slot, 2), y=y_of(sizes[i]), w=0, h=0,
                                   tooltip=f"{_name(layer)}: {sizes[i]} px, {why}"))
    return plot


def build_plots(graph: ArchGraph, marked: set[str]) -> Plots:
    notes = []
    p = pyramid(graph)
    if p is None:
        notes.append("No feature pyramid: the model has fewer than two spatial stages.")
    m = macs_plot(graph, marked)
    r = rf_plot(graph)
    if r is None:
        notes.append("No receptive field plot: the input has no spatial axes.")
    return Plots(p, m, r, notes)


def rf_summary(graph: ArchGraph) -> str:
    """The largest field a spatial feature map reaches, against the input size."""
    if not graph.input_shapes or len(graph.input_shapes[0]) < 3:
        return "n/a (no spatial input)"
    rank = len(graph.input_shapes[0])
    image = graph.input_shapes[0][2:]
    spatial = [l for l in graph if l.rf is not None and l.out_shape and len(l.out_shape) == rank
               and l.kind != "input" and not l.rf.is_global]
    if not spatial:
        return "n/a"
    best = max(spatial, key=lambda l: max(l.rf.size))
    size = "×".join(map(str, best.rf.size))
    ratio = max(best.rf.size) / max(image)
    times = f"{ratio:.0f}" if ratio >= 10 else f"{ratio:.2g}"
    text = f"{size} px on a {'×'.join(map(str, image))} input ({times}× the input side)"
    pooled = next((l for l in graph if l.rf is not None and l.rf.is_global), None)
    if pooled is not None:
        text += f"; global from {_name(pooled)}"
    return text


def sizes_of(shapes: Sequence[Sequence[int]]) -> str:
    return ", ".join("×".join(map(str, s)) for s in shapes)
