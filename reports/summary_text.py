"""The layer table in the terminal: `archlint summary`'s text output.

One table per model: module (indented by depth), type, output shape, parameters, MACs,
receptive field and the activations saved for backward, then the totals and the training
memory. It receives `archlint.summary.Summary` records and lays them out; it computes nothing.
Colour only when asked (the CLI asks when stdout is a terminal). A table wider than `width`
first has its module names cut in the middle, then loses the columns that matter least (Frozen,
Type, RF, Output shape); the totals below it wrap.
"""
from __future__ import annotations

import textwrap
from typing import Any, Sequence

import click

from .text import human

MIN_NAME = 16
_DASH = "-"


def human_bytes(n: int | None) -> str:
    if n is None:
        return ""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size * 1000 / 1024:  # 0.98 GiB, not 1004.51 MiB
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def shape_text(shape: Sequence[int] | None) -> str:
    return "x".join(map(str, shape)) if shape else ""


def rf_text(row: Any) -> str:
    if row.rf is None:
        return ""
    return "global" if row.rf_global else "x".join(map(str, row.rf))


def _count(n: int) -> str:
    return human(n) if n else _DASH


def _cut(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    keep = width - 3
    return text[: keep // 2] + "..." + text[len(text) - (keep - keep // 2):]


def columns(summary: Any, rows: Sequence[Any]) -> tuple[list[str], list[list[str]], list[str]]:
    """(headers, cells per row, alignment per column): the table before it is laid out."""
    frozen = summary.non_trainable > 0
    batch = summary.training.batch_size if summary.training else None
    fields = any(row.rf is not None for row in rows)  # none for token models
    headers = ["Module", "Type", "Output shape", "Params"] + (["Frozen"] if frozen else []) + \
        ["MACs"] + (["RF"] if fields else []) + ([f"Saved @{batch}"] if batch else [])
    align = ["<", "<", "<", ">"] + ([">"] if frozen else []) + [">"] + ([">"] if fields else []) + \
        ([">"] if batch else [])
    cells = []
    for row in rows:
        line = ["  " * (row.depth - 1) + row.name,
                row.type + (f" x{row.calls}" if row.calls > 1 else ""),
                shape_text(row.out_shape), _count(row.params)]
        if frozen:
            line.append(_count(row.non_trainable))
        line.append(_count(row.macs))
        if fields:
            line.append(rf_text(row))
        if batch:
            line.append(human_bytes(row.saved_bytes) if row.saved_bytes else _DASH)
        cells.append(line)
    return headers, cells, align


def table(summary: Any, rows: Sequence[Any], width: int | None = None,
          style=lambda text, **kw: text) -> list[str]:
    headers, cells, align = columns(summary, rows)
    gap = 2

    def measure() -> list[int]:
        return [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]

    widths = measure()
    # Too wide for the terminal: first cut the module names, then drop the columns that matter
    # least (the JSON output keeps everything).
    for drop in ("Frozen", "Type", "RF", "Output shape"):
        total = sum(widths) + gap * (len(widths) - 1)
        if not width or total <= width:
            break
        if widths[0] > MIN_NAME:
            widths[0] = max(MIN_NAME, widths[0] - (total - width))
            cells = [[_cut(c[0], widths[0])] + c[1:] for c in cells]
            widths = measure()
            if sum(widths) + gap * (len(widths) - 1) <= width:
                break
        if drop in headers:
            i = headers.index(drop)
            headers, align = headers[:i] + headers[i + 1:], align[:i] + align[i + 1:]
            cells = [c[:i] + c[i + 1:] for c in cells]
            widths = measure()

    def line(values: Sequence[str]) -> str:
        parts = [f"{v:{a}{w}}" for v, a, w in zip(values, align, widths)]
        return (" " * gap).join(parts).rstrip()

    rule = _DASH * min(sum(widths) + gap * (len(widths) - 1), width or 10**6)
    out = [style(line(headers), bold=True), rule]
    for row, values in zip(rows, cells):
        text = line(values)
        out.append(style(text, bold=True) if row.depth == 1 and row.children else text)
    out.append(rule)
    return out


def totals(summary: Any) -> list[tuple[str, bool]]:
    """The lines under the table, each with whether it is a heading."""
    inputs = ", ".join(shape_text(s) for s in summary.inputs)
    out = [(f"Params: {human(summary.params)} ({summary.params:,}); trainable {summary.trainable:,}, "
            f"non-trainable {summary.non_trainable:,}", True),
           (f"MACs:   {human(summary.macs)} ({summary.macs:,}) for input {inputs}; FLOPs = 2 x MACs",
            True)]
    if summary.outside:
        names = list(summary.outside)
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        out.append((f"  {sum(summary.outside.values()):,} of the params are in no row above: {shown}",
                    False))
    memory = summary.training
    if memory is not None:
        out += [(f"Training memory at batch {memory.batch_size}, {memory.optimizer}:", True),
                (f"  weights {human_bytes(memory.weights)}, gradients {human_bytes(memory.gradients)}, "
                 f"optimizer state {human_bytes(memory.optimizer_state)}, "
                 f"buffers {human_bytes(memory.buffers)}", False),
                (f"  activations saved for backward {human_bytes(memory.saved_activations)}", False),
                (f"  peak at the start of backward {human_bytes(memory.peak)}", True)]
        if memory.checkpoint_stages:
            stages = memory.checkpoint_stages
            named = ", ".join(stages[:4]) + (f" and {len(stages) - 4} more" if len(stages) > 4 else "")
            out.append((f"  torch.utils.checkpoint on {named}: saved activations "
                        f"{human_bytes(memory.saved_activations)} -> "
                        f"{human_bytes(memory.checkpoint_saved)}, plus "
                        f"{human_bytes(memory.checkpoint_recompute)} while backward recomputes the "
                        f"largest", False))
    return out


def render(summaries: Sequence[Any], *, depth: int | None = 3, color: bool = False,
           width: int | None = None, errors: Sequence[tuple[str, str]] = (),
           skipped: Sequence[tuple[str, str]] = (), **_: Any) -> str:
    def style(text: str, **kw: Any) -> str:
        return click.style(text, **kw) if color else text

    from archlint.summary import fold

    lines: list[str] = []
    for summary in summaries:
        if lines:
            lines.append("")
        lines.append(style(summary.target, bold=True))
        for note in summary.notes:
            lines.extend(_wrap(f"  note: {note}", width))
        lines.extend(table(summary, fold(summary.rows, depth), width, style))
        for text, heading in totals(summary):
            lines.extend(style(part, bold=True) if heading else part for part in _wrap(text, width))
    for target, message in skipped:
        lines.append(style(target, bold=True) + f"  {message}")
    for target, message in errors:
        lines.append(style(f"{target}: error: ", fg="red", bold=True) + message)
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int | None) -> list[str]:
    if not width or len(text) <= width:
        return [text]
    indent = " " * (len(text) - len(text.lstrip()) + 4)
    return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False)
