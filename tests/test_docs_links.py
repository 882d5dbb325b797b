"""Links between the Markdown pages: every relative link names a file of the repository and
every ``#anchor`` a heading of its page (GitHub's slugs). Headings get renamed as results are
added, and a link to the old name breaks silently."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *ROOT.glob("docs/**/*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(h) for h in re.findall(r"^#+\s+(.*)$", text, flags=re.M)}


def test_slug_matches_github():
    assert slug("Seeds 3-5 of mnist10k") == "seeds-3-5-of-mnist10k"
    assert slug("`ckm`: Concrete k-means (ICASSP 2020)") == "ckm-concrete-k-means-icassp-2020"
    assert slug("Beside ClustPy") == "beside-clustpy"


def test_every_relative_link_and_anchor_resolves():
    assert len(PAGES) > 10
    bad = []
    for page in PAGES:
        for target in LINK.findall(FENCE.sub("", page.read_text())):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not file.exists():
                bad.append(f"{where}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                bad.append(f"{where}: no such heading")
    assert not bad, "\n".join(bad)
