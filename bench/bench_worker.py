"""What the warm worker buys (issue 14): the CLI and pre-commit with and without it.

    python bench/bench_worker.py [--repeat 5] [--no-first-run]

Every figure is the median of --repeat fresh processes, the two sides of a comparison run
interleaved so that both see the same load on a shared machine. Wall seconds, and CPU seconds
of the client plus, through the worker, what the worker and its children spent meanwhile.
Workers live in a private folder (ARCHLINT_WORKER_DIR) and are stopped at the end.

1. The small example CNN from the command line: `python -c "import torch"`; `archlint check`
   cold in one process (--no-worker --no-cache); with a warm worker up, the model changed (an
   edit, so the cache misses and the run goes to the worker) and unchanged (answered from the
   cache, which needs no worker); with --no-worker, unchanged.
2. pre-commit over bench_precommit.py's 20-file commit (5 models, 15 other files), through a
   warm worker: one model changed, nothing changed; the same `archlint check` command alone;
   and pre-commit with a hook that does nothing, its own floor.
3. The first run, when no worker is up: pre-commit with one changed model, the client waiting
   for the worker it starts (the default) against linting in its own process while the worker
   starts beside it (ARCHLINT_WORKER_FIRST_RUN=here).
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
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_precommit import NOOP_CONFIG, Project, build  # noqa: E402

ARCHLINT = str(Path(sys.executable).parent / "archlint")
# pre-commit run by this Python: a pyenv shim would put its own Python's bin first on PATH,
# and the hook would run that Python's archlint instead of this one's.
PRE_COMMIT = [sys.executable, "-m", "pre_commit"]
_TICKS = os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int | None) -> float:
    """CPU seconds of a process and its reaped children (the worker and the runs it served)."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / _TICKS  # utime stime cutime cstime


class Bench:
    def __init__(self, folder: str):
        self.folder = folder
        self.env = dict(os.environ, ARCHLINT_WORKER_DIR=folder, NO_COLOR="1")
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"
        for name in ("ARCHLINT_NO_WORKER", "CI", "ARCHLINT_WORKER_FIRST_RUN"):
            self.env.pop(name, None)

    def worker_pid(self) -> int | None:
        for lock in Path(self.folder).glob("*.lock"):
            try:
                pid = int(lock.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if Path(f"/proc/{pid}").exists():
                return pid
        return None

    def run(self, args: list[str], cwd, env: dict | None = None) -> tuple[float, float]:
        """(wall, CPU) of one command, the worker's CPU meanwhile included."""
        pid = self.worker_pid()
        worker_before = _process_cpu(pid)
        usage = os.times()
        started = time.perf_counter()
        done = subprocess.run(args, cwd=cwd, env=env or self.env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        after = os.times()
        if done.returncode not in (0, 1):
            raise SystemExit(f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        client = (after.children_user - usage.children_user) + (after.children_system - usage.children_system)
        return wall, client + max(0.0, _process_cpu(pid) - worker_before)

    def stop(self) -> None:
        subprocess.run([ARCHLINT, "worker", "stop", "--all"], env=self.env, capture_output=True)
        deadline = time.monotonic() + 30
        while self.worker_pid() and time.monotonic() < deadline:
            time.sleep(0.1)

    def warm(self, cwd) -> None:
        """A worker is up, with its optional imports done (its log says so)."""
        subprocess.run([ARCHLINT, "check", str(ROOT / "examples" / "small_cnn.py")], cwd=cwd, env=self.env,
                       capture_output=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = subprocess.run([ARCHLINT, "worker", "status"], env=self.env, capture_output=True, text=True)
            if "(this environment)" in status.stdout and "still to import" not in status.stdout:
                return
            time.sleep(0.5)


def median(values: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(v[0] for v in values), statistics.median(v[1] for v in values)


def row(label: str, values: list[tuple[float, float]]) -> None:
    wall, cpu = median(values)
    print(f"| {label} | {wall:.2f} | {cpu:.2f} |", flush=True)


def cli_table(bench: Bench, repeat: int, tmp: Path) -> None:
    project = tmp / "cli"
    project.mkdir()
    (project / "pyproject.toml").write_text("[tool.archlint]\n")
    model = project / "small_cnn.py"
    source = (ROOT / "examples" / "small_cnn.py").read_text()
    model.write_text(source)
    check = [ARCHLINT, "check", "small_cnn.py"]
    here = dict(bench.env, ARCHLINT_NO_WORKER="1")
    bench.warm(project)
    bench.run(check, project)  # the cache holds the unchanged model
    torch, cold, changed, unchanged, unchanged_here = [], [], [], [], []
    for n in range(repeat):
        torch.append(bench.run([sys.executable, "-c", "import torch"], project))
        cold.append(bench.run([*check, "--no-cache"], project, env=here))
        model.write_text(source + f"\n# edit {n}\n")
        changed.append(bench.run(check, project))
        unchanged.append(bench.run(check, project))
        unchanged_here.append(bench.run(check, project, env=here))
    print(f"\nThe small example CNN from the command line, median of {repeat} "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)\n")
    print("| command | wall s | CPU s |")
    print("|---|--:|--:|")
    row("python -c 'import torch'", torch)
    row("archlint check, cold, one process (--no-worker --no-cache)", cold)
    row("archlint check through a warm worker, model changed", changed)
    row("archlint check, a warm worker up, unchanged (answered from the cache, no worker needed)", unchanged)
    row("archlint check in one process, unchanged (cache)", unchanged_here)


def _edit(project: Project, files: list[str], n: int) -> None:
    model = project.folder / files[1]
    text = re.sub(r"nn\.Linear\(width, \d+\)", f"nn.Linear(width, {20 + n})", model.read_text())
    model.write_text(text)
    project.run("git", "add", files[1])


def precommit_table(bench: Bench, repeat: int, tmp: Path) -> None:
    project, files = build(tmp / "precommit")
    project.env.update(bench.env)
    hook = [*PRE_COMMIT, "run", "--files", *files]
    alone = [ARCHLINT, "check", "--skip-no-model", *files]
    bench.run(hook, project.folder, env=project.env)  # pre-commit's own set-up, the cache filled
    bench.warm(project.folder)
    changed, unchanged, alone_changed, alone_unchanged, alone_here = [], [], [], [], []
    n = 0
    for _ in range(repeat):
        _edit(project, files, n := n + 1)
        changed.append(bench.run(hook, project.folder, env=project.env))
        unchanged.append(bench.run(hook, project.folder, env=project.env))
        _edit(project, files, n := n + 1)
        alone_changed.append(bench.run(alone, project.folder, env=project.env))
        alone_unchanged.append(bench.run(alone, project.folder, env=project.env))
        alone_here.append(bench.run(alone, project.folder, env=dict(project.env, ARCHLINT_NO_WORKER="1")))
    (project.folder / ".pre-commit-config.yaml").write_text(NOOP_CONFIG.lstrip())
    floor = [bench.run(hook, project.folder, env=project.env) for _ in range(repeat)]
    print(f"\npre-commit over a 20-file commit (5 models, 15 other files), warm worker, median of {repeat}\n")
    print("| run | wall s | CPU s |")
    print("|---|--:|--:|")
    row("pre-commit, one model changed", changed)
    row("pre-commit, nothing changed", unchanged)
    row("pre-commit with a no-op hook (its own floor)", floor)
    row("archlint check (the hook's command) alone, one model changed", alone_changed)
    row("archlint check alone, nothing changed", alone_unchanged)
    row("archlint check alone, nothing changed, in one process (--no-worker)", alone_here)
    wall_floor = median(floor)[0]
    print(f"\narchlint's part of pre-commit (minus the no-op floor): one model changed "
          f"{median(changed)[0] - wall_floor:.2f} s, nothing changed {median(unchanged)[0] - wall_floor:.2f} s")


def first_run_table(bench: Bench, repeat: int, tmp: Path) -> None:
    project, files = build(tmp / "first")
    project.env.update(bench.env)
    hook = [*PRE_COMMIT, "run", "--files", *files]
    bench.run(hook, project.folder, env=project.env)
    results: dict[str, list] = {"wait": [], "here": []}
    n = 0
    for _ in range(repeat):
        for mode in ("wait", "here"):
            bench.stop()
            _edit(project, files, n := n + 1)
            env = dict(project.env, ARCHLINT_WORKER_FIRST_RUN=mode)
            results[mode].append(bench.run(hook, project.folder, env=env))
            bench.warm(project.folder)  # let the worker finish starting before the next run
    bench.stop()
    print(f"\nThe first run (no worker up): pre-commit, one model changed, median of {repeat}\n")
    print("| first run | wall s | CPU s (client) |")
    print("|---|--:|--:|")
    row("waits for the worker it starts, then hands it the run (default)", results["wait"])
    row("lints in its own process while the worker starts", results["here"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-first-run", action="store_true")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="alw-bench-", dir="/tmp")
    bench = Bench(folder)
    try:
        with tempfile.TemporaryDirectory(prefix="archlint-bench-") as tmp:
            cli_table(bench, args.repeat, Path(tmp))
            precommit_table(bench, args.repeat, Path(tmp))
            if not args.no_first_run:
                first_run_table(bench, args.repeat, Path(tmp))
    finally:
        bench.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
