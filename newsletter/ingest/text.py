"""Plain-text roundups: scraped web pages and compact digests.

Two layouts are recognised by their shape, not by their words:

* page scrapes: paragraphs separated by blank lines, surrounded by site furniture
  ("Main Content", the title repeated, photo credits and captions, newsletter
  sign-up prompts, a run-together tag line, "Reuse this content", ...);
* compact digests: one paragraph per line and no blank lines.

In both, the document is a title (optional), intro paragraphs, then items. A line
is a headline when it is short, title-cased, ends without sentence punctuation and
is followed by body text. Call-to-action lines ("Read the interview here") become
the item's link text. A document whose only headline-like line is its title is a
single article (an interview, a feature) and becomes one item of kind "feature".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from newsletter.ingest.types import IngestError, ParsedIssue, ParsedItem
from newsletter.topics import split_tag_line

# Site furniture, matched against a whole line (case-insensitive).
BOILERPLATE = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"main content",
        r"skip to (main )?content",
        r"(photo|image|picture) credits?:.*",
        r"to receive the latest news\b.*",
        r"reuse this content",
        r"sign up for our newsletter",
        r"(subscribe|sign up) (to|for) (our|the) .*newsletter\.?",
        r"stay updated\b.*",
        r"leave a (comment|reply)",
        r"\d+ comments?",
        r"share (this|on) ?\w*",
        r"related (articles|stories|posts|content)",
        r"advertisement",
        r"print this page",
        r"back to top",
        r"follow us on .*",
    )
]
CTA = re.compile(
    r"^(read|learn|find out|watch|listen|tune in|click|see|discover|explore|check out|"
    r"download|register|visit|get)\b",
    re.IGNORECASE,
)
SMALL_WORDS = {
    "a", "an", "the", "and", "or", "but", "nor", "for", "to", "of", "in", "on", "at",
    "by", "with", "from", "as", "into", "onto", "via", "vs", "amid", "over", "per",
    "up", "off", "out", "its", "is", "are", "be",
}  # fmt: skip
CLOSERS = "\"'”’)]»"
SENTENCE_END = re.compile(r"[.!?…:;,][" + re.escape(CLOSERS) + r"]*$")
GLUE = re.compile(r"[a-z0-9][A-Z]")
ROUNDUP_NAME = re.compile(
    r"^The\s*(?P<name>[A-Z][\w.&’'-]*(?:\s+[A-Z][\w.&’'-]*)*?\s+"
    r"(?:Roundup|Round-Up|Round-up|Digest|Newsletter|Briefing|Bulletin|Weekly))\b"
)
MAX_HEADLINE_WORDS = 20
MAX_HEADLINE_CHARS = 160
LONG_BODY_WORDS = 25


@dataclass
class Para:
    """A paragraph and the line it starts on."""

    line: int
    text: str


# --- Line shapes -------------------------------------------------------------------


def is_boilerplate(line: str) -> bool:
    return any(p.fullmatch(line) for p in BOILERPLATE)


def ends_sentence(text: str) -> bool:
    return bool(SENTENCE_END.search(text))


def is_body(text: str) -> bool:
    """Prose: ends like a sentence, or is too long to be anything else."""
    return ends_sentence(text) or len(text.split()) >= LONG_BODY_WORDS


def title_case_ratio(text: str) -> float:
    words = [w.strip(CLOSERS + '"“‘(') for w in text.split()]
    significant = [w for w in words if w and w.casefold() not in SMALL_WORDS]
    if not significant:
        return 0.0
    capitalised = [w for w in significant if not w[0].isalpha() or w[0].isupper()]
    return len(capitalised) / len(significant)


def is_link_text(text: str) -> bool:
    """A call to action that stood for a link on the web page ("Read the interview here")."""
    stripped = text.rstrip(".").rstrip()  # "Read more here." is still a link
    if len(stripped.split()) > MAX_HEADLINE_WORDS or ends_sentence(stripped):
        return False
    if re.search(r"\bhere$", stripped, re.IGNORECASE):
        return True
    return bool(CTA.match(stripped)) and title_case_ratio(stripped) < 0.6


def is_headline_shaped(text: str) -> bool:
    words = text.split()
    if not 2 <= len(words) <= MAX_HEADLINE_WORDS or len(text) > MAX_HEADLINE_CHARS:
        return False
    first = text.lstrip("\"“‘'")[:1]
    if not (first.isupper() or first.isdigit()):
        return False
    if is_link_text(text) or is_boilerplate(text):
        return False
    # A title-cased question is a headline; any other sentence ending is prose.
    if ends_sentence(text) and not (
        text.rstrip(CLOSERS).endswith("?") and title_case_ratio(text) >= 0.75
    ):
        return False
    return title_case_ratio(text) >= 0.6


def is_title_shaped(text: str) -> bool:
    """The document's first line: like a headline but may be long or sentence-cased."""
    return len(text) <= 300 and not ends_sentence(text) and not is_boilerplate(text)


def is_tag_line(text: str) -> bool:
    """A scraped tag list: tags glued together without separators."""
    return len(GLUE.findall(text)) >= 2 and not ends_sentence(text) and ". " not in text


def is_pull_quote(text: str, others: list[str]) -> bool:
    """A quoted sentence repeated from the body (a designer's pull quote)."""
    if not (text[:1] in '“"' and text.rstrip()[-1:] in '”"'):
        return False
    inner = _fold(text.strip('“”" .'))
    return any(inner and inner in _fold(o) for o in others if o is not text)


def _fold(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("’", "'").casefold())


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", _fold(text)) if len(w) > 2}


def is_caption(lines: list[str]) -> bool:
    """A photo's alt text directly followed by its caption (no blank line between)."""
    alt, rest = lines[0], " ".join(lines[1:])
    if len(alt.split()) > 8 or ends_sentence(alt):
        return False
    if re.search(r"\b(photo|image) credit", rest, re.IGNORECASE):
        return True
    alt_words = _words(alt)
    return bool(alt_words) and len(alt_words & _words(rest)) / len(alt_words) >= 0.66


def fix_glued_the(text: str) -> str:
    """Scrapes lose the space after a leading "The" ("TheAlibaba News Roundup")."""
    return re.sub(r"^The(?=[A-Z][a-z])", "The ", text)


# --- Parsing -----------------------------------------------------------------------


def normalise(text: str) -> str:
    """The canonical form of a document (also what its content hash is taken of)."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\u00a0", " ").replace("\ufeff", "")
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.split("\n")]
    return "\n".join(lines).strip("\n")


def _is_page_layout(lines: list[str]) -> bool:
    """Blank lines separate paragraphs (a page scrape) rather than none (a digest)."""
    content = [i for i, line in enumerate(lines) if line]
    followed_by_blank = sum(1 for i in content if i + 1 >= len(lines) or not lines[i + 1])
    return followed_by_blank * 2 >= len(content)


def _paragraphs(lines: list[str], *, known_tags: list[str]) -> tuple[list[Para], list[str]]:
    """Content paragraphs (furniture, captions and the tag line removed) and the tags."""
    tags: list[str] = []
    kept: list[tuple[int, str]] = []  # (line number, text); "" marks a paragraph break
    # The tag line sits after the last story, so "TikTok Teams Up with YouTube" in
    # the middle of the document stays a headline.
    last_prose = max(
        (i for i, line in enumerate(lines) if line and not is_boilerplate(line) and is_body(line)),
        default=-1,
    )
    # Brand names written with inner capitals in the text ("TikTok") are words, not
    # two glued tags.
    camel = {
        w for line in lines[: last_prose + 1] for w in re.findall(r"\b\w*[a-z][A-Z]\w*\b", line)
    }
    for number, line in enumerate(lines, 1):
        if line and is_boilerplate(line):
            line = ""
        elif line and number - 1 > last_prose and is_tag_line(line):
            tags.extend(split_tag_line(line, known=[*known_tags, *camel]))
            line = ""
        kept.append((number, line))

    blocks: list[list[tuple[int, str]]] = []
    if _is_page_layout(lines):
        current: list[tuple[int, str]] = []
        for number, line in kept:
            if line:
                current.append((number, line))
            elif current:
                blocks.append(current)
                current = []
        if current:
            blocks.append(current)
    else:
        blocks = [[(n, line)] for n, line in kept if line]

    paragraphs: list[Para] = []
    for block in blocks:
        texts = [t for _, t in block]
        if len(block) > 1 and is_caption(texts):
            continue
        # Lines without a blank between them that are not a caption are still
        # separate paragraphs: the scraper only dropped the blank line.
        paragraphs.extend(Para(n, t) for n, t in block)
    return paragraphs, tags


def _derive_title(intro: list[str], items: list[ParsedItem]) -> str:
    name = "News Roundup"
    for paragraph in intro:
        match = ROUNDUP_NAME.match(paragraph)
        if match:
            name = match.group("name")
            break
    headlines = "; ".join(item.headline for item in items[:2])
    title = f"{name}: {headlines}" if headlines else name
    return title if len(title) <= 500 else title[:497].rstrip() + "…"


def _build_item(headline: Para, body: list[Para], kind: str = "news") -> ParsedItem:
    texts = [p.text for p in body]
    paragraphs: list[str] = []
    link_text = ""
    for text in texts:
        if is_link_text(text):
            link_text = link_text or text.rstrip(".")
        elif not is_pull_quote(text, texts):
            paragraphs.append(text)
    return ParsedItem(
        headline=headline.text,
        paragraphs=paragraphs,
        link_text=link_text,
        kind=kind,
        line=headline.line,
    )


def parse_text(text: str, *, source_name: str, known_tags: list[str] | None = None) -> ParsedIssue:
    """Parse a plain-text roundup. Raises IngestError naming the file and line."""
    lines = normalise(text).split("\n")
    if not any(lines):
        raise IngestError(source_name, 1, "file is empty")
    paragraphs, tags = _paragraphs(lines, known_tags=known_tags or [])
    if not paragraphs:
        raise IngestError(source_name, 1, "no content left after removing page furniture")

    title = ""
    if is_title_shaped(paragraphs[0].text) and len(paragraphs) > 1:
        title = paragraphs[0].text
        paragraphs = [p for p in paragraphs[1:] if p.text != title]

    starts = [
        i
        for i, p in enumerate(paragraphs)
        if is_headline_shaped(p.text)
        and i + 1 < len(paragraphs)
        and is_body(paragraphs[i + 1].text)
    ]
    if not starts:
        if not title or not paragraphs:
            raise IngestError(
                source_name,
                paragraphs[0].line,
                "no items found: expected headlines (short title-cased lines) each "
                "followed by body text",
            )
        # One article under one title: an interview or feature, not a roundup.
        item = _build_item(Para(1, title), paragraphs, kind="feature")
        return ParsedIssue(title=title, intro="", items=[item], tags=tags)

    intro = [fix_glued_the(p.text) for p in paragraphs[: starts[0]]]
    items = [
        _build_item(paragraphs[start], paragraphs[start + 1 : end])
        for start, end in zip(starts, [*starts[1:], len(paragraphs)], strict=True)
    ]
    for item in items:
        if not item.paragraphs:
            raise IngestError(source_name, item.line, "item has a headline but no body")
    return ParsedIssue(
        title=title or _derive_title(intro, items),
        intro="\n\n".join(intro),
        items=items,
        tags=tags,
    )
