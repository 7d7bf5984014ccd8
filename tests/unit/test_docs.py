"""The documentation against what it documents: the generated settings reference, the pictures, the links.

With DOCS_REGENERATE=1 the generated parts (docs/configuration.md's reference and docs/*.png) are
rewritten first, as `python -m tests.docs_gen` and `python -m tests.docs_pictures` do.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from tests import docs_gen, docs_pictures
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = sorted([README, ROOT / "deploy" / "README.md", *(ROOT / "docs").glob("*.md")])
REGENERATE = bool(os.environ.get("DOCS_REGENERATE"))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", flags=re.MULTILINE | re.DOTALL)


def test_every_setting_has_a_description() -> None:
    """Each field of Settings has a docstring, which becomes its meaning in docs/configuration.md."""
    undocumented = [name.upper() for name, field in Settings.model_fields.items() if not field.description]
    assert not undocumented, f"add a docstring under these fields in worker/settings.py: {undocumented}"


def test_the_configuration_reference_is_generated_from_the_settings() -> None:
    """docs/configuration.md's reference block is what `python -m tests.docs_gen` writes from the model."""
    if REGENERATE:
        docs_gen.main([])
    block = docs_gen.reference()
    assert docs_gen.committed_block(docs_gen.DOC.read_text()) == block, (
        "docs/configuration.md differs from worker/settings.py: run `.venv/bin/python -m tests.docs_gen`"
    )


@pytest.mark.parametrize("name", sorted(docs_pictures.PICTURES))
def test_the_pictures_draw_as_committed(name: str, tmp_path: Path) -> None:
    """Each picture the script draws has the committed picture's size and, near enough, its pixels."""
    if REGENERATE:
        docs_pictures.draw(name)
    drawn = imread(docs_pictures.draw(name, tmp_path))
    committed = imread(docs_pictures.DOCS / name)
    assert drawn.shape == committed.shape, (
        f"docs/{name} is stale: run `.venv/bin/python -m tests.docs_pictures`"
    )
    differing = float(np.mean(np.abs(drawn - committed) > 0.1))
    assert differing < 0.002, (
        f"docs/{name} differs in {differing:.2%} of its pixels: run `python -m tests.docs_pictures`"
    )


@pytest.mark.parametrize("page", ["how-it-works.md", "scaling.md"])
def test_a_page_that_explains_a_flow_opens_with_its_picture(page: str) -> None:
    """The pages about the record's path and the scaling topology show a picture before any text."""
    first_lines = (ROOT / "docs" / page).read_text().splitlines()[:4]
    assert any(line.startswith("![") and line.rstrip().endswith(".png)") for line in first_lines)


def test_the_readme_is_a_start() -> None:
    """The README stays short, explains C1, C5 and flow E where they first appear, and links the guide and docs."""
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    for term in ("C1", "C5", "flow E"):
        first = text.index(term)
        assert text[first : first + len(term) + 3].endswith(", ") or "**" in text[first - 2 : first], term
    for target in ("docs/mongodb-persistence-guide.md", "docs/configuration.md", "docs/operations.md",
                   "docs/how-it-works.md", "docs/scaling.md"):  # fmt: skip
        assert f"]({target}" in text, target


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings, and its explicit `<a id>`s."""
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', text))
    seen: dict[str, int] = {}
    for line in FENCE.sub("", text).splitlines():
        if match := re.match(r"^#{1,6} (.+)$", line):
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def is_broken(page: Path, target: str) -> bool:
    """Whether a relative link of `page` names a missing file, or a heading its Markdown target lacks."""
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    if not resolved.exists():
        return True
    return bool(anchor) and resolved.suffix == ".md" and anchor not in heading_anchors(resolved.read_text())


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link of the page names a file that exists and, for a Markdown page, a heading it has."""
    targets = LINK.findall(FENCE.sub("", page.read_text()))
    broken = [target for target in targets if not re.match(r"^[a-z]+:", target) and is_broken(page, target)]
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"
