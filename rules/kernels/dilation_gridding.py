"""K005 dilation-gridding: stacked dilated convs whose rates share a factor, so the stack sees a grid."""
from __future__ import annotations

import math

from archlint.findings import Fix, Severity
from archlint.graph.ops import Kind
from archlint.graph.receptive_field import ReceptiveField
from archlint.rule import Rule

from ..helpers import conv_call, conv_windows, explicit_pad, own_padding, shape_text


class DilationGridding(Rule):
    code = "K005"
    name = "dilation-gridding"
    severity = Severity.WARNING
    summary = "Consecutive dilated convs whose rates share a factor: the stack only sees a grid."
    what = """
        Finds two or more stride-1 convolutions that follow one another (through norms,
        activations, 1x1 convs and residual adds, nothing that looks at neighbours) with
        dilation rates above 1 that share a common factor: 2 then 2, or 2, 4, 8. A rate of 1
        or a coprime neighbour (1, 2, 5) breaks the run.
        """
    why = """
        A conv with dilation r reads its input every r pixels. Stack a second one with the
        same rate (or a multiple) and it reads those outputs every r pixels again: the top
        unit only ever sees input positions on a grid with spacing r, and the pixels between
        never reach it. Neighbouring outputs then draw on disjoint sets of inputs, which shows
        up as checkerboard "gridding" artifacts and loses thin structures. The finding's
        evidence counts the positions inside the stack's span that reach one output.
        """
    how_to_fix = """
        Give the convs of a group rates with no common factor whose taps fill the span, such
        as 1, 2, 5 (or 1, 2, 3) for 3x3 kernels, repeated per group: hybrid dilated
        convolution. The finding's fix prints such rates for the stack, with the padding that
        keeps the map size.
        """
    references = (
        "Wang et al., Understanding Convolution for Semantic Segmentation (hybrid dilated convolution), WACV 2018",
        "Yu & Koltun, Multi-Scale Context Aggregation by Dilated Convolutions, ICLR 2016",
        "Dilated Convolutions and Kronecker Factored Convolutions (https://www.inference.vc/dilated-convolutions-and-kronecker-factorisation/)",
    )
    bad = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=2, dilation=2), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=2, dilation=2), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=2, dilation=2), nn.BatchNorm2d(32), nn.ReLU(),
        )
        example_input = torch.randn(1, 32, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1, dilation=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=5, dilation=5), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=2, dilation=2), nn.ReLU(),  # a 3x3 between breaks the run
        )
        example_input = torch.randn(1, 32, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        inert = _spatially_inert(graph)
        dilated = {layer.name: w for layer, w in conv_windows(graph) if self._dilated(w)}
        pairs = []  # (conv, the conv right after it), rates sharing a factor
        for name, w in dilated.items():
            for before in graph.previous_layers(graph.layer(name), through=inert):
                if before.name in dilated and self._share_factor(dilated[before.name], w):
                    pairs.append((before.name, name))
        # A conv that feeds parallel branches with different rates (an ASPP head) starts a
        # multi-scale module, not a deeper stack: the fix belongs to the stack before it.
        after_of: dict[str, list[str]] = {}
        for before, after in pairs:
            after_of.setdefault(before, []).append(after)
        branches = {(before, after) for before, afters in after_of.items() for after in afters
                    if self._parallel(graph, after, afters, dilated)}
        links: dict[str, set[str]] = {name: set() for name in dilated}
        feeds: dict[str, set[str]] = {name: set() for name in dilated}  # conv -> the convs right before it
        for before, after in pairs:
            if (before, after) not in branches:
                links[after].add(before)
                links[before].add(after)
                feeds[after].add(before)
        seen: set[str] = set()
        for name in dilated:  # execution order
            if name in seen or not links[name]:
                continue
            group = self._connected(name, links)
            seen |= group
            path = self._longest_path(group, feeds, graph)
            others = sorted((graph.layer(n) for n in group - set(path)), key=lambda l: l.index)
            stack = [graph.layer(n) for n in path]
            yield self._finding(graph, stack, [dilated[l.name] for l in stack], others)

    @staticmethod
    def _parallel(graph, conv: str, siblings: list[str], dilated) -> bool:
        """Whether `conv` runs beside a sibling with another rate on the same input, neither
        feeding the other (ASPP branches), rather than later in the same stack (a residual
        path reaching the next block's conv too)."""
        return any(other != conv and dilated[other].dilation != dilated[conv].dilation
                   and not graph.has_path(conv, other) and not graph.has_path(other, conv)
                   for other in siblings)

    @staticmethod
    def _longest_path(group: set[str], feeds: dict[str, set[str]], graph) -> list[str]:
        """The longest chain of convs in the group, in execution order. Parallel branches (an
        ASPP's rates) each continue the chain; the coverage is that of one path through it."""
        length: dict[str, int] = {}
        parent: dict[str, str | None] = {}
        for name in sorted(group, key=lambda n: graph.layer(n).index):
            before = [p for p in feeds[name] if p in length]
            best = max(before, key=lambda p: length[p], default=None)
            length[name] = length[best] + 1 if best else 1
            parent[name] = best
        end = max(length, key=lambda n: (length[n], -graph.layer(n).index))
        path = [end]
        while parent[path[-1]] is not None:
            path.append(parent[path[-1]])
        return path[::-1]

    @staticmethod
    def _dilated(w) -> bool:
        return all(s == 1 for s in w.stride) and any(d > 1 and k > 1 for d, k in zip(w.dilation, w.kernel))

    @staticmethod
    def _share_factor(a, b) -> bool:
        return any(ka > 1 and kb > 1 and da > 1 and db > 1 and math.gcd(da, db) > 1
                   for ka, kb, da, db in zip(a.kernel, b.kernel, a.dilation, b.dilation))

    @staticmethod
    def _connected(start: str, links: dict[str, set[str]]) -> set[str]:
        group, frontier = set(), [start]
        while frontier:
            name = frontier.pop()
            if name not in group:
                group.add(name)
                frontier.extend(links[name] - group)
        return group

    @staticmethod
    def _pad_note(graph, w, total) -> str:
        """An explicit pad in front sized for the old rate pads too much for a lower one."""
        explicit = explicit_pad(graph, w)
        if explicit is None or all(t >= e for t, e in zip(total, explicit[0])):
            return ""
        return f"; and pad {shape_text(total)} in front instead of {shape_text(explicit[0])}"

    def _finding(self, graph, stack, windows, others):
        axis = max(range(windows[0].ndim), key=lambda a: windows[0].dilation[a])
        rates = [w.dilation[axis] for w in windows]
        halves = [max(1, (w.kernel[axis] - 1) // 2) for w in windows]
        reached, span = _coverage(rates, halves)
        share = (reached / span) ** windows[0].ndim
        suggested = hdc_rates(len(stack), max(rates), halves, total=sum(rates))
        shown = 8  # a fix for a 28-conv DeepLab backbone is a list of rates, not 28 lines
        lines = []
        for layer, w, r in list(zip(stack, windows, suggested))[:shown]:
            total = tuple(r * (k - 1) // 2 for k in w.kernel)
            padding = own_padding(graph, w, total)
            dilation = tuple(r if k > 1 else 1 for k in w.kernel)
            call = conv_call(layer.module, dilation=dilation, padding=padding) if layer.kind == Kind.MODULE \
                else f"dilation={r}, padding={shape_text(padding)}"
            lines.append(f"{call},  # {layer.qualname}{self._pad_note(graph, w, total)}")
        if len(stack) > shown:
            rest = len(stack) - shown
            lines.append(f"# ... and dilation {', '.join(map(str, suggested[shown:]))} for the "
                         f"{rest} conv{'s' if rest > 1 else ''} after, with padding dilation * (k - 1) // 2")
        rate_text = _runs(rates)
        also = f" (and {len(others)} parallel conv{'s' if len(others) > 1 else ''} on the same input)" \
            if others else ""
        return self.finding(
            stack[0],
            f"{len(stack)} stacked convs with dilation rates {rate_text}{also} read the input on a grid: "
            f"one output sees {reached} of the {span} positions along each axis of its span "
            f"({share:.0%} of the window); the pixels between never reach it",
            evidence={"layers": [l.qualname for l in stack], "dilations": rates,
                      "parallel_layers": [l.qualname for l in others],
                      "positions_read": reached, "span": span, "share_of_window": round(share, 4),
                      "suggested_dilations": suggested},
            fix=Fix(f"use rates without a common factor that fill the span, e.g. "
                    f"{', '.join(map(str, suggested))} (hybrid dilated convolution)", "\n".join(lines)),
        )


def _spatially_inert(graph):
    """A test for layers that neither look at neighbouring positions nor change the grid
    (norms, activations, 1x1 convs, adds, concatenations): the receptive field passes through
    them unchanged."""
    def test(layer) -> bool:
        if layer.rf is None:
            return False
        fields = [p.rf for p in graph.predecessors(layer) if p.rf is not None]
        if not fields:
            return False
        widest = ReceptiveField.widest(fields)
        return layer.rf.size == widest.size and layer.rf.jump == widest.jump

    return test


def _runs(values: list[int]) -> str:
    """[2, 2, 2, 4, 12] -> '2 (x3), 4, 12'."""
    parts, i = [], 0
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i]:
            j += 1
        parts.append(f"{values[i]} (x{j - i})" if j - i > 2 else ", ".join([str(values[i])] * (j - i)))
        i = j
    return ", ".join(parts)


def _coverage(rates: list[int], half: int | list[int]) -> tuple[int, int]:
    """(input positions one output reads, positions its span covers) along one axis for a
    stack of stride-1 convs with `half` taps each side (one number, or one per conv) at the
    given dilation rates."""
    halves = half if isinstance(half, list) else [half] * len(rates)
    offsets = {0}
    for rate, h in zip(rates, halves):
        offsets = {o + j * rate for o in offsets for j in range(-h, h + 1)}
    return len(offsets), max(offsets) - min(offsets) + 1


def hdc_rates(count: int, rate: int, half: int | list[int], total: int | None = None) -> list[int]:
    """Dilation rates for `count` stacked convs that leave no holes and share no factor
    between neighbours, spanning about as far as `count` convs at `rate` (or rates adding up to
    `total`): Wang et al.'s hybrid dilated convolution. Each rate is at most one more than the
    width covered so far, which is what keeps the stack free of holes."""
    budget = total or count * rate
    halves = half if isinstance(half, list) else [half] * count
    rates: list[int] = []
    reach = 0
    for i in range(count):
        want = max(1, -(-(budget - sum(rates)) // (count - i)))
        r = min(want, 2 * reach + 1)
        while r > 1 and rates and math.gcd(r, rates[-1]) > 1:
            r -= 1
        rates.append(r)
        reach += halves[i] * r
    ascending = sorted(rates)
    if all(math.gcd(a, b) == 1 for a, b in zip(ascending, ascending[1:])) and \
            _coverage(ascending, halves)[0] == _coverage(ascending, halves)[1]:
        return ascending
    return rates
