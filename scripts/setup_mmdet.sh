#!/usr/bin/env bash
# Install MMDetection for archlint's MMDetection support (tests/test_mmdet.py) into a virtualenv
# of its own, never into the system Python: VENV (default .venv-mmdet) is made with the system's
# site-packages visible, so it uses the torch and torchvision already installed.
# mmcv-lite has no compiled ops; archlint maps the few the detectors need onto torchvision.ops
# (archlint/load_mmdet.py), so nothing is compiled here.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-${VENV:-.venv-mmdet}}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv --system-site-packages "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e . --no-deps
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  "mmdet==3.3.0" "mmengine==0.10.7" "mmcv-lite==2.1.0"
