"""The command line as a user meets it: exit codes, formats, targets, config, suppression, errors."""
import json
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from archlint.cli import main

BIG_KERNEL = """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(16, 16, 7, padding=3)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.conv(x))

    example_input = torch.randn(1, 16, 32, 32)
"""

CLEAN = """
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
    example_input = torch.randn(1, 16, 32, 32)
"""


def run(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


# --- exit status -------------------------------------------------------------------------------

def test_clean_model_exits_zero(write_model):
    code, out = run("check", str(write_model(CLEAN)), "--select", "K")
    assert code == 0, out
    assert "0 findings in 1 model" in out


def test_warning_exits_one_and_prints_location(write_model):
    path = write_model(BIG_KERNEL, "net.py")
    code, out = run("check", str(path), "--select", "K001")
    assert code == 1
    assert "net.py:7: K001 warning conv: 7x7 conv" in out
    assert "fix: replace the 7x7 conv" in out
    assert "nn.Conv2d(16, 16, 3, padding=1)" in out


def test_fail_on_and_exit_zero(write_model):
    path = str(write_model(BIG_KERNEL))
    assert run("check", path, "--select", "K001", "--fail-on", "error")[0] == 0
    assert run("check", path, "--select", "K001", "--exit-zero")[0] == 0
    assert run("check", path, "--select", "K001", "--fail-on", "info")[0] == 1


def test_json_output_shape(write_model, tmp_path):
    path = write_model(BIG_KERNEL, "net.py")
    out_file = tmp_path / "out.json"
    code, _ = run("check", str(path), "--select", "K001", "--format", "json", "-o", str(out_file))
    assert code == 1
    data = json.loads(out_file.read_text())
    assert set(data) == {"version", "models"}
    model = data["models"][0]
    assert {"target", "tracer", "inputs", "summary", "findings"} <= set(model)
    assert model["target"] == "net.py::Net"
    assert model["tracer"] == "torch.fx"
    assert model["inputs"] == [[1, 16, 32, 32]]
    assert model["summary"] == {"params": 16 * 16 * 49 + 16, "macs": 16 * 16 * 49 * 32 * 32, "layers": 2}
    finding = model["findings"][0]
    assert set(finding) == {"code", "name", "severity", "module", "message", "location", "evidence", "fix"}
    assert finding["code"] == "K001" and finding["name"] == "large-kernel"
    assert finding["severity"] == "warning" and finding["module"] == "conv"
    assert finding["location"] == {"path": "net.py", "line": 7}
    assert finding["evidence"]["params_now"] == 16 * 16 * 49 + 16
    assert finding["evidence"]["params_after"] == 3 * (16 * 16 * 9 + 16)
    assert set(finding["fix"]) == {"description", "code", "checked"}
    assert finding["fix"]["checked"] == "runs"  # built and run on the conv's input before shown


# --- targets ---------------------------------------------------------------------------------

MULTI = """
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c=8):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 5, padding=2)

        def forward(self, x):
            return torch.relu(self.conv(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(Block(), Block())
            self.head = nn.Conv2d(8, 8, 1)

        def forward(self, x):
            return self.head(self.backbone(x))

    def build_wide() -> nn.Module:
        return nn.Sequential(nn.Conv2d(8, 8, 3, padding=1))

    example_input = torch.randn(1, 8, 16, 16)
"""


def test_discovery_skips_parts_and_finds_factories(write_model):
    path = write_model(MULTI, "multi.py")
    code, out = run("check", str(path), "--format", "json", "--select", "K001")
    targets = [m["target"] for m in json.loads(out)["models"]]
    assert targets == ["multi.py::Net", "multi.py::build_wide"]  # Block is only a part of Net


def test_target_syntax(write_model):
    path = str(write_model(MULTI, "multi.py"))
    _, out = run("check", f"{path}::Net.backbone", "--format", "json", "--select", "K001")
    model = json.loads(out)["models"][0]
    assert model["target"] == "multi.py::Net.backbone"
    # Both blocks' convs are built by one line: one finding, naming both.
    (finding,) = model["findings"]
    assert finding["module"] == "0.conv" and finding["evidence"]["modules"] == ["0.conv", "1.conv"]
    _, out = run("check", f"{path}::Block", "--format", "json")
    assert json.loads(out)["models"][0]["summary"]["layers"] == 1
    code, out = run("check", f"{path}::Nope")
    assert code == 2 and "no name 'Nope'" in out and "Net" in out


def test_folder_and_several_files(write_model, tmp_path):
    write_model(BIG_KERNEL, "a.py")
    write_model(CLEAN, "b.py")
    (tmp_path / "notes.py").write_text("print('not a model file')\n")
    code, out = run("check", str(tmp_path), "--format", "json", "--select", "K001")
    assert sorted(m["target"] for m in json.loads(out)["models"]) == ["a.py::Net", "b.py::model"]
    assert code == 1


def test_one_bad_target_does_not_stop_the_others(write_model):
    good = write_model(BIG_KERNEL, "good.py")
    bad = write_model("import torch\nraise RuntimeError('boom')\n", "bad.py")
    code, out = run("check", str(bad), str(good), "--select", "K001")
    assert code == 2
    assert "bad.py:2: importing bad.py raised RuntimeError: boom" in out
    assert "good.py:7: K001" in out


# --- example input ---------------------------------------------------------------------------

def test_example_input_sources(write_model):
    path = str(write_model(BIG_KERNEL))
    _, out = run("check", path, "--format", "json")
    model = json.loads(out)["models"][0]
    assert model["inputs"] == [[1, 16, 32, 32]] and "example_input" in model["input_source"]
    _, out = run("check", path, "--format", "json", "--input-shape", "2,16,8,8")
    model = json.loads(out)["models"][0]
    assert model["inputs"] == [[2, 16, 8, 8]] and model["input_source"] == "--input-shape"
    lightning = write_model("""
        import torch
        from torch import nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(5, 2)
                self.example_input_array = torch.zeros(4, 5)
            def forward(self, x):
                return self.fc(x)
    """)
    _, out = run("check", str(lightning), "--format", "json")
    model = json.loads(out)["models"][0]
    assert model["inputs"] == [[4, 5]] and model["input_source"] == "model.example_input_array"


def test_several_inputs(write_model):
    path = write_model("""
        import torch
        from torch import nn
        class Pair(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(4, 8)
                self.b = nn.Linear(6, 8)
            def forward(self, x, y):
                return self.a(x) + self.b(y)
    """)
    code, out = run("check", str(path), "--input-shape", "2,4", "--input-shape", "2,6", "--format", "json")
    assert code == 0, out
    assert json.loads(out)["models"][0]["summary"]["macs"] == 2 * 4 * 8 + 2 * 6 * 8


# --- config ------------------------------------------------------------------------------------

def test_pyproject_config_and_cli_override(write_model, tmp_path):
    path = str(write_model(BIG_KERNEL))
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [tool.archlint]
        select = ["K"]
        fail-on = "error"

        [tool.archlint.rules.K001]
        min-kernel = 9
    """))
    code, out = run("check", path)
    assert code == 0 and "K001" not in out
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [tool.archlint]
        select = ["K001"]
        fail-on = "error"
        [tool.archlint.rules.K001]
        severity = "error"
    """))
    code, out = run("check", path)
    assert code == 1 and "K001 error" in out
    code, out = run("check", path, "--ignore", "K001")
    assert code == 0 and "K001" not in out


@pytest.mark.parametrize("table, message", [
    ('[tool.archlint]\nselct = ["K"]\n', "unknown key 'selct'"),
    ('[tool.archlint.rules.K001]\nmin-kernal = 3\n', "has no option 'min-kernal'"),
    ('[tool.archlint.rules.K001]\nmin-kernel = "big"\n', "takes a int"),
    ('[tool.archlint]\nfail-on = "loud"\n', "unknown severity"),
])
def test_config_mistakes_are_errors(write_model, tmp_path, table, message):
    path = str(write_model(BIG_KERNEL))
    (tmp_path / "pyproject.toml").write_text(table)
    code, out = run("check", path)
    assert code == 2
    assert message in out


# --- suppression -------------------------------------------------------------------------------

def test_suppression_on_build_line_call_line_and_multiline(write_model):
    built = write_model(BIG_KERNEL.replace("padding=3)", "padding=3)  # archlint: disable=K001"))
    assert run("check", str(built), "--select", "K001")[0] == 0
    called = write_model(BIG_KERNEL.replace("self.act(self.conv(x))", "self.act(self.conv(x))  # archlint: disable=N001,K001"))
    assert run("check", str(called), "--select", "K001")[0] == 0
    multiline = write_model(BIG_KERNEL.replace("nn.Conv2d(16, 16, 7, padding=3)", "nn.Conv2d(\n            16, 16, 7,\n            padding=3,\n        )  # archlint: disable=K001"))
    assert run("check", str(multiline), "--select", "K001")[0] == 0
    other = write_model(BIG_KERNEL.replace("padding=3)", "padding=3)  # archlint: disable=K002"))
    assert run("check", str(other), "--select", "K001")[0] == 1


# --- bad input: one paragraph, exit 2, no traceback ---------------------------------------------

BAD_INPUTS = {
    "syntax": ("import torch\nclass Net(torch.nn.Module)\n    pass\n", ["syntax.py:2", "does not parse"]),
    "nomodel": ("import torch\nx = 1\n", ["no model found", "file.py::NAME"]),
    "ctor": ("import torch\nfrom torch import nn\nclass Net(nn.Module):\n    def __init__(self):\n"
             "        super().__init__()\n        raise ValueError('bad config')\n",
             ["ctor.py:6", "building Net raised ValueError: bad config"]),
    "shape": ("import torch\nfrom torch import nn\nmodel = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(),"
              " nn.Linear(8 * 30 * 30, 10))\n",
              ["layer 2 (Linear(in_features=7200", "1x394272", "--input-shape"]),
    "missing": ("import torch\nimport not_a_real_package\n", ["not_a_real_package", "not installed"]),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_paragraph(write_model, name):
    source, expected = BAD_INPUTS[name]
    path = write_model(source, f"{name}.py")
    result = subprocess.run([sys.executable, "-m", "archlint", "check", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for text in expected:
        assert text in result.stdout, result.stdout
    debug = subprocess.run([sys.executable, "-m", "archlint", "check", "--debug", str(path)],
                           capture_output=True, text=True)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_usage_errors_exit_two(write_model):
    path = str(write_model(CLEAN))
    assert run("check", path, "--input-shape", "1,x,3")[0] == 2
    code, out = run("check", "does_not_exist.py")
    assert code == 2 and "no such file" in out


# --- rules and explain -----------------------------------------------------------------------

def test_rules_and_explain():
    code, out = run("rules")
    assert code == 0 and "K001  large-kernel" in out
    code, out = run("explain", "K001")
    assert code == 0
    for section in ("## What it does", "## Why is this bad?", "## Example", "## Use instead", "## References"):
        assert section in out
    assert run("explain", "large-kernel")[0] == 0
    assert run("explain", "Z999")[0] == 2
