"""`--statistics`, `--exit-zero`, `-q`, NO_COLOR and FORCE_COLOR, as CI logs need them."""
import pytest
from click.testing import CliRunner

from archlint.cli import _use_color, main

TWO_BIG = """
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(16, 16, 7, padding=3), nn.ReLU(),
        nn.Conv2d(16, 16, 5, padding=2), nn.ReLU(),
        nn.Conv2d(16, 16, 7, padding=3),
    )
    example_input = torch.randn(1, 16, 16, 16)
"""

ESC = "\x1b["


@pytest.fixture
def net(write_model):
    return str(write_model(TWO_BIG, "net.py"))


def run(*args, env=None):
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_statistics_quiet_exit_zero_and_colors(net):
    code, out = run("check", net, "--select", "K001", "--statistics")
    assert code == 1
    assert "    3  K001  large-kernel" in out.splitlines()
    assert "fix:" in out and "traced with" in out and ESC not in out

    code, out = run("check", net, "--select", "K001", "-q")
    lines = out.splitlines()
    assert code == 1 and len(lines) == 4  # three findings and the summary, nothing else
    assert all(" K001 warning " in line for line in lines[:3])
    assert lines[-1] == "3 findings (3 warnings) in 1 model"

    code, _ = run("check", net, "--select", "K001", "--exit-zero")
    assert code == 0
    # --exit-zero forgives findings, not errors.
    code, _ = run("check", "missing.py", "--exit-zero")
    assert code == 2

    code, out = run("check", net, "--select", "K001", "-q", env={"FORCE_COLOR": "1", "NO_COLOR": ""})
    assert ESC in out
    code, out = run("check", net, "--select", "K001", "-q", env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert ESC not in out  # NO_COLOR wins
    code, out = run("check", net, "--select", "K001", "-q", "--format", "github",
                    env={"FORCE_COLOR": "1", "NO_COLOR": ""})
    assert ESC not in out  # machine formats are never colored


class Tty:
    def isatty(self):
        return True


def test_color_decision(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert _use_color(Tty()) and not _use_color(object())
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert _use_color(object())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not _use_color(Tty())
