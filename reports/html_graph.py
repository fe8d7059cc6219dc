"""The architecture graph for the HTML report, laid out as plain geometry.

The graph is shown one module level at a time: a level is a module (the model itself at the
top) and its items are the layers it calls directly plus one box per child module. Each child
module gets its own level, nested in the page as a `<details>` block, so a 1000-layer network
opens stage by stage instead of drawing 3000 boxes at once, and it works with JavaScript off.

Each level is laid out as a layered DAG, top to bottom (a small Sugiyama layout): longest-path
layers, sources pulled down next to their first consumer, dummy points on long edges, barycenter
ordering, and x positions from isotonic regression (as close to the parents' mean as the
spacing allows), so chains come out straight. Edges into and out of the level are drawn from an
"in" and to an "out" port, which is what makes a residual shortcut visible inside a block.

Everything here is data: the template only draws it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from archlint.findings import Finding
from archlint.graph import ArchGraph, Layer

Path = tuple[str, ...]

LEAF_W, LEAF_H = 168, 34
GROUP_W, GROUP_H = 172, 40
PORT_W, PORT_H = 44, 20
GAP_X, GAP_Y, DUMMY_GAP = 22, 28, 10
MARGIN = 14
_CHAR_W = 6.6  # average advance of the 11px label font, to shorten labels that would overflow


@dataclass
class Node:
    id: str
    kind: str  # "leaf" | "group" | "port"
    title: str  # first line
    subtitle: str  # second line
    tooltip: str
    x: float = 0.0  # centre
    y: float = 0.0  # centre
    w: float = 0.0
    h: float = 0.0
    severity: str | None = None  # worst finding inside, for the mark
    finding_count: int = 0
    href: str | None = None

    @property
    def left(self) -> float:
        return self.x - self.w / 2

    @property
    def top(self) -> float:
        return self.y - self.h / 2


@dataclass
class Edge:
    d: str  # SVG path data
    back: bool = False  # drawn against the flow (a module called again later)


@dataclass
class Level:
    """One module's graph: the SVG of its items, then its child modules as nested levels."""

    anchor: str
    path: str  # dotted module path, "" for the model
    type: str  # the module's class name
    op_count: int  # operations in this module, all levels down
    severity: str | None
    finding_count: int
    width: float
    height: float
    nodes: list[Node]
    edges: list[Edge]
    children: list["Level"] = field(default_factory=list)
    open: bool = False

    @property
    def name(self) -> str:
        return self.path or "model"


# --- which module level each operation belongs to ------------------------------------------------

def group_of(layer: Layer) -> Path:
    """The module whose forward calls this layer. A module call belongs to its parent module;
    a function call belongs to the module whose forward makes it."""
    parts = tuple(p for p in layer.qualname.split(".") if p)
    if layer.kind in ("input", "output"):
        return ()
    if layer.kind in ("module", "attr"):
        return parts[:-1]
    return parts


def _leaf_label(layer: Layer) -> str:
    if layer.kind in ("module", "attr") and layer.qualname:
        return layer.qualname.rsplit(".", 1)[-1]
    return layer.op if layer.kind not in ("input", "output") else layer.name


def shape_text(shape: Sequence[int] | None) -> str:
    if not shape:
        return ""
    dims = list(shape[1:]) if len(shape) > 1 else list(shape)
    return "×".join(str(d) for d in dims)


def shorten(text: str, width: float) -> str:
    """Cut the middle out of a label that would overflow a box `width` px wide."""
    fits = max(4, int((width - 16) / _CHAR_W))
    if len(text) <= fits:
        return text
    keep = fits - 1
    return text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2:]


def _subtitle(op: str, shape: str, width: float) -> str:
    """"Conv2d · 64×56×56": the shape matters more, so the type gives way when space is short."""
    if not op or not shape:
        return shorten(op or shape, width)
    room = width - (len(shape) + 3) * _CHAR_W
    return f"{shorten(op, room)} · {shape}" if room > 40 else shorten(shape, width)


# --- the collapsed graph of one level -------------------------------------------------------------

@dataclass
class _Item:
    key: str
    kind: str  # leaf | group | chunk | port
    order: int  # first appearance in execution order
    layer: Layer | None = None
    path: Path = ()  # group: the module; chunk: the module whose children it holds
    layers: list[Layer] = field(default_factory=list)  # everything inside
    parts: list[str] = field(default_factory=list)  # chunk: the item keys it holds


def _item_key(layer: Layer, layer_group: Path, level: Path) -> str:
    if layer_group == level:
        return "L:" + layer.name
    return "G:" + ".".join(level + (layer_group[len(level)],))


def _kind(key: str) -> str:
    return {"L": "leaf", "G": "group", "C": "chunk", "P": "port"}[key[0]]


def _level_items(graph: ArchGraph, members: list[Layer], key_of, ports: bool
                 ) -> tuple[dict[str, _Item], list[tuple[str, str]]]:
    inside = {l.name for l in members}
    items: dict[str, _Item] = {}
    item_of: dict[str, str] = {}
    for layer in members:
        key = key_of(layer)
        item_of[layer.name] = key
        if key not in items:
            items[key] = _Item(key, _kind(key), len(items), layer if key[0] == "L" else None,
                               tuple(key[2:].split(".")) if key[0] == "G" else ())
        items[key].layers.append(layer)
    edges: dict[tuple[str, str], None] = {}
    if ports:  # where data enters and leaves this module
        for layer in members:
            if any(p not in inside for p in layer.inputs if p in graph.g):
                edges[("P:in", item_of[layer.name])] = None
            if any(s not in inside for s in graph.g.successors(layer.name)):
                edges[(item_of[layer.name], "P:out")] = None
        if any(k[0] == "P:in" for k in edges):
            items = {"P:in": _Item("P:in", "port", -1), **items}
        if any(k[1] == "P:out" for k in edges):
            items["P:out"] = _Item("P:out", "port", len(items) + 1)
    for layer in members:
        for source in layer.inputs:
            if source in inside and item_of[source] != item_of[layer.name]:
                edges[(item_of[source], item_of[layer.name])] = None
    return items, list(edges)


# --- layout ---------------------------------------------------------------------------------------

def _layers_of(items: dict[str, _Item], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layering over the edges that run forward in execution order; then each
    node with all consumers two or more layers below moves down next to them."""
    order = {k: i.order for k, i in items.items()}
    forward = [(u, v) for u, v in edges if order[u] < order[v]]
    preds: dict[str, list[str]] = {k: [] for k in items}
    succs: dict[str, list[str]] = {k: [] for k in items}
    for u, v in forward:
        preds[v].append(u)
        succs[u].append(v)
    keys = sorted(items, key=order.__getitem__)
    rank: dict[str, int] = {}
    for k in keys:
        rank[k] = 1 + max((rank[p] for p in preds[k]), default=-1)
    for k in reversed(keys):
        if succs[k] and items[k].kind != "port":
            rank[k] = max(rank[k], min(rank[s] for s in succs[k]) - 1)
    if "P:out" in items:
        rank["P:out"] = 1 + max((rank[k] for k in items if k != "P:out"), default=0)
    return rank


def _isotonic(targets: list[float]) -> list[float]:
    """Non-decreasing values closest (least squares) to `targets`: pool adjacent violators."""
    blocks: list[list[float]] = []  # [mean, count]
    for t in targets:
        blocks.append([t, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, n2 = blocks.pop()
            m1, n1 = blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    out: list[float] = []
    for mean, count in blocks:
        out.extend([mean] * int(count))
    return out


def _pack(row: list[str], desired: dict[str, float], width: dict[str, float]) -> dict[str, float]:
    """x for each node of a row, in order, as near its desired x as the spacing allows."""
    offsets = [0.0]
    for a, b in zip(row, row[1:]):
        gap = DUMMY_GAP if (width[a] == 0 or width[b] == 0) else GAP_X
        offsets.append(offsets[-1] + (width[a] + width[b]) / 2 + gap)
    base = _isotonic([desired[k] - o for k, o in zip(row, offsets)])
    return {k: b + o for k, b, o in zip(row, base, offsets)}


def _layout(items: dict[str, _Item], edges: list[tuple[str, str]], size: dict[str, tuple[float, float]]):
    rank = _layers_of(items, edges)
    order = {k: i.order for k, i in items.items()}
    # Long edges get a dummy point per layer they cross, so they bend around boxes.
    chains: list[tuple[str, list[str], str, bool]] = []
    nodes_rank = dict(rank)
    for n, (u, v) in enumerate(edges):
        back = not order[u] < order[v]
        lo, hi = (rank[u], rank[v]) if not back else (rank[v], rank[u])
        dummies = []
        if not back:
            for r in range(lo + 1, hi):
                d = f"D:{n}:{r}"
                nodes_rank[d] = r
                dummies.append(d)
        chains.append((u, dummies, v, back))
    width = {k: (size[k][0] if k in size else 0.0) for k in nodes_rank}
    rows: dict[int, list[str]] = {}
    for k in sorted(nodes_rank, key=lambda k: (nodes_rank[k], order.get(k, 0), k)):
        rows.setdefault(nodes_rank[k], []).append(k)
    up: dict[str, list[str]] = {k: [] for k in nodes_rank}
    down: dict[str, list[str]] = {k: [] for k in nodes_rank}
    for u, dummies, v, back in chains:
        if back:
            continue
        path = [u, *dummies, v]
        for a, b in zip(path, path[1:]):
            down[a].append(b)
            up[b].append(a)
    ranks = sorted(rows)
    if all(len(row) == 1 for row in rows.values()):  # a chain: one column, nothing to order
        column = max(width.values()) / 2 + MARGIN
        return _finish(rows, ranks, {k: column for k in nodes_rank}, width, size, chains)
    pos = {k: float(i) for r in ranks for i, k in enumerate(rows[r])}

    def sweep(sequence, neighbours):
        for r in sequence:
            row = rows[r]
            bary = {k: (sum(pos[n] for n in neighbours[k]) / len(neighbours[k]) if neighbours[k] else pos[k])
                    for k in row}
            row.sort(key=lambda k: (bary[k], pos[k]))
            for i, k in enumerate(row):
                pos[k] = float(i)

    for _ in range(3):
        sweep(ranks[1:], up)
        sweep(list(reversed(ranks[:-1])), down)
    x: dict[str, float] = {}
    for r in ranks:
        row = rows[r]
        x.update(_pack(row, {k: pos[k] * (LEAF_W + GAP_X) for k in row}, width))
    for _ in range(4):
        for sequence, neighbours in ((ranks[1:], up), (list(reversed(ranks[:-1])), down)):
            for r in sequence:
                row = rows[r]
                desired = {k: (sum(x[n] for n in neighbours[k]) / len(neighbours[k]) if neighbours[k] else x[k])
                           for k in row}
                x.update(_pack(row, desired, width))
    left = min(x[k] - width[k] / 2 for k in x)
    x = {k: v - left + MARGIN for k, v in x.items()}
    return _finish(rows, ranks, x, width, size, chains)


def _finish(rows, ranks, x, width, size, chains):
    """y per row, and the drawing's size."""
    row_h = [max((size[k][1] for k in rows[r] if k in size), default=PORT_H) for r in ranks]
    y: dict[str, float] = {}
    top = MARGIN
    for r, h in zip(ranks, row_h):
        for k in rows[r]:
            y[k] = top + h / 2
        top += h + GAP_Y
    total_w = max(x[k] + width[k] / 2 for k in x) + MARGIN
    total_h = top - GAP_Y + MARGIN
    return x, y, chains, total_w, total_h


def _n(v: float) -> str:
    """A coordinate, as short as it can be written."""
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _edge_path(points: list[tuple[float, float]]) -> str:
    """A smooth vertical path through the points: a cubic per segment, a plain line where the
    points stand in one column (most edges of a chain)."""
    (x0, y0), rest = points[0], points[1:]
    if all(abs(x - x0) < 0.05 for x, _ in rest):
        return f"M{_n(x0)},{_n(y0)}V{_n(rest[-1][1])}"
    d = [f"M{_n(x0)},{_n(y0)}"]
    px, py = x0, y0
    for x1, y1 in rest:
        my = _n((py + y1) / 2)
        d.append(f"C{_n(px)},{my} {_n(x1)},{my} {_n(x1)},{_n(y1)}")
        px, py = x1, y1
    return "".join(d)


def _back_edge(ux, uy, uh, vx, vy, vh, reach) -> str:
    """An edge against the flow, looping out to the right of the boxes."""
    x = reach + 18
    return (f"M{ux + 6:.1f},{uy + uh / 2:.1f}C{x:.1f},{uy + uh / 2 + 20:.1f} "
            f"{x:.1f},{vy - vh / 2 - 20:.1f} {vx + 6:.1f},{vy - vh / 2:.1f}")


# --- building the levels --------------------------------------------------------------------------

CHUNK_ABOVE = 48  # a level with more items than this is split into chunks...
CHUNK_SIZE = 32  # ...of about this many items, each a box that opens


def _worst(findings: Iterable[Finding]) -> str | None:
    worst = max((f.severity for f in findings), default=None)
    return str(worst) if worst is not None else None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _chunk_ends(item: _Item) -> tuple[str, str]:
    """The first and last item of a chunk, named within their module: "32" for "stages.1.32"."""
    def short(key: str) -> str:
        return key[2:].rsplit(".", 1)[-1] if key[0] == "G" else key[2:]
    return short(item.parts[0]), short(item.parts[-1])


class GraphBuilder:
    """Turns an ArchGraph into nested Levels. `finding_ids` maps each finding (by id()) to the
    id of its card, so a marked node links to it; after `build()`, `level_of_finding` tells
    which level draws each finding's node."""

    def __init__(self, graph: ArchGraph, findings: Sequence[Finding], prefix: str,
                 finding_ids: dict[int, str]):
        self.graph = graph
        self.prefix = prefix
        self.finding_ids = finding_ids
        self.groups = {l.name: group_of(l) for l in graph}
        self.findings_at = self._place_findings(findings)
        self._drawn_in: dict[str, str] = {}  # item key -> anchor of the level that draws it

    def anchor(self, path: Path) -> str:
        return f"{self.prefix}-g-" + (".".join(path) if path else "model")

    def _place_findings(self, findings: Sequence[Finding]) -> dict[str, list[Finding]]:
        """Findings per item key: the first call of the layer a finding names ("L:name"), else
        the module's box ("G:path")."""
        by_qualname: dict[str, str] = {}
        for layer in self.graph:
            if layer.kind in ("module", "attr"):
                by_qualname.setdefault(layer.qualname, layer.name)
        placed: dict[str, list[Finding]] = {}
        for f in findings:
            name = by_qualname.get(f.module)
            placed.setdefault("L:" + name if name else "G:" + f.module, []).append(f)
        return placed

    def level_of_finding(self, finding: Finding) -> str:
        for key, found in self.findings_at.items():
            if any(f is finding for f in found):
                path = key[2:]
                while key not in self._drawn_in and "." in path:
                    path = path.rsplit(".", 1)[0]  # a module no layer runs in: its parent's box
                    key = "G:" + path
                return self._drawn_in.get(key, self.anchor(()))
        return self.anchor(())

    def _findings_under(self, item: _Item) -> list[Finding]:
        if item.kind == "port":
            return []
        if item.kind == "leaf":
            return list(self.findings_at.get(item.key, []))
        names = {l.name for l in item.layers}
        if item.kind == "group":
            prefixes = {".".join(item.path)}
        else:  # a chunk: the child modules of its level that it holds
            prefixes = {".".join(self.groups[n][:len(item.path) + 1]) for n in names
                        if len(self.groups[n]) > len(item.path)}
        found = []
        for key, fs in self.findings_at.items():
            if key[0] == "L" and key[2:] in names:
                found.extend(fs)
            elif key[0] == "G" and any(key[2:] == p or key[2:].startswith(p + ".") for p in prefixes if p):
                found.extend(fs)
        return found

    def _module_type(self, path: Path) -> str:
        try:
            return type(self.graph.model.get_submodule(".".join(path))).__name__
        except AttributeError:
            return ""

    def _node(self, item: _Item, chunk_anchor: dict[str, str]) -> Node:
        if item.kind == "port":
            word = item.key[2:]
            return Node(item.key, "port", word, "", f"data {'entering' if word == 'in' else 'leaving'} this module",
                        w=PORT_W, h=PORT_H)
        findings = self._findings_under(item)
        severity, count = _worst(findings), len(findings)
        marks = f"; {_plural(count, 'finding')}" if count else ""
        if item.kind == "leaf":
            layer = item.layer
            sub = _subtitle(layer.op if layer.kind not in ("input", "output") else "",
                            shape_text(layer.out_shape), LEAF_W)
            tip = f"{layer.qualname or layer.name} ({layer.op}) → {shape_text(layer.out_shape) or '?'}{marks}"
            href = "#" + self.finding_ids[id(findings[0])] if findings and id(findings[0]) in self.finding_ids else None
            return Node(item.key, "leaf", shorten(_leaf_label(layer), LEAF_W), sub, tip,
                        w=LEAF_W, h=LEAF_H, severity=severity, finding_count=count, href=href)
        ops = _plural(len(item.layers), "op")
        if item.kind == "chunk":
            first, last = _chunk_ends(item)
            title = f"{first} … {last}"
            tip = f"{len(item.parts)} items of {'.'.join(item.path) or 'the model'}, {first} to {last}, {ops}{marks}"
            return Node(item.key, "group", shorten(title, GROUP_W), f"{len(item.parts)} items · {ops}", tip,
                        w=GROUP_W, h=GROUP_H, severity=severity, finding_count=count,
                        href="#" + chunk_anchor[item.key])
        kind = self._module_type(item.path)
        tip = f"{'.'.join(item.path)} ({kind}), {ops}{marks}"
        return Node(item.key, "group", shorten(item.path[-1], GROUP_W),
                    shorten(f"{kind} · {ops}" if kind else ops, GROUP_W), tip,
                    w=GROUP_W, h=GROUP_H, severity=severity, finding_count=count,
                    href="#" + self.anchor(item.path))

    def build(self) -> Level:
        return self._level((), list(self.graph), self.anchor(()), "", allow_chunks=True)

    def _level(self, path: Path, members: list[Layer], anchor: str, label: str,
               allow_chunks: bool) -> Level:
        def base_key(layer: Layer) -> str:
            return _item_key(layer, self.groups[layer.name], path)

        keys = list(dict.fromkeys(base_key(l) for l in members))
        chunked = allow_chunks and len(keys) > CHUNK_ABOVE
        chunk_anchor: dict[str, str] = {}
        if chunked:
            count = min(-(-len(keys) // CHUNK_SIZE), CHUNK_ABOVE)
            size = -(-len(keys) // count)
            chunk_of = {k: f"C:{i // size}" for i, k in enumerate(keys)}
            key_of = lambda l: chunk_of[base_key(l)]  # noqa: E731
        else:
            key_of = base_key
        items, edges = _level_items(self.graph, members, key_of, ports=bool(path) or not allow_chunks)
        if chunked:
            for k, item in items.items():
                if item.kind == "chunk":
                    item.path = path
                    item.parts = [b for b in keys if chunk_of[b] == k]
                    chunk_anchor[k] = f"{anchor}~{k[2:]}"
        for k in items:
            self._drawn_in.setdefault(k, anchor)
        nodes = {k: self._node(i, chunk_anchor) for k, i in items.items()}
        x, y, chains, width, height = _layout(items, edges, {k: (n.w, n.h) for k, n in nodes.items()})
        for k, n in nodes.items():
            n.x, n.y = x[k], y[k]
        reach = max((n.x + n.w / 2 for n in nodes.values()), default=0)
        drawn: list[Edge] = []
        for u, dummies, v, back in chains:
            a, b = nodes[u], nodes[v]
            if back:
                drawn.append(Edge(_back_edge(a.x, a.y, a.h, b.x, b.y, b.h, reach), back=True))
                continue
            points = [(a.x, a.y + a.h / 2)] + [(x[d], y[d]) for d in dummies] + [(b.x, b.y - b.h / 2)]
            drawn.append(Edge(_edge_path(points)))
        if any(e.back for e in drawn):
            width = max(width, reach + 40)
        findings = [f for i in items.values() for f in self._findings_under(i)]
        level = Level(
            anchor=anchor, path=label or ".".join(path),
            type=(self._module_type(path) if path else type(self.graph.model).__name__) if not label else "",
            op_count=len(members), severity=_worst(findings), finding_count=len(findings),
            width=round(width, 1), height=round(height, 1), nodes=list(nodes.values()), edges=drawn)
        for k, item in items.items():
            if item.kind == "group":
                level.children.append(self._level(item.path, item.layers, self.anchor(item.path), "",
                                                  allow_chunks=True))
            elif item.kind == "chunk":
                first, last = _chunk_ends(item)
                level.children.append(self._level(path, item.layers, chunk_anchor[k],
                                                  f"{'.'.join(path) or 'model'} [{first} … {last}]",
                                                  allow_chunks=False))
        if len(level.children) == 1:
            level.children[0].open = True  # a lone wrapper module hides nothing worth a click
        return level
