"""The warm worker (archlint/worker/): runs through it print exactly what runs in one process
print, never see a stale user module, and a stale, dead or silent worker is replaced, never
trusted. Every worker these tests start lives in a private folder and is stopped at the end.

conftest.py sets ARCHLINT_NO_WORKER for the rest of the suite; the runs here drop it.
"""
from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from archlint.cli import main
from archlint.worker import client

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the worker needs Linux")

BIAS_MODEL = """
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias={bias}), nn.BatchNorm2d(8), nn.ReLU())
    example_input = torch.randn(1, 3, 16, 16)
"""

HELPER_MODEL = """
    import torch
    from torch import nn

    from blocks import block

    model = nn.Sequential(block(), nn.ReLU())
    example_input = torch.randn(1, 3, 16, 16)
"""

BLOCKS = """
    from torch import nn

    def block():
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias={bias}), nn.BatchNorm2d(8))
"""

BROKEN = """
    import torch
    from torch import nn

    raise RuntimeError("this model file is broken on purpose")
"""

SLOW = """
    import os
    import time

    import torch
    from torch import nn

    with open(os.environ["ARCHLINT_TEST_PID_FILE"], "w") as f:
        f.write(str(os.getpid()))
    time.sleep(float(os.environ.get("ARCHLINT_TEST_SLEEP", "120")))
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=True), nn.BatchNorm2d(8), nn.ReLU())
    example_input = torch.randn(1, 3, 16, 16)
"""


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
    return path


def _alive(pid: int) -> bool:
    return client._alive(pid)  # the client's own test: a zombie is not alive


def wait_for(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Workers:
    """A private worker folder and the environment that points archlint at it."""

    def __init__(self, folder: str):
        self.folder = folder
        env = dict(os.environ)
        for name in ("ARCHLINT_NO_WORKER", "CI", "FORCE_COLOR", "ARCHLINT_WORKER_FIRST_RUN"):
            env.pop(name, None)
        # The results cache too goes into the private folder, never into the checkout.
        env.update(ARCHLINT_WORKER_DIR=folder, NO_COLOR="1", ARCHLINT_CACHE_DIR=os.path.join(folder, "cache"))
        self.env = env

    def run(self, *args, cwd, here: bool = False, extra: dict | None = None, timeout: float = 300):
        """`python -m archlint ARGS` through the worker, or in its own process (`here`)."""
        env = dict(self.env, **(extra or {}))
        if here:
            env["ARCHLINT_NO_WORKER"] = "1"
        return subprocess.run([sys.executable, "-m", "archlint", *map(str, args)], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)

    def status(self) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "archlint", "worker", "status"], cwd=self.folder,
                              env=self.env, capture_output=True, text=True, timeout=120)

    def served(self) -> int:
        """Requests served by this environment's worker (0 when there is none)."""
        match = re.search(r"\(this environment\).*?(\d+) requests served", self.status().stdout)
        return int(match.group(1)) if match else 0

    def files(self, suffix: str) -> list[str]:
        return sorted(p for p in os.listdir(self.folder) if p.endswith(suffix))

    def lock_pids(self) -> list[int]:
        pids = []
        for name in self.files(".lock"):
            try:
                pids.append(int(Path(self.folder, name).read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                continue
        return pids

    def log(self) -> str:
        return "".join(Path(self.folder, n).read_text(errors="replace") for n in self.files(".log"))

    def socket_path(self) -> str:
        code = "from archlint.worker import environment; print(environment.identity().socket_path)"
        done = subprocess.run([sys.executable, "-c", code], cwd=self.folder, env=self.env,
                              capture_output=True, text=True, timeout=60, check=True)
        return done.stdout.strip()


@contextlib.contextmanager
def private_workers():
    # Short on purpose: a Unix socket's path must fit in 108 bytes.
    folder = tempfile.mkdtemp(prefix="alw-", dir="/tmp")
    workers = Workers(folder)
    try:
        yield workers
    finally:
        subprocess.run([sys.executable, "-m", "archlint", "worker", "stop", "--all"], cwd=folder,
                       env=workers.env, capture_output=True, timeout=120)
        for pid in workers.lock_pids():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def shared():
    with private_workers() as workers:
        yield workers


@pytest.fixture
def workers():
    with private_workers() as workers:
        yield workers


def same_run(a: subprocess.CompletedProcess, b: subprocess.CompletedProcess) -> None:
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)


# --- the same bytes -------------------------------------------------------------------------

@pytest.mark.parametrize("example", ["small_cnn.py", "dcgan_generator.py", "conv_vae.py"])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_run_through_the_worker_prints_what_a_run_here_prints(shared, tmp_path, example, fmt):
    before = shared.served()
    through = shared.run("check", EXAMPLES / example, "--no-cache", "--format", fmt, cwd=ROOT)
    assert shared.served() == before + 1  # it really went through the worker
    here = shared.run("check", EXAMPLES / example, "--no-cache", "--format", fmt, cwd=ROOT, here=True)
    same_run(through, here)
    assert through.returncode in (0, 1) and through.stdout


@pytest.mark.parametrize("args", [["broken.py"], ["broken.py", "--format", "json"], ["nowhere.py"],
                                  ["good.py::Missing"], ["good.py", "--select", "Z999"]])
def test_errors_through_the_worker_are_the_same_errors(shared, tmp_path, args):
    write(tmp_path, "broken.py", BROKEN)
    write(tmp_path, "good.py", BIAS_MODEL.format(bias=True))
    through = shared.run("check", *args, cwd=tmp_path)
    here = shared.run("check", *args, cwd=tmp_path, here=True)
    same_run(through, here)
    assert through.returncode == 2


def test_cached_runs_stay_here_and_the_report_command_is_the_same(shared, tmp_path):
    write(tmp_path, "net.py", BIAS_MODEL.format(bias=True))
    before = shared.served()
    first = shared.run("check", "net.py", cwd=tmp_path)  # lints (through the worker), fills the cache
    assert shared.served() == before + 1
    cached = shared.run("check", "net.py", cwd=tmp_path)
    assert shared.served() == before + 1  # nothing to lint: answered here, from the cache
    same_run(first, cached)
    report = shared.run("report", "net.py", "-o", "page.html", cwd=tmp_path)
    assert report.stdout.strip() == str(tmp_path / "page.html") and (tmp_path / "page.html").is_file()
    same_run(report, shared.run("report", "net.py", "-o", "page.html", cwd=tmp_path, here=True))


def test_colour_follows_the_clients_terminal(shared, tmp_path):
    write(tmp_path, "net.py", BIAS_MODEL.format(bias=True))

    def on_a_terminal(here: bool) -> bytes:
        env = dict(shared.env)
        env.pop("NO_COLOR", None)
        if here:
            env["ARCHLINT_NO_WORKER"] = "1"
        leader, follower = pty.openpty()
        process = subprocess.Popen([sys.executable, "-m", "archlint", "check", "net.py", "--no-cache"],
                                   cwd=tmp_path, env=env, stdin=follower, stdout=follower, stderr=follower)
        os.close(follower)
        output = b""
        while True:
            ready, _, _ = select.select([leader], [], [], 120)
            if not ready:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not chunk:
                break
            output += chunk
        process.wait(timeout=120)
        os.close(leader)
        return output

    through = on_a_terminal(here=False)
    assert b"\x1b[" in through  # a terminal: colour on
    assert through == on_a_terminal(here=True)


def test_pre_commit_runs_through_the_worker_and_is_not_held_up_by_it(shared, tmp_path):
    """pre-commit waits until every holder of the hook's output pipes has closed them: the
    worker (started by the hook) must hold none of them."""
    pytest.importorskip("pre_commit")
    repo = tmp_path / "repo"
    write(repo, "net.py", BIAS_MODEL.format(bias=True))
    entry = f"{sys.executable} -m archlint check --skip-no-model"
    write(repo, ".pre-commit-config.yaml", f"""
        repos:
          - repo: local
            hooks:
              - id: archlint
                name: archlint
                entry: {entry}
                language: system
                types: [python]
                require_serial: true
    """)
    env = dict(shared.env, PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"),
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com")
    subprocess.run(["git", "init", "-q"], cwd=repo, env=env, check=True)
    subprocess.run(["git", "add", "."], cwd=repo, env=env, check=True)
    before = shared.served()
    done = subprocess.run([sys.executable, "-m", "pre_commit", "run", "--files", "net.py"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "N002" in done.stdout, done.stdout + done.stderr
    assert shared.served() == before + 1


# --- never a stale user module --------------------------------------------------------------

@pytest.mark.parametrize("cache", [True, False])
def test_an_edited_model_file_is_seen_by_the_next_run(shared, tmp_path, cache):
    flags = [] if cache else ["--no-cache"]
    net = write(tmp_path, "net.py", BIAS_MODEL.format(bias=True))
    before = shared.served()
    assert "N002" in shared.run("check", net, "--select", "N002", *flags, cwd=tmp_path).stdout
    write(tmp_path, "net.py", BIAS_MODEL.format(bias=False))
    after = shared.run("check", net, "--select", "N002", *flags, cwd=tmp_path)
    assert "N002" not in after.stdout and after.returncode == 0
    assert shared.served() == before + 2


def test_an_edited_helper_module_is_seen_by_the_next_run(shared, tmp_path):
    write(tmp_path, "blocks.py", BLOCKS.format(bias=True))
    net = write(tmp_path, "net.py", HELPER_MODEL)
    assert "N002" in shared.run("check", net, "--select", "N002", cwd=tmp_path).stdout
    write(tmp_path, "blocks.py", BLOCKS.format(bias=False))
    assert "N002" not in shared.run("check", net, "--select", "N002", cwd=tmp_path).stdout
    learned = Path(shared.folder).glob("*.packages")
    assert not any("blocks" in p.read_text().split() for p in learned)  # never imported ahead


def test_a_package_models_import_is_learned_and_imported_ahead(shared, tmp_path):
    write(tmp_path, "net.py", "import six\n" + textwrap.dedent(BIAS_MODEL))
    shared.run("check", "net.py", "--no-cache", cwd=tmp_path)
    learned = [p.read_text().split() for p in Path(shared.folder).glob("*.packages")]
    assert any("six" in names for names in learned)
    wait_for(lambda: re.search(r"imported ahead: .*six", shared.status().stdout), what="six imported ahead")


@pytest.mark.parametrize("name", ["jinja2", "timm"])
def test_a_local_module_named_like_a_package_imported_ahead_is_the_one_used(shared, tmp_path, name):
    """A project's own timm.py (or jinja2.py): in one process the model imports it; the worker,
    which has the installed one imported (timm ahead, jinja2 for the HTML renderer), must not
    serve that run."""
    pytest.importorskip(name)
    if name == "timm":
        wait_for(lambda: re.search(r"imported ahead: .*timm", shared.status().stdout), what="timm imported ahead")
    write(tmp_path, f"{name}.py", """
        from torch import nn

        def create_model():
            return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=True), nn.BatchNorm2d(8), nn.ReLU())
    """)
    write(tmp_path, "net.py", f"""
        import {name}
        import torch

        model = {name}.create_model()
        example_input = torch.randn(1, 3, 16, 16)
    """)
    through = shared.run("check", "net.py", "--no-cache", cwd=tmp_path)
    same_run(through, shared.run("check", "net.py", "--no-cache", cwd=tmp_path, here=True))
    assert "N002" in through.stdout  # the local model
    assert f"{name}.py would be imported as '{name}'" in shared.log()


# --- Ctrl-C ----------------------------------------------------------------------------------

@pytest.mark.parametrize("here", [False, True])
def test_ctrl_c_stops_the_run_and_its_children(shared, tmp_path, here):
    write(tmp_path, "slow.py", SLOW)
    pid_file = tmp_path / "pid"
    env = dict(shared.env, ARCHLINT_TEST_PID_FILE=str(pid_file))
    if here:
        env["ARCHLINT_NO_WORKER"] = "1"
    shared.run("check", EXAMPLES / "small_cnn.py", "--no-cache", cwd=ROOT)  # a worker is up
    process = subprocess.Popen([sys.executable, "-m", "archlint", "check", "slow.py", "--no-cache"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), what="the model file to be imported")
        model_pid = int(pid_file.read_text())
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1 and "Aborted!" in err and out == ""
    wait_for(lambda: not _alive(model_pid), timeout=30, what="the model's process to end")
    if not here:
        assert "0 running" in shared.status().stdout


# --- stale, dead and silent workers -----------------------------------------------------------

FAKE_WORKER = r"""
import fcntl, json, os, socket, struct, sys, time
path, lock, mode = sys.argv[1], sys.argv[2], sys.argv[3]
fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, f"{os.getpid()}\n".encode())
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
server.listen(4)
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    if mode == "silent":
        time.sleep(3600)
    size = struct.unpack("!I", conn.recv(4, socket.MSG_WAITALL))[0]
    data, fds, _, _ = socket.recv_fds(conn, size, 8, socket.MSG_WAITALL)
    for f in fds:
        os.close(f)
    message = json.loads(data)
    if message.get("op") == "stop":
        reply = json.dumps({"stopping": True, "pid": os.getpid()}).encode()
        conn.sendall(struct.pack("!I", len(reply)) + reply)
        os.unlink(path)
        sys.exit(0)
    if message.get("op") == "status":  # built from other archlint files than the client's
        reply = json.dumps({"pid": os.getpid(), "key": "0" * 64, "code_key": "0" * 64}).encode()
        conn.sendall(struct.pack("!I", len(reply)) + reply)
        conn.close()
        continue
    reply = json.dumps({"accepted": True, "key": "0" * 64, "pid": os.getpid(), "child": 1}).encode()
    conn.sendall(struct.pack("!I", len(reply)) + reply)
    conn.close()
"""


def fake_worker(workers: Workers, mode: str, path: str | None = None) -> subprocess.Popen:
    path = path or workers.socket_path()
    lock = path[:-len(".sock")] + ".lock"
    # The client kills only a process whose command line says it is archlint's worker.
    process = subprocess.Popen([sys.executable, "-c", FAKE_WORKER, path, lock, mode, "archlint.worker.server"],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    return process


def test_a_worker_answering_with_another_key_is_stopped_and_replaced(workers, tmp_path):
    write(tmp_path, "net.py", BIAS_MODEL.format(bias=True))
    fake = fake_worker(workers, "wrong-key")
    try:
        through = workers.run("check", "net.py", "--no-cache", cwd=tmp_path)
        assert fake.wait(timeout=30) == 0  # asked to stop
    finally:
        fake.kill()
    same_run(through, workers.run("check", "net.py", "--no-cache", cwd=tmp_path, here=True))
    assert "N002" in through.stdout
    assert workers.served() == 1  # a real worker took its place


def test_a_worker_that_does_not_answer_is_killed_and_replaced(workers, tmp_path):
    write(tmp_path, "net.py", BIAS_MODEL.format(bias=True))
    fake = fake_worker(workers, "silent")
    try:
        through = workers.run("check", "net.py", "--no-cache", cwd=tmp_path, extra={"ARCHLINT_WORKER_TIMEOUT": "2"})
        assert fake.wait(timeout=30) == -signal.SIGKILL
    finally:
        fake.kill()
    same_run(through, workers.run("check", "net.py", "--no-cache", cwd=tmp_path, here=True))
    assert workers.served() == 1  # a real worker took its place


def test_a_worker_of_other_archlint_files_is_stopped_when_a_new_one_starts(workers, tmp_path):
    """Same interpreter, another key: after an upgrade or an edit of archlint itself, no run will
    fit the old worker again."""
    write(tmp_path, "net.py", BIAS_MODEL.format(bias=True))
    ours = workers.socket_path()
    kin = os.path.join(os.path.dirname(ours), os.path.basename(ours).split("-")[0] + "-" + "0" * 16 + ".sock")
    fake = fake_worker(workers, "stale-kin", path=kin)
    try:
        workers.run("check", "net.py", "--no-cache", cwd=tmp_path)
        assert fake.wait(timeout=30) == 0  # asked to stop
    finally:
        fake.kill()
    assert workers.served() == 1


def test_a_worker_whose_imports_read_another_environment_is_replaced(workers, tmp_path):
    """XDG_CACHE_HOME is read while torch is imported, and is not part of the key: a run with
    another value must not be served by that worker, but by a new one."""
    write(tmp_path, "net.py", BIAS_MODEL.format(bias=True))
    workers.run("check", "net.py", "--no-cache", cwd=tmp_path, extra={"XDG_CACHE_HOME": str(tmp_path / "a")})
    [first] = workers.lock_pids()
    other = {"XDG_CACHE_HOME": str(tmp_path / "b")}
    through = workers.run("check", "net.py", "--no-cache", cwd=tmp_path, extra=other)
    same_run(through, workers.run("check", "net.py", "--no-cache", cwd=tmp_path, here=True, extra=other))
    [second] = workers.lock_pids()
    assert second != first and not _alive(first)


def test_a_dead_workers_socket_is_replaced(workers, tmp_path):
    write(tmp_path, "net.py", BIAS_MODEL.format(bias=True))
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(workers.socket_path())
    dead.close()  # the file stays, nobody listens
    through = workers.run("check", "net.py", "--no-cache", cwd=tmp_path)
    same_run(through, workers.run("check", "net.py", "--no-cache", cwd=tmp_path, here=True))
    assert workers.served() == 1  # a new worker took the dead one's place and served the run


def test_a_worker_killed_mid_run_leaves_the_run_to_finish_here(workers, tmp_path):
    write(tmp_path, "slow.py", SLOW)
    pid_file = tmp_path / "pid"
    extra = {"ARCHLINT_TEST_PID_FILE": str(pid_file), "ARCHLINT_TEST_SLEEP": "3"}
    workers.run("check", EXAMPLES / "small_cnn.py", "--no-cache", cwd=ROOT)  # a worker is up
    [worker_pid] = workers.lock_pids()
    env = dict(workers.env, **extra)
    process = subprocess.Popen([sys.executable, "-m", "archlint", "check", "slow.py", "--no-cache"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: pid_file.exists(), what="the model file to be imported")
        os.kill(worker_pid, signal.SIGKILL)
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    here = workers.run("check", "slow.py", "--no-cache", cwd=tmp_path, here=True, extra=extra)
    assert (process.returncode, out, err) == (here.returncode, here.stdout, here.stderr)
    assert "N002" in out


# --- starting, opting out, status, stop, idle ----------------------------------------------

def test_nothing_to_lint_starts_no_worker(workers, tmp_path):
    write(tmp_path, "util.py", "import json\n\ndef load(p):\n    return json.load(open(p))\n")
    write(tmp_path, "net.py", BIAS_MODEL.format(bias=True))
    assert workers.run("check", "--skip-no-model", "util.py", cwd=tmp_path).returncode == 0
    workers.run("check", "net.py", cwd=tmp_path, here=True)  # fills the cache
    cached = workers.run("check", "net.py", cwd=tmp_path)
    assert cached.returncode == 1 and "N002" in cached.stdout
    assert workers.files(".sock") == [] and workers.files(".lock") == []


@pytest.mark.parametrize("how", ["flag", "env", "config", "ci"])
def test_opting_out_runs_here_and_starts_nothing(workers, tmp_path, how):
    write(tmp_path, "net.py", BIAS_MODEL.format(bias=True))
    args, extra = ["check", "net.py", "--no-cache"], {}
    if how == "flag":
        args.append("--no-worker")
    elif how == "env":
        extra["ARCHLINT_NO_WORKER"] = "1"
    elif how == "config":
        (tmp_path / "pyproject.toml").write_text("[tool.archlint]\nworker = false\n")
    else:
        extra["CI"] = "true"
    done = workers.run(*args, cwd=tmp_path, extra=extra)
    assert done.returncode == 1 and "N002" in done.stdout
    assert workers.files(".sock") == [] and workers.files(".lock") == []


def test_status_and_stop(workers, tmp_path):
    assert workers.status().returncode == 1  # none yet
    write(tmp_path, "net.py", BIAS_MODEL.format(bias=True))
    workers.run("check", "net.py", "--no-cache", cwd=tmp_path)
    status = workers.status()
    assert status.returncode == 0, status.stdout
    [pid] = workers.lock_pids()
    assert re.search(rf"worker {pid} \(this environment\): up \d+s, idle \d+s of 15m00s, 1 requests served, "
                     r"0 running", status.stdout), status.stdout
    assert "key " in status.stdout and "imported ahead: torch" in status.stdout
    stop = subprocess.run([sys.executable, "-m", "archlint", "worker", "stop"], cwd=tmp_path, env=workers.env,
                          capture_output=True, text=True, timeout=120)
    assert stop.stdout.strip() == f"archlint: stopped worker {pid}"
    wait_for(lambda: not _alive(pid), timeout=30, what="the worker to exit")
    assert workers.files(".sock") == [] and workers.status().returncode == 1


def test_the_worker_exits_after_its_idle_time(workers, tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.archlint]\nworker-idle = 2\n")
    write(tmp_path, "net.py", BIAS_MODEL.format(bias=True))
    workers.run("check", "net.py", "--no-cache", cwd=tmp_path)
    [pid] = workers.lock_pids()
    wait_for(lambda: not _alive(pid), timeout=120, what="the worker to exit when idle")
    assert workers.files(".sock") == []
    assert "exited (idle for 2 s) after 1 requests" in workers.log()


def test_a_folder_open_to_others_is_refused(tmp_path):
    folder = tempfile.mkdtemp(prefix="alw-", dir="/tmp")
    try:
        os.chmod(folder, 0o755)
        env = dict(Workers(folder).env)
        done = subprocess.run([sys.executable, "-m", "archlint", "worker", "status"], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=60)
        assert "is open to other users" in done.stdout and done.returncode == 1
        write(tmp_path, "net.py", BIAS_MODEL.format(bias=True))
        run = subprocess.run([sys.executable, "-m", "archlint", "check", "net.py", "--no-cache"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 1 and "N002" in run.stdout and os.listdir(folder) == []
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("table, message", [("worker = 'yes'", "worker must be true or false"),
                                            ("worker-idle = 0", "worker-idle must be a positive number")])
def test_worker_settings_are_checked(tmp_path, monkeypatch, table, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(f"[tool.archlint]\n{table}\n")
    write(tmp_path, "net.py", BIAS_MODEL.format(bias=True))
    result = CliRunner().invoke(main, ["check", "net.py", "--no-cache"])
    assert result.exit_code == 2 and message in result.output
