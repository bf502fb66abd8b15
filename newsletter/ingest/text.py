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
from newsletter.topics import INNER_CAPITALS, split_tag_line

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
# "... in her workshop. Photo credit: Market Week" (the credit is short, not a sentence).
CREDIT_TAIL = re.compile(r"\b(photo|image|picture) credits?:[^!?]{1,60}$", re.IGNORECASE)
# Line ends of every platform, and Unicode's own (U+2028, U+2029, NEL).
LINE_BREAKS = re.compile(r"\r\n|[\r\x0b\x0c\x85\u2028\u2029]")
# Zero-width characters scrapes leave behind: a line of only these is blank.
INVISIBLE = re.compile(r"[\ufeff\u200b\u2060]")
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


def is_titled_exclamation(text: str) -> bool:
    """A title-cased line ending in "?" or "!" ("Will Rain Save the Wheat?"): a
    headline or title, not prose."""
    return text.rstrip(CLOSERS)[-1:] in ("?", "!") and title_case_ratio(text) >= 0.75


def is_body(text: str) -> bool:
    """Prose: ends like a sentence, or is too long to be anything else."""
    if len(text.split()) >= LONG_BODY_WORDS:
        return True
    return ends_sentence(text) and not is_titled_exclamation(text)


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
    if ends_sentence(text) and not is_titled_exclamation(text):
        return False
    return title_case_ratio(text) >= 0.6


def is_title_shaped(text: str) -> bool:
    """The document's first line: like a headline but may be long or sentence-cased."""
    if len(text) > 300 or is_boilerplate(text):
        return False
    return not ends_sentence(text) or is_titled_exclamation(text)


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


def has_photo_credit(text: str) -> bool:
    """A caption ends with its credit ("... in Seville. Photo credit: Market Week")."""
    return bool(CREDIT_TAIL.search(text))


def is_caption(alt: str, caption: str) -> bool:
    """A photo's alt text directly followed by its caption (no blank line between)."""
    if len(alt.split()) > 8 or ends_sentence(alt):
        return False
    if has_photo_credit(caption):
        return True
    alt_words = _words(alt)
    return bool(alt_words) and len(alt_words & _words(caption)) / len(alt_words) >= 0.66


def _without_captions(block: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """A block's lines minus photo captions (alt text + caption, or a credited caption)."""
    texts = [t for _, t in block]
    if len(block) == 2 and is_caption(*texts):
        return []
    drop: set[int] = set()
    for index, text in enumerate(texts):
        if has_photo_credit(text):
            drop.add(index)
            # A headline, then the photo's alt text and caption with no blank line between.
            if index > 1 and is_caption(texts[index - 1], text):
                drop.add(index - 1)
    return [line for index, line in enumerate(block) if index not in drop]


def fix_glued_the(text: str) -> str:
    """Scrapes lose the space after a leading "The" ("TheAlibaba News Roundup")."""
    return re.sub(r"^The(?=[A-Z][a-z])", "The ", text)


# --- Parsing -----------------------------------------------------------------------


def normalise(text: str) -> str:
    """The canonical form of a document (also what its content hash is taken of)."""
    text = LINE_BREAKS.sub("\n", unicodedata.normalize("NFC", text))
    text = INVISIBLE.sub("", text.replace("\u00a0", " "))
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
        w
        for line in lines[: last_prose + 1]
        for w in re.findall(r"\w+", line)
        if INNER_CAPITALS.search(w)
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

    # Lines without a blank between them that are not a caption are still separate
    # paragraphs: the scraper only dropped the blank line.
    paragraphs = [Para(n, t) for block in blocks for n, t in _without_captions(block)]
    # Pull quotes repeat a sentence of the story in large type; dropped before
    # looking for headlines, as a title-cased one would look like a headline.
    texts = [p.text for p in paragraphs]
    return [p for p in paragraphs if not is_pull_quote(p.text, texts)], tags


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
    paragraphs: list[str] = []
    link_text = ""
    for text in (p.text for p in body):
        if is_link_text(text):
            link_text = link_text or text.rstrip(".")
        else:
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
                paragraphs[0].line if paragraphs else 1,
                "no items found: expected headlines (short title-cased lines) each "
                "followed by body text",
            )
        # One article under one title: an interview or feature, not a roundup.
        item = _build_item(Para(1, title), paragraphs, kind="feature")
        return ParsedIssue(title=title, intro="", items=[item], tags=tags)

    # A headline-shaped line right before a headline is a section label ("In Brief"),
    # not part of the story before it.
    labels = {
        i - 1
        for i in starts
        if i > 0 and i - 1 not in starts and is_headline_shaped(paragraphs[i - 1].text)
    }
    kept = [p for i, p in enumerate(paragraphs) if i not in labels]
    starts = [kept.index(paragraphs[i]) for i in starts]
    intro = [fix_glued_the(p.text) for p in kept[: starts[0]]]
    items = [
        _build_item(kept[start], kept[start + 1 : end])
        for start, end in zip(starts, [*starts[1:], len(kept)], strict=True)
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
