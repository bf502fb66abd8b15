"""Public paths of the web archive, shared by the emails, the redirect and the pages."""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^a-z0-9]+")


def slugify(text: str, *, max_length: int = 60) -> str:
    """ASCII, lower-case, hyphenated; cut at a word boundary. Never empty."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = _NON_WORD.sub("-", ascii_text.lower()).strip("-")
    if len(slug) > max_length:
        slug = slug[:max_length].rsplit("-", 1)[0] or slug[:max_length]
    return slug or "story"


def issue_path(issue_id: int, title: str) -> str:
    """`/issues/<id>/<slug>`: the issue as a web page (404 unless sent)."""
    return f"/issues/{issue_id}/{slugify(title)}"


def story_path(item_id: int, headline: str) -> str:
    """`/stories/<id>/<slug>`: one full story (404 unless its issue was sent)."""
    return f"/stories/{item_id}/{slugify(headline)}"
