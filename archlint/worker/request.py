"""One request, in the child the worker forks for it: become the client's process (its stdin,
stdout, stderr, working folder, environment, umask, argv and sys.path), then run the same CLI
code the client would have run, and exit with its status.

The child reports to the worker through a pipe, one line: `run` just before the CLI starts,
`declined <why>` when it must not serve this run (the client then runs it itself), `stopped`
when the worker stopped it (SIGTERM) before it was done, `exit <status>` when the run is over
and its output flushed (the worker answers the client then, without waiting for this process
to be gone). Whatever happens, it ends with
os._exit, never returning into the worker's loop.

It declines when a package the worker imported ahead (torchvision, timm, a learned one) would
have been found elsewhere by this run: a module of that name in one of the folders this run
puts before site-packages (the folders of the files linted, the working folder, sys.path
entries in front). In this process the run would import the user's module; in the worker it
would get the installed one.
"""
from __future__ import annotations

import ctypes
import importlib.machinery
import io
import os
import signal
import sys
import tempfile

from ..prefilter import _SKIP_DIRS, split_spec
from . import environment


class WorkerStopping(BaseException):
    """SIGTERM from the worker (`archlint worker stop`, idle exit, or the client gone): end
    quietly; the per-file children are killed on the way out (isolation.py's `finally`)."""


def _stopping(signum, frame):
    raise WorkerStopping()


def _die_with_worker() -> None:
    """SIGTERM to this child when the worker dies, so no run outlives it unwatched."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stream(fd: int, writing: bool, info: dict) -> io.TextIOWrapper:
    """A text stream on `fd` made as the client's was: same encoding, errors, buffering."""
    raw = io.FileIO(fd, "w" if writing else "r", closefd=False)
    buffered = io.BufferedWriter(raw) if writing else io.BufferedReader(raw)
    return io.TextIOWrapper(buffered, encoding=info.get("encoding") or "utf-8",
                            errors=info.get("errors") or "strict",
                            line_buffering=bool(info.get("line_buffering")),
                            write_through=bool(info.get("write_through")))


def _take_over(message: dict, fds: list[int], state: dict) -> None:
    stdin, stdout, stderr, cwd = fds
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
    os.fchdir(cwd)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.umask(int(message["umask"]))
    os.environ.clear()
    os.environ.update(message["environ"])
    # What importing torch and archlint did to the environment, a run in one process has too.
    for name, value in state["environ_changes"].items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if state.get("rng_state") is not None:
        import torch

        torch.random.set_rng_state(state["rng_state"])  # as the warm-up left it, before any import ahead
    sys.argv = list(message["argv"])
    sys.path[:] = list(message["sys_path"])
    tempfile.tempdir = None  # chosen from TMPDIR on first use, as in a fresh process
    _forget_folder_listings(sys.path)
    if state.get("extras_environ"):
        _set_on_import(dict(state["extras_environ"]))
    stdio = message.get("stdio", {})
    sys.stdin = sys.__stdin__ = _stream(0, False, stdio.get("stdin", {}))
    sys.stdout = sys.__stdout__ = _stream(1, True, stdio.get("stdout", {}))
    sys.stderr = sys.__stderr__ = _stream(2, True, stdio.get("stderr", {}))


def _forget_folder_listings(sys_path: list[str]) -> None:
    """Python keeps each sys.path folder's listing and reads it again only when the folder's
    time changes, which a coarse clock can miss: drop the listings of this run's folders that
    are not installed code (installed code is part of the worker's key). importlib's
    invalidate_caches() would do it for every package folder torch has, at a cost on each run."""
    libraries = environment.library_dirs()
    for folder in sys_path:
        finder = sys.path_importer_cache.get(folder)
        if finder is not None and hasattr(finder, "invalidate_caches") and \
                not environment.is_library_path(folder or ".", libraries):
            finder.invalidate_caches()


def _set_on_import(changes: dict[str, dict]) -> None:
    """What importing a package ahead did to the environment (package -> variable -> value),
    done when this run's code imports that package, as importing it here would have."""
    import builtins

    original = builtins.__import__

    def hooked(name, globals=None, locals=None, fromlist=(), level=0):
        if changes and not level:
            for variable, value in changes.pop(name.partition(".")[0], {}).items():
                if value is None:
                    os.environ.pop(variable, None)
                else:
                    os.environ[variable] = value
        return original(name, globals, locals, fromlist, level)

    builtins.__import__ = hooked


def _module_root(folder: str, cache: dict) -> str:
    """The folder load.py puts on sys.path for a file in `folder`: the first one above it that
    is not a package (pytest's `prepend` import mode)."""
    if folder not in cache:
        probe = folder
        while os.path.exists(os.path.join(probe, "__init__.py")) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)
        cache[folder] = probe
    return cache[folder]


def _run_roots(targets: list[str]) -> list[str]:
    """Every folder a run over `targets` may put first on sys.path (more, never fewer)."""
    cache: dict[str, str] = {}
    roots = [os.getcwd()]
    for spec in targets:
        path = os.path.abspath(split_spec(spec)[0])
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")]
                if any(f.endswith(".py") for f in files):
                    roots.append(_module_root(root, cache))
        else:
            roots.append(_module_root(os.path.dirname(os.path.realpath(path)), cache))
    return list(dict.fromkeys(roots))


def _provided(folder: str) -> dict[str, str]:
    """Top-level modules `import` would find in `folder`, name -> path: regular packages and
    source or extension modules. A namespace folder does not count: regular modules win."""
    found: dict[str, str] = {}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for entry in entries:
        name = entry.name
        try:
            if entry.is_dir():
                if os.path.isfile(os.path.join(entry.path, "__init__.py")):
                    found.setdefault(name, entry.path)
            elif name.endswith(".py"):
                found.setdefault(name[:-3], entry.path)
            else:
                for suffix in suffixes:
                    if name.endswith(suffix):
                        found.setdefault(name[:-len(suffix)], entry.path)
        except OSError:
            continue
    return found


def imported_tops() -> dict[str, str]:
    """Top-level modules imported in this process, name -> the real path of their package
    folder or file. The worker computes it after each import, not each child: it touches
    every module."""
    tops = {}
    for name, module in list(sys.modules.items()):
        if "." in name or module is None:
            continue
        locations = list(getattr(module, "__path__", None) or [])
        where = locations[0] if locations else getattr(module, "__file__", None)
        if isinstance(where, str):
            tops[name] = os.path.realpath(where)
    return tops


def shadowed(imported: dict[str, str], ahead: dict[str, str], sys_path: list[str],
             targets: list[str]) -> str | None:
    """Why a module imported in the worker is not the one this run would import, or None.

    Before any of the user's code runs, a run in one process has imported torch, archlint and
    their dependencies along its own sys.path. The worker imported them along the same path,
    less its first entry (the script's folder or the working folder, which differs per run)
    and as the path's folders were when it started: so the first entry and every folder on the
    path that is not installed code (PYTHONPATH) are checked for a module of the same name.
    The modules imported ahead (`ahead`: torchvision, timm, learned packages, the renderers'
    jinja2; a run in one process has not imported them when the user's code starts) are also
    checked against the folders the run puts first for the user's files."""
    libraries = environment.library_dirs()
    folders = [p for p in sys_path[:1] if not sys.flags.safe_path]
    folders += [p for p in sys_path if p and not environment.is_library_path(p, libraries)]
    checks = [(os.path.realpath(f or "."), imported) for f in dict.fromkeys(folders)]
    if ahead:
        checks += [(root, ahead) for root in _run_roots(targets)]
    for folder, modules in checks:
        provided = _provided(folder)
        for name, path in provided.items():  # never a set of `modules`: it would touch them all
            if name in modules and os.path.realpath(path) != modules[name]:
                return f"{path} would be imported as {name!r} in this run"
    return None


def _exit_status(exc: SystemExit) -> int:
    """As Python's own exit: None is 0, an int is itself, anything else is printed and 1."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1


def serve(message: dict, fds: list[int], report_fd: int, parent_only_fds: list[int], state: dict) -> None:
    """The child's whole life. Never returns. `state` is what the worker's warm-up left
    (server.py): its output, its changes to the environment, torch's random state, the
    packages imported ahead and where from, the file of learned packages."""
    status = 70
    started = False
    report = os.fdopen(report_fd, "w", buffering=1)
    try:
        os.setpgid(0, 0)  # its own group: the worker can stop it and nothing else
        signal.signal(signal.SIGTERM, _stopping)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _die_with_worker()
        for fd in parent_only_fds:  # the worker's listener, lock, loop: never held by a run
            try:
                os.close(fd)
            except OSError:
                pass
        _take_over(message, fds, state)
        why = shadowed(state["imported"], state["ahead"], list(message["sys_path"]),
                       list(message.get("targets", [])))
        if why:
            report.write(f"declined {why}\n")
            status = 0
            return
        from . import client, preload

        client.in_worker(state["warm_output"])
        preload.learned_file = state["learned_path"]
        from ..cli import main

        report.write("run\n")
        started = True
        try:
            main.main(args=list(message["argv"][1:]), prog_name=message["prog"], standalone_mode=True)
            status = 0
        except SystemExit as exc:
            status = _exit_status(exc)
        _finish(report, status)
    except WorkerStopping:
        try:
            report.write("stopped\n")
        except BaseException:
            pass
        status = 0
    except BaseException:
        # Before the CLI started, nothing was shown: the worker tells the client to run it
        # itself. After, it is what an uncaught error in the CLI does: a traceback, status 1.
        if started:
            try:
                import traceback

                traceback.print_exc()
            except BaseException:
                pass
            status = 1
            _finish(report, status)
    finally:
        os._exit(status)


def _finish(report, status: int) -> None:
    """Flush, let go of the client's terminal and pipes, then report the status: the worker
    answers the client at once, while this process's exit (unmapping a copy of torch) goes on."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    for fd in (0, 1, 2):
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        report.write(f"exit {status}\n")
    except BaseException:
        pass
