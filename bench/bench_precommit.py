"""What archlint costs in a pre-commit hook: a 20-file commit (5 model files, 15 other Python
files) in a throwaway git repository, run through the real `pre-commit`.

    python bench/bench_precommit.py [--repeat 5]

Figures (median of --repeat runs; wall-clock and CPU seconds):
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
import resource
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


class Cost(tuple):
    """(wall seconds, CPU seconds of the child processes). The CPU time is the steadier figure
    on a shared machine, where the wall time also counts waiting for a core."""

    def __new__(cls, wall: float, cpu: float):
        return super().__new__(cls, (wall, cpu))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Project:
    def __init__(self, folder: Path):
        self.folder = folder
        self.env = dict(os.environ, PRE_COMMIT_HOME=str(folder.parent / "pre-commit-home"),
                        GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@example.com",
                        GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.com", NO_COLOR="1")
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"

    def run(self, *args: str, check: bool = True) -> tuple["Cost", subprocess.CompletedProcess]:
        cpu_before = _children_cpu()
        started = time.perf_counter()
        done = subprocess.run(list(args), cwd=self.folder, env=self.env, capture_output=True, text=True)
        elapsed = Cost(time.perf_counter() - started, _children_cpu() - cpu_before)
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


def timed(project: Project, args: list[str], repeat: int) -> list[Cost]:
    return [project.run(*args)[0] for _ in range(repeat)]


def _entries(project: Project) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in project.folder.glob(".archlint_cache/results-*/*.json")}


def timed_unchanged(project: Project, args: list[str], repeat: int) -> tuple[list[Cost], int]:
    """Runs where nothing changed, and how many of them still had to lint: archlint's key
    covers its own sources, and in a checkout being edited (its own development) they change."""
    hits, misses = [], 0
    while len(hits) < repeat and misses < 3 * repeat:
        before = _entries(project)
        cost = project.run(*args)[0]
        if _entries(project) == before:
            hits.append(cost)
        else:
            misses += 1
    return hits, misses


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
        assert "warning" in done.stdout, done.stdout  # the hook really linted
        unchanged, misses = timed_unchanged(project, run_hook, args.repeat)
        alone, misses_alone = timed_unchanged(project, ["archlint", "check", "--skip-no-model", *files],
                                              args.repeat)
        no_torch = not torch_imported(project, files)

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

    def show(label: str, values: list[Cost]) -> None:
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        runs = " ".join(f"{v[0]:.2f}" for v in values)
        print(f"  {label:<44} {wall:6.2f} s wall {cpu:6.2f} s CPU  (wall per run: {runs})")

    print(f"pre-commit over a 20-file commit (5 model files, 15 others), median of {args.repeat}"
          f" (load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores):")
    show("cold (empty cache)", [cold])
    show("nothing changed", unchanged)
    show("one model file changed", changed)
    show("archlint check alone, nothing changed", alone)
    show("pre-commit with a no-op hook (its own floor)", floor)
    print(f"  torch imported when nothing changed: {'no' if no_torch else 'YES'}")
    if misses or misses_alone:
        print(f"  ({misses + misses_alone} runs where nothing changed were not counted: archlint's own "
              "sources changed meanwhile, so its cache was rightly missed)")


if __name__ == "__main__":
    main()
