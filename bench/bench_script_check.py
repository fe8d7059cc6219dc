"""What telling scripts apart costs: archlint/script_check.py on every Python file of FOLDERS.

    python bench/bench_script_check.py path/to/PyTorch-GAN [more folders] [--repeat 5]

For each file that might build a model (the syntax prefilter folder runs already apply), the
CPU time to read, parse and classify it, best of --repeat; then the median, 90th percentile and
largest per file, and the prefilter's own time on the same files for comparison. Last, one
pre-commit-style run (`check_paths(..., skip_no_model=True)`) over the files classified as
scripts, in a fresh interpreter: its wall time, and whether torch was imported (it must not be:
a commit that touches only scripts stays a syntax check).

Without FOLDERS it writes 60 synthetic training scripts (argparse, makedirs, a GAN loop, ~150
lines each, as PyTorch-GAN's are) into a temporary folder and measures those.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archlint.prefilter import file_might_build_model  # noqa: E402
from archlint.script_check import find_script_action  # noqa: E402

SCRIPT = '''
import argparse
import os
import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision.utils import save_image

os.makedirs("images", exist_ok=True)
parser = argparse.ArgumentParser()
parser.add_argument("--n_epochs", type=int, default=200)
parser.add_argument("--batch_size", type=int, default=64)
parser.add_argument("--lr", type=float, default=0.0002)
opt = parser.parse_args()


class Generator{i}(nn.Module):
    def __init__(self):
        super().__init__()

        def block(in_feat, out_feat, normalize=True):
            layers = [nn.Linear(in_feat, out_feat)]
            if normalize:
                layers.append(nn.BatchNorm1d(out_feat, 0.8))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            return layers

        self.model = nn.Sequential(*block(100, 128, normalize=False), *block(128, 256),
                                   *block(256, 512), nn.Linear(512, 784), nn.Tanh())

    def forward(self, z):
        return self.model(z).view(z.size(0), 1, 28, 28)


class Discriminator{i}(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(784, 512), nn.LeakyReLU(0.2, inplace=True),
                                   nn.Linear(512, 256), nn.LeakyReLU(0.2, inplace=True),
                                   nn.Linear(256, 1), nn.Sigmoid())

    def forward(self, img):
        return self.model(img.view(img.size(0), -1))


adversarial_loss = torch.nn.BCELoss()
generator, discriminator = Generator{i}(), Discriminator{i}()
dataloader = DataLoader(torch.randn(64, 1, 28, 28), batch_size=opt.batch_size, shuffle=True)
optimizer_G = torch.optim.Adam(generator.parameters(), lr=opt.lr)
optimizer_D = torch.optim.Adam(discriminator.parameters(), lr=opt.lr)
''' + "\n".join(f"helper_{k} = {k} * 2  # padding to a realistic length" for k in range(80)) + '''

for epoch in range(opt.n_epochs):
    for i, imgs in enumerate(dataloader):
        valid = torch.ones(imgs.size(0), 1)
        optimizer_G.zero_grad()
        z = torch.randn(imgs.shape[0], 100)
        g_loss = adversarial_loss(discriminator(generator(z)), valid)
        g_loss.backward()
        optimizer_G.step()
        if i % 100 == 0:
            save_image(generator(z).data[:25], "images/%d.png" % i, nrow=5, normalize=True)
'''


def _synthetic(folder: Path, count: int = 60) -> None:
    for i in range(count):
        sub = folder / f"gan{i}"
        sub.mkdir()
        (sub / f"gan{i}.py").write_text(textwrap.dedent(SCRIPT).replace("{i}", str(i)))


def _best(fn, path: Path, repeat: int) -> float:
    """CPU seconds (this process's), best of `repeat`: other work on a shared machine inflates
    wall time, not this."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn(path)
        best = min(best, time.process_time() - started)
    return best


def _precommit(scripts: list[Path]) -> dict:
    """One `check_paths(..., skip_no_model=True)` over the scripts, in a fresh interpreter."""
    code = textwrap.dedent(f"""
        import json, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        started = time.perf_counter()
        from archlint.config import Settings
        from archlint.driver import check_paths
        report = check_paths({[str(p) for p in scripts]!r}, Settings(), skip_no_model=True)
        print(json.dumps({{"seconds": time.perf_counter() - started,
                           "set_aside": len(report.scripts), "reports": len(report.models),
                           "torch_imported": "torch" in sys.modules}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folders = args.folders
        if not folders:
            _synthetic(Path(tmp))
            folders = [Path(tmp)]
        files = sorted(p for folder in folders for p in folder.rglob("*.py"))
        candidates = [p for p in files if file_might_build_model(p)]
        if not candidates:
            sys.exit("no Python file that might build a model in " + ", ".join(map(str, folders)))
        classify = [_best(find_script_action, p, args.repeat) * 1000 for p in candidates]
        prefilter = [_best(file_might_build_model, p, args.repeat) * 1000 for p in candidates]
        scripts = [p for p in candidates if find_script_action(p) is not None]
        lines = sum(len(p.read_text(encoding="utf-8", errors="replace").splitlines()) for p in candidates)

        def figures(values: list[float]) -> str:
            ordered = sorted(values)
            p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
            return (f"median {statistics.median(ordered):.2f} ms, p90 {p90:.2f} ms, "
                    f"max {ordered[-1]:.2f} ms, total {sum(ordered):.0f} ms")

        print(f"{len(files)} Python files, {len(candidates)} might build a model "
              f"({lines / len(candidates):.0f} lines each on average), {len(scripts)} scripts")
        print(f"script check per file (CPU): {figures(classify)}")
        print(f"prefilter per file (CPU):    {figures(prefilter)}")
        if scripts:
            run = _precommit(scripts)
            print(f"pre-commit run over the {len(scripts)} scripts: {run['seconds']:.2f} s wall, "
                  f"{run['set_aside']} set aside, torch imported: {run['torch_imported']}")
        print(f"(python {sys.version.split()[0]}, {os.cpu_count()} cores; best of {args.repeat})")


if __name__ == "__main__":
    main()
