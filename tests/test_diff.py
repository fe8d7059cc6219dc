"""`archlint diff OLD NEW`: layers, totals, receptive field and findings between two versions."""
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from archlint.cache import is_project_file
from archlint.cli import main
from archlint.config import Settings
from archlint.diff import diff_specs
from archlint.reports.diff import render_html, render_text

from .helpers import write_model

OLD = """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.body = nn.Conv2d(16, 16, 3, padding=1)
            self.dropout = nn.Dropout(0.1)
            self.head = nn.Conv2d(16, 10, 1)

        def forward(self, x):
            return self.head(self.dropout(self.body(self.stem(x))))

    example_input = torch.randn(1, 3, 16, 16)
"""

# body grows to 7x7 (a K001 warning, wider receptive field), dropout goes, extra is added.
NEW = """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.body = nn.Conv2d(16, 16, 7, padding=3)
            self.extra = nn.Conv2d(16, 16, 3, padding=1)
            self.head = nn.Conv2d(16, 10, 1)

        def forward(self, x):
            return self.head(self.extra(self.body(self.stem(x))))

    example_input = torch.randn(1, 3, 16, 16)
"""

K = Settings(select=["K001"])


@pytest.fixture(autouse=True)
def _forget_imported_models():
    yield
    for name, module in list(sys.modules.items()):
        if is_project_file(getattr(module, "__file__", None), must_exist=False) and not name.startswith("tests"):
            del sys.modules[name]


def test_layers_totals_rf_and_findings(write_model):
    old, new = write_model(OLD, "old.py"), write_model(NEW, "new.py")
    diff = diff_specs(str(old), str(new), K)
    assert [l.qualname for l in diff.added] == ["extra"]
    assert [l.qualname for l in diff.removed] == ["dropout"]
    (change,) = diff.changed
    assert change.qualname == "body" and change.what == ["config", "params"]
    assert "kernel_size=(3, 3)" in change.old.config and "kernel_size=(7, 7)" in change.new.config

    totals = diff.totals
    body_growth = 16 * 16 * (49 - 9)
    extra = 16 * 16 * 9 + 16
    assert totals["params"]["delta"] == body_growth + extra
    assert totals["macs"]["delta"] == (body_growth + 16 * 16 * 9) * 16 * 16
    assert totals["layers"] == {"old": 4, "new": 4, "delta": 0}
    assert diff.old_rf["size"] == [5, 5] and diff.new_rf["size"] == [11, 11]

    assert [(f.code, f.module) for f in diff.introduced] == [("K001", "body")]
    assert diff.fixed == []
    assert diff.exit_code(K.fail_on) == 1

    # The other way round the finding is fixed, and nothing is introduced.
    back = diff_specs(str(new), str(old), K)
    assert [(f.code, f.module) for f in back.fixed] == [("K001", "body")]
    assert back.exit_code(K.fail_on) == 0

    text = render_text(diff)
    assert "+ extra: Conv2d(16, 16, kernel_size=(3, 3)" in text
    assert "- dropout: Dropout(p=0.1" in text
    assert "~ body:" in text and "RF" in text and "5x5 -> 11x11" in text
    assert "findings introduced: 1" in text

    page = render_html(diff)
    assert page.startswith("<!DOCTYPE html>") and "Findings introduced" in page
    assert page.count('<tr class="added">') == 1 and page.count('<tr class="changed">') == 1


def test_cli_json_and_exit_status(write_model):
    old, new = write_model(OLD, "old.py"), write_model(NEW, "new.py")
    result = CliRunner().invoke(main, ["diff", str(old), str(new), "--select", "K001", "--format", "json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["layers"]["added"][0]["module"] == "extra"
    assert data["findings"]["introduced"][0]["code"] == "K001"
    assert data["receptive_field"]["new"] == {"size": [11, 11], "global": False}
    # --fail-on error: an introduced warning does not fail.
    result = CliRunner().invoke(main, ["diff", str(old), str(new), "--select", "K001", "--fail-on", "error"])
    assert result.exit_code == 0, result.output


def test_git_revision_uses_the_old_versions_of_project_modules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)

    git("init", "-q")
    write_model(tmp_path, "from torch import nn\n\ndef body():\n    return nn.Conv2d(16, 16, 3, padding=1)\n",
                "models/blocks.py")
    write_model(tmp_path, "import torch\nfrom torch import nn\nfrom blocks import body\n\n"
                "model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), body())\n"
                "example_input = torch.randn(1, 3, 16, 16)\n", "models/net.py")
    git("add", ".")
    git("commit", "-qm", "v1")
    # Only the imported module changes: the old side must still see a 3x3 body.
    blocks = tmp_path / "models" / "blocks.py"
    blocks.write_text(blocks.read_text().replace("16, 16, 3, padding=1", "16, 16, 7, padding=3"))

    diff = diff_specs("git:HEAD:models/net.py", "models/net.py", K)
    (change,) = diff.changed
    assert change.qualname == "1" and "kernel_size=(3, 3)" in change.old.config
    assert [(f.code, f.module) for f in diff.introduced] == [("K001", "1")]
    assert diff.old.report.target == "git:HEAD:models/net.py"

    result = CliRunner().invoke(main, ["diff", "git:nope:models/net.py", "models/net.py"])
    assert result.exit_code == 2 and "git" in result.output
