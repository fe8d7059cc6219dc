"""Where a finding goes for tools that live in a repository (SARIF, GitHub annotations).

Those tools place a finding on a file of the repository, by a path relative to its root. A
finding's own location may lie outside it (a torchvision layer built in site-packages); then the
other recorded line (where forward called the layer, or where it was built) is used if that one is
in the repository, else the first line of the linted file itself.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from archlint.findings import Finding, Location


def repository_root(start: str | os.PathLike | None = None) -> Path:
    """The git work tree holding `start` (default: the working folder), else that folder."""
    here = Path(start or os.getcwd()).resolve()
    for folder in [here, *here.parents]:
        if (folder / ".git").exists():
            return folder
    return here


@dataclass(frozen=True)
class Place:
    uri: str  # relative to the root, with forward slashes; absolute file URI when outside it
    path: Path  # absolute
    line: int
    end_line: int
    moved: bool  # not the finding's own location (that one lies outside the repository)


def _absolute(loc: Location) -> Path:
    return Path(loc.abspath or os.path.abspath(loc.path)).resolve()


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return path.is_file()


def repository_uri(path: Path, root: Path) -> str:
    try:
        # A URI reference (RFC 3986): spaces, %, #, ?, commas, colons and newlines percent-encoded.
        return quote(path.relative_to(root).as_posix(), safe="/")
    except ValueError:
        return path.as_uri()


def target_file(target: str) -> Path:
    return Path(target.split("::", 1)[0]).resolve()


def place(finding: Finding, target: str, root: Path) -> Place:
    own = finding.location
    candidates = [own, finding.called_at, finding.built_at]
    for loc in candidates:
        if loc is not None and _inside(_absolute(loc), root):
            path = _absolute(loc)
            return Place(repository_uri(path, root), path, loc.line, max(loc.end_line, loc.line),
                         moved=loc != own)
    path = target_file(target)
    return Place(repository_uri(path, root), path, 1, 1, moved=True)
