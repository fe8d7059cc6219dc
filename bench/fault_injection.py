"""Fault injection: run hostile and broken inputs through the `archlint` CLI and count the
failures that matter most to users: data lost, hangs, tracebacks and false greens.

    python bench/fault_injection.py            # every probe, a line each, then the totals
    python bench/fault_injection.py -k cache   # the probes whose name contains "cache"

Each probe builds a temporary project, runs the CLI in a fresh interpreter (as a user would)
and judges the result:
  data lost    a file the user had was changed or removed (an input, a baseline's other entries,
               the target of a symlink planted in the cache)
  hang         the CLI did not finish within its wall-clock budget
  traceback    a Python traceback reached the user without --debug
  false green  exit status 0 (or a clean-looking report) where something was wrong
A probe passes when it shows none of these and the behaviour it checks (an exit-2 error with
the right kind, findings still present, ...).
"""
from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 150  # seconds per CLI run before it counts as a hang
CHILD_TIMEOUT = 15  # the `timeout` the probes' config sets for the files

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


@dataclass
class Verdict:
    lost: bool = False
    hang: bool = False
    traceback: bool = False
    false_green: bool = False
    other: str = ""  # the expected behaviour missing, said in a few words
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.hang or self.traceback or self.false_green or self.other)


class Project:
    def __init__(self, folder: Path):
        self.folder = folder
        self.verdict = Verdict()
        self.cache_home = folder.parent / "xdg-cache"
        self.cache_home.mkdir(exist_ok=True)
        self.write("pyproject.toml", f"[tool.archlint]\ntimeout = {CHILD_TIMEOUT}\n")

    def write(self, name: str, text: str) -> Path:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    def run(self, *args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess | None:
        environment = {**os.environ, "XDG_CACHE_HOME": str(self.cache_home), "NO_COLOR": "1", **(env or {})}
        environment.pop("ARCHLINT_CACHE_DIR", None)
        started = time.monotonic()
        try:
            done = subprocess.run([sys.executable, "-m", "archlint", *args], cwd=cwd or self.folder,
                                  capture_output=True, text=True, timeout=BUDGET, env=environment)
        except subprocess.TimeoutExpired:
            self.verdict.hang = True
            return None
        finally:
            self.verdict.seconds += time.monotonic() - started
        if "Traceback (most recent call last)" in done.stdout + done.stderr and "--debug" not in args:
            self.verdict.traceback = True
        return done

    def expect(self, condition: bool, what: str) -> None:
        if not condition and not self.verdict.other:
            self.verdict.other = what

    def error_exit(self, done, kind_words: str = "") -> None:
        """The run must end with exit 2 and one `archlint: error:` paragraph."""
        if done is None:
            return
        if done.returncode == 0:
            self.verdict.false_green = True
        self.expect(done.returncode == 2, f"exit {done.returncode}, not 2")
        self.expect("error" in done.stderr + done.stdout, "no error message")
        if kind_words:
            self.expect(kind_words.lower() in (done.stderr + done.stdout).lower(),
                        f"message lacks {kind_words!r}")


PROBES: list[tuple[str, Callable[[Project], None]]] = []


def probe(function: Callable[[Project], None]) -> Callable[[Project], None]:
    PROBES.append((function.__name__, function))
    return function


def _unchanged(p: Project, path: Path, before: bytes) -> None:
    if not path.exists() or path.read_bytes() != before:
        p.verdict.lost = True


# --- data loss and security -------------------------------------------------------------------

def _refuse_overwrite(p: Project, *args: str, victim: str) -> None:
    path = p.folder / victim
    before = path.read_bytes()
    done = p.run(*args)
    _unchanged(p, path, before)
    p.error_exit(done, "refusing")


@probe
def check_o_over_input(p):
    p.write("net.py", NET)
    _refuse_overwrite(p, "check", "net.py", "-o", "net.py", victim="net.py")


@probe
def report_o_over_input(p):
    p.write("net.py", NET)
    _refuse_overwrite(p, "report", "net.py", "-o", "net.py", victim="net.py")


@probe
def diff_o_over_input(p):
    p.write("old.py", NET)
    p.write("new.py", NET.replace("7, padding=3", "3, padding=1"))
    _refuse_overwrite(p, "diff", "old.py", "new.py", "-o", "new.py", victim="new.py")


@probe
def write_baseline_over_py(p):
    p.write("net.py", NET)
    p.write("other.py", SMALL)
    _refuse_overwrite(p, "check", "net.py", "--write-baseline", "--baseline", "other.py", victim="other.py")


@probe
def o_any_python_file(p):
    p.write("net.py", NET)
    done = p.run("check", "net.py", "-o", "new_module.py")
    p.error_exit(done, "Python file")
    p.expect(not (p.folder / "new_module.py").exists(), "wrote a .py file")


@probe
def write_baseline_merges_by_target(p):
    p.write("a.py", NET)
    p.write("b.py", SMALL)
    p.run("check", "a.py", "b.py", "--write-baseline", "--no-cache")
    first = json.loads((p.folder / "archlint-baseline.json").read_text())["findings"]
    # b.py now fails to import: its accepted findings must stay, a.py's are re-accepted.
    p.write("b.py", "import torch\nraise RuntimeError('broken today')\n")
    done = p.run("check", "a.py", "b.py", "--write-baseline", "--no-cache")
    after = json.loads((p.folder / "archlint-baseline.json").read_text())["findings"]
    if {e["target"] for e in first} - {e["target"] for e in after}:
        p.verdict.lost = True
    p.expect(done is not None and "accepted" in done.stderr, "no summary of what changed")
    p.expect(done is not None and done.returncode == 2, "a failed target did not make exit 2")


@probe
def cache_gitignore_symlink(p):
    victim = p.folder.parent / "victim.txt"
    victim.write_text("precious\n")
    p.write("net.py", NET)
    (p.folder / ".archlint_cache").mkdir()
    os.symlink(victim, p.folder / ".archlint_cache" / ".gitignore")
    done = p.run("check", "net.py")
    _unchanged(p, victim, b"precious\n")
    p.expect(done is not None and done.returncode == 1, "findings lost")


@probe
def cache_dir_symlink(p):
    elsewhere = p.folder.parent / "elsewhere"
    elsewhere.mkdir()
    p.write("net.py", NET)
    os.symlink(elsewhere, p.folder / ".archlint_cache")
    done = p.run("check", "net.py")
    p.expect(not any(elsewhere.iterdir()), "wrote through a symlinked cache folder")
    p.expect(done is not None and done.returncode == 1, "findings lost")


@probe
def cache_never_in_shared_tmp(p):
    # No pyproject.toml and no git: the cache goes to the user's cache folder, not beside the file.
    loose = Path(tempfile.mkdtemp(prefix="archlint-loose-"))
    try:
        (loose / "net.py").write_text(textwrap.dedent(NET))
        os.chmod(loose, 0o1777)  # like /tmp
        p.run("check", "net.py", cwd=loose)
        p.expect(not (loose / ".archlint_cache").exists(), "cache written into a world-writable folder")
        p.expect((p.cache_home / "archlint").is_dir(), "no cache in XDG_CACHE_HOME")
    finally:
        os.chmod(loose, 0o700)
        subprocess.run(["rm", "-rf", str(loose)])


# --- false greens and hangs -------------------------------------------------------------------

def _with_good_file(p: Project, bad: str, *args: str) -> subprocess.CompletedProcess | None:
    """Lint a hostile file next to a good one: exit 2, and the good one's finding still shown."""
    p.write("a_good.py", NET)
    p.write("b_bad.py", bad)
    done = p.run("check", "a_good.py", "b_bad.py", "--no-cache", *args)
    if done is not None:
        if done.returncode == 0 or "K001" not in done.stdout:
            p.verdict.false_green = True
    return done


@probe
def os_exit_at_import(p):
    done = _with_good_file(p, "import os\nimport torch\nfrom torch import nn\nos._exit(0)\n"
                              "model = nn.Conv2d(3, 3, 3)\n")
    p.error_exit(done, "exited")


@probe
def thread_at_import(p):
    done = _with_good_file(p, """
        import threading, time
        import torch
        from torch import nn
        threading.Thread(target=lambda: time.sleep(10**6)).start()
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    """)
    p.expect(done is not None and done.returncode == 1, "a clean file with a thread did not finish normally")


@probe
def hang_in_forward(p):
    done = _with_good_file(p, """
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
    """)
    p.error_exit(done, "timeout")


@probe
def memory_bomb(p):
    p.write("pyproject.toml", f"[tool.archlint]\ntimeout = {CHILD_TIMEOUT}\nmemory-limit = 400\n")
    done = _with_good_file(p, """
        import torch
        from torch import nn
        hog = []
        for _ in range(200):
            hog.append(bytearray(50 * 2**20))
        model = nn.Conv2d(3, 3, 3)
    """)
    p.error_exit(done, "memory")


def _prints(fmt: str, parse: Callable[[str], object]) -> Callable[[Project], None]:
    def run(p: Project) -> None:
        p.write("net.py", "print('hello from import')\nimport sys\nprint('err', file=sys.stderr)\n" + textwrap.dedent(NET))
        done = p.run("check", "net.py", "--format", fmt, "--no-cache")
        try:
            parse(done.stdout)
        except Exception:
            p.expect(False, f"{fmt} on stdout does not parse")
        p.expect(done is not None and "hello from import" not in done.stdout, "user output on stdout")
    return run


PROBES.append(("stdout_print_json", _prints("json", json.loads)))
PROBES.append(("stdout_print_sarif", _prints("sarif", json.loads)))


@probe
def chdir_at_import(p):
    p.write("net.py", "import os\nos.chdir('/')\n" + textwrap.dedent(NET))
    done = p.run("check", "net.py", "-o", "report.txt", "--no-cache")
    p.expect((p.folder / "report.txt").is_file(), "-o landed elsewhere")
    p.expect(done is not None and done.returncode == 1, "findings lost")


@probe
def failing_import_runs_once(p):
    p.write("net.py", """
        from pathlib import Path
        with open(Path(__file__).with_name("ran.log"), "a") as log:
            log.write("ran\\n")
        import torch
        from torch import nn
        model = nn.Conv2d(3, 3, 3)
        raise ValueError("boom")
    """)
    done = p.run("check", "net.py", "--no-cache")
    p.error_exit(done, "ValueError")
    runs = (p.folder / "ran.log").read_text().count("ran") if (p.folder / "ran.log").exists() else 0
    p.expect(runs == 1, f"the module ran {runs} times")


# --- one-paragraph errors ---------------------------------------------------------------------

def _config(body: str, words: str = "") -> Callable[[Project], None]:
    def run(p: Project) -> None:
        p.write("pyproject.toml", body)
        p.write("net.py", NET)
        p.error_exit(p.run("check", "net.py"), words)
    return run


for _name, _body, _words in [
    ("config_nested_input_shape", "[tool.archlint]\ninput-shape = [[1, 3, 64], 5]\n", "input-shape"),
    ("config_rule_not_a_table", "[tool.archlint.rules]\nK001 = 7\n", "K001"),
    ("config_exclude_not_a_list", "[tool.archlint]\nexclude = 5\n", "exclude"),
    ("config_archlint_not_a_table", "[tool]\narchlint = 5\n", "archlint"),
    ("config_unknown_severity", "[tool.archlint.rules.K001]\nseverity = \"fatal\"\n", "severity"),
    ("config_unknown_rule_table", "[tool.archlint.rules.K999]\nmin-kernel = 3\n", "K999"),
]:
    PROBES.append((_name, _config(_body, _words)))


@probe
def config_flag_invalid_toml(p):
    p.write("net.py", NET)
    p.write("bad.toml", "[tool.archlint\nselect = [")
    p.error_exit(p.run("check", "net.py", "--config", "bad.toml"), "TOML")


@probe
def config_flag_binary(p):
    p.write("net.py", NET)
    (p.folder / "blob.bin").write_bytes(bytes(range(256)) * 4)
    p.error_exit(p.run("check", "net.py", "--config", "blob.bin"), "blob.bin")


@probe
def o_missing_folder_fails_fast(p):
    p.write("net.py", NET)
    started = time.monotonic()
    done = p.run("check", "net.py", "-o", "no/such/dir/out.json", "--no-cache")
    p.error_exit(done, "does not exist")
    p.expect(time.monotonic() - started < 8, "checked only after linting")


@probe
def o_read_only_folder(p):
    p.write("net.py", NET)
    locked = p.folder / "locked"
    locked.mkdir()
    os.chmod(locked, stat.S_IRUSR | stat.S_IXUSR)
    try:
        target = "locked/out.txt"
        if os.access(locked, os.W_OK):  # root ignores modes; /proc/self is read-only even for root
            target = "/proc/self/archlint-out.txt"
            p.verdict.notes.append("as root: into /proc/self")
        p.error_exit(p.run("check", "net.py", "-o", target, "--no-cache"), "permission")
    finally:
        os.chmod(locked, 0o700)


@probe
def filename_with_double_colon(p):
    p.write("we::ird.py", NET)
    done = p.run("check", "we::ird.py", "--no-cache")
    p.expect(done is not None and done.returncode == 1 and "K001" in done.stdout, "file not linted")


@probe
def cache_entry_wrong_shape(p):
    p.write("net.py", NET)
    p.run("check", "net.py")
    for entry in (p.folder / ".archlint_cache").glob("results-v*/*.json"):
        entry.write_text(json.dumps({"models": [{"target": 5}], "dependencies": {}}))
    done = p.run("check", "net.py")
    p.expect(done is not None and done.returncode == 1 and "K001" in done.stdout, "bad entry not a miss")


@probe
def deep_sequential(p):
    p.write("deep.py", """
        import torch
        from torch import nn
        m = nn.Conv2d(3, 3, 3, padding=1)
        for _ in range(150):
            m = nn.Sequential(m)
        model = m
        example_input = torch.randn(1, 3, 8, 8)
    """)
    done = p.run("check", "deep.py", "--no-cache")
    p.expect(done is not None and done.returncode in (0, 1, 2), "no result")
    if done is not None and done.returncode == 2:
        p.expect("nested" in done.stderr or "deep" in done.stderr, "unclear recursion error")


# --- accepted silently before -------------------------------------------------------------------

@probe
def select_unknown_code(p):
    p.write("net.py", NET)
    p.error_exit(p.run("check", "net.py", "--select", "K999"), "archlint rules")


@probe
def ignore_unknown_code(p):
    p.write("net.py", NET)
    p.error_exit(p.run("check", "net.py", "--ignore", "Z1"), "archlint rules")


@probe
def exclude_works(p):
    p.write("pyproject.toml", f"[tool.archlint]\ntimeout = {CHILD_TIMEOUT}\nexclude = [\"legacy\"]\n")
    p.write("models/net.py", SMALL.replace("7, padding=3", "3, padding=1"))
    p.write("models/legacy/old.py", NET)
    done = p.run("check", "models", "--no-cache")
    p.expect(done is not None and "old.py" not in done.stdout + done.stderr, "excluded file linted")


@probe
def folder_without_python(p):
    (p.folder / "empty").mkdir()
    (p.folder / "empty" / "notes.txt").write_text("nothing here")
    p.error_exit(p.run("check", "empty"), "no Python file")


# --- cache correctness ------------------------------------------------------------------------

@probe
def cache_outside_config_changes(p):
    shared = p.folder.parent / "shared-config"
    shared.mkdir(exist_ok=True)
    config = shared / "pyproject.toml"
    config.write_text("[tool.archlint.rules.K001]\nmin-kernel = 5\n")
    p.write("net.py", NET)
    first = p.run("check", "net.py", "--config", str(config))
    config.write_text("[tool.archlint.rules.K001]\nmin-kernel = 9\n")
    second = p.run("check", "net.py", "--config", str(config))
    p.expect(first is not None and first.returncode == 1, "first run found nothing")
    if second is not None and second.returncode != 0:
        p.verdict.other = "stale cache answered after the config changed"


@probe
def cache_environment_variable(p):
    p.write("net.py", """
        import os
        import torch
        from torch import nn
        KERNEL = int(os.environ.get("NET_KERNEL", "7"))
        model = nn.Sequential(nn.Conv2d(8, 8, KERNEL, padding=KERNEL // 2), nn.ReLU())
        example_input = torch.randn(1, 8, 8, 8)
    """)
    first = p.run("check", "net.py", env={"NET_KERNEL": "7"})
    second = p.run("check", "net.py", env={"NET_KERNEL": "3"})
    p.expect(first is not None and first.returncode == 1, "first run found nothing")
    p.expect(second is not None and second.returncode == 0, "stale cache answered after the variable changed")


@probe
def same_named_helpers(p):
    p.write("one/helper.py", "from torch import nn\ndef block():\n    return nn.Conv2d(8, 8, 7, padding=3)\n")
    p.write("two/helper.py", "from torch import nn\ndef block():\n    return nn.Conv2d(8, 8, 3, padding=1)\n")
    for folder in ("one", "two"):
        p.write(f"{folder}/net.py", "import torch\nfrom torch import nn\nfrom helper import block\n"
                                    "model = nn.Sequential(block(), nn.ReLU())\n"
                                    "example_input = torch.randn(1, 8, 8, 8)\n")
    done = p.run("check", "one/net.py", "two/net.py", "--no-cache", "--format", "json")
    try:
        models = json.loads(done.stdout)["models"]
        counts = {m["target"].split("/")[0]: sum(f["code"] == "K001" for f in m["findings"])
                  for m in models}
    except Exception:
        counts = {}
    p.expect(counts.get("one") == 1 and counts.get("two") == 0, f"helpers mixed: {counts}")


# --- output -----------------------------------------------------------------------------------

@probe
def sarif_uris_percent_encoded(p):
    import jsonschema

    schema = json.loads((ROOT / "tests" / "data" / "sarif-schema-2.1.0.json").read_text())
    subprocess.run(["git", "init", "-q", str(p.folder)], check=True)
    name = "dir with spaces/ünï,cödé:50%\nline.py"
    p.write(name, NET)
    done = p.run("check", name, "--format", "sarif", "--no-cache")
    try:
        data = json.loads(done.stdout)
        jsonschema.validate(data, schema)
        uris = [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in data["runs"][0]["results"]]
    except Exception as exc:
        p.expect(False, f"invalid SARIF ({type(exc).__name__})")
        return
    p.expect(bool(uris) and all(" " not in u and "\n" not in u and "%25" in u for u in uris), f"URIs not encoded: {uris}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-k", default="", help="run only probes whose name contains this")
    args = parser.parse_args()
    chosen = [(n, f) for n, f in PROBES if args.k in n]
    totals = {"lost": 0, "hang": 0, "traceback": 0, "false_green": 0, "failed": 0}
    for name, function in chosen:
        with tempfile.TemporaryDirectory(prefix="archlint-fault-") as tmp:
            folder = Path(tmp) / "project"
            folder.mkdir()
            project = Project(folder)
            try:
                function(project)
            except Exception as exc:  # a broken probe is a failed probe, never a silent pass
                project.verdict.other = f"probe crashed: {type(exc).__name__}: {exc}"
            v = project.verdict
            for key in ("lost", "hang", "traceback", "false_green"):
                totals[key] += getattr(v, key)
            totals["failed"] += not v.ok
            flags = [k for k in ("lost", "hang", "traceback", "false_green") if getattr(v, k)]
            status = "ok  " if v.ok else "FAIL"
            detail = ", ".join(flags + ([v.other] if v.other else []) + v.notes)
            print(f"{status} {name:<34} {v.seconds:6.1f} s  {detail}", flush=True)
    print(f"probes tried {len(chosen)}, passed {len(chosen) - totals['failed']}, "
          f"data lost {totals['lost']}, hangs {totals['hang']}, tracebacks {totals['traceback']}, "
          f"false greens {totals['false_green']}")
    return 0 if totals["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
