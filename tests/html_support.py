"""Helpers for the HTML report tests: a small DOM from the standard library's parser, checks
shared by the structural and the browser tests, and a rule pack with an error and an info rule
so one model can carry findings of every severity whatever the built-in rules are."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from torch import nn

from archlint.findings import Fix, Severity
from archlint.rule import Rule

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list["Element | str"] = field(default_factory=list)
    parent: "Element | None" = None

    @property
    def classes(self) -> list[str]:
        return self.attrs.get("class", "").split()

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self):
        yield self
        for c in self.children:
            if isinstance(c, Element):
                yield from c.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list["Element"]:
        return [e for e in self.iter()
                if (tag is None or e.tag == tag) and (cls is None or cls in e.classes)
                and all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> "Element | None":
        found = self.find_all(tag, cls, **attrs)
        return found[0] if found else None

    def ancestors(self):
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {k: (v or "") for k, v in attrs}, parent=self.stack[-1])
        self.stack[-1].children.append(element)
        if tag not in _VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Element(tag, {k: (v or "") for k, v in attrs}, parent=self.stack[-1]))

    def handle_endtag(self, tag):
        if tag in _VOID:
            return
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                if i != len(self.stack) - 1:
                    self.errors.append(f"</{tag}> closes {[e.tag for e in self.stack[i + 1:]]}")
                del self.stack[i:]
                return
        self.errors.append(f"stray </{tag}>")

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(html: str) -> Element:
    """Parse the page; mis-nested tags are an error (the page is generated, it must be tidy)."""
    builder = _Builder()
    builder.feed(html)
    builder.close()
    assert not builder.errors, builder.errors[:5]
    assert len(builder.stack) == 1, f"unclosed: {[e.tag for e in builder.stack[1:]]}"
    return builder.root


_URL_ATTRS = ("src", "href", "xlink:href", "action", "formaction", "poster", "data", "srcset", "background")


def external_references(html: str, root: Element | None = None) -> list[str]:
    """Every reference that would leave the file: src/href-like attributes not pointing inside
    the page, url(...) in CSS that is not a fragment, and @import."""
    root = root or parse(html)
    found = []
    for e in root.iter():
        for attr in _URL_ATTRS:
            value = e.attrs.get(attr)
            if value is not None and not value.startswith("#"):
                found.append(f"<{e.tag} {attr}={value!r}>")
    for url in re.findall(r"url\(\s*['\"]?([^'\")]*)", html):
        if not url.startswith("#"):
            found.append(f"url({url})")
    found += re.findall(r"@import[^;]*;", html)
    return found


def check_page(html: str) -> Element:
    """What every report must satisfy, whatever the model."""
    root = parse(html)
    assert external_references(html, root) == []
    ids = [e.attrs["id"] for e in root.iter() if "id" in e.attrs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1}) if len(ids) != len(set(ids)) else []
    assert not duplicates, duplicates[:10]
    known = set(ids)
    dangling = [e.attrs["href"] for e in root.iter()
                if e.attrs.get("href", "").startswith("#") and e.attrs["href"][1:] not in known]
    assert not dangling, dangling[:10]
    assert root.find("html").attrs.get("lang") == "en"
    assert "prefers-color-scheme: dark" in html and "@media print" in html
    return root


def finding_cards(root: Element) -> list[Element]:
    return root.find_all("article", cls="finding")


# --- a rule pack that yields an error and an info finding ------------------------------------------

class LinearHeadError(Rule):
    code = "T901"
    name = "test-linear-error"
    severity = Severity.ERROR
    summary = "Test rule: reports every nn.Linear as an error, to put an error on the page."
    what = "Reports every nn.Linear layer. It exists only for the HTML report tests."
    why = "A page must show findings of every severity; the built-in rules may not all fire on one model."
    how_to_fix = "Nothing to fix: this rule lives in the test suite."
    references = ("archlint test suite",)
    bad = ("import torch\nfrom torch import nn\nmodel = nn.Linear(4, 2)\nexample_input = torch.randn(1, 4)\n",)
    good = ("import torch\nfrom torch import nn\nmodel = nn.ReLU()\nexample_input = torch.randn(1, 4)\n",)

    def check(self, graph, ctx):
        for layer in graph.modules(nn.Linear):
            m = layer.module
            yield self.finding(layer, f"Linear {m.in_features}->{m.out_features} reported by the test pack",
                               evidence={"in_features": m.in_features, "out_features": m.out_features},
                               fix=Fix("replace it with an identity", "nn.Identity()"))


class ReluInfo(Rule):
    code = "T902"
    name = "test-relu-info"
    severity = Severity.INFO
    summary = "Test rule: reports every nn.ReLU as info, to put an info finding on the page."
    what = "Reports every nn.ReLU layer. It exists only for the HTML report tests."
    why = "A page must show findings of every severity; the built-in rules may not all fire on one model."
    how_to_fix = "Nothing to fix: this rule lives in the test suite."
    references = ("archlint test suite",)
    bad = ("import torch\nfrom torch import nn\nmodel = nn.ReLU()\nexample_input = torch.randn(1, 4)\n",)
    good = ("import torch\nfrom torch import nn\nmodel = nn.Tanh()\nexample_input = torch.randn(1, 4)\n",)

    def check(self, graph, ctx):
        for layer in graph.modules(nn.ReLU):
            yield self.finding(layer, "ReLU reported by the test pack", evidence={"inplace": layer.module.inplace},
                               fix=Fix("use GELU", "nn.GELU()"))


TEST_RULES = (LinearHeadError, ReluInfo)
