"""Totals of `archlint summary` beside torchinfo's and the published figures (params, MACs).

    python bench/bench_summary.py               # the Markdown table of docs/summary-vs-torchinfo.md
    python bench/bench_summary.py --batch-size 32 --models resnet50 gpt2

torchinfo (`pip install torchinfo`) runs the real model on CPU with random weights and counts
with module hooks; archlint traces it on meta tensors. GPT-2 needs `transformers`; it is built
as GPT2LMHeadModel(GPT2Config()) with use_cache=False and fed 1024 tokens (its full context).
Also prints archlint's training memory at --batch-size (Adam): saved activations and the peak.
"""
from __future__ import annotations

import argparse
import time

import torch

PUBLISHED = {  # (MACs, params) from the models' papers and model cards, at 224x224
    "resnet50": (4.09e9, 25.6e6),
    "convnext_tiny": (4.47e9, 28.6e6),
    "vit_b_16": (17.56e9, 86.6e6),
    "swin_t": (4.49e9, 28.3e6),
    "gpt2": (None, 124e6),
}
GPT2_TOKENS = 1024


def build(name: str):
    """(model, example input) for one benchmark model."""
    if name == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        model = GPT2LMHeadModel(GPT2Config(use_cache=False)).eval()
        return model, torch.zeros(1, GPT2_TOKENS, dtype=torch.long)
    import torchvision

    return torchvision.models.get_model(name, weights=None).eval(), torch.randn(1, 3, 224, 224)


def torchinfo_totals(name: str) -> tuple[int, int, float]:
    import torchinfo

    model, x = build(name)
    started = time.perf_counter()
    stats = torchinfo.summary(model, input_data=[x], verbose=0, depth=3)
    return stats.total_params, stats.total_mult_adds, time.perf_counter() - started


def archlint_totals(name: str, batch_size: int):
    import archlint
    from archlint import summary

    model, x = build(name)
    started = time.perf_counter()
    report = archlint.lint(model, x)
    record = summary.summarize(report.graph, name, batch_size=batch_size)
    return record, time.perf_counter() - started


def g(n: float | None) -> str:
    return "" if n is None else f"{n / 1e9:.2f} G"


def m(n: float | None) -> str:
    return "" if n is None else f"{n / 1e6:.1f} M"


def gib(n: int | None) -> str:
    return "" if n is None else f"{n / 2**30:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(PUBLISHED))
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, memory_rows = [], []
    for name in args.models:
        macs, params = PUBLISHED[name]
        ti_params, ti_macs, ti_s = torchinfo_totals(name)
        record, al_s = archlint_totals(name, args.batch_size)
        rows.append(f"| {name} | {m(params)} | {m(ti_params)} | {m(record.params)} | {g(macs)} | "
                    f"{g(ti_macs)} | {g(record.macs)} | {ti_s:.1f} s | {al_s:.1f} s |")
        t = record.training
        if t is not None:
            memory_rows.append(f"| {name} | {gib(t.weights + t.buffers)} | {gib(t.gradients)} | "
                               f"{gib(t.optimizer_state)} | {gib(t.saved_activations)} | {gib(t.peak)} | "
                               f"{gib(t.checkpoint_saved)} |")
        else:
            memory_rows.append(f"| {name} | not measured: {'; '.join(record.notes)} | | | | | |")
    print("| model | params, published | torchinfo | archlint | MACs, published | torchinfo | archlint "
          "| torchinfo time | archlint time |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    print("\n".join(rows))
    print()
    print(f"Training memory at batch {args.batch_size} with Adam (archlint):")
    print()
    print("| model | weights + buffers | gradients | Adam state | saved activations | peak "
          "| saved, stages checkpointed |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    print("\n".join(memory_rows))


if __name__ == "__main__":
    main()
