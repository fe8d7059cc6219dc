"""The tracer runs the model as the user's CPU would: device checks take the CPU path, tensors
forward creates cost nothing, and huge weights are never allocated."""
from __future__ import annotations

import json

from click.testing import CliRunner

from archlint.cli import main

from .helpers import write_model


def lint_json(path):
    result = CliRunner().invoke(main, ["check", "--no-cache", "--format", "json", str(path)])
    return result, json.loads(result.output)["models"][0]


def test_a_cpu_fallback_is_the_path_traced(tmp_path):
    """StyleGAN2-style ops: a reference path on the CPU, a custom kernel elsewhere."""
    source = '''
        import torch
        from torch import nn
        import torch.nn.functional as F

        class Blur(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(8, 8, 3, padding=1)

            def forward(self, x):
                if x.device.type == "cpu":
                    return self.conv(x)
                raise RuntimeError("the CUDA kernel is not built here")

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.stem = nn.Conv2d(3, 8, 3, padding=1)
                self.blur = Blur()

            def forward(self, x):
                return self.blur(self.stem(x))

        model = Net()
        example_input = torch.randn(1, 3, 16, 16)
    '''
    result, model = lint_json(write_model(tmp_path, source))
    assert "error" not in model, model
    assert model["tracer"] == "torch.fx (meta)"  # its proxies report the CPU device
    assert model["summary"]["layers"] == 2
    assert model["coverage"]["params_reached"] == model["coverage"]["params_total"]


def test_tensors_made_in_forward_are_free_and_meet_the_inputs(tmp_path):
    source = '''
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3, padding=1)

            def forward(self, x):
                scratch = torch.zeros(10 ** 12)  # 4 TB if it were real
                return self.conv(x) + torch.ones(4, 1, 1)

        model = Net()
        example_input = torch.randn(1, 3, 16, 16)
    '''
    result, model = lint_json(write_model(tmp_path, source))
    assert "error" not in model, model
    assert model["tracer"] == "torch.fx"


def test_huge_weights_are_never_allocated(tmp_path):
    source = '''
        import torch
        from torch import nn

        model = nn.Sequential(nn.Linear(10 ** 6, 10 ** 5), nn.ReLU())  # 400 GB of float32
        example_input = torch.randn(1, 10 ** 6)
    '''
    result, model = lint_json(write_model(tmp_path, source))
    assert "error" not in model, model
    assert model["summary"]["params"] == 10 ** 11 + 10 ** 5
