"""The worker process: import what every run needs once, then serve runs in forked children
until it has been idle for a while.

    python -c <boot> <config> archlint.worker.server    (started by client.py, detached)

Its life: take this environment's lock (a second worker for the same key exits at once);
import torch and archlint's pipeline and lint a tiny model, exactly as a run in one process
does before its first file (driver._warm_up), recording the environment variables Python code
read meanwhile and what it printed; listen on the socket; then loop: accept connections, fork a
child per run (request.py), report each child's exit status to its client, import the optional
packages (preload.py) one at a time while nothing runs, and exit after `idle` seconds without a
request, on `archlint worker stop`, or on SIGTERM. It never imports the user's code: only its
children do.

A request is refused (the client then runs it itself) when its key or protocol is not the
worker's, or when an environment variable that the worker's imports read has another value in
the client's environment; the client replaces a worker it finds stale that way.
"""
from __future__ import annotations

import fcntl
import gc
import importlib
import os
import selectors
import signal
import socket
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from .. import __version__
from . import environment, preload, protocol, request
from .environment import Identity

_KILL_GRACE = 5.0  # seconds a stopped or cancelled child has before SIGKILL


def _log(text: str) -> None:
    try:
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} archlint worker {os.getpid()}: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# --- recording what imports do ------------------------------------------------------------

class EnvironReads:
    """Environment variables read by Python code while recording, name -> hash of the value
    (None: unset). A read made while iterating over the whole environment (tqdm and networkx
    scan it for their prefixes) is not a read of each variable, and is not kept."""

    def __init__(self) -> None:
        self.reads: dict[str, str | None] = {}

    @contextmanager
    def recording(self) -> Iterator[None]:
        environ = os.environ
        original = type(environ)
        reads = self.reads
        scanning = [0]

        class Recording(original):  # type: ignore[misc, valid-type]
            def __iter__(self):
                scanning[0] += 1
                try:
                    yield from original.__iter__(self)
                finally:
                    scanning[0] -= 1

            def __getitem__(self, name):
                try:
                    value = original.__getitem__(self, name)
                except KeyError:
                    if not scanning[0] and isinstance(name, str):
                        reads.setdefault(name, None)
                    raise
                if not scanning[0] and isinstance(name, str):
                    reads.setdefault(name, environment.value_hash(value))
                return value

        environ.__class__ = Recording
        try:
            yield
        finally:
            environ.__class__ = original

    def mismatch(self, environ: dict, ignore: tuple[str, ...] = ()) -> str | None:
        for name, digest in self.reads.items():
            if name not in ignore and environment.value_hash(environ.get(name)) != digest:
                return name
        return None


@contextmanager
def captured_output() -> Iterator[list[bytes]]:
    """fds 1 and 2 go to temporary files while active; the list gets (stdout, stderr) bytes."""
    result: list[bytes] = []
    files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
    saved = [os.dup(1), os.dup(2)]
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os.dup2(files[0].fileno(), 1)
    os.dup2(files[1].fileno(), 2)
    try:
        yield result
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        for f in files:
            f.seek(0)
            result.append(f.read())
            f.close()


# --- the worker ---------------------------------------------------------------------------

class _Child:
    def __init__(self, pid: int, pidfd: int | None, report_fd: int, conn: "_Connection"):
        self.pid, self.pidfd, self.report_fd, self.conn = pid, pidfd, report_fd, conn
        self.kill_at: float | None = None
        self.started = time.monotonic()
        self.report = b""  # what the child wrote to its report pipe (request.py)
        self.answered = False
        self.reaped = False  # its report fd is closed: a number the next open may reuse


class _Connection:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.reader = protocol.Reader(sock)
        self.child: _Child | None = None
        self.closed = False


class Worker:
    def __init__(self, identity: Identity, idle: float):
        self.identity = identity
        self.idle = idle
        self.started = time.time()
        self.last_request = time.monotonic()
        self.requests = 0
        self.reads = EnvironReads()
        self.state: dict = {"warm_output": (b"", b""), "environ_changes": {}, "extras": {},
                            "extras_environ": {}, "learned_path": identity.learned_path, "rng_state": None,
                            "imported": {}, "ahead": {}, "core": frozenset()}
        self.pending: list[str] = []
        self.refused: list[str] = []
        self.children: dict[int, _Child] = {}
        self.connections: list[_Connection] = []
        self.stopping: str | None = None
        self.selector = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.socket_inode: int | None = None
        self.lock_fd: int | None = None
        self.wake_r, self.wake_w = os.pipe()

    # -- start -------------------------------------------------------------------------

    def _lock(self) -> bool:
        fd = os.open(self.identity.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.lock_fd = fd
        return True

    def _warm_up(self) -> None:
        """What a run in one process does before its first file, here once for every child."""
        from .. import cli  # click and the command line: every run needs them
        from .. import driver, registry
        from ..config import Settings

        before = dict(os.environ)
        with self.reads.recording(), captured_output() as output:
            own_packs = _project_rule_packs()
            if own_packs:
                # A rule pack in the user's project changes like their models do: each run
                # loads it itself. Meanwhile the warm-up lints with the built-in rules.
                builtin = registry.rules_in(importlib.import_module(registry.BUILTIN_PACK))
                registry._cache = registry.RuleSet(rules=sorted(builtin, key=lambda r: r.code))
            driver._warm_up(Settings())
            if own_packs:
                registry._cache = None
        # What a run in one process has imported when the user's code starts; anything the
        # worker imports from here on is ahead of such a run (request.shadowed).
        self.state["core"] = frozenset(name for name in sys.modules if "." not in name)
        self.state["warm_output"] = (output[0], output[1])
        self.state["environ_changes"] = {k: os.environ.get(k) for k in set(before) | set(os.environ)
                                         if before.get(k) != os.environ.get(k)}
        # archlint's own modules that a run imports on its way (the CLI's renderers, the cache's
        # and the per-file children's helpers), so that no run pays for them.
        for module in (*cli.FORMATS.values(), "archlint.safe_io", "archlint.baseline", "archlint.isolation",
                       "archlint.portable", "resource"):
            importlib.import_module(module)
        import torch

        self.state["rng_state"] = torch.random.get_rng_state()
        self.pending = [n for n in preload.ahead_of_time(self.identity.learned_path) if n not in sys.modules]
        _settle(self.state)

    def _listen(self) -> None:
        path = self.identity.socket_path
        try:
            os.unlink(path)  # we hold the lock: any socket there is a dead worker's
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            listener.bind(path)
        finally:
            os.umask(old_umask)
        listener.listen(16)
        listener.setblocking(False)
        self.socket_inode = os.stat(path).st_ino
        self.listener = listener
        self.selector.register(listener, selectors.EVENT_READ, ("accept", None))
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        self.selector.register(self.wake_r, selectors.EVENT_READ, ("wake", None))

    def run(self) -> int:
        if not self._lock():
            return 0  # another worker for this environment is starting or serving
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        began = time.monotonic()
        try:
            self._warm_up()
        except BaseException as exc:
            _log(f"warm-up failed: {type(exc).__name__}: {exc}")
            return 1
        self._listen()
        self.last_request = time.monotonic()  # idle from now: the client that started it is on its way
        _log(f"serving {self.identity.name} (warm in {time.monotonic() - began:.1f} s, archlint "
             f"{__version__}, {sys.executable}); idle timeout {self.idle:g} s")
        try:
            self._loop()
        finally:
            self._close()
        _log(f"exited ({self.stopping}) after {self.requests} requests")
        return 0

    def _on_term(self, signum, frame) -> None:
        self.stopping = self.stopping or "SIGTERM"

    # -- the loop ----------------------------------------------------------------------

    def _timeout(self, now: float) -> float:
        deadlines = [c.kill_at for c in self.children.values() if c.kill_at is not None]
        if not self.children and not self.stopping:
            deadlines.append(self.last_request + self.idle)
        wait = max(0.0, min(deadlines) - now) if deadlines else 1.0
        if self.pending and not self.children and not self.connections and not self.stopping:
            wait = min(wait, 0.05)  # a moment for a client already on its way, then an import
        if self.children and self.state.get("no_pidfd"):
            wait = min(wait, 0.02)
        return min(wait, 5.0)

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            if self.stopping:
                self._begin_stop()
                if not self.children:
                    return
            elif not self.children and now - self.last_request >= self.idle:
                self.stopping = f"idle for {self.idle:g} s"
                continue
            events = self.selector.select(self._timeout(now))
            for key, _ in events:
                kind, item = key.data
                if kind == "accept":
                    self._accept()
                elif kind == "wake":
                    try:
                        while os.read(self.wake_r, 512):
                            pass
                    except (BlockingIOError, OSError):
                        pass
                elif kind == "conn":
                    self._on_readable(item)
                elif kind == "child":
                    self._reap(item)
                elif kind == "report":
                    self._read_report(item)
            if self.state.get("no_pidfd"):
                for child in list(self.children.values()):
                    self._reap(child, poll=True)
            self._escalate()
            if not events and self.pending and not self.children and not self.connections and not self.stopping:
                self._import_next()

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, OSError):
            return
        try:
            _, uid, _ = protocol.peer_credentials(sock)
        except OSError:
            uid = -1
        if uid != os.getuid():
            sock.close()  # the folder is private; this cannot be one of the user's runs
            return
        sock.settimeout(2.0)
        conn = _Connection(sock)
        self.connections.append(conn)
        self.selector.register(sock, selectors.EVENT_READ, ("conn", conn))

    def _drop(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.reader.close_fds()
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        if conn in self.connections:
            self.connections.remove(conn)

    def _reply(self, conn: _Connection, message: dict) -> None:
        try:
            protocol.send(conn.sock, message)
        except OSError:
            self._hang_up(conn)

    def _hang_up(self, conn: _Connection) -> None:
        """The client went away: its run must not go on without it."""
        if conn.child is not None and conn.child.kill_at is None:
            self._signal(conn.child, signal.SIGTERM)
        self._drop(conn)

    def _on_readable(self, conn: _Connection) -> None:
        try:
            alive = conn.reader.feed(want_fds=conn.child is None)
            while True:
                message = conn.reader.pending()
                if message is None:
                    break
                self._handle(conn, message)
                if conn.closed:
                    return
        except (OSError, protocol.ProtocolError):
            alive = False
        if not alive:
            self._hang_up(conn)

    def _handle(self, conn: _Connection, message: dict) -> None:
        op = message.get("op")
        if op == "status":
            self._reply(conn, self.status())
            self._drop(conn)
        elif op == "stop":
            self._reply(conn, {"stopping": True, "pid": os.getpid()})
            self._drop(conn)
            self.stopping = self.stopping or "archlint worker stop"
        elif op == "cancel" and conn.child is not None:
            self._signal(conn.child, signal.SIGINT)  # as Ctrl-C would in the client's process
        elif op == "run" and conn.child is None:
            self._start(conn, message)
        else:
            self._hang_up(conn)  # not a message of this protocol: drop the client and its run

    def _refuse(self, conn: _Connection, reason: str) -> None:
        _log(f"refused a run: {reason}")
        self._reply(conn, {"accepted": False, "reason": reason, "key": self.identity.key, "pid": os.getpid()})
        self._drop(conn)

    def _start(self, conn: _Connection, message: dict) -> None:
        fds = conn.reader.take_fds()
        try:
            if self.stopping:
                return self._refuse(conn, "stopping")
            if message.get("protocol") != environment.PROTOCOL or message.get("key") != self.identity.key:
                return self._refuse(conn, "another key or protocol")
            if len(fds) != 4 or not isinstance(message.get("environ"), dict):
                return self._refuse(conn, "a malformed request")
            from ..no_download import _OFFLINE_FLAGS  # set by archlint itself while imports run

            differs = self.reads.mismatch(message["environ"], ignore=_OFFLINE_FLAGS)
            if differs:
                return self._refuse(conn, f"environment: {differs} differs from the worker's")
            self._fork(conn, message, fds)
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _parent_only_fds(self) -> list[int]:
        fds = [self.listener.fileno(), self.lock_fd, self.wake_r, self.wake_w, self.selector.fileno()]
        fds += [c.sock.fileno() for c in self.connections]
        for child in self.children.values():
            fds += [child.report_fd] + ([child.pidfd] if child.pidfd is not None else [])
        return [fd for fd in fds if fd is not None and fd >= 0]

    def _fork(self, conn: _Connection, message: dict, fds: list[int]) -> None:
        report_r, report_w = os.pipe()
        parent_only = self._parent_only_fds() + [report_r]
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            signal.set_wakeup_fd(-1)
            request.serve(message, fds, report_w, parent_only, self.state)
        os.close(report_w)
        self.requests += 1
        self.last_request = time.monotonic()
        idle = message.get("idle")
        if isinstance(idle, (int, float)) and not isinstance(idle, bool) and idle > 0:
            self.idle = float(idle)  # the latest run's config says how long to stay
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = None
            self.state["no_pidfd"] = True
        child = _Child(pid, pidfd, report_r, conn)
        conn.child = child
        self.children[pid] = child
        if pidfd is not None:
            self.selector.register(pidfd, selectors.EVENT_READ, ("child", child))
        os.set_blocking(report_r, False)
        self.selector.register(report_r, selectors.EVENT_READ, ("report", child))
        self._reply(conn, {"accepted": True, "key": self.identity.key, "pid": os.getpid(), "child": pid})

    def _signal(self, child: _Child, signum: int) -> None:
        try:
            os.killpg(child.pid, signum)
        except OSError:
            try:
                os.kill(child.pid, signum)
            except OSError:
                pass
        if child.kill_at is None:
            child.kill_at = time.monotonic() + _KILL_GRACE

    def _escalate(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            if child.kill_at is not None and now >= child.kill_at:
                for kill in (lambda: os.killpg(child.pid, signal.SIGKILL), lambda: os.kill(child.pid, signal.SIGKILL)):
                    try:
                        kill()
                    except OSError:
                        pass
                child.kill_at = now + 3600

    def _read_report(self, child: _Child) -> None:
        if child.reaped:
            return
        try:
            while True:
                chunk = os.read(child.report_fd, 4096)
                if not chunk:  # the child is gone or going: its pidfd says when
                    try:
                        self.selector.unregister(child.report_fd)
                    except (KeyError, ValueError):
                        pass
                    break
                child.report += chunk
        except (BlockingIOError, OSError):
            pass
        for line in child.report.decode("utf-8", "replace").splitlines():
            if line.startswith("exit ") and line[5:].strip().isdigit():
                self._answer(child, {"exit": int(line[5:])})  # its output is flushed: done

    def _answer(self, child: _Child, final: dict) -> None:
        if child.answered:
            return
        child.answered = True
        _log(f"request {child.pid}: {final} in {time.monotonic() - child.started:.2f} s")
        conn = child.conn
        conn.child = None
        if not conn.closed:
            self._reply(conn, final)
            self._drop(conn)

    def _reap(self, child: _Child, poll: bool = False) -> None:
        if child.reaped:
            return
        try:
            pid, status = os.waitpid(child.pid, os.WNOHANG if poll else 0)
        except ChildProcessError:
            pid, status = child.pid, 0
        if pid == 0:
            return
        self._read_report(child)
        child.reaped = True
        try:
            self.selector.unregister(child.report_fd)
        except (KeyError, ValueError):
            pass
        os.close(child.report_fd)
        if child.pidfd is not None:
            try:
                self.selector.unregister(child.pidfd)
            except (KeyError, ValueError):
                pass
            os.close(child.pidfd)
        self.children.pop(child.pid, None)
        self.last_request = time.monotonic()
        lines = child.report.decode("utf-8", "replace").splitlines()
        if lines and lines[0].startswith("declined"):
            final = {"retry": lines[0][len("declined "):]}
        elif "stopped" in lines:
            final = {"retry": "the worker was stopped"}
        elif not lines:
            final = {"retry": "the worker's child ended before the run started"}
        elif os.WIFSIGNALED(status):
            final = {"signal": os.WTERMSIG(status)}
        else:
            final = {"exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1}
        self._answer(child, final)
        for name in preload.ahead_of_time(self.identity.learned_path):
            if name not in sys.modules and name not in self.pending and name not in self.refused:
                self.pending.append(name)

    # -- importing ahead ---------------------------------------------------------------

    def _import_next(self) -> None:
        name = self.pending.pop(0)
        origin = preload.library_origin(name)
        if origin is None or name in sys.modules:
            return
        from ..no_download import refused

        modules = set(sys.modules)
        threads = threading.active_count()
        environ = dict(os.environ)
        began = time.monotonic()
        problem = None
        with self.reads.recording(), captured_output() as output:
            try:
                with refused():  # as in a run, where the user's import runs under it
                    importlib.import_module(name)
            except BaseException as exc:  # noqa: B036  (SystemExit from a package counts too)
                problem = f"failed ({type(exc).__name__}: {exc})"
                for added in set(sys.modules) - modules:
                    sys.modules.pop(added, None)
        if problem is None and any(output):
            problem = "printed while imported"
        if problem is None and threading.active_count() > threads:
            problem = "started a thread"
        if problem is not None:
            _log(f"not importing {name} ahead: it {problem}")
            self.refused.append(name)
            preload.note_refused(self.identity.learned_path, name)
            # What it left behind cannot be taken back: a fresh worker will start without it.
            self.stopping = self.stopping or f"{name} could not be imported ahead"
            return
        module = sys.modules[name]
        locations = list(getattr(module, "__path__", []) or [])
        where = os.path.dirname(locations[0] if locations else module.__file__)
        self.state["extras"][name] = where
        _settle(self.state)
        changes = {k: os.environ.get(k) for k in set(environ) | set(os.environ) if environ.get(k) != os.environ.get(k)}
        if changes:  # torchvision pulls in torch._dynamo, which sets TORCHINDUCTOR_CACHE_DIR
            self.state["extras_environ"][name] = changes
        _log(f"imported {name} ahead in {time.monotonic() - began:.2f} s")

    # -- status and stop ---------------------------------------------------------------

    def status(self) -> dict:
        now = time.monotonic()
        return {"pid": os.getpid(), "name": self.identity.name, "key": self.identity.key,
                "code_key": self.identity.code_key, "archlint": __version__, "python": sys.executable,
                "uptime": time.time() - self.started, "idle": 0.0 if self.children else now - self.last_request,
                "idle_timeout": self.idle, "requests": self.requests, "running": len(self.children),
                "preloaded": sorted(self.state["extras"]), "pending": list(self.pending),
                "refused": list(self.refused), "log": self.identity.log_path,
                "stopping": self.stopping}

    def _begin_stop(self) -> None:
        if self.listener is not None:
            try:
                self.selector.unregister(self.listener)
            except (KeyError, ValueError):
                pass
            self._unlink_socket()
            self.listener.close()
            self.listener = None
        for conn in list(self.connections):
            if conn.child is None:
                self._drop(conn)
        for child in self.children.values():
            if child.kill_at is None:
                self._signal(child, signal.SIGTERM)  # quiet: its client runs it itself

    def _unlink_socket(self) -> None:
        try:
            if os.stat(self.identity.socket_path).st_ino == self.socket_inode:
                os.unlink(self.identity.socket_path)
        except OSError:
            pass

    def _close(self) -> None:
        if self.listener is not None:
            self._unlink_socket()
            self.listener.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)


def _settle(state: dict) -> None:
    """After an import: note what is imported now, and which of it a run in one process would
    not have imported yet when the user's code starts (request.shadowed compares both with each
    run's folders); collect, then move every object to the generation the collector never
    scans: a child's first collection would otherwise walk (and so copy, page by page) the
    whole of torch."""
    state["imported"] = request.imported_tops()
    state["ahead"] = {name: path for name, path in state["imported"].items() if name not in state["core"]}
    environment.library_dirs()  # computed once here, not in every child
    gc.collect()
    gc.freeze()


def _project_rule_packs() -> bool:
    """Is a registered rule pack outside the installed code (the user's own, editable)?"""
    from importlib.metadata import entry_points

    from ..registry import BUILTIN_PACK, ENTRY_POINT_GROUP

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value != BUILTIN_PACK and preload.library_origin(ep.value.split(":")[0].strip().split(".")[0]) is None:
            return True
    return False


def main(config: dict) -> None:
    """The worker's entry point (client.py's boot line passes `config`)."""
    os.umask(0o077)
    try:
        identity = environment.identity(config["folder"], path=config["path"])
    except environment.Unavailable as exc:
        _log(f"not started: {exc}")
        sys.exit(1)
    if identity.key != config["key"]:
        _log("not started: this process's environment key differs from the client's")
        sys.exit(1)
    sys.exit(Worker(identity, float(config.get("idle") or environment.DEFAULT_IDLE)).run())
