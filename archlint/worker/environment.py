"""Which worker a run may use: whether the worker is wanted at all, where workers live, and the
key that says whether a worker's imported state fits this process.

Nothing here imports torch or anything slow: the client computes all of it on every run
before it knows whether torch is needed.

A worker holds imported modules, and modules hold what they read while they were imported:
the files (their versions), sys.path, interpreter flags, environment variables, resource
limits. So the key covers everything the client can know about that without importing: the
interpreter and its flags, sys.path (without the working folder, which `python -m archlint`
puts first), archlint's own files, the site-packages folders' times (any install or upgrade
changes them), where torch, torchvision and timm live and their folders' times, the user and
groups, resource limits, and the values of environment variables that compiled code reads (CUDA,
OpenMP, MKL, the dynamic loader, Python's own, the locale). Variables that Python code read while
the worker imported are checked per request against the worker's record (server.py), since
which ones those are is only known after importing.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import resource
import site
import socket
import stat
import sys
import sysconfig
import tempfile
from dataclasses import dataclass

from .. import __version__

PROTOCOL = 1
DEFAULT_IDLE = 900.0  # seconds without a request before the worker exits

# Environment variables read by compiled code (never through os.environ, so no record sees
# them) or at interpreter start: part of the key by value.
_KEY_PREFIXES = ("PYTHON", "LD_", "CUDA", "NVIDIA_", "TORCH", "PYTORCH", "OMP_", "GOMP_", "KMP_",
                 "MKL", "OPENBLAS", "MALLOC", "LC_")
_KEY_NAMES = ("LANG", "LANGUAGE")
_LIBRARIES = ("torch", "torchvision", "timm")
_LIMITS = ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_NOFILE", "RLIMIT_CPU", "RLIMIT_NPROC",
           "RLIMIT_MEMLOCK", "RLIMIT_CORE")
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on macOS


class Unavailable(Exception):
    """No worker for this run; the message says why (shown by `archlint worker status`)."""


def disabled_reason(no_worker_flag: bool, settings=None) -> str | None:
    """Why this run must not use a worker, or None when it may."""
    if no_worker_flag:
        return "--no-worker was given"
    if os.environ.get("ARCHLINT_NO_WORKER", "").strip() not in ("", "0"):
        return "ARCHLINT_NO_WORKER is set"
    if settings is not None and not getattr(settings, "worker", True):
        return f"worker = false in {settings.source}"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return "CI is set (a one-shot CI run gains nothing from a worker)"
    if not (hasattr(socket, "AF_UNIX") and hasattr(socket, "send_fds") and hasattr(os, "fork")
            and sys.platform.startswith("linux")):
        return "the warm worker needs Linux (fork, Unix sockets that pass file descriptors)"
    return None


def _private_folder(path: str, create: bool) -> str:
    """`path` if it is a folder of this user that nobody else may enter; created if asked."""
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise Unavailable(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise Unavailable(f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise Unavailable(f"{path} is not a folder (a symlink or a file)")
    if info.st_uid != os.getuid():
        raise Unavailable(f"{path} belongs to another user")
    if info.st_mode & 0o077:
        raise Unavailable(f"{path} is open to other users (mode {stat.S_IMODE(info.st_mode):o}, not 700)")
    return path


def state_dir() -> str:
    """The per-user folder of workers' sockets, locks and logs: ARCHLINT_WORKER_DIR, else
    $XDG_RUNTIME_DIR/archlint, else archlint-<uid> in the temporary folder. Refused (Unavailable)
    unless it is a plain folder of this user, closed to everyone else."""
    override = os.environ.get("ARCHLINT_WORKER_DIR")
    if override:
        return _private_folder(os.path.abspath(override), create=True)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        try:
            _private_folder(runtime, create=False)
            return _private_folder(os.path.join(runtime, "archlint"), create=True)
        except Unavailable:
            pass  # a broken XDG_RUNTIME_DIR: the temporary folder below still works
    return _private_folder(os.path.join(tempfile.gettempdir(), f"archlint-{os.getuid()}"), create=True)


@functools.lru_cache(maxsize=None)
def library_dirs() -> tuple[str, ...]:
    """Folders of installed code: the standard library and every site-packages this Python
    reads (a venv's own and, with --system-site-packages, the base Python's)."""
    dirs = set()
    for scheme_vars in ({}, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}):
        paths = sysconfig.get_paths(vars=scheme_vars) if scheme_vars else sysconfig.get_paths()
        dirs.update(paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths)
    try:
        dirs.update(site.getsitepackages())
    except AttributeError:
        pass
    dirs.update(p for p in sys.path if os.path.basename(p.rstrip(os.sep)) in ("site-packages", "dist-packages"))
    return tuple(sorted({os.path.realpath(d) + os.sep for d in dirs if d}))


def is_library_path(path: str | None, dirs: tuple[str, ...] | None = None) -> bool:
    if not path:
        return False
    real = os.path.realpath(path)
    return real.startswith(dirs if dirs is not None else library_dirs())


def archlint_dirs() -> list[str]:
    """archlint's own package folders (the core, rules, reports), wherever they are installed."""
    folders = []
    for name in ("archlint", "archlint.rules", "archlint.reports"):
        spec = importlib.util.find_spec(name)
        folders.extend(os.path.realpath(p) for p in (spec.submodule_search_locations or []))
    return folders


def search_path() -> list[str]:
    """sys.path without the entry Python put first for this run (the script's folder, or the
    working folder for `python -m` and `-c`): the worker serves `archlint` and `python -m
    archlint` from any folder, and each run's child puts its own first again (request.py
    checks that folder for modules the worker imported from elsewhere)."""
    return list(sys.path if sys.flags.safe_path else sys.path[1:])


def _own_files() -> list:
    """Names, sizes and times of archlint's files (rules and report templates included): an
    editable install keeps its version number while its code changes."""
    entries = []
    for folder in archlint_dirs():
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                try:
                    st = os.stat(os.path.join(root, name))
                except OSError:
                    continue
                entries.append([os.path.join(root, name), st.st_size, st.st_mtime_ns])
    return entries


def _installed(path: list[str]) -> list:
    """The site-packages folders' times, and where torch, torchvision and timm are found along
    the worker's `path` (a run's first sys.path entry is checked per request instead)."""
    import importlib.machinery

    entries = []
    for folder in sys.path:
        if os.path.basename(folder.rstrip(os.sep)) in ("site-packages", "dist-packages"):
            try:
                entries.append([folder, os.stat(folder).st_mtime_ns])
            except OSError:
                continue
    for name in _LIBRARIES:
        try:
            spec = importlib.machinery.PathFinder.find_spec(name, path)
        except (ImportError, ValueError):
            spec = None
        origin = spec.origin if spec is not None else None
        if origin:
            try:
                entries.append([name, origin, os.stat(os.path.dirname(origin)).st_mtime_ns])
            except OSError:
                entries.append([name, origin])
    return entries


def value_hash(value: str | None) -> str | None:
    # Hashes only: a key or a worker's record must not keep a copy of the user's secrets.
    return None if value is None else hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    """Which worker fits this process, and where its files are."""

    folder: str
    executable_tag: str  # one interpreter (and venv): workers of other keys with this tag are its kin
    key: str  # the whole environment key
    code_key: str  # archlint's files and the installed packages only: a kin worker whose code_key
    # differs is stale for good and may be stopped; one whose other parts differ serves another
    # environment of the same interpreter, and is left alone
    search_path: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.executable_tag}-{self.key[:16]}"

    def path(self, suffix: str) -> str:
        return os.path.join(self.folder, self.name + suffix)

    @property
    def socket_path(self) -> str:
        return self.path(".sock")

    @property
    def lock_path(self) -> str:
        return self.path(".lock")

    @property
    def log_path(self) -> str:
        return self.path(".log")

    @property
    def learned_path(self) -> str:
        """The third-party packages models were seen to import (preload.py), per interpreter."""
        return os.path.join(self.folder, self.executable_tag + ".packages")


_identity: Identity | None = None


def identity(folder: str | None = None, path: list[str] | None = None) -> Identity:
    """This process's worker identity (computed once per process); Unavailable if there is no
    usable state folder. The worker passes the search `path` its client computed (its own
    sys.path is that path already, nothing put first)."""
    global _identity
    if _identity is not None and (folder is None or _identity.folder == folder):
        return _identity
    folder = folder or state_dir()
    executable = os.path.realpath(sys.executable)
    tag = hashlib.sha256(f"{executable}\0{sys.prefix}".encode()).hexdigest()[:8]
    path = list(path) if path is not None else search_path()
    code = {"archlint": __version__, "files": _own_files(), "installed": _installed(path)}
    data = {
        "protocol": PROTOCOL, "code": code, "executable": executable, "prefix": sys.prefix,
        "python": sys.version, "flags": list(sys.flags), "xoptions": sys._xoptions,
        "warnoptions": sys.warnoptions, "path": path,
        "environ": {k: value_hash(v) for k, v in sorted(os.environ.items())
                    if k.startswith(_KEY_PREFIXES) or k in _KEY_NAMES},
        "ids": [os.getuid(), os.getgid(), sorted(os.getgroups())],
        "limits": [resource.getrlimit(getattr(resource, r)) for r in _LIMITS if hasattr(resource, r)],
    }
    result = Identity(folder, tag, _digest(data), _digest(code), tuple(path))
    if len(result.socket_path) > _SOCKET_PATH_MAX:
        raise Unavailable(f"the socket path {result.socket_path} is too long for a Unix socket; "
                          "set ARCHLINT_WORKER_DIR to a shorter folder")
    _identity = result
    return result
