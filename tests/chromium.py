"""Drive headless Chromium from the tests and from bench/screenshot.py.

Chromium runs with a fresh profile, without sandbox or GPU (containers have neither), with its
own background traffic (updates, sync, sign-in) turned off as far as flags allow, and with every
host name resolving to nothing: whatever a page asks for cannot reach the network. The net log
then shows what was asked for; `page_requests` picks out the requests the page itself made.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)


def find_chromium(install: bool = False) -> tuple[str | None, str]:
    """The chromium binary, installing Debian's package when allowed and possible; else None and
    the reason."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found, ""
    if os.path.exists("/usr/bin/chromium"):
        return "/usr/bin/chromium", ""
    if not install:
        return None, "chromium is not installed"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None, "chromium is not installed and the tests are not running as root to apt-get install it"
    if not shutil.which("apt-get"):
        return None, "chromium is not installed and apt-get is not available"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, check=True,
                       capture_output=True, timeout=1200)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        tail = getattr(exc, "stderr", b"") or b""
        return None, f"apt-get install chromium failed: {exc}; {tail.decode(errors='replace')[-400:]}"
    found = shutil.which("chromium")
    return (found, "") if found else (None, "apt-get install chromium succeeded but no chromium binary")


def run(binary: str, page: Path, *extra: str, timeout: float = 120, fragment: str = "") -> subprocess.CompletedProcess:
    """Run chromium once on a local file with a throw-away profile."""
    with tempfile.TemporaryDirectory(prefix="archlint-chromium-") as profile:
        url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
        args = [binary, *FLAGS, f"--user-data-dir={profile}", *extra, url]
        return subprocess.run(args, capture_output=True, timeout=timeout, text=True)


def screenshot(binary: str, page: Path, png: Path, width: int = 1280, height: int = 2000,
               *extra: str) -> Path:
    png.parent.mkdir(parents=True, exist_ok=True)
    if png.exists():
        png.unlink()
    result = run(binary, page, f"--screenshot={png}", f"--window-size={width},{height}", *extra)
    if not png.exists():
        raise RuntimeError(f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}")
    return png


def dump_dom(binary: str, page: Path, *extra: str, fragment: str = "") -> str:
    """The DOM after load (and after the page's scripts ran, unless scripts are off)."""
    result = run(binary, page, "--dump-dom", "--virtual-time-budget=5000", *extra, fragment=fragment)
    if "<html" not in result.stdout:
        raise RuntimeError(f"chromium dumped no DOM (exit {result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def page_requests(net_log: Path) -> list[str]:
    """URLs the page asked for, from a --log-net-log file. Chromium's own background requests
    carry the initiator "not an origin"; a page's requests carry its origin ("null" for file:)."""
    data = json.loads(net_log.read_text())
    names = {v: k for k, v in data["constants"]["logEventTypes"].items()}
    urls = []
    for event in data["events"]:
        params = event.get("params") or {}
        if names.get(event["type"]) == "URL_REQUEST_START_JOB" and "url" in params:
            if params.get("initiator") != "not an origin":
                urls.append(params["url"])
    return urls


def requests_of(binary: str, page: Path, workdir: Path) -> list[str]:
    log = workdir / f"netlog-{page.stem}.json"
    run(binary, page, f"--log-net-log={log}", "--dump-dom", "--virtual-time-budget=5000")
    return page_requests(log)
