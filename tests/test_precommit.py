"""The real pre-commit, in a throwaway git repository, using archlint's hook from this checkout.

The `archlint-system` hook runs the `archlint` already installed (no virtualenv to build, no
network), which is how a project whose models need its own packages uses it.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import write_model

ROOT = Path(__file__).resolve().parent.parent

CLEAN = """
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    example_input = torch.randn(1, 3, 16, 16)
"""

BIG_KERNEL = """
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(8, 8, 7, padding=3), nn.ReLU())
    example_input = torch.randn(1, 8, 16, 16)
"""

HELPER = """
    def scale(x, factor=2):
        return x * factor
"""

pytestmark = pytest.mark.skipif(shutil.which("pre-commit") is None and
                                not (Path(sys.executable).parent / "pre-commit").exists(),
                                reason="pre-commit is not installed")


def _head_with_hooks() -> str:
    """The commit of this checkout that pre-commit clones the hook definitions from."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                             text=True).stdout.strip()
        subprocess.run(["git", "cat-file", "-e", f"{rev}:.pre-commit-hooks.yaml"], cwd=ROOT, check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("this checkout is not a git repository with .pre-commit-hooks.yaml committed")
    return rev


@pytest.fixture
def project(tmp_path):
    repo = tmp_path / "project"
    repo.mkdir()
    env = dict(os.environ)
    env.update({
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
        "NO_COLOR": "1",
    })
    env.pop("PRE_COMMIT", None)

    def run(*args, check=True):
        done = subprocess.run(list(args), cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        if check and done.returncode != 0:
            raise AssertionError(f"{args} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def write(name, source):
        write_model(repo, source, name)

    run("git", "init", "-q")
    return repo, run, write


def _pre_commit():
    found = shutil.which("pre-commit") or str(Path(sys.executable).parent / "pre-commit")
    return found


def test_hook_from_a_local_path_passes_clean_models_and_blocks_warnings(project):
    repo, run, write = project
    write(".pre-commit-config.yaml", f"""
        repos:
          - repo: {ROOT}
            rev: {_head_with_hooks()}
            hooks:
              - id: archlint-system
                args: [--select, K001]
    """)
    run(_pre_commit(), "install")
    write("clean.py", CLEAN)
    write("helpers.py", HELPER)
    run("git", "add", ".")
    done = run("git", "commit", "-qm", "clean model")
    assert "archlint" in done.stdout + done.stderr and "Passed" in done.stdout + done.stderr

    write("big.py", BIG_KERNEL)
    run("git", "add", "big.py")
    done = run("git", "commit", "-qm", "big kernel", check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Failed" in output
    assert "big.py:4: K001 warning 0: 7x7 conv" in output
    # The commit was refused.
    log = run("git", "log", "--oneline").stdout.splitlines()
    assert len(log) == 1
    # The cache lives in the project and keeps itself out of git.
    assert (repo / ".archlint_cache" / "CACHEDIR.TAG").exists()
    assert "archlint_cache" not in run("git", "status", "--porcelain").stdout


def test_manifest_and_documented_configs_validate(tmp_path):
    """The hook manifest, and every .pre-commit-config.yaml shown in docs/ci.md."""
    env = dict(os.environ, PRE_COMMIT_HOME=str(tmp_path / "home"))
    done = subprocess.run([_pre_commit(), "validate-manifest", str(ROOT / ".pre-commit-hooks.yaml")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    docs = (ROOT / "docs" / "ci.md").read_text()
    configs = [block for block in docs.split("```yaml\n")[1:] if block.lstrip().startswith("repos:")]
    assert len(configs) >= 2  # the python hook and the local/system one
    for i, block in enumerate(configs):
        path = tmp_path / f"config{i}.yaml"
        path.write_text(block.split("```", 1)[0])
        done = subprocess.run([_pre_commit(), "validate-config", str(path)], capture_output=True,
                              text=True, env=env, timeout=120)
        assert done.returncode == 0, f"{block}\n{done.stdout}{done.stderr}"
