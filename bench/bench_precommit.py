"""What archlint costs in a pre-commit hook: a 20-file commit (5 model files, 15 other Python
files) in a throwaway git repository, run through the real `pre-commit`.

    python bench/bench_precommit.py [--repeat 5]

Figures (wall-clock seconds, median of --repeat runs):
  cold             first run: every model file is imported and traced (torch is imported)
  nothing changed  every file answered from the AST check or .archlint_cache/ (torch never imported)
  one model changed  one model file edited and staged again: only that file is linted
and, to separate archlint from pre-commit itself: `archlint check` alone on the same 20 files
with nothing changed, and pre-commit running a hook that does nothing (`true`) on them.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

MODEL = """
    import torch
    from torch import nn


    class Net{i}(nn.Module):
        def __init__(self, width: int = {width}):
            super().__init__()
            self.stem = nn.Conv2d(3, width, {kernel}, padding={pad})
            self.body = nn.Sequential(
                nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            )
            self.head = nn.Linear(width, 10)

        def forward(self, x):
            x = self.body(self.stem(x))
            return self.head(x.mean((2, 3)))


    example_input = torch.randn(1, 3, 32, 32)
"""

# Other files of a training project: some import torch, none builds a model.
OTHERS = [
    """
    import torch


    def collate(batch):
        images, labels = zip(*batch)
        return torch.stack(images), torch.tensor(labels)
    """,
    """
    import json
    from pathlib import Path


    def load_config(path):
        return json.loads(Path(path).read_text())
    """,
    """
    import torch


    def accuracy(logits, labels):
        return (logits.argmax(1) == labels).float().mean().item()
    """,
    """
    import math


    def cosine(step, total, base=0.1):
        return base * 0.5 * (1 + math.cos(math.pi * step / total))
    """,
]

CONFIG = """
repos:
  - repo: local
    hooks:
      - id: archlint
        name: archlint
        entry: archlint check --skip-no-model
        language: system
        types: [python]
        require_serial: true
"""

NOOP_CONFIG = """
repos:
  - repo: local
    hooks:
      - id: noop
        name: noop
        entry: "true"
        language: system
        types: [python]
"""


class Project:
    def __init__(self, folder: Path):
        self.folder = folder
        self.env = dict(os.environ, PRE_COMMIT_HOME=str(folder.parent / "pre-commit-home"),
                        GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@example.com",
                        GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.com", NO_COLOR="1")
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"

    def run(self, *args: str, check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
        started = time.perf_counter()
        done = subprocess.run(list(args), cwd=self.folder, env=self.env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if check and done.returncode not in (0, 1):
            raise SystemExit(f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return elapsed, done


def build(folder: Path) -> tuple[Project, list[str]]:
    folder.mkdir(parents=True)
    files = []
    for i in range(5):
        kernel = 7 if i == 0 else 3  # one model with a finding, so the hook has work to report
        source = MODEL.format(i=i, width=8 + 4 * i, kernel=kernel, pad=kernel // 2)
        files.append(f"models/net{i}.py")
        (folder / "models").mkdir(exist_ok=True)
        (folder / files[-1]).write_text(textwrap.dedent(source).lstrip())
    for i in range(15):
        files.append(f"project/util{i:02d}.py")
        (folder / "project").mkdir(exist_ok=True)
        (folder / files[-1]).write_text(textwrap.dedent(OTHERS[i % len(OTHERS)]).lstrip())
    (folder / ".pre-commit-config.yaml").write_text(CONFIG.lstrip())
    project = Project(folder)
    project.run("git", "init", "-q")
    project.run("git", "add", ".")
    return project, files


def pre_commit() -> str:
    return shutil.which("pre-commit") or str(Path(sys.executable).parent / "pre-commit")


def timed(project: Project, args: list[str], repeat: int) -> list[float]:
    return [project.run(*args)[0] for _ in range(repeat)]


def torch_imported(project: Project, files: list[str]) -> bool:
    code = ("import sys\nfrom archlint.cli import main\n"
            f"sys.argv = ['archlint', 'check', '--skip-no-model', *{files!r}]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    _, done = project.run(sys.executable, "-c", code)
    return done.stdout.strip().splitlines()[-1] == "TORCH"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="archlint-bench-") as tmp:
        project, files = build(Path(tmp) / "project")
        run_hook = [pre_commit(), "run", "--files", *files]

        cold, done = project.run(*run_hook)
        assert "K001" in done.stdout, done.stdout  # the hook really linted
        unchanged = timed(project, run_hook, args.repeat)
        no_torch = not torch_imported(project, files)
        alone = timed(project, ["archlint", "check", "--skip-no-model", *files], args.repeat)

        changed = []
        for n in range(args.repeat):
            model = project.folder / files[1]
            text = re.sub(r"nn\.Linear\(width, \d+\)", f"nn.Linear(width, {11 + n})", model.read_text())
            assert text != model.read_text()
            model.write_text(text)
            project.run("git", "add", files[1])
            changed.append(project.run(*run_hook)[0])

        (project.folder / ".pre-commit-config.yaml").write_text(NOOP_CONFIG.lstrip())
        floor = timed(project, run_hook, args.repeat)

    def show(label: str, values: list[float]) -> None:
        runs = " ".join(f"{v:.2f}" for v in values)
        print(f"  {label:<44} {statistics.median(values):6.2f} s  (runs: {runs})")

    print(f"pre-commit over a 20-file commit (5 model files, 15 others), median of {args.repeat}:")
    show("cold (empty cache)", [cold])
    show("nothing changed", unchanged)
    show("one model file changed", changed)
    show("archlint check alone, nothing changed", alone)
    show("pre-commit with a no-op hook (its own floor)", floor)
    print(f"  torch imported when nothing changed: {'no' if no_torch else 'YES'}")


if __name__ == "__main__":
    main()
