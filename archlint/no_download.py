"""archlint never downloads: network connections are refused while a user's file is imported
and its models are built.

A linter that fetches 548 MB of pretrained weights because a loss helper asked for them is
slow, surprising and, in CI, a leak. Linting needs shapes, not weights, so every TCP/UDP
connection made while loading is refused, and the attempt is remembered with the user's line
and the library call that made it, so the error can say what to change (`weights=None`,
`pretrained=False`).
"""
from __future__ import annotations

import os
import socket
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from . import sources

# Library functions users know a download by, outermost first wins.
_KNOWN_CALLS = ("from_pretrained", "hf_hub_download", "snapshot_download", "load_state_dict_from_url",
                "download_url_to_file", "load_pretrained", "build_model_with_cfg", "get_state_dict",
                "load", "urlopen", "urlretrieve")


class DownloadBlocked(ConnectionRefusedError):
    """Raised in place of a connection: libraries treat it as being offline."""


@dataclass(frozen=True)
class Attempt:
    address: str
    call: str  # the library call that asked for the network, e.g. "load_state_dict_from_url"
    path: str | None  # the user's line that led to it
    line: int | None

    def describe(self) -> str:
        where = f"{self.path}:{self.line}: " if self.path else ""
        return f"{where}{self.call} tried to connect to {self.address}"


_attempts: list[Attempt] = []


def attempts() -> list[Attempt]:
    return list(_attempts)


def _record(address) -> Attempt:
    stack = traceback.extract_stack()[:-3]
    user = [f for f in stack if sources.Frame(f.filename, f.lineno or 0).is_user_code
            and not sources.is_internal(f.filename)]
    frame = user[-1] if user else None
    below = stack[stack.index(frame) + 1:] if frame is not None else stack
    call = next((f.name for f in below if f.name in _KNOWN_CALLS), below[0].name if below else "a call")
    host = address[0] if isinstance(address, tuple) and address else str(address)
    attempt = Attempt(str(host), call, sources.display_path(frame.filename) if frame else None,
                      frame.lineno if frame else None)
    _attempts.append(attempt)
    return attempt


_LOCAL = {None, "", "localhost", "127.0.0.1", "::1", "0.0.0.0"}
# Hugging Face's libraries retry with back-off on a refused connection (minutes); offline mode
# makes them fail at once.
_OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


@contextmanager
def _hugging_face_offline() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in _OFFLINE_FLAGS}
    os.environ.update({k: "1" for k in _OFFLINE_FLAGS})
    constants = sys.modules.get("huggingface_hub.constants")
    before = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # read once at import; the flag above is for later imports
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if constants is not None:
            constants.HF_HUB_OFFLINE = before


@contextmanager
def refused() -> Iterator[None]:
    """While active, internet connections fail with DownloadBlocked (local sockets still work),
    and name lookups for other hosts fail at once rather than wait on a resolver."""
    original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex
    original_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in _LOCAL:
            attempt = _record((name,))
            raise DownloadBlocked(f"archlint does not download: {attempt.describe()}")
        return original_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempt = _record(address)
            raise DownloadBlocked(f"archlint does not download: {attempt.describe()}")
        return original_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _record(address)
            return 111  # ECONNREFUSED
        return original_connect_ex(self, address)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.getaddrinfo = getaddrinfo
    try:
        with _hugging_face_offline():
            yield
    finally:
        socket.socket.connect, socket.socket.connect_ex = original_connect, original_connect_ex
        socket.getaddrinfo = original_getaddrinfo


_OFFLINE_ERRORS = {"LocalEntryNotFoundError", "OfflineModeIsEnabled"}


def note_offline_failure(exc: BaseException) -> None:
    """A Hugging Face library that failed because it is offline asked for a download: record
    it like a refused connection (it never reached a socket)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ in _OFFLINE_ERRORS:
            frames = traceback.extract_tb(exc.__traceback__)
            user = [f for f in frames if sources.Frame(f.filename, f.lineno or 0).is_user_code
                    and not sources.is_internal(f.filename)]
            frame = user[-1] if user else None
            below = frames[frames.index(frame) + 1:] if frame is not None else frames
            call = next((f.name for f in below if f.name in _KNOWN_CALLS), "hf_hub_download")
            _attempts.append(Attempt("huggingface.co", call,
                                     sources.display_path(frame.filename) if frame else None,
                                     frame.lineno if frame else None))
            return
        exc = exc.__cause__ or exc.__context__


def blocked_error_text(since: int) -> str | None:
    """The paragraph for a load that failed after archlint refused its downloads, or None."""
    new = _attempts[since:]
    if not new:
        return None
    first = new[0]
    return (f"{first.describe()} while the file was imported or its model built, and archlint "
            "never downloads (it lints shapes, not weights). Build the model without pretrained "
            "weights: weights=None for torchvision, pretrained=False for timm, a config instead "
            "of from_pretrained for Hugging Face (AutoModel.from_config), and guard weight loading "
            "in the file with `if __name__ == '__main__':`.")
