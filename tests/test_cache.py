"""The fast path of `archlint check`: files skipped from their syntax, results answered from
.archlint_cache/, and neither importing torch."""
import json
import subprocess
import sys
import textwrap

import pytest

from archlint.cache import ResultCache, is_project_file
from archlint.driver import check_paths
from archlint.config import Settings
from archlint.prefilter import expand_paths, file_might_build_model

BLOCKS = """
    from torch import nn

    WIDTH = 16

    def stem():
        return nn.Conv2d(WIDTH, WIDTH, 7, padding=3)
"""

NET = """
    import torch
    from torch import nn
    from blocks import stem

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = stem()
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.stem(x))

    example_input = torch.randn(1, 16, 16, 16)
"""

# Imports `blocks` after NET has: the dependency must still be recorded for this file.
OTHER = """
    import torch
    from torch import nn
    import blocks

    model = nn.Sequential(blocks.stem(), nn.ReLU())
    example_input = torch.randn(1, 16, 16, 16)
"""

PLAIN = """
    import json

    def load(path):
        with open(path) as f:
            return json.load(f)
"""

K001 = Settings(select=["K001"])


@pytest.fixture(autouse=True)
def _forget_imported_models():
    """Each test's `blocks.py` is its own: unload the ones earlier tests imported."""
    path = list(sys.path)
    yield
    _unload_project_modules()
    sys.path[:] = path


def _unload_project_modules():
    """What a new `archlint check` process starts from: no module of the project imported."""
    for name, module in list(sys.modules.items()):
        if is_project_file(getattr(module, "__file__", None), must_exist=False) and "pytest" not in name \
                and not name.startswith("tests"):
            del sys.modules[name]


def _probe(args, cwd):
    """Run `archlint ARGS` in a fresh interpreter; return (exit code, torch imported?, output)."""
    code = textwrap.dedent(f"""
        import sys
        from archlint.cli import main
        sys.argv = ["archlint", *{list(args)!r}]
        try:
            main()
        except SystemExit as exc:
            status = exc.code
        print("TORCH-IMPORTED" if "torch" in sys.modules else "TORCH-FREE", status)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    last = done.stdout.strip().splitlines()[-1].split()
    return int(last[1]), last[0] == "TORCH-IMPORTED", done.stdout + done.stderr


def _probe_until_torch_free(args, cwd, attempts=3):
    """The key covers archlint's own sources, and other work may touch them while a test runs:
    a miss re-fills the cache, so the next run must hit."""
    for _ in range(attempts):
        result = _probe(args, cwd)
        if not result[1]:
            break
    return result


def test_package_import_does_not_import_torch(tmp_path):
    code = ("import sys, archlint, archlint.cli, archlint.cache; "
            "archlint.Finding; archlint.Report; "
            "print('torch' in sys.modules, callable(archlint.lint), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300).stdout.split()
    assert out == ["False", "True", "True"]  # archlint.lint is there, and brings torch with it


def test_prefilter_reads_syntax_only(write_model):
    assert not file_might_build_model(write_model(PLAIN))
    assert file_might_build_model(write_model(NET))
    assert file_might_build_model(write_model("import timm\nmodel = timm.create_model('resnet18')\n"))
    assert not file_might_build_model(write_model("import torch\nx = torch.zeros(3)\n"))
    assert file_might_build_model(write_model("def broken(:\n"))  # the import reports it


def test_skip_no_model_drops_plain_files_but_not_named_targets(write_model):
    plain, net = write_model(PLAIN), write_model(NET)
    assert [p for p, _, _ in expand_paths([str(plain), str(net)], skip_no_model=True)] == [str(net)]
    # Without the flag an explicit file is linted (and reports "no model found").
    assert len(expand_paths([str(plain)])) == 1
    assert expand_paths([f"{plain}::load"], skip_no_model=True) == [(str(plain), ["load"], True)]


def test_second_run_answers_from_the_cache_without_torch(write_model, tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'p'\n")  # the project root
    write_model(BLOCKS, "blocks.py")
    net = write_model(NET, "net.py")
    plain = write_model(PLAIN, "util.py")
    args = ["check", str(net), str(plain), "--skip-no-model", "--select", "K001"]
    code, torch_imported, out = _probe(args, tmp_path)
    assert code == 1 and torch_imported, out
    assert "K001" in out
    code, torch_imported, out = _probe_until_torch_free(args, tmp_path)
    assert code == 1 and not torch_imported, out
    assert "blocks.py:6: K001 warning stem" in out

    cache = tmp_path / ".archlint_cache"
    assert (cache / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (cache / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")


def test_only_plain_files_never_import_torch(write_model, tmp_path):
    plain = write_model(PLAIN, "util.py")
    code, torch_imported, out = _probe(["check", str(plain), "--skip-no-model"], tmp_path)
    assert code == 0 and not torch_imported, out
    assert not (tmp_path / ".archlint_cache").exists()


def test_cached_report_equals_fresh_one(write_model, tmp_path):
    write_model(BLOCKS, "blocks.py")
    net = write_model(NET, "net.py")
    cache = ResultCache(tmp_path / "c")
    fresh = check_paths([str(net)], K001, use_cache=True, cache=cache)
    cached = check_paths([str(net)], K001, use_cache=True, cache=cache)
    assert [m.from_cache for m in cached.models] == [True]
    assert cached.models[0].summary == fresh.models[0].summary
    assert cached.findings == fresh.findings
    assert [f.fix for f in cached.findings] == [f.fix for f in fresh.findings]
    assert cached.findings[0].built_at == fresh.findings[0].built_at
    assert cached.to_dict() == json.loads(json.dumps(fresh.to_dict()))


def test_a_changed_project_module_invalidates_every_file_that_imports_it(write_model, tmp_path):
    blocks = write_model(BLOCKS, "blocks.py")
    net, other = write_model(NET, "net.py"), write_model(OTHER, "other.py")
    cache = ResultCache(tmp_path / "c")
    first = check_paths([str(net), str(other)], K001, use_cache=True, cache=cache)
    assert len(first.findings) == 2
    assert all(m.from_cache for m in check_paths([str(net), str(other)], K001, use_cache=True, cache=cache).models)

    blocks.write_text(blocks.read_text().replace("nn.Conv2d(WIDTH, WIDTH, 7, padding=3)",
                                                 "nn.Conv2d(WIDTH, WIDTH, 3, padding=1)"))
    _unload_project_modules()
    again = check_paths([str(net), str(other)], K001, use_cache=True, cache=cache)
    assert [m.from_cache for m in again.models] == [False, False]
    assert again.findings == []


def test_settings_and_content_are_part_of_the_key(write_model, tmp_path):
    write_model(BLOCKS, "blocks.py")
    net = write_model(NET, "net.py")
    cache = ResultCache(tmp_path / "c")
    check_paths([str(net)], K001, use_cache=True, cache=cache)
    other_settings = Settings(select=["K001"], rule_options={"K001": {"min-kernel": 9}})
    changed = check_paths([str(net)], other_settings, use_cache=True, cache=cache)
    assert not changed.models[0].from_cache and changed.findings == []
    # fail-on decides the exit status, not the findings: same entry.
    assert check_paths([str(net)], Settings(select=["K001"], fail_on=K001.fail_on.ERROR),
                       use_cache=True, cache=cache).models[0].from_cache
    net.write_text(net.read_text() + "\n# a comment\n")
    assert not check_paths([str(net)], K001, use_cache=True, cache=cache).models[0].from_cache
    # One entry per file and run settings: the stale one was replaced.
    assert len(list((tmp_path / "c").glob("results-v*/*.json"))) == 2


def test_errors_are_not_cached_and_no_cache_writes_nothing(write_model, tmp_path):
    broken = write_model("import torch\nfrom torch import nn\nimport not_installed_pkg\n"
                         "model = nn.Sequential(nn.Conv2d(3, 3, 3))\n", "broken.py")
    cache = ResultCache(tmp_path / "c")
    report = check_paths([str(broken)], K001, use_cache=True, cache=cache)
    assert report.errors and not list((tmp_path / "c").glob("results-v*/*.json"))

    net = write_model("import torch\nfrom torch import nn\nmodel = nn.Sequential(nn.Conv2d(3, 3, 3))\n"
                      "example_input = torch.randn(1, 3, 8, 8)\n", "tiny.py")
    check_paths([str(net)], K001, use_cache=False)
    assert not (tmp_path / ".archlint_cache").exists()


def test_a_data_file_read_while_importing_is_a_dependency(write_model, tmp_path):
    (tmp_path / "width.json").write_text('{"kernel": 7}')
    net = write_model("""
        import json
        from pathlib import Path
        import torch
        from torch import nn

        KERNEL = json.loads((Path(__file__).parent / "width.json").read_text())["kernel"]
        model = nn.Sequential(nn.Conv2d(16, 16, KERNEL, padding=KERNEL // 2), nn.ReLU())
        example_input = torch.randn(1, 16, 16, 16)
    """, "sized.py")
    cache = ResultCache(tmp_path / "c")
    assert len(check_paths([str(net)], K001, use_cache=True, cache=cache).findings) == 1
    assert check_paths([str(net)], K001, use_cache=True, cache=cache).models[0].from_cache
    (tmp_path / "width.json").write_text('{"kernel": 3}')
    again = check_paths([str(net)], K001, use_cache=True, cache=cache)
    assert not again.models[0].from_cache and again.findings == []
