"""Writing the user's output files without ever losing their data.

Every file archlint writes at the user's request (a report, a diff, a baseline) goes through
here: the target is checked before any linting starts (so a wrong `-o` fails in milliseconds,
not after minutes of work), it may never be one of the run's inputs or any `.py` file, and it is
written whole to a temporary file in the same folder, then renamed over the target, so an
interrupted run leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

from .errors import ArchlintError


class OutputError(ArchlintError):
    kind = "output"


def check_target(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (),
                 what: str = "output") -> Path:
    """The absolute path to write `what` to, after refusing what would destroy data or fail
    late: an input of this run, a Python file, a folder, a missing or read-only folder."""
    target = Path(os.path.abspath(path))
    shown = str(path)
    if target.suffix == ".py" or target.name.endswith(".pyw"):
        raise OutputError(f"{shown}: refusing to write the {what} over a Python file.",
                          hint="Pick a name ending in .txt, .json, .sarif or .html.", cause="python-file")
    real = os.path.realpath(target)
    for given in inputs:
        source = Path(str(given).partition("::")[0])
        if not str(source):
            continue
        source_real = os.path.realpath(source)
        if real == source_real or (os.path.isdir(source_real) and real.startswith(source_real + os.sep)
                                   and real.endswith((".py", ".pyw"))):
            raise OutputError(f"{shown}: refusing to write the {what} over {given}, an input of this run.",
                              hint="Pick another file name.", cause="input-file")
    if os.path.isdir(target):
        raise OutputError(f"{shown}: is a folder; name the file to write the {what} to.",
                          cause="is-folder")
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(f"{shown}: the folder {folder} does not exist.",
                          hint="Create it first, or pick another path.", cause="missing-folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise OutputError(f"{shown}: cannot write there (permission denied).",
                          hint="Pick a writable path.", cause="read-only")
    return target


def write_text(path: str | os.PathLike, text: str, inputs: Iterable[str | os.PathLike] = (),
               what: str = "output") -> None:
    """Write `text` to `path` atomically, after `check_target`."""
    target = check_target(path, inputs, what)
    # A symlink named as the output is replaced, not followed: the file it points at is not ours.
    mode = 0o666 & ~_umask()
    if target.exists() and not target.is_symlink():
        mode = target.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise OutputError(f"{path}: could not write the {what} ({exc.strerror or exc}).",
                              cause="write-failed") from exc
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
