"""The user docs (README.md, docs/*.md) and the developer notes (docs/notes/): every relative
link names a file of the repository and, with a #fragment, one of its headings (GitHub's
anchors); the user docs stay short and speak to users (no paths of the development machine, no
targets or issue numbers)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOTES = sorted((ROOT / "docs" / "notes").glob("*.md"))
MAX_USER_DOC_BYTES = 88_000  # all of them together; full measurement tables and method go to docs/notes/
NOT_FOR_USERS = re.compile(r"\.\./shared|/work/|\bissue\b|\bacceptance\b|\btargets?:? [\d.]+", re.IGNORECASE)


def _outside_code(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (repeated headings get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in _outside_code(path.read_text(encoding="utf-8")):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(path: Path) -> list[str]:
    text = "\n".join(_outside_code(path.read_text(encoding="utf-8")))
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"\w+://|mailto:", t)]


@pytest.mark.parametrize("doc", USER_DOCS + NOTES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(doc):
    broken = []
    for link in links(doc):
        target, _, fragment = link.partition("#")
        file = (doc.parent / target).resolve() if target else doc
        if not file.exists():
            broken.append(f"{link}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{link}: no heading #{fragment} in {file.relative_to(ROOT)}")
    assert not broken, broken


def test_user_docs_are_short():
    sizes = {p.relative_to(ROOT).as_posix(): p.stat().st_size for p in USER_DOCS}
    assert sum(sizes.values()) <= MAX_USER_DOC_BYTES, sizes


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_docs_speak_to_users(doc):
    found = [line.strip() for line in doc.read_text(encoding="utf-8").splitlines() if NOT_FOR_USERS.search(line)]
    assert not found, found
