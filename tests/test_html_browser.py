"""The HTML report in a real browser: headless Chromium loads the file and the page renders,
with JavaScript on and off, in light and dark mode and to PDF, without a single request
leaving the file.

Needs Debian's `chromium` (.ci/run installs it; as root with apt-get the fixture installs it
itself). Where it cannot be had, every test here is skipped with a warning that says so.
"""
from __future__ import annotations

import html as html_lib
import json
import re
import sys
import warnings
from pathlib import Path

import pytest

from archlint.api import check_paths
from archlint.config import Settings
from archlint.reports import render
from archlint.registry import load_rules

ALL_RULES = load_rules().rules

from . import chromium
from .html_support import parse

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "small_cnn.py"


@pytest.fixture(scope="session")
def browser() -> str:
    binary, reason = chromium.find_chromium(install=True)
    if binary is None:
        message = f"BROWSER TESTS SKIPPED: {reason}. The HTML report was NOT checked in a real browser."
        print(f"\n{'!' * 80}\n{message}\n{'!' * 80}", file=sys.stderr)
        warnings.warn(message)
        pytest.skip(message)
    return binary


@pytest.fixture(scope="module")
def example_page(tmp_path_factory) -> Path:
    report = check_paths([str(EXAMPLE)], Settings())
    assert report.models[0].error is None and report.models[0].findings
    page = tmp_path_factory.mktemp("html") / "small_cnn.html"
    page.write_text(render("html", report), encoding="utf-8")
    return page


# A probe appended to a copy of the page: after load it measures what a reader would see and
# leaves the numbers on <body> for --dump-dom to carry out.
PROBE = """
<script>
window.addEventListener("load", function () {
  function shown(el, least) {
    var r = el.getBoundingClientRect(), s = getComputedStyle(el);
    return r.width > least && r.height > 30 && s.visibility !== "hidden" && s.display !== "none";
  }
  var cards = Array.prototype.slice.call(document.querySelectorAll("article.finding"));
  var table = document.querySelector("table.sortable");
  var macs = table.querySelectorAll("thead th")[5].querySelector("button");
  macs.click(); macs.click();  // the second click sorts descending
  var first = table.tBodies[0].rows[0].cells[5].getAttribute("data-v");
  var all = Array.prototype.map.call(table.tBodies[0].rows, function (r) { return +r.cells[5].getAttribute("data-v"); });
  var target = location.hash ? document.getElementById(location.hash.slice(1)) : null;
  var details = target ? target.closest("details") : null;
  document.body.setAttribute("data-probe", JSON.stringify({
    cards: cards.length, visible: cards.filter(function (c) { return shown(c, 400); }).length,
    graphs: Array.prototype.filter.call(document.querySelectorAll("svg.graph"), function (g) { return shown(g, 100); }).length,
    sorted_first: +first, max_macs: Math.max.apply(null, all),
    target_open: details ? details.open : null,
    background: getComputedStyle(document.documentElement).backgroundColor
  }));
});
</script>
"""


def _probe(browser: str, page: Path, tmp_path: Path, *flags: str, fragment: str = "") -> dict:
    probed = tmp_path / f"probed-{page.name}"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium.dump_dom(browser, probed, *flags, fragment=fragment)
    match = re.search(r'data-probe="([^"]*)"', dom)
    assert match, "the probe did not run: the page's own script failed, or the page did not load"
    return json.loads(html_lib.unescape(match.group(1)))


def _pixels(png: Path):
    from PIL import Image

    image = Image.open(png).convert("RGB")
    return image, image.getcolors(maxcolors=1 << 20) or []


def test_page_renders_with_finding_cards_visible(browser, example_page, tmp_path):
    png = chromium.screenshot(browser, example_page, tmp_path / "light.png", 1280, 2400)
    image, colors = _pixels(png)
    assert image.size == (1280, 2400)
    background = max(colors)[1]
    inked = sum(n for n, c in colors if c != background)
    assert len(colors) > 50 and inked > 0.05 * image.width * image.height, "screenshot is blank"
    # The warning cards' left border is drawn in the warning colour (#b26a00).
    assert any(n > 200 and abs(c[0] - 0xb2) < 8 and abs(c[1] - 0x6a) < 8 and c[2] < 10 for n, c in colors)
    probe = _probe(browser, example_page, tmp_path)
    assert probe["cards"] == len(parse(example_page.read_text()).find_all("article", cls="finding")) > 0
    assert probe["visible"] == probe["cards"], "every finding card has a visible box"
    assert probe["graphs"] >= 1
    assert probe["sorted_first"] == probe["max_macs"] > 0, "the script sorts the layer table"


def test_no_request_leaves_the_file(browser, example_page, tmp_path):
    assert chromium.requests_of(browser, example_page, tmp_path) == []


def test_the_request_check_can_fail(browser, tmp_path):
    """The detector itself: a page that fetches things is caught."""
    bad = tmp_path / "fetches.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="http://example.invalid/a.png">'
                   '<script>fetch("https://example.invalid/b.json")</script></body></html>')
    requests = chromium.requests_of(browser, bad, tmp_path)
    assert "http://example.invalid/a.png" in requests and "https://example.invalid/b.json" in requests


def test_readable_with_javascript_off(browser, example_page, tmp_path):
    # Headless chromium's --dump-dom and --screenshot need scripting on, so the page's own
    # script is blocked by a content security policy instead.
    blocked = tmp_path / "no-script.html"
    blocked.write_text(example_page.read_text().replace(
        '<meta charset="utf-8">', '<meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="script-src \'none\'">', 1))
    root = parse(chromium.dump_dom(browser, blocked))
    original = parse(example_page.read_text())
    assert len(root.find_all("article", cls="finding")) == len(original.find_all("article", cls="finding"))
    rows = root.find("table", cls="sortable").find("tbody").find_all("tr")
    assert len(rows) == len(original.find("table", cls="sortable").find("tbody").find_all("tr"))
    assert root.find("table", cls="sortable").find("button") is None, "the script did not run"
    png = chromium.screenshot(browser, blocked, tmp_path / "nojs.png", 1280, 1600)
    _, colors = _pixels(png)
    assert len(colors) > 50


def test_dark_mode(browser, example_page, tmp_path):
    dark = "--blink-settings=preferredColorScheme=0"
    probe = _probe(browser, example_page, tmp_path, dark)
    assert probe["background"] == "rgb(21, 24, 28)"
    light = _probe(browser, example_page, tmp_path, "--blink-settings=preferredColorScheme=1")
    assert light["background"] == "rgb(255, 255, 255)"
    png = chromium.screenshot(browser, example_page, tmp_path / "dark.png", 1280, 1200, dark)
    image, colors = _pixels(png)
    assert max(colors)[1] == (21, 24, 28) and len(colors) > 50


def test_link_into_a_collapsed_module_opens_it(browser, tmp_path):
    torchvision = pytest.importorskip("torchvision")
    from archlint.api import Report, lint

    report = Report(rules=ALL_RULES, models=[lint(torchvision.models.resnet18(weights=None), input_shape=(1, 3, 64, 64))])
    page = tmp_path / "resnet18.html"
    page.write_text(render("html", report))
    probe = _probe(browser, page, tmp_path, fragment="m0-g-layer3.1")
    assert probe["target_open"] is True


def test_prints(browser, example_page, tmp_path):
    pdf = tmp_path / "report.pdf"
    chromium.run(browser, example_page, f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", data)) >= 2
