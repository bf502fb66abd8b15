"""What the parsers produce, and the one error they raise."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


class IngestError(Exception):
    """A roundup file that cannot be ingested; `str()` is "path:line: message"."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line
        self.message = message


@dataclass
class ParsedItem:
    """One story as found in the document."""

    headline: str
    paragraphs: list[str]
    link_text: str = ""
    link_url: str = ""
    kind: str = "news"  # news | feature
    topics: list[str] = field(default_factory=list)  # explicit slugs (Markdown only)
    pinned: bool = False
    line: int = 0  # where the headline is, for error messages
    topics_line: int = 0  # where explicit topics were given
    excerpt: str = ""  # what the email shows (Markdown `Excerpt:`); empty: the first words
    image_url: str = ""  # Markdown `![alt](https://...)`
    image_alt: str = ""

    @property
    def body(self) -> str:
        return "\n\n".join(self.paragraphs)


@dataclass
class ParsedIssue:
    """One roundup as found in the document."""

    title: str
    intro: str
    items: list[ParsedItem]
    tags: list[str] = field(default_factory=list)
    issue_date: date | None = None
