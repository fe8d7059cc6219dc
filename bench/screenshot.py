"""Make docs/report-screenshot.png: the HTML report of examples/small_cnn.py, as headless
Chromium draws it (the browser tests drive Chromium the same way).

    python bench/screenshot.py                 # writes docs/report-screenshot.png
    python bench/screenshot.py --out x.png --height 2400
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archlint.api import check_paths  # noqa: E402
from archlint.config import Settings  # noqa: E402
from archlint.reports import render  # noqa: E402
from tests import chromium  # noqa: E402

EXAMPLE = ROOT / "examples" / "small_cnn.py"


def make(out: Path, example: Path = EXAMPLE, width: int = 1200, height: int = 1500, dark: bool = False) -> Path:
    binary, reason = chromium.find_chromium()
    if binary is None:
        raise SystemExit(f"bench/screenshot.py: {reason}")
    here = os.getcwd()
    os.chdir(ROOT)  # the page shows paths relative to the working folder: examples/small_cnn.py
    try:
        report = check_paths([str(example.relative_to(ROOT))], Settings())
    finally:
        os.chdir(here)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(render("html", report), encoding="utf-8")
        flags = ("--blink-settings=preferredColorScheme=0",) if dark else ()
        return chromium.screenshot(binary, page, out, width, height, *flags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report-screenshot.png")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument("--dark", action="store_true")
    args = parser.parse_args()
    path = make(args.out.resolve(), width=args.width, height=args.height, dark=args.dark)
    print(path)


if __name__ == "__main__":
    main()
