"""Never lose the user's data, never hang, never a false green (issue 12).

Items that need a real child process (os._exit, a thread, a hang, chdir, memory) run through
the driver, which forks one per file; the per-file `timeout` is short here so the suite stays fast.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from archlint import baseline, safe_io
from archlint.cache import ResultCache, project_root
from archlint.cli import main
from archlint.config import Settings, load_config_file, settings_from_table
from archlint.driver import check_paths
from archlint.errors import ArchlintError, ConfigError
from archlint.findings import Finding, Location, Severity
from archlint.prefilter import expand_paths, split_spec
from archlint.results import ModelReport, Report

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
FAST = Settings(timeout=20, select=["K001"])

NET = """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(16, 16, 7, padding=3)

        def forward(self, x):
            return self.conv(x)

    example_input = torch.randn(1, 16, 16, 16)
"""

SMALL = """
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(8, 8, 7, padding=3), nn.ReLU())
    example_input = torch.randn(1, 8, 8, 8)
"""


@pytest.fixture
def write_model(write_model, tmp_path):
    """The shared fixture, also for files in subfolders."""
    def write(source, name=None):
        if name:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        return write_model(source, name)
    return write


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("ARCHLINT_CACHE_DIR", raising=False)


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def one_error(result, *words):
    assert result.exit_code == 2, result.output
    assert "error" in result.output
    for word in words:
        assert word.lower() in result.output.lower(), result.output


# --- data loss and security -------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["check", "net.py", "-o", "net.py"],
    ["report", "net.py", "-o", "net.py"],
    ["diff", "net.py", "other.py", "-o", "other.py"],
    ["check", "net.py", "--write-baseline", "--baseline", "other.py"],
    ["check", "net.py", "-o", "brand_new.py"],
    ["check", ".", "-o", "other.py"],
])
def test_outputs_never_overwrite_an_input_or_a_python_file(write_model, tmp_path, command):
    net, other = write_model(NET, "net.py"), write_model(SMALL, "other.py")
    before = {p: p.read_bytes() for p in (net, other)}
    one_error(cli(*command), "refusing")
    assert {p: p.read_bytes() for p in (net, other)} == before
    assert not (tmp_path / "brand_new.py").exists()


def test_outputs_are_written_atomically(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text("old report")

    def fail(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(safe_io.OutputError, match="No space left"):
        safe_io.write_text(target, "new report")
    assert target.read_text() == "old report"  # never half a file
    assert os.listdir(tmp_path) == ["report.json"]  # no temporary left behind
    monkeypatch.undo()
    safe_io.write_text(target, "new report")
    assert target.read_text() == "new report"


def _finding(module):
    return Finding("K001", "large-kernel", Severity.WARNING, module, f"{module} is big", Location("a.py", 1))


def test_write_baseline_merges_by_target(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "archlint-baseline.json"
    baseline.write(Report(models=[ModelReport("a.py::A", findings=[_finding("conv")]),
                                  ModelReport("b.py::B", findings=[_finding("conv")]),
                                  ModelReport("c.py::C", findings=[_finding("head")])]), path)
    # This run: a.py linted with a new finding, b.py failed, c.py not linted at all.
    change = baseline.update(Report(models=[
        ModelReport("a.py::A", findings=[_finding("stem")]),
        ModelReport("b.py::B", error=ConfigError("broken today"))]), path)
    entries = {(e["target"], e["module"]) for e in json.loads(path.read_text())["findings"]}
    assert entries == {("a.py::A", "stem"), ("b.py::B", "conv"), ("c.py::C", "head")}
    assert (change.accepted, change.added, change.removed, change.kept) == (1, 1, 1, 2)


def test_write_baseline_says_what_changed(write_model):
    write_model(NET, "a.py")
    result = cli("check", "a.py", "--write-baseline", "--no-cache")
    assert result.exit_code == 0 and "2 findings accepted (2 new, 0 no longer found" in result.output


def test_the_cache_never_follows_a_symlink(write_model, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    write_model(NET, "net.py")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    (tmp_path / ".archlint_cache").mkdir()
    (tmp_path / ".archlint_cache" / ".gitignore").symlink_to(victim)
    assert cli("check", "net.py").exit_code == 1
    assert victim.read_text() == "precious"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cache = ResultCache(tmp_path / "linked")
    (tmp_path / "linked").symlink_to(elsewhere)
    with pytest.raises(OSError):
        cache._ensure_directory()
    assert not cache.put(("slot", "key"), [ModelReport("n.py::N")], set())
    assert list(elsewhere.iterdir()) == []


def test_the_cache_lives_at_the_project_root_never_in_a_shared_folder(tmp_path):
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    assert project_root(Settings(), str(project / "models" / "net.py")) == project
    assert ResultCache.for_settings(Settings(), str(project / "models")).directory == project / ".archlint_cache"
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "pyproject.toml").write_text("")
    os.chmod(shared, 0o1777)
    assert ResultCache.for_settings(Settings(), str(shared)).directory == tmp_path / "xdg" / "archlint"
    assert ResultCache.for_settings(Settings(), "/").directory == tmp_path / "xdg" / "archlint"


# --- false greens and hangs: each in a real child process ----------------------------------------

def _next_to_a_good_file(write_model, bad_source, settings=FAST):
    good = write_model(NET, "a_good.py")
    bad = write_model(bad_source, "b_bad.py")
    report = check_paths([str(good), str(bad)], settings)
    (good_report,) = [m for m in report.models if m.target.startswith("a_good.py")]
    assert [f.code for f in good_report.findings] == ["K001"]  # the other file's results survive
    return [m for m in report.models if m.target.startswith("b_bad.py")]


def test_os_exit_at_import_is_an_error_for_that_file(write_model):
    (bad,) = _next_to_a_good_file(write_model, """
        import os
        import torch
        os._exit(0)
    """)
    assert (bad.error.kind, bad.error.cause) == ("isolation", "exited")
    assert Report(models=[bad]).exit_code(Severity.WARNING) == 2


def test_a_thread_started_at_import_does_not_hang_the_run(write_model):
    (bad,) = _next_to_a_good_file(write_model, """
        import threading, time
        import torch
        from torch import nn
        threading.Thread(target=lambda: time.sleep(10**6)).start()
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    """)
    assert bad.error is None


def test_an_endless_forward_times_out(write_model):
    (bad,) = _next_to_a_good_file(write_model, """
        import torch
        from torch import nn

        class Spin(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 3, 3)

            def forward(self, x):
                while True:
                    pass

        model = Spin()
    """, Settings(timeout=6, select=["K001"]))
    assert (bad.error.kind, bad.error.cause) == ("isolation", "timeout")
    assert "6 s" in str(bad.error) and "timeout" in str(bad.error)


def test_a_file_over_the_memory_limit_is_stopped(write_model):
    (bad,) = _next_to_a_good_file(write_model, """
        import torch
        hog = [bytearray(50 * 2**20) for _ in range(100)]
    """, Settings(timeout=20, memory_limit=300, select=["K001"]))
    assert (bad.error.kind, bad.error.cause) == ("isolation", "memory")


def test_a_crash_in_archlint_inside_the_child_is_one_error(write_model, monkeypatch):
    from archlint import driver

    def broken(*args):
        raise KeyError("bug")

    monkeypatch.setattr(driver, "check_file", broken)
    net = write_model(NET, "net.py")
    (model,) = check_paths([str(net)], FAST).models
    assert (model.error.kind, model.error.cause) == ("isolation", "crashed")
    assert "KeyError" in model.error.details  # the traceback, for --debug


def test_user_output_is_kept_off_stdout_and_shown_with_debug(write_model, tmp_path):
    write_model("print('hello from import')\nimport sys\nprint('to stderr', file=sys.stderr)\n"
                + textwrap.dedent(NET), "net.py")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    for fmt in ("json", "sarif"):
        done = subprocess.run([sys.executable, "-m", "archlint", "check", "net.py", "--format", fmt,
                               "--no-cache"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 1, done.stderr
        json.loads(done.stdout)  # not corrupted
        assert "hello from import" not in done.stdout + done.stderr
    done = subprocess.run([sys.executable, "-m", "archlint", "check", "net.py", "--debug", "--no-cache",
                           "--format", "json"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert "hello from import" in done.stderr and "to stderr" in done.stderr
    notes = json.loads(done.stdout)["models"][0]["notes"]
    assert any("stdout/stderr" in n for n in notes)


def test_chdir_at_import_changes_nothing_for_archlint(write_model, tmp_path):
    write_model("import os\nos.chdir('/')\n" + textwrap.dedent(NET), "net.py")
    write_model(SMALL, "small.py")
    result = cli("check", "net.py", "small.py", "-o", "report.txt", "--no-cache")
    assert result.exit_code == 1, result.output
    text = (tmp_path / "report.txt").read_text()
    assert "net.py:" in text and "K001" in text and "small.py" in text and "/net.py" not in text
    assert os.getcwd() == str(tmp_path)


def test_check_file_restores_the_working_folder_in_process(write_model, tmp_path):
    from archlint.driver import check_file

    net = write_model("import os\nos.chdir('/')\n" + textwrap.dedent(NET), "net.py")
    check_file(str(net), [], True, Settings())
    assert os.getcwd() == str(tmp_path)


def test_a_failing_import_runs_once(write_model, tmp_path):
    net = write_model("""
        from pathlib import Path
        with open(Path(__file__).with_name("ran.log"), "a") as log:
            log.write("ran\\n")
        import torch
        raise ValueError("boom")
    """, "net.py")
    (model,) = check_paths([str(net)], FAST).models
    assert model.error.kind == "load" and "ValueError" in str(model.error)
    assert (tmp_path / "ran.log").read_text() == "ran\n"


def test_an_import_that_needs_real_weights_still_retries(write_model):
    net = write_model("""
        import torch
        from torch import nn
        model = nn.Sequential(nn.Conv2d(3, 8, 3))
        SCALE = float(model[0].weight.abs().sum())  # needs values: fails on meta
        example_input = torch.randn(1, 3, 8, 8)
    """, "net.py")
    (model,) = check_paths([str(net)], FAST).models
    assert model.error is None


# --- one paragraph, exit 2, no traceback ------------------------------------------------------------

@pytest.mark.parametrize("config, words", [
    ("[tool.archlint]\ninput-shape = [[1, 3, 64], 5]\n", "input-shape"),
    ("[tool.archlint.rules]\nK001 = 7\n", "K001"),
    ("[tool.archlint]\nexclude = 5\n", "exclude"),
    ("[tool]\narchlint = 5\n", "archlint"),
    ("[tool.archlint.rules.K001]\nseverity = \"fatal\"\n", "severity"),
    ("[tool.archlint.rules.K999]\nmin-kernel = 3\n", "K999"),
    ("[tool.archlint]\ntimeout = \"soon\"\n", "timeout"),
])
def test_wrong_config_is_one_error(write_model, tmp_path, config, words):
    (tmp_path / "pyproject.toml").write_text(config)
    write_model(NET, "net.py")
    one_error(cli("check", "net.py", "--no-cache"), words)


def test_unknown_severity_is_caught_when_the_config_is_read():
    with pytest.raises(ConfigError, match="severity"):
        settings_from_table({"rules": {"K001": {"severity": "fatal"}}})


@pytest.mark.parametrize("content", [b"[tool.archlint\nselect = [", bytes(range(256)) * 4])
def test_config_flag_pointing_at_a_bad_file(write_model, tmp_path, content):
    write_model(NET, "net.py")
    (tmp_path / "bad.toml").write_bytes(content)
    one_error(cli("check", "net.py", "--config", "bad.toml"), "bad.toml")
    with pytest.raises(ConfigError):
        load_config_file(tmp_path / "bad.toml")
    one_error(cli("check", "net.py", "--config", "missing.toml"), "missing.toml")


def test_output_into_a_missing_or_read_only_folder_fails_before_linting(write_model, tmp_path, monkeypatch):
    write_model(NET, "net.py")
    import archlint.driver

    def must_not_run(*args, **kwargs):
        raise AssertionError("linted before checking the output")

    monkeypatch.setattr(archlint.driver, "check_paths", must_not_run)
    one_error(cli("check", "net.py", "-o", "no/such/dir/out.json"), "does not exist")
    (tmp_path / "locked").mkdir()
    real_access = os.access
    monkeypatch.setattr(safe_io.os, "access",
                        lambda p, mode: False if str(p).endswith("locked") else real_access(p, mode))
    one_error(cli("check", "net.py", "-o", "locked/out.txt"), "permission")


def test_a_file_name_with_double_colons(write_model):
    path = write_model(NET, "we::ird.py")
    assert split_spec(str(path)) == (str(path), "")
    assert split_spec(f"{path}::Net") == (str(path), "Net")
    result = cli("check", "we::ird.py", "--no-cache")
    assert result.exit_code == 1 and "we::ird.py:7: K001" in result.output, result.output


@pytest.mark.parametrize("entry", [
    {"models": [{"target": 5}], "dependencies": {}},
    {"models": "nope"},
    [1, 2, 3],
    {"models": [], "dependencies": [1], "environ": {}},
])
def test_a_cache_entry_of_the_wrong_shape_is_a_miss(write_model, tmp_path, entry):
    net = write_model(NET, "net.py")
    cache = ResultCache(tmp_path / "c")
    check_paths([str(net)], FAST, use_cache=True, cache=cache)
    (stored,) = (tmp_path / "c").glob("results-v*/*.json")
    stored.write_text(json.dumps(entry))
    again = check_paths([str(net)], FAST, use_cache=True, cache=cache)
    assert [m.from_cache for m in again.models] == [False] and len(again.findings) == 1


def test_a_deeply_nested_sequential(write_model):
    import torch
    from torch import nn

    import archlint

    deep = write_model("""
        import torch
        from torch import nn
        m = nn.Conv2d(3, 3, 3, padding=1)
        for _ in range(150):
            m = nn.Sequential(m)
        example_input = torch.randn(1, 3, 8, 8)
    """, "deep.py")
    (model,) = check_paths([str(deep)], FAST).models
    assert model.error is None, model.error
    m = nn.Conv2d(3, 3, 3, padding=1)
    for _ in range(150):
        m = nn.Sequential(m)
    try:
        archlint.lint(m, torch.randn(1, 3, 8, 8))  # in process: done, or one clear error
    except ArchlintError as exc:
        assert exc.cause == "recursion" and "nested too deeply" in str(exc)


# --- accepted silently before ------------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--select", "--ignore"])
def test_unknown_rule_codes_on_the_command_line(write_model, flag):
    write_model(NET, "net.py")
    one_error(cli("check", "net.py", flag, "K001,Q77", "--no-cache"), "Q77", "archlint rules")


def test_exclude_leaves_out_files_found_in_folders(write_model, tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.archlint]\nexclude = ["legacy", "**/test_*.py"]\n')
    write_model(SMALL, "models/net.py")
    write_model(NET, "models/legacy/old.py")
    write_model(NET, "models/sub/test_net.py")
    settings = load_config_file(tmp_path / "pyproject.toml")
    files = [p for p, _, _ in expand_paths(["models"], exclude=settings.exclude, exclude_root=settings.root)]
    assert files == [os.path.join("models", "net.py")]
    result = cli("check", "models", "--no-cache")
    assert "old.py" not in result.output and "test_net.py" not in result.output


def test_a_folder_without_python_files_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    one_error(cli("check", "empty"), "no Python file")


# --- cache correctness -------------------------------------------------------------------------------

def test_a_config_outside_the_project_is_part_of_the_key(write_model, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    config = shared / "pyproject.toml"
    config.write_text("[tool.archlint.rules.K001]\nmin-kernel = 5\n")
    net = write_model(NET, "project/net.py")
    cache = ResultCache(tmp_path / "c")
    settings = load_config_file(config)
    found = check_paths([str(net)], settings, use_cache=True, cache=cache).findings
    assert [f.code for f in found if f.code == "K001"] == ["K001"]
    config.write_text("[tool.archlint.rules.K001]\nmin-kernel = 5\nseverity = \"error\"\n")
    # The same options parsed, but the file changed: a miss.
    assert cache.key(str(net), [], True, settings) != cache.key(str(net), [], True, load_config_file(config))


def test_environment_variables_the_model_reads_are_part_of_the_entry(write_model, tmp_path, monkeypatch):
    net = write_model("""
        import os
        import torch
        from torch import nn
        KERNEL = int(os.environ.get("NET_KERNEL", "7"))
        model = nn.Sequential(nn.Conv2d(8, 8, KERNEL, padding=KERNEL // 2), nn.ReLU())
        example_input = torch.randn(1, 8, 8, 8)
    """, "net.py")
    cache = ResultCache(tmp_path / "c")
    monkeypatch.setenv("NET_KERNEL", "7")
    assert [f.code for f in check_paths([str(net)], FAST, use_cache=True, cache=cache).findings] == ["K001"]
    assert check_paths([str(net)], FAST, use_cache=True, cache=cache).models[0].from_cache
    monkeypatch.setenv("NET_KERNEL", "3")
    again = check_paths([str(net)], FAST, use_cache=True, cache=cache)
    assert not again.models[0].from_cache and "K001" not in [f.code for f in again.findings]
    stored = next((tmp_path / "c").glob("results-v*/*.json")).read_text()
    assert '"NET_KERNEL"' in stored and '"3"' not in stored  # a hash, not the value


def test_same_named_helpers_in_two_folders_never_mix(write_model, tmp_path):
    for folder, kernel in (("one", 7), ("two", 3)):
        write_model(f"from torch import nn\ndef block():\n    return nn.Conv2d(8, 8, {kernel}, padding={kernel // 2})\n",
                    f"{folder}/helper.py")
        write_model("import torch\nfrom torch import nn\nfrom helper import block\n"
                    "model = nn.Sequential(block(), nn.ReLU())\nexample_input = torch.randn(1, 8, 8, 8)\n",
                    f"{folder}/net.py")
    cache = ResultCache(tmp_path / "c")
    report = check_paths(["one/net.py", "two/net.py"], FAST, use_cache=True, cache=cache)
    assert [[f.code for f in m.findings if f.code == "K001"] for m in report.models] == [["K001"], []]
    # Each file's entry depends on its own helper: changing two/helper.py misses only two/net.py.
    (tmp_path / "two" / "helper.py").write_text("from torch import nn\ndef block():\n    return nn.Conv2d(8, 8, 5, padding=2)\n")
    again = check_paths(["one/net.py", "two/net.py"], FAST, use_cache=True, cache=cache)
    assert [m.from_cache for m in again.models] == [True, False]


# --- output ------------------------------------------------------------------------------------------

def test_sarif_uris_are_percent_encoded(write_model, tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    names = ["dir with spaces/net.py", "ünïcödé/net.py", "a,b/c:d/net.py", "50%/net.py", "new\nline/net.py"]
    for name in names:
        write_model(NET, name)
    result = cli("check", *names, "--format", "sarif", "--no-cache")
    data = json.loads(result.output[result.output.index("{"):])
    jsonschema.validate(data, SCHEMA)
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in data["runs"][0]["results"]}
    assert uris == set(["dir%20with%20spaces/net.py", "%C3%BCn%C3%AFc%C3%B6d%C3%A9/net.py",
                           "a%2Cb/c%3Ad/net.py", "50%25/net.py", "new%0Aline/net.py"])


def test_the_html_report_draws_a_graph_that_crossed_the_process_boundary(write_model):
    from archlint.reports import render

    net = write_model(NET, "net.py")
    (model,) = check_paths([str(net)], FAST).models
    assert type(model.graph.model).__name__ == "Net"
    assert type(model.graph.model.get_submodule("conv")).__name__ == "Conv2d"
    assert all(layer.module is None for layer in model.graph) and model.summary["params"] == 12560
    assert "Conv2d" in render("html", Report(models=[model]))


def test_answers_from_the_child_are_read_without_running_code():
    import pickle

    from archlint import isolation

    class Hostile:
        def __reduce__(self):
            return (eval, ("open('/tmp/owned', 'w')",))

    with pytest.raises(pickle.UnpicklingError):
        isolation.loads(pickle.dumps(Hostile()))
    with pytest.raises(pickle.UnpicklingError):
        isolation.loads(pickle.dumps(os.system))


# --- one driver -------------------------------------------------------------------------------------

def test_the_cli_and_the_api_run_one_driver():
    import archlint
    from archlint import cache, cli as cli_module

    assert archlint.check_paths is check_paths
    assert not hasattr(cache, "run_check")
    assert "driver.check_paths" in Path(cli_module.__file__).read_text()


def test_readme_and_workflow_say_it_plainly():
    root = Path(__file__).resolve().parent.parent
    assert "archlint executes the files it lints" in (root / "README.md").read_text()
    workflow = (root / "docs" / "archlint-workflow.yml").read_text()
    assert "contents: read" in workflow and "pull_request_target" in workflow
    assert "${{ secrets." not in workflow and "persist-credentials: false" in workflow
