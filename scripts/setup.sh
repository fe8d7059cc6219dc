#!/usr/bin/env bash
# Install archlint and everything its tests need into the current Python.
# torch/torchvision are pinned to the pair that imports together on this platform; pip takes
# them from the local wheel cache where one exists.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
"$PY" -m pip install -q --disable-pip-version-check -e ".[test]"
