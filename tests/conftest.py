import glob
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("NO_COLOR", "1")
# The suite runs the CLI in this process and in subprocesses: none of them may start a warm
# worker behind the tests' back. tests/test_worker.py turns it on for its own runs only.
os.environ["ARCHLINT_NO_WORKER"] = "1"
# And should one start anyway, it lands in a folder of this session's, checked at the end.
_WORKER_DIR = os.environ["ARCHLINT_WORKER_DIR"] = tempfile.mkdtemp(prefix="alw-suite-", dir="/tmp")


@pytest.fixture(autouse=True, scope="session")
def _no_stray_workers():
    yield
    started = glob.glob(os.path.join(_WORKER_DIR, "*.lock"))
    shutil.rmtree(_WORKER_DIR, ignore_errors=True)
    assert not started, f"a test started a warm worker outside tests/test_worker.py: {started}"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    torch.set_num_threads(1)  # everything runs on meta tensors; threads only cost start-up


@pytest.fixture
def write_model(tmp_path, monkeypatch):
    """Write a model file into a fresh folder, cd there, and return its path."""
    counter = {"n": 0}
    monkeypatch.chdir(tmp_path)

    def write(source: str, name: str | None = None) -> Path:
        from .helpers import write_model as write_file

        counter["n"] += 1
        return write_file(tmp_path, source, name or f"model_{counter['n']}.py")

    return write
