"""The documentation covers what exists: every public name, every page, every example.

The site build (`make docs`, strict) catches broken links and references; these catch what a
build cannot see, a page or a public name that nothing points at.
"""

from __future__ import annotations

import re
from pathlib import Path

import llmpulse

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _pages() -> set[str]:
    return {str(page.relative_to(DOCS)) for page in DOCS.rglob("*.md")}


def test_the_api_reference_documents_every_public_name() -> None:
    """docs/reference/index.md has a `::: llmpulse.NAME` for each name of `__all__`, once."""
    text = (DOCS / "reference" / "index.md").read_text()
    documented = re.findall(r"^::: llmpulse\.(\w+)$", text, flags=re.M)
    assert sorted(documented) == sorted(llmpulse.__all__)


def test_every_page_is_in_the_site_navigation() -> None:
    """Each page under docs/ is listed in mkdocs.yml's nav, and the nav names no missing page."""
    nav = set(re.findall(r":\s*([\w/-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.M))
    assert nav == _pages()


def test_the_readme_indexes_every_page_and_example() -> None:
    """The README's Documentation section links every page of docs/ and every file in examples/."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Documentation") :]
    section = section[: section.index("\n## ", 1)]
    linked = set(re.findall(r"\]\(([^)#]+)", section))
    pages = {f"docs/{page}" for page in _pages()} - {"docs/index.md", "docs/install.md"}
    pages -= {page for page in pages if page.startswith("docs/reference/")}
    examples = {f"examples/{path.name}" for path in (ROOT / "examples").glob("*.py")}
    assert pages | examples <= linked, sorted((pages | examples) - linked)
