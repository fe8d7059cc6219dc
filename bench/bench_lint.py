"""Time each stage of `archlint check` and its peak memory, per model, in a fresh process each.

    python bench/bench_lint.py            # resnet50, vit_b_16, the 1000-block net, and growth
    python bench/bench_lint.py --repeat 5

Prints load (building the model), trace, analyze, rules and total seconds after torch (and the
model zoo) is imported, the first lint in the process (cold),
then warm (the best later lint in the same process: what a run over several files sees after the
first), and the peak RSS of the process. The growth table lints the synthetic residual net at
125 to 1000 blocks: time per block should stay flat (no quadratic pass).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(1)
import archlint.api as api
from archlint import pipeline
from archlint import inputs, load
from archlint.config import Settings
kind, arg, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "torchvision":
    import torchvision  # the model zoo's own import is not archlint's time
import_s = time.perf_counter() - t0
def build():
    if kind == "torchvision":
        import torchvision
        return getattr(torchvision.models, arg)(), (1, 3, 224, 224)
    sys.path.insert(0, "examples")
    from deep_net import DeepNet
    return DeepNet(int(arg)), (1, 3, 32, 32)
runs = []
for i in range(repeat):
    t = time.perf_counter()
    with load.building(on_meta=True):
        model, shape = build()
    built = time.perf_counter() - t
    example = inputs.for_target(model, cli_shapes=[list(shape)])
    report = pipeline.lint_model(model, example, Settings(), owned=True)
    timings = dict(report.timings, load=built)
    timings["total"] = sum(timings.values())
    runs.append(timings)
print(json.dumps({"import_torch_archlint": import_s, "runs": runs,
                  "layers": report.summary["layers"], "findings": len(report.findings),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(kind: str, arg: str, repeat: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, arg, str(repeat)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'model':<16}{'layers':>7}{'load':>8}{'trace':>8}{'analyze':>9}{'rules':>8}"
          f"{'total':>8}{'warm':>8}{'peak RSS':>10}")
    for kind, arg, label in [("torchvision", "resnet50", "resnet50"),
                             ("torchvision", "vit_b_16", "vit_b_16"),
                             ("deep", "1000", "1000 blocks")]:
        m = measure(kind, arg, args.repeat)
        first, warm = m["runs"][0], min(r["total"] for r in m["runs"][1:] or m["runs"])
        print(f"{label:<16}{m['layers']:>7}{first['load']:>8.3f}{first['trace']:>8.3f}"
              f"{first['analyze']:>9.3f}{first['rules']:>8.3f}{first['total']:>8.3f}{warm:>8.3f}"
              f"{m['peak_rss_mb']:>8.0f}MB")
    print("\ngrowth (warm seconds, synthetic residual net)")
    print(f"{'blocks':>8}{'layers':>8}{'trace':>8}{'analyze':>9}{'rules':>8}{'total':>8}{'ms/block':>10}")
    for blocks in (125, 250, 500, 1000):
        m = measure("deep", str(blocks), 2)
        run = m["runs"][-1]
        print(f"{blocks:>8}{m['layers']:>8}{run['trace']:>8.3f}{run['analyze']:>9.3f}"
              f"{run['rules']:>8.3f}{run['total']:>8.3f}{1000 * run['total'] / blocks:>10.2f}")


if __name__ == "__main__":
    main()
