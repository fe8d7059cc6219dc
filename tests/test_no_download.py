"""archlint never downloads: a file that asks for pretrained weights gets one clear error
naming the call and the fix, at once (no resolver wait, no retries)."""
from __future__ import annotations

import socket
import time

import pytest
from click.testing import CliRunner

from archlint import no_download
from archlint.cli import main

from .helpers import write_model


def test_torchvision_weights_are_refused_with_the_fix(tmp_path):
    pytest.importorskip("torchvision")
    path = write_model(tmp_path, """
        import torchvision
        model = torchvision.models.resnet18(weights="DEFAULT")
    """)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["check", "--no-cache", str(path)])
    assert time.monotonic() - started < 60
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert f"{path.name}:2:" in text and "download.pytorch.org" in text
    assert "never downloads" in text and "weights=None" in text and "Traceback" not in text


def test_a_timm_hub_download_fails_at_once(tmp_path):
    pytest.importorskip("timm")
    path = write_model(tmp_path, """
        import timm
        model = timm.create_model("resnet18", pretrained=True)
    """)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["check", "--no-cache", str(path)])
    assert time.monotonic() - started < 60  # Hugging Face's retries would take minutes
    assert result.exit_code == 2 and "pretrained=False" in result.output


def test_connections_are_refused_only_while_loading():
    with no_download.refused():
        with pytest.raises(OSError):
            socket.create_connection(("example.invalid", 80), timeout=1)
        left, right = socket.socketpair()  # local sockets still work
        left.close(), right.close()
    assert socket.getaddrinfo is not None and socket.socket.connect.__name__ == "connect"
    assert no_download.attempts()[-1].address == "example.invalid"
