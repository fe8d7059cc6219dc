"""archlint's speed beside the tools people already use to summarize a model (issue 14).

    pip install -e ".[bench]"                   # torchinfo, ptflops, transformers, timm
    python bench/bench_speed.py                 # every table, 5 warm runs each
    python bench/bench_speed.py --repeat 7 --models resnet50 gpt2 --no-cli

Three tables, all measured in one process per table so that the ratios are honest on a
shared, noisy machine (each figure is the median of --repeat warm runs, after one run that
pays the first-use costs; in the first two tables the tools take turns within each round):

1. in-process: `archlint.lint(model, x)` beside `torchinfo.summary` (real CPU compute),
   FlopCounterMode over the model on meta tensors, and ptflops; ratios are archlint's time
   over torchinfo's and over the fastest counter's;
2. scaling: the synthetic residual net (examples/deep_net.py) at 125 to 2000 blocks, built on
   meta as `archlint check` builds it, the build and the lint timed apart, beside torchinfo on
   the real net: ms per block should stay flat;
3. CLI end to end: `python -m archlint check examples/small_cnn.py --no-cache` in process
   (ARCHLINT_NO_WORKER=1) and through the warm worker, against `python -c "import torch"`,
   each a fresh process.

GPT-2 and BERT-base are built from transformers' configs with random weights and
use_cache=False, fed TOKENS token ids; the timm model is created without pretrained weights.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENS = 128
IMAGE = (1, 3, 224, 224)
MODELS = ["resnet50", "vit_b_16", "convnext_tiny", "mobilenet_v3_large", "efficientnet_b0",
          "timm:tf_efficientnet_b0", "gpt2", "bert", "deep1000"]


def build(name: str):
    """(model in eval mode with real random weights, example input)."""
    if name == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        return GPT2LMHeadModel(GPT2Config(use_cache=False)).eval(), torch.zeros(1, TOKENS, dtype=torch.long)
    if name == "bert":
        from transformers import BertConfig, BertModel

        return BertModel(BertConfig(use_cache=False)).eval(), torch.zeros(1, TOKENS, dtype=torch.long)
    if name.startswith("timm:"):
        import timm

        return timm.create_model(name[5:], pretrained=False).eval(), torch.randn(*IMAGE)
    if name.startswith("deep"):
        sys.path.insert(0, os.path.join(ROOT, "examples"))
        from deep_net import DeepNet

        return DeepNet(int(name[4:])).eval(), torch.randn(1, 3, 32, 32)
    import torchvision

    return torchvision.models.get_model(name, weights=None).eval(), torch.randn(*IMAGE)


def timed_in_turn(tools: dict, repeat: int) -> dict[str, float]:
    """Each tool's median time over `repeat` rounds, every round running each tool once in
    turn: the machine's speed drifts by a third within minutes, and a tool timed in its own
    stretch of time met other conditions than the tool it is compared with. A tool that fails
    (on its first, warm-up run) is NaN."""
    runs: dict[str, list[float]] = {}
    for name, fn in tools.items():
        try:
            fn()  # first use: imports, caches, kernels chosen
            runs[name] = []
        except Exception as exc:
            print(f"  ({name} failed: {str(exc).splitlines()[0][:100]})", file=sys.stderr)
    for _ in range(repeat):
        for name in runs:
            started = time.perf_counter()
            tools[name]()
            runs[name].append(time.perf_counter() - started)
    return {name: statistics.median(runs[name]) if name in runs else float("nan") for name in tools}


def run_archlint(model, x):
    import archlint

    return archlint.lint(model, x)


def run_torchinfo(model, x):
    import torchinfo

    with torch.no_grad():
        torchinfo.summary(model, input_data=[x], verbose=0, depth=3)


def flop_counter(model, x):
    from torch.utils.flop_counter import FlopCounterMode

    from archlint.trace import meta_copy

    meta = meta_copy(model)
    meta_x = torch.empty_like(x, device="meta")

    def run():
        with torch.no_grad(), FlopCounterMode(display=False):
            meta(meta_x)
    return run


def run_ptflops(model, x):
    from ptflops import get_model_complexity_info

    if x.dtype == torch.long:
        def construct(_shape):
            return {"input_ids": x}
    else:
        def construct(_shape):
            return x
    with torch.no_grad():
        get_model_complexity_info(model, tuple(x.shape[1:]), as_strings=False,
                                  print_per_layer_stat=False, verbose=False, input_constructor=construct)


def _flop_counter_or_raise(model, x):
    try:
        return flop_counter(model, x)
    except Exception as exc:  # made inside the round, where timed_in_turn reports it
        def fail():
            raise exc
        return fail


def in_process(models: list[str], repeat: int) -> None:
    print(f"In-process, median of {repeat} warm runs (seconds; ratio = archlint / other)\n")
    print("| model | rung | archlint | torchinfo | FlopCounter (meta) | ptflops | vs torchinfo "
          "| vs fastest counter |")
    print("|---|---|--:|--:|--:|--:|--:|--:|")
    for name in models:
        model, x = build(name)
        rung = run_archlint(model, x).tracer
        # FlopCounterMode on meta stops at transformers' mask code, which reads a value with
        # .item(): NaN there.
        times = timed_in_turn({
            "archlint": lambda: run_archlint(model, x),
            "torchinfo": lambda: run_torchinfo(model, x),
            "FlopCounterMode": _flop_counter_or_raise(model, x),
            "ptflops": lambda: run_ptflops(model, x)}, repeat)
        al, ti, fc, pt = (times[k] for k in ("archlint", "torchinfo", "FlopCounterMode", "ptflops"))
        fastest = min([v for v in (fc, pt) if v == v] or [float("nan")])
        print(f"| {name} | {rung} | {al:.3f} | {ti:.3f} | {fc:.3f} | {pt:.3f} | {al / ti:.2f}x "
              f"| {al / fastest:.2f}x |", flush=True)


def scaling(sizes: list[int], repeat: int) -> None:
    from archlint import inputs, load, pipeline
    from archlint.config import Settings

    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from deep_net import DeepNet

    print(f"\nDeep residual net, built on meta and linted as `archlint check` does "
          f"(median of {repeat} warm runs; the build is the model's own __init__ on meta, which "
          "torchinfo's figure leaves out too)\n")
    print("| blocks | layers | build s | lint s | lint ms per block | torchinfo s | lint / torchinfo |")
    print("|--:|--:|--:|--:|--:|--:|--:|")
    for blocks in sizes:
        builds, lints, infos, layers = [], [], [], 0
        real = DeepNet(blocks).eval()
        x = torch.randn(1, 3, 32, 32)
        for attempt in range(repeat + 1):  # the first pays first-use costs
            started = time.perf_counter()
            with load.building(on_meta=True):
                model = DeepNet(blocks)
            built = time.perf_counter()
            example = inputs.for_target(model, cli_shapes=[[1, 3, 32, 32]])
            report = pipeline.lint_model(model, example, Settings(), owned=True)
            done = time.perf_counter()
            run_torchinfo(real, x)  # in the same round: see timed_in_turn
            infos.append(time.perf_counter() - done)
            layers = report.summary["layers"]
            if attempt:
                builds.append(built - started)
                lints.append(done - built)
        ti = statistics.median(infos[1:])
        lint_s = statistics.median(lints)
        print(f"| {blocks} | {layers} | {statistics.median(builds):.3f} | {lint_s:.3f} "
              f"| {1000 * lint_s / blocks:.2f} | {ti:.3f} | {lint_s / ti:.2f}x |", flush=True)


def cli(repeat: int) -> None:
    def run(argv: list[str], env: dict | None = None) -> float:
        started = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, capture_output=True, check=False, env=env or base)
        return time.perf_counter() - started

    check = [sys.executable, "-m", "archlint", "check", "examples/small_cnn.py", "--no-cache"]
    bare = [sys.executable, "-c", "import torch"]
    # As a user's machine runs it: compiled bytecode kept (PYTHONDONTWRITEBYTECODE, set on some
    # build machines, recompiles archlint's 150 modules on every start, 0.3 s).
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cold_env = {**base, "ARCHLINT_NO_WORKER": "1"}
    warm_env = {k: v for k, v in base.items() if k not in ("ARCHLINT_NO_WORKER", "CI")}
    run(bare)
    run(check, cold_env)  # writes the bytecode
    run(check, warm_env)  # starts the warm worker if none runs
    # Interleaved: each row sees the same load.
    rows = [(run(bare), run(check, cold_env), run(check, warm_env)) for _ in range(repeat)]
    torch_s = statistics.median(r[0] for r in rows)
    cold_s = statistics.median(r[1] for r in rows)
    warm_s = statistics.median(r[2] for r in rows)
    extra = statistics.median(r[1] - r[0] for r in rows)
    print(f"\nCLI end to end, fresh processes, median of {repeat}\n")
    print("| command | seconds |")
    print("|---|--:|")
    print(f"| python -c 'import torch' | {torch_s:.2f} |")
    print(f"| archlint check examples/small_cnn.py --no-cache, in process (ARCHLINT_NO_WORKER=1) | {cold_s:.2f} |")
    print(f"| the same, beyond import torch (median of differences; target 0.5) | {extra:.2f} |")
    print(f"| the same through the warm worker | {warm_s:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--sizes", nargs="*", type=int, default=[125, 250, 500, 1000, 2000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-cli", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.models:
        in_process(args.models, args.repeat)
    if args.sizes:
        scaling(args.sizes, max(3, args.repeat // 2))
    if not args.no_cli:
        cli(args.repeat)


if __name__ == "__main__":
    main()
