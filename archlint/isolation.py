"""Running one file's work in a forked child process, with a time and a memory limit.

Linting a file means executing it, and a file may do anything: `os._exit(0)` at import, start a
thread that never ends, loop forever in `forward`, allocate without bound, print over the JSON
report on stdout, `os.chdir`. Each file is therefore built and traced in a child forked from this
process after torch and archlint's pipeline are imported (so the child starts warm), and its
answer comes back pickled through a pipe. Whatever the child does, the parent gets either that
answer or an `IsolationError` that says what happened, and goes on with the next file.

The child's fds 1 and 2 go to a temporary file, returned with the answer: the user's prints
never reach the parent's stdout. The answer is read back with an unpickler that only accepts
archlint's, torch's, networkx's and the standard library's types: reading it must never import
(and so run) the user's code in the parent.
"""
from __future__ import annotations

import io
import os
import pickle
import select
import signal
import struct
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from .errors import IsolationError

_HEADER = struct.Struct("!Q")
_POLL = 0.05  # seconds between looks at the child's memory and the clock
# What an answer may be made of. Not builtins.eval and friends: whatever runs in the child
# may write to the pipe, and reading must not run its code here.
_SAFE_BUILTINS = frozenset({"set", "frozenset", "list", "dict", "tuple", "complex", "slice", "range",
                            "bytearray", "bytes", "int", "float", "str", "bool", "object", "NoneType"})
_SAFE_MODULES = ("archlint", "collections", "networkx", "pathlib", "enum", "datetime", "fractions",
                 "decimal", "_codecs", "copyreg")


@dataclass
class Outcome:
    value: Any = None  # what the function returned, if it did
    error: IsolationError | None = None
    output: str = ""  # what the child wrote to fds 1 and 2
    seconds: float = 0.0


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        top = module.split(".")[0]
        if module == "builtins" and name in _SAFE_BUILTINS or top in _SAFE_MODULES and \
                (top != "copyreg" or name == "_reconstructor"):
            return super().find_class(module, name)
        if module == "torch":  # shapes, devices and dtypes; never a function
            import torch

            found = getattr(torch, name, None)
            if found in (torch.Size, torch.device) or isinstance(found, torch.dtype):
                return found
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def loads(data: bytes) -> Any:
    return _SafeUnpickler(io.BytesIO(data)).load()


def _rss_bytes(pid: int) -> int:
    """Resident memory of a process."""
    total = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    return total


def _child(work: Callable[[], Any], result_fd: int, output_fd: int, memory_bytes: int) -> None:
    """Never returns: the child ends with os._exit, so neither the user's non-daemon threads nor
    their atexit handlers can keep it (or the parent waiting on it) alive."""
    status = 0
    try:
        os.setpgid(0, 0)  # its own group: a timeout kills what the file started too
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        # Deeply nested models recurse a few frames per level (deepcopy, fx, export); the
        # default limit of 1000 stops a 150-deep Sequential. A real overflow here kills only
        # the child, and comes back as an error for this file.
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
        if memory_bytes:
            _limit_address_space(memory_bytes)
        try:
            payload = pickle.dumps(("ok", work()), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # the work's own errors are answers too
            text = "".join(traceback.format_exception(exc))
            payload = pickle.dumps(("crash", f"{type(exc).__name__}: {exc}", text))
        os.write(result_fd, _HEADER.pack(len(payload)))
        view = memoryview(payload)
        while view:
            view = view[os.write(result_fd, view):]
    except BaseException:
        status = 70
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        os._exit(status)


def _limit_address_space(memory_bytes: int) -> None:
    """A hard stop for allocations too fast for the RSS watch: the address space already mapped
    (torch maps a few GB it never touches) plus the limit."""
    import resource

    try:
        with open("/proc/self/status", "rb") as status:
            mapped = next(int(l.split()[1]) * 1024 for l in status if l.startswith(b"VmSize:"))
        limit = mapped + memory_bytes
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (OSError, ValueError, StopIteration):
        pass


def run(work: Callable[[], Any], *, timeout: float, memory_mb: int, label: str) -> Outcome:
    """Run `work()` in a forked child; `label` (a file name) leads any error message."""
    started = time.monotonic()
    memory_bytes = int(memory_mb) * 1024 * 1024 if memory_mb else 0
    read_fd, write_fd = os.pipe()
    output = tempfile.TemporaryFile()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()  # or the child would print the parent's buffered text again
        except (OSError, ValueError):
            pass
    # The child shares the parent's pages (torch alone is some 600 MB of them), and RSS counts
    # them: the limit is on what the file adds on top.
    base_rss = _rss_bytes(os.getpid())
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        _child(work, write_fd, output.fileno(), memory_bytes)
    os.close(write_fd)
    os.set_blocking(read_fd, False)
    buffer = bytearray()
    expected: int | None = None
    cause, detail = None, ""
    exited = eof = False
    peak = 0
    try:
        while True:
            if not eof:
                readable, _, _ = select.select([read_fd], [], [], _POLL)
                if readable:
                    try:
                        chunk = os.read(read_fd, 1 << 20)
                    except BlockingIOError:
                        chunk = None
                    if chunk:
                        buffer += chunk
                    elif chunk == b"":
                        eof = True
            else:
                time.sleep(_POLL)
            if expected is None and len(buffer) >= _HEADER.size:
                expected = _HEADER.unpack(bytes(buffer[:_HEADER.size]))[0]
            if expected is not None and len(buffer) >= _HEADER.size + expected:
                break
            was_exited = exited
            exited = exited or _has_exited(pid)
            if exited and (eof or was_exited):
                break  # gone without a whole answer (a grandchild may still hold the pipe)
            elapsed = time.monotonic() - started
            if timeout and elapsed > timeout:
                cause, detail = "timeout", f"it was still running after {timeout:g} s"
                break
            if memory_bytes:
                rss = _rss_bytes(pid) - base_rss
                peak = max(peak, rss)
                if rss > memory_bytes:
                    cause = "memory"
                    detail = f"it used {rss / 2**20:.0f} MB more than archlint itself, over the limit of {memory_mb} MB"
                    break
    finally:
        # Killed before it is reaped: until then its pid, and so its process group's id, cannot
        # belong to anyone else. The group also holds whatever the file started.
        _kill(pid)
        exit_status = _wait(pid)
        os.close(read_fd)
        output.seek(0)
        captured = output.read().decode("utf-8", "replace")
        output.close()
        if expected is not None and len(buffer) >= _HEADER.size + expected:
            exit_status = None  # it answered; how it ended afterwards does not matter
    seconds = time.monotonic() - started
    if cause is None and expected is not None and len(buffer) >= _HEADER.size + expected:
        try:
            answer = loads(bytes(buffer[_HEADER.size:_HEADER.size + expected]))
        except Exception as exc:
            cause, detail = "unreadable", f"its answer could not be read ({type(exc).__name__}: {exc})"
        else:
            if answer[0] == "ok":
                return Outcome(value=answer[1], output=captured, seconds=seconds)
            cause, detail = "crashed", f"archlint failed inside it ({answer[1]})"
            error = _error(label, cause, detail)
            error.details = answer[2]
            return Outcome(error=error, output=captured, seconds=seconds)
    if cause is None:
        cause, detail = _describe_exit(exit_status, memory_bytes and peak > 0.9 * memory_bytes)
    return Outcome(error=_error(label, cause, detail), output=captured, seconds=seconds)


def _describe_exit(status: int | None, near_memory_limit: bool) -> tuple[str, str]:
    if status is None:
        return "exited", "it ended without an answer"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        if near_memory_limit:
            return "memory", f"it was killed by {name} near the memory limit"
        return "killed", f"it was killed by {name}"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    return "exited", f"it exited with status {code} before archlint was done (os._exit or a crash)"


_ADVICE = {
    "timeout": "Raise `timeout` (seconds) in [tool.archlint] if the model is just slow to build; "
               "otherwise look for a loop that never ends at import or in forward.",
    "memory": "Raise `memory-limit` (MB) in [tool.archlint] if the model really needs it.",
    "exited": "Something in the file (or a library it calls) ended the process, e.g. os._exit or "
              "sys.exit in a thread; guard scripts with `if __name__ == '__main__':`.",
    "killed": "Something in the file (or a library it calls) killed the process.",
}


def _error(label: str, cause: str, detail: str) -> IsolationError:
    # The report's target names the file already; `label` is kept for the debug details.
    return IsolationError(f"building and tracing stopped: {detail}.",
                          hint=_ADVICE.get(cause, "Run with --debug to see more."), cause=cause)


def _has_exited(pid: int) -> bool:
    """Has the child ended? Asked without reaping it (WNOWAIT)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _wait(pid: int) -> int | None:
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


def _kill(pid: int) -> None:
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass
