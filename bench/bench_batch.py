"""What B001's batch analysis (archlint/graph/batch.py) adds to a lint, per model.

    python bench/bench_batch.py                      # resnet50, vit_b_16 and a few more
    python bench/bench_batch.py --repeat 7 --models resnet50 timm:swin_tiny_patch4_window7_224

For each model: the lint without B001 (every other rule), then the batch analysis on that
lint's graph, split into the rerun at a batch of two (the fx graph re-propagated for shapes,
or for the fx-with-meta and export rungs, a second trace) and the walk that follows the batch.
Each figure is the median of --repeat warm runs after one run that pays first-use costs.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import archlint
from archlint import load
from archlint.graph import batch as batch_module
from archlint.registry import load_rules

MODELS = ["resnet50", "vit_b_16", "convnext_tiny", "swin_t", "timm:vit_small_patch16_224",
          "timm:mobilevitv2_050", "timm:convit_tiny"]


def build(name: str):
    with load.building(on_meta=True):
        if name.startswith("timm:"):
            import timm

            model = timm.create_model(name[5:], pretrained=False)
            return model, (1, *model.pretrained_cfg["input_size"])
        import torchvision

        return torchvision.models.get_model(name, weights=None), (1, 3, 224, 224)


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    others = [r.code for r in load_rules().rules if r.code != "B001"]
    print(f"{'model':34s} {'tracer':16s} {'lint w/o B001':>14s} {'rerun':>9s} {'walk':>9s} {'B001 adds':>10s}")
    for name in args.models:
        model, shape = build(name)
        report = archlint.lint(model, input_shape=shape, select=others)
        graph = report.graph
        lint_ms = median_ms(lambda: archlint.lint(model, input_shape=shape, select=others), args.repeat)
        widen = lambda t: torch.empty((2, *t.shape[1:]), dtype=t.dtype, device="meta")  # noqa: E731
        rerun_ms = median_ms(lambda: graph.rerun(widen), args.repeat)

        def whole():
            batch_module._cache.pop(graph, None)
            return batch_module.batch_flow(graph)

        flow_ms = median_ms(whole, args.repeat)
        flow = whole()
        assert flow.available, flow.reason
        print(f"{name:34s} {graph.tracer:16s} {lint_ms:12.0f}ms {rerun_ms:7.0f}ms {flow_ms - rerun_ms:7.0f}ms "
              f"{flow_ms:8.0f}ms  ({100 * flow_ms / lint_ms:.0f}%)")


if __name__ == "__main__":
    main()
