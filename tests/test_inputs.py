"""Inputs per target: each model in a file gets its own example input, dtypes can be given,
embedding models get token ids, and a wrong number of inputs is one clear error."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from archlint.cli import main
from archlint.config import parse_shape

from .helpers import write_model

GAN = '''
    import torch
    from torch import nn

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 3 * 8 * 8)

        def forward(self, z):
            return self.fc(z).view(-1, 3, 8, 8)

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.cond = nn.Linear(10, 8)

        def forward(self, image, label):
            return self.conv(image).mean((2, 3)) + self.cond(label)

    example_inputs = {"Generator": torch.randn(2, 16),
                      "Discriminator": (torch.randn(2, 3, 8, 8), torch.randn(2, 10))}
'''


def run(*args):
    result = CliRunner().invoke(main, ["check", "--no-cache", "--format", "json", *args])
    return result, (json.loads(result.output) if result.output.startswith("{") else None)


def test_each_model_gets_its_own_inputs(tmp_path):
    result, data = run(str(write_model(tmp_path, GAN)))
    by_target = {m["target"].split("::")[1]: m for m in data["models"]}
    assert by_target["Generator"]["inputs"] == [[2, 16]]
    assert by_target["Discriminator"]["inputs"] == [[2, 3, 8, 8], [2, 10]]
    assert all("error" not in m for m in data["models"])
    assert "example_inputs['Discriminator']" in by_target["Discriminator"]["input_source"]


def test_the_models_own_example_input_array_wins_over_the_files(tmp_path):
    source = '''
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(1, 4, 3)
                self.example_input_array = torch.randn(1, 1, 12, 12)

            def forward(self, x):
                return self.conv(x)

        model = Net()
        example_input = torch.randn(1, 3, 32, 32)  # for the file's other models
    '''
    _, data = run(str(write_model(tmp_path, source)))
    assert data["models"][0]["inputs"] == [[1, 1, 12, 12]]


def test_input_shape_carries_a_dtype(tmp_path):
    assert parse_shape("1,128:int64") == [1, 128, "int64"]
    assert parse_shape([1, 3, 8, 8]) == [1, 3, 8, 8]
    source = '''
        from torch import nn
        model = nn.Sequential(nn.Embedding(100, 8), nn.Linear(8, 2))
    '''
    result, data = run(str(write_model(tmp_path, source)), "--input-shape", "1,5:int64")
    assert result.exit_code == 0, result.output
    assert data["models"][0]["inputs"] == [[1, 5]]
    bad = CliRunner().invoke(main, ["check", "--no-cache", str(write_model(tmp_path, source)),
                                    "--input-shape", "1,5:complex7"])
    assert bad.exit_code == 2 and "unknown dtype" in bad.output


def test_an_embedding_model_gets_token_ids_by_default(tmp_path):
    source = '''
        from torch import nn

        class TinyLM(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Embedding(50, 16)
                self.head = nn.Linear(16, 50)

            def forward(self, ids):
                return self.head(self.embed(ids))

        model = TinyLM()
    '''
    result, data = run(str(write_model(tmp_path, source)))
    assert result.exit_code == 0, result.output
    (model,) = data["models"]
    assert "error" not in model and "token ids" in model["input_source"]


def test_a_wrong_number_of_inputs_names_forwards_parameters(tmp_path):
    source = '''
        import torch
        from torch import nn

        class TwoInputs(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(4, 4)
                self.b = nn.Linear(6, 4)

            def forward(self, x, y):
                return self.a(x) + self.b(y)

        model = TwoInputs()
        example_input = torch.randn(1, 4)
    '''
    path = write_model(tmp_path, source)
    result = CliRunner().invoke(main, ["check", "--no-cache", str(path)])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "TwoInputs.forward takes 2 input(s) (x, y), but archlint found 1" in text
    assert f"{path.name}:" in text and "inspect.py" not in text
    assert "--input-shape" in text and "example_inputs" in text


def test_models_that_need_arguments_are_listed_and_helpers_are_not_targets(tmp_path):
    source = '''
        import torch
        from torch import nn

        class Block(nn.Module):  # a part of Net: not a target, not listed
            def __init__(self, c):
                super().__init__()
                self.conv = nn.Conv2d(c, c, 3, padding=1)

            def forward(self, x):
                return self.conv(x)

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.stem = nn.Conv2d(3, 8, 3, padding=1)
                self.block = Block(8)

            def forward(self, x):
                return self.block(self.stem(x))

        class Generator(nn.Module):  # needs arguments: listed, with why
            def __init__(self, nz, ngf):
                super().__init__()
                self.fc = nn.Linear(nz, ngf)

            def forward(self, z):
                return self.fc(z)

        class Swish(nn.Module):  # no parameters: a helper, not a model
            def forward(self, x):
                return x * torch.sigmoid(x)

        act = nn.ReLU()
        example_input = torch.randn(1, 3, 16, 16)
    '''
    path = write_model(tmp_path, source)
    result, data = run(str(path))
    entries = {m["target"].split("::")[1]: m for m in data["models"]}
    assert set(entries) == {"Net", "Generator"}
    assert "constructor needs arguments (nz, ngf)" in entries["Generator"]["skipped"]
    text = CliRunner().invoke(main, ["check", "--no-cache", str(path)]).output
    assert "Generator  not linted: its constructor needs arguments" in text
    assert "1 model not built" in text
    only = write_model(tmp_path, source.replace("class Net(", "class _Net(").replace(
        "class Swish", "class _Swish"), "only_generator.py")
    result = CliRunner().invoke(main, ["check", "--no-cache", str(only)])
    assert result.exit_code == 2 and "no model built" in result.output
