"""Lint MMDetection's own R-50 FPN configs (RetinaNet, Faster R-CNN, Mask R-CNN) as a user
would, `archlint check CONFIG`, one fresh process each, and write what they found.

    scripts/setup_mmdet.sh .venv-mmdet                    # once: mmdet into a venv of its own
    .venv-mmdet/bin/python bench/mmdet_configs.py         # -> bench/results/mmdet.json

The configs ship inside the mmdet wheel (mmdet/.mim/configs). Each run is timed whole (import
of mmdet, build, trace, rules), since that is what a user waits for.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ("retinanet/retinanet_r50_fpn_1x_coco.py", "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
           "mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py")


def main() -> None:
    import mmdet

    folder = Path(mmdet.__file__).parent / ".mim" / "configs"
    rows = []
    for name in CONFIGS:
        for batch in (None, 2):  # 2: MMDetection's images per GPU, so the N rules have a batch
            cmd = [sys.executable, "-m", "archlint", "check", str(folder / name), "--format", "json",
                   "--no-cache"] + (["--batch-size", str(batch)] if batch else [])
            started = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            seconds = time.perf_counter() - started
            model = json.loads(done.stdout)["models"][0]
            rows.append({"config": name, "batch_size": batch, "seconds": round(seconds, 1),
                         "exit": done.returncode, **{k: model.get(k) for k in (
                             "target", "tracer", "inputs", "input_source", "coverage", "parts",
                             "notes", "findings", "error")}})
            found = ", ".join(f"{f['code']}:{f['severity']}" for f in model.get("findings") or [])
            print(f"{name} batch={batch}: {model.get('tracer')} {seconds:.0f}s {found}", flush=True)
    out = ROOT / "bench" / "results" / "mmdet.json"
    out.write_text(json.dumps({"versions": {"mmdet": mmdet.__version__}, "models": rows}, indent=1))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
