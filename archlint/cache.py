"""The results cache: keys, entries, and the recorders of what a file's lint depended on.

Linting a file means importing it, and importing torch costs a second or more. A pre-commit
hook runs on every commit, mostly over files that did not change, so `archlint check` (the
driver, archlint/driver.py) answers from the cache whenever it can, and only imports torch for
a file it has to lint again. Nothing in this module may import torch.

The cache lives in `.archlint_cache/` at the project root (the folder with the pyproject.toml,
else the git work tree), else in the user's cache folder; never in a folder anyone may write
to, and it never follows a symlink: a planted `.archlint_cache/.gitignore -> ~/.bashrc` must
not make archlint overwrite the file it points at.

An entry is found by a key made of everything that decides a file's findings and is known before
importing it: the file's content and path, the targets named, the settings (minus fail-on, which
changes the exit status, not the findings), the working folder (paths in reports are relative to
it), the Python, torch and archlint versions, the archlint sources themselves (an editable install
keeps its version number while its rules change) and the packages installed (the times of the
sys.path folders, which change with every install: a new torchvision or rule pack). What the file
imports is only known after importing it: the entry records the environment variables read
while the file was imported and linted (hashes of their values), and the project-local modules the import
pulled in and the project files read meanwhile (found through the "open" audit event), with the
hashes of their contents, and is used only while all of them still match.

Reports with errors are never stored: a missing package or a broken environment can be fixed
without touching the file.
"""
from __future__ import annotations

import builtins
import hashlib
import importlib.util
import json
import os
import re
import stat
import sys
import sysconfig
import tempfile
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Sequence

from . import __version__
from .config import Settings
from .findings import Finding
from .results import ModelReport

CACHE_DIR_NAME = ".archlint_cache"
_FORMAT = 2  # bump when the entry layout changes
_CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by archlint.\n"
    "# For information about cache directory tags, see https://bford.info/cachedir/\n"
)

_LIBRARY_DIRS = tuple(
    os.path.realpath(p) + os.sep
    for p in {sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")}
)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_hash(path: str) -> str | None:
    try:
        return _sha256(Path(path).read_bytes())
    except OSError:
        return None


# --- which project files an import used -----------------------------------------------------

# importer file -> files of the modules its import statements reached, for the whole process:
# a module imported by an earlier file is not imported again, but its edges stay known.
_import_edges: dict[str, set[str]] = {}
_archlint_dirs: tuple[str, ...] | None = None


def _package_dirs(*names: str) -> tuple[str, ...]:
    dirs = []
    for name in names:
        spec = importlib.util.find_spec(name)
        dirs.extend(os.path.realpath(p) + os.sep for p in (spec.submodule_search_locations or []))
    return tuple(dirs)


def _own_dirs() -> tuple[str, ...]:
    """archlint's own package folders: never the user's project."""
    global _archlint_dirs
    if _archlint_dirs is None:
        _archlint_dirs = _package_dirs("archlint", "archlint.rules", "archlint.reports")
    return _archlint_dirs


def is_project_file(path: str | None, must_exist: bool = True) -> bool:
    """A .py file of the user's project: not the standard library, site-packages or archlint."""
    if not path or not path.endswith(".py"):
        return False
    real = os.path.realpath(path)
    return not real.startswith(_LIBRARY_DIRS + _own_dirs()) and (os.path.isfile(real) or not must_exist)


def _module_file(module: Any) -> str | None:
    path = getattr(module, "__file__", None)
    return os.path.realpath(path) if isinstance(path, str) else None


# Files read while an import ran (a model that sizes itself from a YAML or JSON next to it),
# found through the "open" audit event: module file -> the files read while it was imported.
_reads_during_import: dict[str, set[str]] = {}
_open_stack: list[set[str]] = []  # one set per import in progress, plus the recording window
_audit_installed = False


def _audit(event: str, args: tuple) -> None:
    if event != "open" or not _open_stack:
        return
    path, mode, flags = args
    if not isinstance(path, (str, bytes)):
        return  # a file descriptor
    if isinstance(mode, str):
        if any(c in mode for c in "wax+"):
            return
    elif isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR):
        return
    _open_stack[-1].add(os.fsdecode(path))


def _install_audit_hook() -> None:
    global _audit_installed
    if not _audit_installed:
        sys.addaudithook(_audit)  # cannot be removed; it does nothing unless recording
        _audit_installed = True


def _project_root(path: str) -> str:
    """The git work tree holding `path`, else its folder."""
    folder = os.path.dirname(os.path.realpath(path))
    probe = folder
    while True:
        if os.path.exists(os.path.join(probe, ".git")):
            return probe
        parent = os.path.dirname(probe)
        if parent == probe:
            return folder
        probe = parent


def is_project_data(path: str) -> bool:
    """A file the user's project reads (a config, a .py): not a library, not archlint, not caches."""
    real = os.path.realpath(path)
    if real.startswith(_LIBRARY_DIRS + _own_dirs()) or not os.path.isfile(real):
        return False
    parts = Path(real).parts
    return "__pycache__" not in parts and CACHE_DIR_NAME not in parts and not real.endswith(".pyc")


def _note_import(name: str, globals_: dict | None, fromlist: Sequence[str], level: int) -> set[str]:
    importer_file = (globals_ or {}).get("__file__")
    if not isinstance(importer_file, str):
        return
    importer = os.path.realpath(importer_file)
    if level:
        package = (globals_ or {}).get("__package__") or ""
        full = importlib.util.resolve_name("." * level + name, package) if name else package
    else:
        full = name
    names = []
    parts = full.split(".") if full else []
    names += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]  # `import a.b` runs a too
    names += [f"{full}.{item}" for item in fromlist or () if item != "*"]
    files = {f for f in (_module_file(sys.modules.get(n)) for n in names) if f}
    _import_edges.setdefault(importer, set()).update(files)
    return files


@contextmanager
def recording_imports() -> Iterator["ImportRecord"]:
    """While active, remember which module files each import statement reached."""
    _install_audit_hook()
    record = ImportRecord(set(sys.modules))
    original = builtins.__import__

    def hooked(name, globals=None, locals=None, fromlist=(), level=0):
        _open_stack.append(set())
        try:
            module = original(name, globals, locals, fromlist, level)
        finally:
            reads = _open_stack.pop()
        try:
            # Reads are credited to every module the statement reached (more than needed when
            # one statement imports several new modules, never less), and to the importer.
            for reached in _note_import(name, globals, fromlist, level):
                if reads:
                    _reads_during_import.setdefault(reached, set()).update(reads)
            _open_stack[-1].update(reads)
        except Exception:  # bookkeeping must never break the user's import
            pass
        return module

    builtins.__import__ = hooked
    _open_stack.append(record.reads)
    try:
        yield record
    finally:
        builtins.__import__ = original
        _open_stack.pop()
        record.new_modules = set(sys.modules) - record.before


class ImportRecord:
    def __init__(self, before: set[str]):
        self.before = before
        self.new_modules: set[str] = set()
        self.reads: set[str] = set()  # every file opened for reading while recording

    def project_dependencies(self, path: str) -> set[str]:
        """Project files `path` depends on: everything its imports reached, transitively, every
        project module first imported while it was linted, and the project files read meanwhile
        (by those imports, even in an earlier file's run, or while building the model)."""
        start = os.path.realpath(path)
        seen, frontier = {start}, [start]
        while frontier:
            for reached in _import_edges.get(frontier.pop(), ()):
                if reached not in seen and is_project_file(reached):
                    seen.add(reached)
                    frontier.append(reached)
        seen |= {f for f in (_module_file(sys.modules.get(n)) for n in self.new_modules)
                 if is_project_file(f)}
        data = set(self.reads)
        for module_file in seen:
            data |= _reads_during_import.get(module_file, set())
        # Data files count only inside the project: /proc/cpuinfo is a file too, and changes.
        roots = tuple(str(r) + os.sep for r in {_project_root(start), os.path.realpath(os.getcwd())})
        seen |= {real for real in map(os.path.realpath, data)
                 if real.startswith(roots) and is_project_data(real)}
        seen.discard(start)
        return seen


# --- which environment variables a file read ------------------------------------------------

class EnvironRecord:
    def __init__(self):
        self.reads: dict[str, str | None] = {}  # name -> hash of its value (None: unset)


@contextmanager
def recording_environ() -> Iterator[EnvironRecord]:
    """While active, remember every os.environ lookup (os.getenv and os.environ.get go through
    __getitem__), so a model sized from `WIDTH=...` is linted again when WIDTH changes."""
    record = EnvironRecord()
    environ = os.environ
    original_class = type(environ)

    class Recording(original_class):  # type: ignore[misc, valid-type]
        def __getitem__(self, name):
            try:
                value = super().__getitem__(name)
            except KeyError:
                if isinstance(name, str):
                    record.reads.setdefault(name, None)
                raise
            if isinstance(name, str):
                record.reads.setdefault(name, _value_hash(value))
            return value

    environ.__class__ = Recording
    try:
        yield record
    finally:
        environ.__class__ = original_class


def _value_hash(value: str | None) -> str | None:
    # Only a hash is stored: the cache must not keep a copy of secrets the model happens to read.
    return None if value is None else _sha256(value.encode("utf-8", "surrogateescape"))[:16]


def environ_matches(reads: dict[str, str | None]) -> bool:
    return all(_value_hash(os.environ.get(name)) == digest for name, digest in reads.items())


# --- serializing reports ------------------------------------------------------------------

def finding_to_json(f: Finding) -> dict[str, Any]:
    return f.to_json()


def finding_from_json(data: dict[str, Any]) -> Finding:
    return Finding.from_json(data)


def model_report_to_json(m: ModelReport) -> dict[str, Any]:
    return {
        "target": m.target, "tracer": m.tracer, "inputs": m.inputs, "input_source": m.input_source,
        "summary": m.summary, "notes": list(m.notes), "timings": dict(m.timings),
        "findings": [finding_to_json(f) for f in m.findings],
        "parts": list(getattr(m, "parts", None) or []),  # models linted part by part
        "coverage": m.coverage,
        "skipped": m.skipped,
    }


def _require(ok: bool) -> None:
    if not ok:
        raise ValueError("cache entry of the wrong shape")


def _is_location(data: Any) -> bool:
    return data is None or (isinstance(data, dict) and isinstance(data.get("path"), str)
                            and isinstance(data.get("line"), int) and isinstance(data.get("abspath", ""), str))


def _check_model_json(data: Any) -> None:
    """Raise ValueError unless `data` has the shape model_report_to_json writes: an entry may
    be any JSON (a hand edit, another version, a disk error), and a miss costs only time."""
    _require(isinstance(data, dict))
    _require(isinstance(data.get("target"), str) and isinstance(data.get("tracer"), (str, type(None)))
             and isinstance(data.get("input_source"), str))
    inputs = data.get("inputs")
    _require(isinstance(inputs, list) and all(isinstance(s, list) and all(isinstance(d, int) for d in s)
                                              for s in inputs))
    summary = data.get("summary")
    _require(isinstance(summary, dict) and all(isinstance(summary.get(k), int) for k in ("params", "macs", "layers")))
    _require(isinstance(data.get("notes", []), list) and all(isinstance(n, str) for n in data.get("notes", [])))
    _require(isinstance(data.get("timings", {}), dict))
    _require(isinstance(data.get("parts", []), list) and all(isinstance(p, dict) for p in data.get("parts", [])))
    findings = data.get("findings")
    _require(isinstance(findings, list))
    for f in findings:
        _require(isinstance(f, dict) and all(isinstance(f.get(k), str)
                                             for k in ("code", "name", "severity", "module", "message")))
        _require(all(_is_location(f.get(k)) for k in ("location", "built_at", "called_at")))
        _require(isinstance(f.get("evidence") or {}, dict))
        fix = f.get("fix")
        _require(fix is None or (isinstance(fix, dict) and isinstance(fix.get("description"), str)
                                 and isinstance(fix.get("code"), (str, type(None)))))


def model_report_from_json(data: dict[str, Any]) -> ModelReport:
    _check_model_json(data)
    report = ModelReport(
        target=data["target"], tracer=data["tracer"], inputs=data["inputs"],
        input_source=data["input_source"], findings=[finding_from_json(f) for f in data["findings"]],
        notes=data.get("notes", []), timings=data.get("timings", {}),
        stored_summary=data["summary"], from_cache=True, coverage=data.get("coverage"), skipped=data.get("skipped"),
    )
    if data.get("parts"):
        report.parts = data["parts"]
    return report


# --- the cache -------------------------------------------------------------------------------

def _settings_fingerprint(settings: Settings) -> dict[str, Any]:
    data = asdict(settings)
    data.pop("source", None)
    data.pop("fail_on", None)
    data.pop("timeout", None)  # limits decide whether a run finishes, not its findings
    data.pop("memory_limit", None)
    data.pop("import_scripts", None)  # scripts are set aside before the cache is asked
    data.pop("worker", None)  # where the run happens, not what it finds
    data.pop("worker_idle", None)
    return data


def _sources_fingerprint() -> list:
    """Names, sizes and modification times of archlint's own sources (rules included; the
    renderers are not: they do not change findings)."""
    entries = []
    for folder in _package_dirs("archlint", "archlint.rules"):
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith((".py", ".toml", ".json")):
                    st = os.stat(os.path.join(root, name))
                    entries.append([os.path.join(root, name), st.st_size, st.st_mtime_ns])
    return entries


def torch_version() -> str | None:
    """torch's version without importing torch, nor importlib.metadata (which alone costs more
    than the rest of a cached run): torch/version.py is one line to read."""
    spec = importlib.util.find_spec("torch")
    folder = (spec.submodule_search_locations or [None])[0] if spec else None
    if folder:
        try:
            text = Path(folder, "version.py").read_text(encoding="utf-8")
            match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
            if match:
                return match.group(1)
        except OSError:
            pass
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def _installed_packages_fingerprint() -> list:
    """Modification times of the folders on sys.path: installing, upgrading or removing any
    package (a new torch, torchvision or timm, a rule pack registered through entry points)
    adds or removes a *.dist-info folder there, which changes the folder's time."""
    entries = []
    for folder in sys.path:
        if os.path.basename(folder.rstrip(os.sep)) not in ("site-packages", "dist-packages"):
            continue  # the working folder or a script's folder change all the time
        try:
            entries.append([folder, os.stat(folder or ".").st_mtime_ns])
        except OSError:
            continue
    return entries


def project_root(settings: Settings, start: str | None = None) -> Path | None:
    """The folder of the pyproject.toml that configured the run, else the nearest folder with a
    pyproject.toml or a .git above `start` (the first path linted) or the working folder."""
    if settings.source and os.path.isfile(settings.source):
        return Path(os.path.realpath(settings.source)).parent
    probe = Path(os.path.realpath(start or os.getcwd()))
    if not probe.is_dir():
        probe = probe.parent
    for folder in [probe, *probe.parents]:
        if (folder / "pyproject.toml").is_file() or (folder / ".git").exists():
            return folder
    return None


def _world_writable(folder: Path) -> bool:
    try:
        return bool(os.stat(folder).st_mode & stat.S_IWOTH)
    except OSError:
        return True


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _write_new(path: Path, text: str) -> None:
    """Create `path` for writing; fails if it exists, symlink or not (O_EXCL with O_NOFOLLOW)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)


def _config_fingerprint(settings: Settings) -> str | None:
    """The config file's content: a config outside the project (a shared one, no git) changes
    without any file of the project changing."""
    return _file_hash(settings.source) if settings.source else None


class ResultCache:
    """Findings per linted file, under `<root>/.archlint_cache/`."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.results = self.directory / f"results-v{_FORMAT}"
        self._environment: str | None = None

    @classmethod
    def for_settings(cls, settings: Settings, start: str | None = None) -> "ResultCache":
        """At the project root (beside the pyproject.toml that configured the run, else the
        nearest pyproject.toml or git work tree above `start` or the working folder), unless
        that folder is writable by everyone; then in the user's cache folder.
        ARCHLINT_CACHE_DIR overrides all of them."""
        override = os.environ.get("ARCHLINT_CACHE_DIR")
        if override:
            return cls(override)
        root = project_root(settings, start)
        if root is None or _world_writable(root):
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
            return cls(Path(base) / "archlint")
        return cls(root / CACHE_DIR_NAME)

    def _ensure_directory(self) -> None:
        """Create the folders and marker files without following any symlink; raises OSError
        (the run then goes on without the cache) when a part of the path is a symlink."""
        for folder in (self.directory, self.results):
            try:
                os.mkdir(folder, 0o700)
            except FileExistsError:
                pass
            info = os.lstat(folder)
            if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
                raise OSError(f"{folder} is not a plain folder")
            if folder == self.directory and info.st_uid != os.getuid():
                raise OSError(f"{folder} belongs to someone else")
        for name, text in ((".gitignore", "# Created by archlint.\n*\n"), ("CACHEDIR.TAG", _CACHEDIR_TAG)):
            path = self.directory / name
            if os.path.lexists(path):
                continue
            _write_new(path, text)

    def environment(self) -> str:
        """What every key shares: versions, archlint's sources and the packages installed."""
        if self._environment is None:
            data = {
                "archlint": __version__, "torch": torch_version(), "python": sys.version,
                "sources": _sources_fingerprint(), "packages": _installed_packages_fingerprint(),
            }
            self._environment = _sha256(json.dumps(data, sort_keys=True, default=str).encode())
        return self._environment

    def key(self, path: str, names: Sequence[str], explicit: bool, settings: Settings) -> tuple[str, str] | None:
        """(slot, key): the slot names the file and the run's settings (one entry each: a new
        one replaces the old); the key also covers the contents and the environment.
        None when the file cannot be read (its error is not cached)."""
        content = _file_hash(path)
        if content is None:
            return None
        slot_data = {"path": os.path.realpath(path), "names": list(names), "explicit": explicit,
                     "cwd": os.getcwd(), "settings": _settings_fingerprint(settings),
                     "config": _config_fingerprint(settings)}
        slot = _sha256(json.dumps(slot_data, sort_keys=True, default=str).encode())[:24]
        key_data = {"slot": slot, "content": content, "environment": self.environment()}
        return slot, _sha256(json.dumps(key_data, sort_keys=True, default=str).encode())[:40]

    def _entry_path(self, slot: str, key: str) -> Path:
        return self.results / f"{slot}-{key}.json"

    def get(self, slot_key: tuple[str, str] | None) -> tuple[list[ModelReport], list[str]] | None:
        """(reports, rule-pack problems) if a valid entry exists, else None."""
        if slot_key is None:
            return None
        try:
            path = self._entry_path(*slot_key)
            if os.path.islink(path):
                return None
            entry = json.loads(path.read_text(encoding="utf-8"))
            _require(isinstance(entry, dict) and isinstance(entry.get("dependencies", {}), dict)
                     and isinstance(entry.get("environ", {}), dict))
            # Any entry that is not exactly what put() writes is a miss, never an error.
            for dep, digest in entry.get("dependencies", {}).items():
                if _file_hash(dep) != digest:
                    return None
            if not environ_matches(entry.get("environ", {})):
                return None
            problems = entry.get("problems", [])
            if not isinstance(problems, list) or not all(isinstance(p, str) for p in problems):
                return None
            _require(isinstance(entry, dict) and isinstance(entry.get("models"), list))
            return [model_report_from_json(m) for m in entry["models"]], problems
        except Exception:
            return None

    def put(self, slot_key: tuple[str, str] | None, models: list[ModelReport],
            dependencies: set[str], problems: Sequence[str] = (),
            environ: dict[str, str | None] | None = None) -> bool:
        """Store the reports of one file; False if they cannot be cached (errors, evidence
        that JSON cannot hold, an unreadable dependency)."""
        if slot_key is None or any(m.error is not None for m in models):
            return False
        hashes = {dep: _file_hash(dep) for dep in sorted(dependencies)}
        if any(h is None for h in hashes.values()):
            return False
        try:
            text = json.dumps({"dependencies": hashes, "problems": list(problems),
                               "environ": dict(environ or {}),
                               "models": [model_report_to_json(m) for m in models]})
        except (TypeError, ValueError):
            return False
        try:
            self._ensure_directory()
            slot, key = slot_key
            for stale in self.results.glob(f"{slot}-*.json"):
                stale.unlink(missing_ok=True)  # unlink removes a symlink, never its target
            # Written whole, then renamed: a concurrent run never reads half an entry. mkstemp
            # opens with O_EXCL, and rename replaces a symlink instead of writing through it.
            fd, tmp = tempfile.mkstemp(dir=self.results, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(tmp, self._entry_path(slot, key))
        except OSError:
            return False  # a read-only checkout still lints, only slower
        return True
