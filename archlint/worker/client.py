"""The client side: hand this run to a warm worker if one fits, start one when the run has to
lint, and `archlint worker status|stop`. torch-free, and it never makes a run fail: whatever
goes wrong with a worker, the run goes on in this process.

A run starts here. Files answered from the cache (or skipped from their syntax) never need the
worker: a run with nothing to lint ends here, as fast as without a worker (a round trip to the
worker costs more than reading the cache). At the first file that must be linted, before torch
is imported (`first_lint_hook`), the whole command line goes to this environment's worker,
which runs it from the start; if no worker is up, the run starts one and waits for it. Waiting
beats linting here while the worker starts beside it: the worker answers as soon as torch and
archlint's pipeline are imported (the optional packages come after the first request), so the
wait costs what importing torch here would, without a second torch import competing for the
same cores (bench/bench_worker.py measures both; ARCHLINT_WORKER_FIRST_RUN=here selects the
other way for that comparison).
"""
from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import signal
import socket
import stat
import sys
import time
from typing import Callable

from . import environment, preload, protocol
from .environment import Identity, Unavailable

# A worker answers at once, or after one package import at most. ARCHLINT_WORKER_TIMEOUT
# shortens the wait (the tests of a worker that never answers use it).
ACCEPT_TIMEOUT = float(os.environ.get("ARCHLINT_WORKER_TIMEOUT") or 15.0)
START_TIMEOUT = 120.0  # importing torch on a loaded machine
CANCEL_GRACE = 10.0  # after Ctrl-C: how long the child may take to stop (the worker kills it at 5 s)
_BOOT = ("import json, sys; config = json.loads(sys.argv[1]); sys.path[:] = config['path']; "
         "from archlint.worker.server import main; main(config)")


class Served(SystemExit):
    """The worker ran the whole command; `code` is its exit status. Raised through the CLI so
    that nothing else runs here."""


# --- inside the worker's child ------------------------------------------------------------

_in_worker = False
_warm_output: tuple[bytes, bytes] = (b"", b"")


def in_worker(warm_output: tuple[bytes, bytes]) -> None:
    """Called in the worker's child: never hand this run to a worker again; show what the
    worker's own warm-up printed where a run in one process would have printed it."""
    global _in_worker, _warm_output
    _in_worker = True
    _warm_output = warm_output


def _replay_warm_output() -> None:
    global _warm_output
    out, err = _warm_output
    _warm_output = (b"", b"")
    for fd, data in ((1, out), (2, err)):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]


# --- deciding -----------------------------------------------------------------------------

def wanted(no_worker: bool, settings) -> bool:
    return not _in_worker and environment.disabled_reason(no_worker, settings) is None


def _stdio_usable() -> bool:
    """The client's stdin, stdout and stderr are its fds 0, 1 and 2 (not a test runner's
    buffers), so the worker's child can take them over."""
    for stream, fd in ((sys.stdin, 0), (sys.stdout, 1), (sys.stderr, 2)):
        try:
            if stream is None or stream.fileno() != fd:
                return False
            os.fstat(fd)
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return False
    return True


class Run:
    """One command line to hand over: what the worker's child needs to become this process."""

    def __init__(self, argv: list[str], prog: str, targets: list[str], idle: float):
        self.argv, self.prog, self.targets, self.idle = argv, prog, targets, idle

    def message(self, identity: Identity) -> dict:
        umask = os.umask(0)
        os.umask(umask)
        stdio = {}
        for name in ("stdin", "stdout", "stderr"):
            stream = getattr(sys, name)
            stdio[name] = {"encoding": getattr(stream, "encoding", None), "errors": getattr(stream, "errors", None),
                           "line_buffering": getattr(stream, "line_buffering", False),
                           "write_through": getattr(stream, "write_through", False)}
        return {"op": "run", "protocol": environment.PROTOCOL, "key": identity.key,
                "argv": [sys.argv[0], *self.argv], "prog": self.prog, "environ": dict(os.environ),
                "sys_path": list(sys.path), "umask": umask, "stdio": stdio, "targets": self.targets,
                "idle": self.idle}


def _identity() -> Identity | None:
    try:
        return environment.identity()
    except (Unavailable, OSError):
        return None


def first_lint_hook(run: Run | None) -> Callable[[], None] | None:
    """What the driver calls before the first file that must be linted (before torch is
    imported): in the worker's child, show the warm-up's output; here, hand the run to this
    environment's worker, starting one (and waiting for it) if none is up."""
    if _in_worker:
        return _replay_warm_output if any(_warm_output) else None
    if run is None:
        return None

    def hook() -> None:
        identity = _identity()
        if identity is None or not _stdio_usable():
            return
        preload.learned_file = identity.learned_path  # this run notes what its models import
        for _attempt in range(2):  # a stale or broken worker is replaced once, then the run stays here
            sock = _connect(identity)
            if sock is None:
                process = _spawn(identity, run.idle) if _lock_holder(identity) is None else None
                if os.environ.get("ARCHLINT_WORKER_FIRST_RUN") == "here":
                    return  # the measured alternative: lint here while the worker starts
                sock = _wait_ready(identity, process)
            if sock is None or not _serve(sock, run, identity):
                return
    return hook


# --- talking to a worker ------------------------------------------------------------------

def _owned_socket(path: str) -> bool | None:
    """True: a socket of this user; False: something else (refused); None: nothing there."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError:
        return False
    return stat.S_ISSOCK(info.st_mode) and info.st_uid == os.getuid()


def _open(path: str, timeout: float) -> socket.socket | None:
    """A connection to the socket at `path` whose peer runs as this user, or None."""
    if not _owned_socket(path):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        _, uid, _ = protocol.peer_credentials(sock)
        if uid != os.getuid():
            sock.close()
            return None
        return sock
    except OSError:
        sock.close()
        return None


def _connect(identity: Identity) -> socket.socket | None:
    """A connection to this environment's worker; a dead socket left behind is removed."""
    sock = _open(identity.socket_path, ACCEPT_TIMEOUT)
    if sock is None and _owned_socket(identity.socket_path) and _lock_holder(identity) is None:
        _remove(identity.socket_path)  # its worker is gone (nobody holds the lock)
    return sock


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _lock_holder(identity: Identity) -> int | None:
    """The pid of the worker holding this environment's lock (starting or serving), or None."""
    try:
        fd = os.open(identity.lock_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            try:
                return int(os.pread(fd, 32, 0).split()[0])
            except (OSError, ValueError, IndexError):
                return -1  # held, pid not written yet
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _is_our_worker(pid: int) -> bool:
    """A live process of this user running archlint's worker (checked before killing it)."""
    try:
        info = os.stat(f"/proc/{pid}")
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            cmdline = stream.read()
    except OSError:
        return False
    return info.st_uid == os.getuid() and b"archlint.worker.server" in cmdline


def _kill(identity: Identity, pid: int | None) -> None:
    """Kill this environment's worker that misbehaves (`pid`, as the socket's peer or the
    lock's holder says) if it really is one, and remove its socket."""
    holder = _lock_holder(identity)
    if holder and holder > 0 and (pid is None or pid == holder) and _is_our_worker(holder):
        try:
            os.kill(holder, signal.SIGKILL)
        except OSError:
            pass
        deadline = time.monotonic() + 5.0
        while _lock_holder(identity) == holder and time.monotonic() < deadline:
            time.sleep(0.02)  # gone only once the kernel has let go of its lock
    _remove(identity.socket_path)


def _serve(sock: socket.socket, run: Run, identity: Identity) -> bool:
    """Send the run; raise Served with its exit status if the worker ran it. Otherwise the run
    goes on here, and the answer says whether the worker was found stale or broken and is gone
    (another may be started in its place), rather than declining this one run."""
    reader = protocol.Reader(sock)
    peer_pid = protocol.peer_credentials(sock)[0]
    try:
        fd_cwd = os.open(".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        sock.close()
        return False
    try:
        protocol.send(sock, run.message(identity), [0, 1, 2, fd_cwd])
        reply = reader.receive()
    except (OSError, protocol.ProtocolError):
        _kill(identity, peer_pid)  # it accepted the connection and then did not answer
        sock.close()
        return True
    finally:
        os.close(fd_cwd)
    if not reply or not reply.get("accepted") or reply.get("key") != identity.key:
        sock.close()
        reason = (reply or {}).get("reason", "")
        if reply is None or reply.get("key") not in (None, identity.key) or reason.startswith("environment"):
            _stop_worker(identity, peer_pid)  # stale for this environment
            return True
        return False
    sock.settimeout(None)
    cancelled = False
    try:
        try:
            final = reader.receive()
        except KeyboardInterrupt:
            # Ctrl-C reaches this process only (the child runs in the worker's session): pass
            # it on, and wait for the child to stop, as a run here stops its own children.
            cancelled = True
            try:
                protocol.send(sock, {"op": "cancel"})
                sock.settimeout(CANCEL_GRACE)
                final = reader.receive()
            except (OSError, protocol.ProtocolError):
                final = None
            if not final or "exit" not in final:
                raise
    except (OSError, protocol.ProtocolError):
        final = None
    finally:
        sock.close()
    if final and "exit" in final:
        raise Served(int(final["exit"]))
    if cancelled:
        raise KeyboardInterrupt
    if final and "signal" in final:
        _stop_worker(identity, peer_pid)  # its child crashed: do not trust it again
    # final is None (the worker died) or {"retry": why}: the run goes on here.
    return False


def _wait_ready(identity: Identity, process) -> socket.socket | None:
    """Wait until this environment's worker listens; None if it dies or never does."""
    deadline = time.monotonic() + START_TIMEOUT
    pause = 0.01
    while time.monotonic() < deadline:
        sock = _open(identity.socket_path, ACCEPT_TIMEOUT)
        if sock is not None:
            return sock
        if (process is None or process.poll() is not None) and _lock_holder(identity) is None:
            # Nobody is starting one: ours failed (its log says why), or lost the lock to a
            # worker that has ended since.
            return None
        time.sleep(pause)
        pause = min(pause * 1.5, 0.05)
    _kill(identity, None)  # started and never listened
    return None


class _Started:
    """The worker process this run started, until it is reparented or found dead."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _spawn(identity: Identity, idle: float) -> _Started | None:
    """Start a worker for this environment, detached as a daemon is: its own session, no
    descriptor of ours (pre-commit waits until the hook's pipes are closed by everyone), the
    root folder as its working folder. Forked and executed by hand: a subprocess.Popen left
    running would warn at exit under `python -X dev`, which a run in one process does not."""
    import subprocess

    config = {"path": list(identity.search_path), "key": identity.key, "folder": identity.folder,
              "idle": idle}
    argv = [sys.executable, *subprocess._args_from_interpreter_flags(), "-c", _BOOT, json.dumps(config),
            "archlint.worker.server"]
    try:
        log = os.open(identity.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None
    try:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child, until exec
            try:
                os.setsid()
                os.chdir("/")
                os.dup2(null, 0)
                os.dup2(log, 1)
                os.dup2(log, 2)
                os.closerange(3, max(4096, os.sysconf("SC_OPEN_MAX")))  # close_range(2): one call
                os.execv(sys.executable, argv)
            finally:
                os._exit(127)
    except OSError:
        return None
    finally:
        os.close(log)
        os.close(null)
    _stop_stale_kin(identity)
    return _Started(pid)


def _kin_sockets(identity: Identity) -> list[str]:
    import glob

    return sorted(p for p in glob.glob(os.path.join(identity.folder, identity.executable_tag + "-*.sock"))
                  if p != identity.socket_path)


def _ask(path: str, message: dict, timeout: float = ACCEPT_TIMEOUT) -> dict | None:
    sock = _open(path, timeout)
    if sock is None:
        return None
    try:
        protocol.send(sock, message)
        return protocol.Reader(sock).receive()
    except (OSError, protocol.ProtocolError):
        return None
    finally:
        sock.close()


def _stop_stale_kin(identity: Identity) -> None:
    """Stop workers of this interpreter built from other archlint files or other installed
    packages: no run will ever fit them again. Workers for other environment variables or
    sys.path of the same interpreter serve other runs, and stay."""
    for path in _kin_sockets(identity):
        status = _ask(path, {"op": "status"}, timeout=1.0)  # a busy one is left for next time
        if status and status.get("code_key") not in (None, identity.code_key):
            _ask(path, {"op": "stop"}, timeout=1.0)


def _stop_worker(identity: Identity, pid: int | None, wait: float = 5.0) -> None:
    """Stop this environment's worker for good and wait for its lock to be free, so that a
    new one can start in its place; kill it if it does not go."""
    _ask(identity.socket_path, {"op": "stop"})
    deadline = time.monotonic() + wait
    while _lock_holder(identity) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    if _lock_holder(identity) is not None:
        _kill(identity, pid)


# --- `archlint worker status|stop` --------------------------------------------------------

def workers() -> tuple[Identity | None, list[tuple[str, dict | None]], str | None]:
    """(this environment's identity, [(socket path, status or None)], why no worker can run)."""
    try:
        identity = environment.identity()
    except Unavailable as exc:
        return None, [], str(exc)
    import glob

    found = []
    for path in sorted(glob.glob(os.path.join(identity.folder, "*.sock"))):
        found.append((path, _ask(path, {"op": "status"})))
    return identity, found, None


def stop(identity: Identity, path: str, timeout: float = 10.0) -> int | None:
    """Stop the worker at `path` and wait until it has exited; its pid, or None if none answered."""
    status = _ask(path, {"op": "status"})
    if status is None:
        return None
    pid = int(status.get("pid", 0)) or None
    _ask(path, {"op": "stop"})
    deadline = time.monotonic() + timeout
    while pid and time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if pid and _alive(pid) and _is_our_worker(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        _remove(path)
    return pid


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            return stream.read().split(b") ", 1)[1][:1] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False
