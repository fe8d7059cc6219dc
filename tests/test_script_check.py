"""Don't run a script to lint it (issue 11): which files' top level acts when imported, read
from their syntax (archlint/script_check.py), and what folder and pre-commit runs do with them.

Each script below is a small file of our own reproducing a pattern met in public training
repositories (PyTorch-GAN's per-model scripts, pytorch/examples, super-resolution and
segmentation repositories); each allowed pattern is top-level code real model files hold.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from archlint.script_check import find_script_action, script_action_in

MODEL = """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            return self.conv(x)
"""


def action(top_level: str):
    return script_action_in(textwrap.dedent(MODEL) + textwrap.dedent(top_level))


# --- scripts: (top-level code, kind, a word of the note) --------------------------------------

SCRIPTS = {
    "argparse": ("""
        import argparse
        parser = argparse.ArgumentParser()
        parser.add_argument("--lr", type=float, default=1e-3)
        opt = parser.parse_args()
        """, "arguments", "parse_args"),
    "argparse-chained": ("""
        import argparse
        args, _ = argparse.ArgumentParser().parse_known_args()
        """, "arguments", "parse_known_args"),
    "argparse-alias": ("""
        from argparse import ArgumentParser as AP
        ARGS = AP(description="x").parse_args(None)
        """, "arguments", "parse_args"),
    "sys.argv": ("""
        import sys
        data_dir = sys.argv[1] if len(sys.argv) > 1 else "data"
        """, "arguments", "sys.argv"),
    "from-sys-argv": ("""
        from sys import argv
        for item in argv[1:]:
            print(item)
        """, "arguments", "sys.argv"),
    "click": ("""
        import click

        @click.command()
        @click.option("--epochs", default=1)
        def train(epochs):
            pass

        train()
        """, "arguments", "train()"),
    "typer": ("""
        import typer
        app = typer.Typer()

        @app.command()
        def fit(epochs: int = 1):
            pass

        app()
        """, "arguments", "app()"),
    "fire": ("""
        import fire
        def main(lr=0.1):
            pass
        fire.Fire(main)
        """, "arguments", "Fire"),
    "absl": ("""
        from absl import app
        def main(argv):
            pass
        app.run(main)
        """, "arguments", "app.run"),
    "hydra": ("""
        import hydra

        @hydra.main(config_path="conf", config_name="config", version_base=None)
        def main(cfg):
            pass

        main()
        """, "arguments", "main()"),
    "unguarded-main": ("""
        import argparse

        def get_args():
            parser = argparse.ArgumentParser()
            return parser.parse_args()

        def main():
            args = get_args()

        main()
        """, "arguments", "calls main(), which calls get_args()"),
    "training-loop": ("""
        from torch.utils.data import DataLoader
        net = Net()
        optimizer = torch.optim.Adam(net.parameters())
        for epoch in range(10):
            optimizer.zero_grad()
            loss = net(torch.randn(1, 3, 8, 8)).mean()
            loss.backward()
            optimizer.step()
        """, "training", "zero_grad"),
    "gan-loop": ("""
        generator, discriminator = Net(), Net()
        optimizer_G = torch.optim.Adam(generator.parameters())
        for epoch in range(200):
            for i, (imgs, _) in enumerate(dataloader):
                optimizer_G.step()
        """, "training", "DataLoader"),
    "eval-loop": ("""
        from torch.utils.data import DataLoader
        test_set = torch.utils.data.TensorDataset(torch.randn(4, 3, 8, 8))
        model = Net().eval()
        with torch.no_grad():
            for (batch,) in DataLoader(test_set, batch_size=2):
                model(batch)
        """, "training", "DataLoader"),
    "while-loop": ("""
        net = Net()
        opt_d = torch.optim.SGD(net.parameters(), lr=0.1)
        step = 0
        while step < 100:
            opt_d.step()
            step += 1
        """, "training", ".step()"),
    "epoch-loop-train-mode": ("""
        model = Net()
        for epoch in range(3):
            model.train()
            run_epoch(model)
        """, "training", ".train()"),
    "hf-trainer": ("""
        for seed in range(3):
            trainer.fit(Net())
        """, "training", ".fit()"),
    "makedirs": ("""
        import os
        os.makedirs("images", exist_ok=True)
        """, "writes", 'os.makedirs("images"'),
    "makedirs-from-import": ("""
        from os import makedirs
        makedirs("saved_models")
        """, "writes", "makedirs"),
    "conditional-mkdir": ("""
        import os
        if not os.path.exists("checkpoints"):
            os.mkdir("checkpoints")
        """, "writes", "os.mkdir"),
    "path-mkdir": ("""
        from pathlib import Path
        Path("runs/exp1").mkdir(parents=True, exist_ok=True)
        """, "writes", "mkdir"),
    "open-write": ("""
        with open("log.txt", "a") as f:
            f.write("start")
        """, "writes", "'a'"),
    "path-write-text": ("""
        from pathlib import Path
        Path("config.json").write_text("{}")
        """, "writes", "write_text"),
    "torch-save": ("""
        torch.save(Net().state_dict(), "init.pth")
        """, "writes", "torch.save"),
    "jit-module-save": ("""
        scripted = torch.jit.script(Net())
        scripted.save("net.pt")
        """, "writes", ".save("),
    "save-image": ("""
        from torchvision.utils import save_image
        save_image(torch.rand(1, 3, 8, 8), "sample.png")
        """, "writes", "save_image"),
    "shutil": ("""
        import shutil
        shutil.rmtree("old_runs", ignore_errors=True)
        """, "writes", "rmtree"),
    "os-remove": ("""
        import os
        os.remove("stale.lock")
        """, "writes", "os.remove"),
    "summary-writer": ("""
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter("runs")
        """, "writes", "TensorBoard"),
    "wandb": ("""
        import wandb
        wandb.init(project="gan")
        """, "network", "wandb.init"),
    "requests": ("""
        import requests
        weights = requests.get("https://example.com/w.pth").content
        """, "network", "requests.get"),
    "urllib": ("""
        import urllib.request
        urllib.request.urlretrieve("https://example.com/w.pth", "w.pth")
        """, "network", "urlretrieve"),
    "socket": ("""
        import socket
        s = socket.socket()
        """, "network", "socket"),
    "torch-hub": ("""
        backbone = torch.hub.load("pytorch/vision", "resnet18")
        """, "network", "torch.hub.load"),
    "state-dict-from-url": ("""
        from torchvision.models.utils import load_state_dict_from_url
        STATE = load_state_dict_from_url("https://example.com/net.pth")
        """, "network", "downloads"),
    "download-helper": ("""
        from torchvision.datasets.utils import download_url
        download_url("https://example.com/data.zip", "data")
        """, "network", "download"),
    "dataset-download": ("""
        import torchvision
        train_set = torchvision.datasets.MNIST("data", train=True, download=True)
        """, "network", "download=True"),
    "process-group": ("""
        import torch.distributed as dist
        dist.init_process_group("gloo")
        """, "network", "init_process_group"),
    "device-mesh": ("""
        from torch.distributed.device_mesh import init_device_mesh
        mesh = init_device_mesh("cpu", (2,))
        """, "network", "init_device_mesh"),
    "subprocess": ("""
        import subprocess
        commit = subprocess.check_output(["git", "rev-parse", "HEAD"])
        """, "process", "check_output"),
    "os-system": ("""
        import os
        os.system("nvidia-smi")
        """, "process", "os.system"),
    "pip-install-fallback": ("""
        try:
            import einops
        except ImportError:
            import subprocess, sys
            subprocess.check_call([sys.executable, "-m", "pip", "install", "einops"])
        """, "process", "pip"),
    "class-body": ("""
        import argparse
        class Config:
            opts = argparse.ArgumentParser().parse_args()
        """, "arguments", "parse_args"),
    "default-argument": ("""
        import os
        def build(root=os.makedirs("cache", exist_ok=True)):
            return Net()
        """, "writes", "makedirs"),
    "decorator": ("""
        import os
        def register(x):
            return lambda f: f
        @register(os.makedirs("plugins", exist_ok=True))
        def plugin():
            pass
        """, "writes", "makedirs"),
    "else-of-main-guard": ("""
        if __name__ == "__main__":
            pass
        else:
            import os
            os.makedirs("imported", exist_ok=True)
        """, "writes", "makedirs"),
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_a_script_is_named_with_its_line_and_action(name):
    top_level, kind, word = SCRIPTS[name]
    found = action(top_level)
    assert found is not None, name
    assert found.kind == kind
    source = textwrap.dedent(MODEL) + textwrap.dedent(top_level)
    assert found.code == source.splitlines()[found.line - 1].strip()[:70] or found.code.endswith("...")
    assert word in found.what + " " + found.code, (found.what, found.code)


def test_the_first_action_is_reported():
    found = action("""
        import os, argparse
        os.makedirs("images", exist_ok=True)
        opt = argparse.ArgumentParser().parse_args()
        """)
    assert (found.kind, found.code) == ("writes", 'os.makedirs("images", exist_ok=True)')


# --- what model files do at the top level: importable -----------------------------------------

IMPORTABLE = {
    "definitions": "",
    "main-guard": """
        import argparse, os
        def main():
            args = argparse.ArgumentParser().parse_args()
            os.makedirs(args.out, exist_ok=True)
            for epoch in range(3):
                loss = Net()(torch.randn(1, 3, 8, 8)).mean()
                loss.backward()

        if __name__ == "__main__":
            main()
        """,
    "main-guard-reversed": """
        import sys
        if "__main__" == __name__:
            print(sys.argv[1])
        """,
    "main-guard-and": """
        import sys
        if __name__ == "__main__" and len(sys.argv) > 1:
            print(sys.argv[1])
        """,
    "not-main-body-else": """
        import os
        if __name__ != "__main__":
            pass
        else:
            os.makedirs("out")
        """,
    "import-error-fallback": """
        try:
            from apex.normalization import FusedLayerNorm as LayerNorm
        except ImportError:
            LayerNorm = nn.LayerNorm
        try:
            import wandb
        except ImportError:
            wandb = None
        """,
    "type-checking": """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            import subprocess
            subprocess.run(["never"])
        """,
    "constants-and-all": """
        __all__ = ["Net", "build"]
        CHANNELS = [64, 128, 256]
        DEFAULT_CFG = dict(depth=18, width=64)
        MODEL_URLS = {"net": "https://example.com/net.pth"}
        """,
    "logging": """
        import logging
        logging.basicConfig(level=logging.INFO)
        logger = logging.getLogger(__name__)
        logger.info("models loaded")
        """,
    "seeding": """
        import random
        import numpy as np
        torch.manual_seed(0)
        np.random.seed(0)
        random.seed(0)
        torch.backends.cudnn.benchmark = True
        """,
    "build-model-and-input": """
        model = Net()
        model.train()
        example_input = torch.randn(1, 3, 32, 32)
        out = model(example_input)
        for p in model.parameters():
            p.requires_grad = False
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
        """,
    "sys-path": """
        import os, sys
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        sys.path.append("..")
        HERE = os.path.dirname(sys.argv[0])
        DEBUG = "--debug" in sys.argv
        """,
    "parser-built-not-parsed": """
        import argparse
        parser = argparse.ArgumentParser()
        parser.add_argument("--depth", type=int, default=18)
        defaults = parser.parse_args([])
        """,
    "reads-files": """
        import json, os
        cfg_path = os.path.join(os.path.dirname(__file__), "cfg.json")
        CFG = json.load(open(cfg_path)) if os.path.exists(cfg_path) else {}
        with open(__file__, "r") as f:
            SOURCE = f.read()
        """,
    "calls-in-definitions": """
        import os, shutil, subprocess, requests

        def save(model, path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            torch.save(model.state_dict(), path)
            shutil.copy(path, path + ".bak")

        def fetch(url):
            return requests.get(url).content

        class Trainer:
            def fit(self, model, loader, optimizer):
                for batch in loader:
                    optimizer.zero_grad()
                    model(batch).mean().backward()
                    optimizer.step()

        handler = lambda: subprocess.run(["ls"])
        """,
    "builder-with-a-conditional-download": """
        def build(pretrained=False):
            model = Net()
            if pretrained:
                state = torch.hub.load_state_dict_from_url("https://example.com/net.pth")
                model.load_state_dict(state)
            return model

        model = build()
        """,
    "pretrained-flag": """
        import torchvision
        backbone = torchvision.models.resnet18(weights=None)
        """,
    "cuda-when-available": """
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = Net().to(device)
        if torch.cuda.is_available():
            model = model.cuda()
        """,
    "mode-per-module": """
        backbone = Net()
        for m in backbone.modules():
            m.train(isinstance(m, nn.Conv2d))
        for name, m in backbone.named_modules():
            m.train()
        for _ in range(2):
            backbone.train(False)
        """,
    "ordinary-loops": """
        LAYERS = {}
        for i, width in enumerate([8, 16, 32]):
            LAYERS[f"conv{i}"] = nn.Conv2d(width, width, 3)
        blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
        while len(LAYERS) < 5:
            LAYERS[str(len(LAYERS))] = nn.ReLU()
        """,
    "read-mode-open": """
        import gzip
        with gzip.open("vocab.txt.gz", "rt") as f:
            VOCAB = f.read().split()
        """,
    "mode-unknown": """
        import os
        MODE = os.environ.get("MODE", "r")
        if os.path.exists("x.txt"):
            handle = open("x.txt", MODE)
        """,
    "temp-and-env": """
        import os
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ["CUDA_VISIBLE_DEVICES"] = "0"
        """,
    # As BasicSR's ops/*: an opt-in on an environment variable.
    "environment-switch": """
        import os
        BASICSR_JIT = os.getenv("BASICSR_JIT")
        if BASICSR_JIT == "True":
            import subprocess
            subprocess.run(["ninja"])
        if os.environ.get("EXPORT_ONNX"):
            torch.onnx.export(Net(), torch.randn(1, 3, 8, 8), "net.onnx")
        """,
    # As StyleGAN2's op/fused_act.py and BasicSR's ops: a layer's kernels compiled at import.
    "cpp-extension": """
        import os
        from torch.utils.cpp_extension import load
        module_path = os.path.dirname(__file__)
        fused = load("fused", sources=[os.path.join(module_path, "fused_bias_act.cpp")])
        """,
    "syntax-error": "def broken(:\n",
}


@pytest.mark.parametrize("name", list(IMPORTABLE))
def test_what_model_files_do_at_the_top_level_is_importable(name):
    assert action(IMPORTABLE[name]) is None


def test_a_pathologically_nested_file_is_left_to_the_import():
    assert script_action_in("x = " + "(" * 5000 + ")" * 5000 + "\n") is None
    assert script_action_in("a" + ".b" * 20000 + "()\n") is None  # a call: its name is resolved


def test_an_unreadable_file_is_left_to_the_import(tmp_path):
    assert find_script_action(tmp_path / "missing.py") is None
    binary = tmp_path / "binary.py"
    binary.write_bytes(b"\x00\xff\xfe")
    assert find_script_action(binary) is None


# --- folder and pre-commit runs -------------------------------------------------------------------

from click.testing import CliRunner  # noqa: E402

from archlint.cli import main  # noqa: E402
from archlint.config import Settings, settings_from_table  # noqa: E402
from archlint.driver import check_paths  # noqa: E402
from archlint.errors import ConfigError  # noqa: E402

FAST = Settings(timeout=60, select=["K001"])

GAN_MODELS = """
    import torch
    from torch import nn

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(16, 16, {kernel}, padding={pad})

        def forward(self, x):
            return self.conv(x)

    example_input = torch.randn(1, 16, 16, 16)
"""

# As PyTorch-GAN's implementations/*/<name>.py: folders made and the command line parsed at the
# top level, then a training loop over a DataLoader.
GAN_SCRIPT = """
    import argparse
    import os

    import torch
    import torchvision.transforms as transforms
    from models import Generator

    os.makedirs("images", exist_ok=True)
    parser = argparse.ArgumentParser()
    parser.add_argument("--n_epochs", type=int, default=2)
    opt = parser.parse_args()
    generator = Generator()
    optimizer_G = torch.optim.Adam(generator.parameters())
    dataloader = torch.utils.data.DataLoader(torch.randn(4, 3, 16, 16), batch_size=2)  # noqa
    for epoch in range(opt.n_epochs):
        for imgs in dataloader:
            optimizer_G.zero_grad()
            generator(imgs).mean().backward()
            optimizer_G.step()
"""


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "__pycache__" not in p.parts
            and ".archlint_cache" not in p.parts}


@pytest.fixture
def gan_repo(write_model):
    """Two implementations, each a models.py beside its training script, as in PyTorch-GAN."""
    write_model(GAN_MODELS.format(kernel=3, pad=1), "implementations/gan/models.py")
    write_model(GAN_SCRIPT, "implementations/gan/gan.py")
    write_model(GAN_MODELS.format(kernel=7, pad=3), "implementations/srgan/models.py")
    write_model(GAN_SCRIPT.replace('    os.makedirs("images", exist_ok=True)\n', ""),
                "implementations/srgan/srgan.py")
    return Path.cwd()


def test_a_folder_run_lints_the_models_and_sets_the_scripts_aside(gan_repo):
    before = listing(gan_repo)
    result = cli("check", "implementations", "--no-cache", "--select", "K001", "--format", "json")
    assert listing(gan_repo) == before  # no images/ folder made
    assert "usage:" not in result.output
    data = json.loads(result.output)
    by_target = {m["target"]: m for m in data["models"]}
    # Sibling models.py files stay apart: only srgan's has the 7x7 conv.
    assert [f["code"] for f in by_target["implementations/gan/models.py::Generator"]["findings"]] == []
    assert [f["code"] for f in by_target["implementations/srgan/models.py::Generator"]["findings"]] == ["K001"]
    gan = by_target["implementations/gan/gan.py"]
    assert gan["script"] == {"line": 8, "kind": "writes", "what": "writes files",
                             "code": 'os.makedirs("images", exist_ok=True)'}
    assert "if __name__ == \"__main__\":" in gan["skipped"] and "error" not in gan
    srgan = by_target["implementations/srgan/srgan.py"]
    assert (srgan["script"]["line"], srgan["script"]["kind"]) == (10, "arguments")
    assert result.exit_code == 1  # the K001 warning, nothing more: a script is not an error


def test_the_text_output_names_each_script_and_counts_them(gan_repo):
    result = cli("check", "implementations", "--no-cache", "--select", "K001")
    assert ("implementations/gan/gan.py  not imported: its top level runs as a script (line 8 "
            "writes files: `os.makedirs(\"images\", exist_ok=True)`). To lint it, "
            "move that code under `if __name__ == \"__main__\":`, or name the file on the command "
            "line") in result.output
    assert "line 10 parses command-line arguments: `opt = parser.parse_args()`" in result.output
    assert result.output.rstrip().endswith("1 finding (1 warning) in 2 models; 2 files skipped as "
                                           "scripts (not imported)")
    quiet = cli("check", "implementations", "--no-cache", "--select", "K001", "-q")
    assert "2 files skipped as scripts" in quiet.output and "gan/gan.py  not imported" in quiet.output


def test_a_folder_of_scripts_only_exits_zero_and_says_so(write_model):
    script = write_model(textwrap.dedent(GAN_MODELS.format(kernel=7, pad=3))
                         + "\nimport os\nos.makedirs('out')\n", "train/train.py")
    result = cli("check", script.parent, "--no-cache", "--select", "K001")
    assert result.exit_code == 0, result.output
    assert "1 file skipped as a script (not imported)" in result.output
    assert not (script.parent / "out").exists() and not Path("out").exists()


# One harmless action of each kind, at the top level of a file that also defines a model: set
# aside in a folder run, imported (and the model linted) when the file is named.
KIND_SCRIPTS = {
    "arguments": "import argparse\nargs, _ = argparse.ArgumentParser().parse_known_args()\n",
    "training": ("from torch.utils.data import DataLoader, TensorDataset\nnet = Net().eval()\n"
                 "for (batch,) in DataLoader(TensorDataset(torch.randn(2, 3, 8, 8))):\n"
                 "    net(batch)\n"),
    "writes": "import os\nos.makedirs('made_at_import', exist_ok=True)\n",
    "network": "import socket\nsock = socket.socket()\nsock.close()\n",
    "process": "import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'pass'], check=True)\n",
}


@pytest.mark.parametrize("kind", list(KIND_SCRIPTS))
def test_each_kind_of_script_is_set_aside_in_folders_and_imported_when_named(write_model, kind):
    path = write_model(textwrap.dedent(MODEL) + "\nexample_input = torch.randn(1, 3, 8, 8)\n" + KIND_SCRIPTS[kind],
                       f"scripts/{kind}.py")
    (folder_run,) = check_paths([str(path.parent)], FAST).models
    assert folder_run.script is not None and folder_run.script["kind"] == kind
    assert folder_run.error is None and folder_run.findings == []
    assert not Path("made_at_import").exists()
    (named,) = check_paths([str(path)], FAST).models
    assert named.target.split("::")[1] in ("Net", "net") and named.error is None and named.tracer
    if kind == "writes":
        assert Path("made_at_import").is_dir()  # it was imported: its top level ran


def test_a_pre_commit_run_sets_scripts_aside_and_says_how_to_import_them(gan_repo):
    files = ["implementations/gan/models.py", "implementations/gan/gan.py"]
    report = check_paths(files, FAST, skip_no_model=True)
    assert [m.target for m in report.models] == ["implementations/gan/models.py::Generator",
                                                 "implementations/gan/gan.py"]
    note = report.models[1].skipped
    assert "`import-scripts`" in note and "name the file on the command line" not in note
    # `file.py::Name` is named: imported as before (and the script's parse_args fails on
    # archlint's own arguments, as it did).
    (named,) = check_paths(["implementations/gan/gan.py::generator"], FAST, skip_no_model=True).models
    assert named.script is None and named.error is not None and "SystemExit" in str(named.error)


def test_import_scripts_imports_them_anyway(write_model):
    path = write_model(textwrap.dedent(MODEL) + "\nexample_input = torch.randn(1, 3, 8, 8)\n" + KIND_SCRIPTS["writes"],
                       "tools/export.py")
    write_model(textwrap.dedent(MODEL) + "\nexample_input = torch.randn(1, 3, 8, 8)\n" + KIND_SCRIPTS["process"],
                        "tools/other.py")
    listed = settings_from_table({"import-scripts": ["tools/export.py"], "select": ["K001"]})
    report = check_paths(["tools"], listed)
    assert {m.target: m.script is None for m in report.models} == {
        "tools/export.py::Net": True, "tools/other.py": False}
    everything = settings_from_table({"import-scripts": True, "select": ["K001"]})
    assert [m.target for m in check_paths(["tools"], everything).models] == [
        "tools/export.py::Net", "tools/other.py::Net"]


@pytest.mark.parametrize("value", [3, ["ok", 4], {"a": 1}])
def test_import_scripts_of_the_wrong_type_is_an_error(value):
    with pytest.raises(ConfigError, match="import-scripts"):
        settings_from_table({"import-scripts": value})


def test_fine_top_level_code_is_still_imported_in_folder_mode(write_model):
    path = write_model('''
        """A model file with everything model files do at the top level."""
        import logging
        import os
        import sys
        from typing import TYPE_CHECKING

        import torch
        from torch import nn

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        try:
            from apex.normalization import FusedLayerNorm as LayerNorm
        except ImportError:
            LayerNorm = nn.LayerNorm
        if TYPE_CHECKING:
            from collections.abc import Sequence

        __all__ = ["Net"]
        WIDTHS = (8, 16)
        logging.basicConfig(level=logging.WARNING)
        logger = logging.getLogger(__name__)
        torch.manual_seed(0)


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.convs = nn.Sequential(*[nn.Conv2d(3 if i == 0 else WIDTHS[i - 1], w, 3, padding=1)
                                             for i, w in enumerate(WIDTHS)])

            def forward(self, x):
                return self.convs(x)


        model = Net()
        example_input = torch.randn(1, 3, 16, 16)


        def main():
            import argparse
            args = argparse.ArgumentParser().parse_args()
            os.makedirs("runs", exist_ok=True)


        if __name__ == "__main__":
            main()
        ''', "pkg/net.py")
    (model,) = check_paths([str(path.parent)], FAST).models
    assert model.target == "pkg/net.py::model" and model.script is None and model.error is None


# --- every output format ------------------------------------------------------------------------

def _script_report(gan_repo):
    return check_paths(["implementations/gan"], FAST)


def test_sarif_carries_a_located_note_per_script(gan_repo):
    import jsonschema

    schema = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
    result = cli("check", "implementations/gan", "--no-cache", "--select", "K001", "--format", "sarif")
    data = json.loads(result.output)
    jsonschema.validate(data, schema)
    (note,) = [n for n in data["runs"][0]["invocations"][0]["toolExecutionNotifications"]
               if n["descriptor"]["id"] == "archlint/script"]
    assert note["level"] == "note" and "runs as a script" in note["message"]["text"]
    region = note["locations"][0]["physicalLocation"]
    assert region["artifactLocation"]["uri"].endswith("implementations/gan/gan.py")
    assert region["region"]["startLine"] == 8
    assert data["runs"][0]["invocations"][0]["executionSuccessful"] is True


def test_github_annotations_put_the_note_on_the_line(gan_repo):
    result = cli("check", "implementations/gan", "--no-cache", "--select", "K001", "--format", "github")
    (notice,) = [line for line in result.output.splitlines() if line.startswith("::notice")]
    assert notice.startswith("::notice file=implementations/gan/gan.py,line=8,title=archlint did "
                             "not import implementations/gan/gan.py (a script)::not imported: its top level")
    assert result.output.rstrip().endswith("1 file skipped as a script (not imported)")


def test_markdown_lists_and_counts_the_scripts(gan_repo):
    result = cli("check", "implementations/gan", "--no-cache", "--select", "K001", "--format", "markdown")
    assert "in 1 model; 1 file skipped as a script (not imported)" in result.output
    assert "| implementations/gan/gan.py | not imported (a script): its top level runs as a script" in result.output


def test_the_html_report_shows_a_note_not_an_error(gan_repo):
    from archlint.reports import render

    report = _script_report(gan_repo)
    page = render("html", report)
    assert 'class="skip-box"' in page and "not imported (a script):" in page
    assert "1 file skipped as a script (not imported)" in page
    assert "not imported (a script) error" not in page


def test_summary_lists_the_scripts_without_failing(gan_repo):
    result = cli("summary", "implementations/gan", "--no-memory")
    assert result.exit_code == 0, result.output
    assert "implementations/gan/gan.py  not imported: its top level runs as a script" in result.output
    data = json.loads(cli("summary", "implementations/gan", "--no-memory", "--format", "json").output)
    assert [s["target"] for s in data["skipped"]] == ["implementations/gan/gan.py"]
