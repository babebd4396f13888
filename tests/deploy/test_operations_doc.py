"""docs/operations.md: the benchmark sections its figures cite exist."""

from __future__ import annotations

import re

from tests.deploy.conftest import ROOT

DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([\w.-]+\.md)#([\w-]+)\)")


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: str) -> set[str]:
    text = (DOCS / page).read_text()
    return {github_anchor(m) for m in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_cited_sections_exist() -> None:
    """A figure's citation must still lead somewhere when benchmarks.md is rewritten."""
    text = (DOCS / "operations.md").read_text()
    links = LINK.findall(text)
    assert ("benchmarks.md", "ingest") in links, "the sizing figures cite their benchmarks"
    for page, anchor in links:
        assert anchor in anchors(page), f"operations.md links {page}#{anchor}: no such section"
