"""Render time and file size of the HTML report for resnet50 and the 1000-block network.

    python bench/bench_html.py             # 3 renders each, after one untimed warm-up
    python bench/bench_html.py --repeat 5

Tracing is not timed here (bench_lint.py does that); the figures are for `render("html", report)`
alone: building the view model (graph layout, plots, snippets) and the jinja2 rendering. "cold"
is the first render in the process, template compilation included, as a CLI run pays it.
Targets (issue 4): resnet50 under 1 s and under 3 MB.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def resnet50():
    import torchvision

    from archlint.api import Report, lint

    return Report(models=[lint(torchvision.models.resnet50(weights=None), input_shape=(1, 3, 224, 224))])


def staged_net():
    from archlint.api import check_paths
    from archlint.config import Settings

    return check_paths([str(ROOT / "bench" / "staged_net.py")], Settings())


def measure(name, build, repeat):
    from archlint.reports import html, html_view

    started = time.perf_counter()
    report = build()
    trace_s = time.perf_counter() - started
    times, view_times = [], []
    started = time.perf_counter()
    page = html.render(report)
    cold = time.perf_counter() - started
    for _ in range(repeat):
        started = time.perf_counter()
        html_view.page(report)
        view_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        page = html.render(report)
        times.append(time.perf_counter() - started)
    model = report.models[0]
    return {
        "model": name, "operations": len(model.graph), "findings": len(model.findings),
        "lint_s": trace_s, "cold_s": cold, "render_s": statistics.median(times),
        "view_s": statistics.median(view_times), "bytes": len(page.encode()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [measure("resnet50", resnet50, args.repeat), measure("1000-block staged net", staged_net, args.repeat)]
    print(f"{'model':<24}{'ops':>6}{'findings':>9}{'lint s':>8}{'cold s':>8}{'render s':>10}"
          f"{'(view s)':>10}{'size':>10}")
    for r in rows:
        print(f"{r['model']:<24}{r['operations']:>6}{r['findings']:>9}{r['lint_s']:>8.2f}{r['cold_s']:>8.2f}"
              f"{r['render_s']:>10.2f}{r['view_s']:>10.2f}{r['bytes'] / 1e6:>8.2f}MB")
    r50 = rows[0]
    ok = r50["cold_s"] < 1.0 and r50["bytes"] < 3_000_000
    print(f"resnet50 target (< 1 s, < 3 MB): {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
