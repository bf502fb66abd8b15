"""The email's subject line, proposed from the issue's top stories.

A scraped page title ("Alibaba News Roundup: Hermès Beats Quarterly Expectations
Thanks to China; Pakistan's First Smart Warehouses ...") is 110-180 characters and
inboxes show about 70. The proposal takes the top stories' headlines, drops their
trailing phrases ("... On Strong China Growth"), writes them in sentence case
when the stories' own text shows which words are ordinary words, and joins as many
as fit: "Hermès Q3 sales beat market forecasts, Daraz ... + 4 more". Editors can
change it (console, `newsletter subject`); the checks warn above 70 characters.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from sqlmodel import Session, col, select

SUBJECT_TARGET = 70
MIN_HEAD_WORDS = 4
# Where a headline's trailing phrase starts: "... Forecasts On Strong China Growth".
_TAIL = re.compile(
    r"\s+(?:on|during|with|for|thanks to|amid|after|ahead of|following|via|as part of|"
    r"despite|through|under|in partnership with)\s",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W\d_][\w’'&.-]*")
_SMALL = {"a", "an", "the", "and", "or", "but", "for", "to", "of", "in", "on", "at", "by",
          "with", "from", "as", "into", "via", "its", "is", "are", "be", "can", "how", "why"}


def short_headline(headline: str) -> str:
    """The headline without its trailing phrase, keeping at least four words."""
    text = " ".join(headline.split()).rstrip(".")
    for match in _TAIL.finditer(text):
        head = text[: match.start()].rstrip(" ,:;–—-")
        if len(head.split()) >= MIN_HEAD_WORDS:
            return head
    return text


def _casing(text: str) -> dict[str, bool]:
    """word (folded) -> True when the text writes it lower-case more often than
    capitalised mid-sentence (so it is an ordinary word, not a name)."""
    lower: Counter[str] = Counter()
    upper: Counter[str] = Counter()
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", text):
        for index, match in enumerate(_WORD.finditer(sentence)):
            word = match.group(0).rstrip(".-")
            if word.islower():
                lower[word.casefold()] += 1
            elif index > 0 and word[:1].isupper():
                upper[word.casefold()] += 1
    return {w: lower[w] > upper[w] for w in set(lower) | set(upper)}


def sentence_case(headline: str, casing: dict[str, bool]) -> str:
    """Title Case -> Sentence case for the words the text shows are ordinary; names,
    acronyms ("Q3", "AACA") and words the text never uses keep their capitals.
    Returns the headline unchanged if any capitalised word is unknown to the text."""
    out: list[str] = []
    for index, word in enumerate(headline.split(" ")):
        core = word.strip("\"“”‘’'(),:;")
        folded = core.casefold()
        ordinary = casing.get(folded, folded in _SMALL or None)
        if index > 0 and core[:1].isupper() and core[1:].islower() and ordinary is None:
            return headline
        if index > 0 and core[:1].isupper() and core[1:].islower() and ordinary \
                and not out[-1].endswith(":"):
            word = word.replace(core, core.lower(), 1)
        out.append(word)
    return " ".join(out)


def title_parts(title: str) -> list[str]:
    """The stories a roundup's title names ("Roundup: A; B; C" -> [A, B, C]), or []."""
    _, colon, rest = title.partition(":")
    parts = [p.strip() for p in rest.split(";") if p.strip()] if colon else []
    return parts if len(parts) >= 2 else []


def propose_subject(headlines: Sequence[str], *, title: str = "", body_text: str = "",
                    limit: int = SUBJECT_TARGET) -> str:
    """A subject of at most `limit` characters naming the top stories, then "+ N more".

    A roundup title that lists its stories ("Roundup: A; B; C") gives the phrases (the
    page's editors wrote them short); else the headlines, most important first. Each
    is used whole if it fits, else without its trailing phrase.
    """
    if not headlines:
        return ""
    named = title_parts(title)
    phrases = named if named and len(named) <= len(headlines) else list(headlines)
    casing = _casing(body_text)
    options = [list(dict.fromkeys([" ".join(p.split()).rstrip("."), short_headline(p)]))
               for p in phrases]
    total = len(headlines)
    chosen: list[str] = []
    # Two stories if any two of the first three fit (fullest wording first), else one.
    pairs = [(a, b) for a, b in ((0, 1), (0, 2), (1, 2)) if b < len(options)]
    for a, b in pairs:
        fits = [[x, y] for x in options[a] for y in options[b]
                if len(_join([x, y], total - 2)) <= limit]
        if fits:
            chosen = max(fits, key=lambda pair: len(pair[0]) + len(pair[1]))
            break
    if not chosen:
        chosen = [c for c in options[0] if len(_join([c], total - 1)) <= limit][:1]
    if not chosen:  # even the shortest first phrase is too long: cut it at a word
        first = options[0][-1]
        more = _join([], len(headlines) - 1)
        room = limit - len(more) - 1
        cut = first[:room].rsplit(" ", 1)[0].rstrip(" ,:;–—-")
        return (cut + "…" + more).strip()
    cased = [sentence_case(c, casing) for c in chosen]
    if any(c == h for c, h in zip(cased, chosen, strict=True) if len(h.split()) > 1):
        cased = chosen  # some words unknown: keep Title Case rather than mix the two
    return _join(cased, len(headlines) - len(chosen))


def _join(parts: Sequence[str], more: int) -> str:
    text = ", ".join(parts)
    return f"{text} + {more} more" if more else text


def proposed_subject(*, session: Session, issue_id: int) -> str:
    """What ingest would propose for the issue as it is now (pinned stories first)."""
    from newsletter.models import Issue, Item

    issue = session.get(Issue, issue_id)
    if issue is None:
        raise LookupError(f"no issue with id {issue_id}")
    items = session.exec(
        select(Item).where(Item.issue_id == issue_id, col(Item.hidden).is_(False))
        .order_by(col(Item.pinned).desc(), col(Item.position), col(Item.id))
    ).all()
    body = "\n\n".join([issue.intro, *(i.body for i in items)])
    return propose_subject([i.headline for i in items], title=issue.title, body_text=body)
