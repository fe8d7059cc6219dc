"""What the worker imports ahead of any request, and how it learns which packages models use.

The worker imports torch and archlint's pipeline first (what every run needs before a model
is imported), then torchvision and timm when they are installed, then the third-party packages
that models linted in this environment imported: each per-file child notes the new top-level
packages its file pulled in from site-packages (`note_new_packages`, called by the driver), in
one list per interpreter in the worker folder.

Only installed code is ever imported here: a name is imported only when Python finds it in the
standard library or a site-packages folder, so a module of the user's project (or an editable
install pointing into it) is never imported in the worker, and an edit to it is always seen.
A package that cannot be imported quietly (it prints, warns, starts a thread or fails) is noted
as refused and never imported ahead again: in a normal run its output would belong to the file
that imported it, and a thread does not survive the fork.
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys

from . import environment

KNOWN = ("torchvision", "timm")  # model zoos; imported ahead whenever installed
# archlint prepares these before they are imported (archlint/load_mmdet.py installs stand-ins
# for mmcv's compiled ops), so importing them ahead would change how they load.
NEVER = frozenset({"mmcv", "mmdet", "mmengine", "archlint", "__main__", "__mp_main__"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_LEARNED = 200

# Set (to the worker folder's list) in processes that should note what models import: the
# worker's children and, while a worker is wanted, a run in this process. None: note nothing.
learned_file: str | None = None
_noted: set[str] = set()


def library_origin(name: str, dirs: tuple[str, ...] | None = None) -> str | None:
    """Where Python would import top-level module `name` from, if that is installed code (the
    standard library or site-packages); None otherwise. Finds, never imports."""
    if not _NAME.match(name) or name in NEVER:
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    origin = locations[0] if locations else spec.origin
    if not origin or origin in ("built-in", "frozen"):
        return None
    return origin if environment.is_library_path(origin, dirs) else None


def _site_dirs() -> tuple[str, ...]:
    return tuple(d for d in environment.library_dirs()
                 if os.path.basename(d.rstrip(os.sep)) in ("site-packages", "dist-packages"))


def note_new_packages(before: set[str]) -> None:
    """Note the third-party top-level packages imported since `before` (a set of sys.modules
    names), for the worker to import ahead next time. A no-op unless `learned_file` is set;
    never raises (this runs inside a lint)."""
    if learned_file is None:
        return
    try:
        sites = _site_dirs()
        new = []
        for top in sorted({name.split(".")[0] for name in set(sys.modules) - before}):
            if top in _noted or top in NEVER or top == "torch" or not _NAME.match(top):
                continue
            module = sys.modules.get(top)
            path = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", []) or []), None)
            if isinstance(path, str) and environment.is_library_path(path, sites):
                new.append(top)
            _noted.add(top)
        wanted, refused = read_learned(learned_file)
        new = [n for n in new if n not in wanted and n not in refused]
        if new:
            _append(learned_file, "".join(f"{n}\n" for n in new))
    except Exception:
        pass


def note_refused(path: str, name: str) -> None:
    _append(path, f"-{name}\n")


def _append(path: str, text: str) -> None:
    # O_APPEND: several children may note at once; each short write lands whole.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def read_learned(path: str) -> tuple[list[str], set[str]]:
    """(packages to import ahead in the order first seen, packages refused)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            lines = [line.strip() for line in stream]
    except OSError:
        return [], set()
    refused = {line[1:] for line in lines if line.startswith("-") and _NAME.match(line[1:])}
    wanted: list[str] = []
    for line in lines:
        if _NAME.match(line) and line not in refused and line not in wanted and line not in NEVER:
            wanted.append(line)
    return wanted[:_MAX_LEARNED], refused


def ahead_of_time(path: str | None) -> list[str]:
    """The packages to import after the core, in order: the known model zoos, then those
    learned, each only if installed."""
    learned, refused = read_learned(path) if path else ([], set())
    names = [n for n in (*KNOWN, *learned) if n not in refused]
    return list(dict.fromkeys(names))
