"""What the weekly digest says: sections, story excerpts, reason chips, the
preheader and the intro, for one composition (render.py turns it into MJML).

A reader's email has at most two sections, each headed once: "Picked for you"
(pinned stories and the ones on topics they follow, each with a compact reason
such as "Logistics") and "Also this week" (the rest; "This week" when nothing
matched). Each story is its headline, an excerpt (the editor's, else its first ~60
words cut at a sentence) and a "Read the full story" link to its archive page,
through the click redirect when TRACK_CLICKS is on.

The subject, excerpts and images live on the issue and items but not in the
composer's snapshot; `load_extras` reads them once per issue version.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from newsletter import branding
from newsletter.composer import ChosenItem, Composition, IssueContent
from newsletter.engagement.links import issue_path, story_path
from newsletter.ingest.cta import sentences
from newsletter.ingest.subject import short_headline
from newsletter.settings import settings

EXCERPT_WORDS = 60
INTRO_MAX_WORDS = 45  # the editor's intro paragraph above the fold, if it is short
TOC_MAX = 5
PREHEADER_CHARS = 110
# &zwnj;&nbsp; pairs after the preheader: inboxes fill the snippet with them instead
# of the first words of the body ("View in browser", the masthead).
PREHEADER_SPACER = "&zwnj;&nbsp;" * 90

# Chip colours (background, text): every pair has at least 7:1 contrast.
CHIPS = {
    "topic": ("#dbeafe", "#1e3a8a"),
    "pinned": ("#fef3c7", "#78350f"),
    "learned": ("#dcfce7", "#14532d"),
    "plain": ("#f3f4f6", "#374151"),
}
_MD_LINK = re.compile(r"\[([^\]]+)\]\((?:https?://|mailto:)[^)\s]+\)")
_MD_EMPHASIS = re.compile(r"(\*\*|__|\*|_)(?=\S)(.+?)(?<=\S)\1")


# --- what the composer's snapshot lacks --------------------------------------------


@dataclass(frozen=True)
class ItemExtras:
    excerpt: str = ""
    image_url: str = ""
    image_alt: str = ""


@dataclass(frozen=True)
class DigestExtras:
    """Issue.subject and each item's excerpt and image (empty: the defaults)."""

    subject: str = ""
    items: Mapping[int, ItemExtras] = field(default_factory=dict)


def read_extras(*, session: Session, issue_id: int) -> DigestExtras:
    from newsletter.models import Issue, Item

    subject = session.exec(select(Issue.subject).where(Issue.id == issue_id)).first()
    rows = session.exec(
        select(Item.id, Item.excerpt, Item.image_url, Item.image_alt)
        .where(Item.issue_id == issue_id, col(Item.hidden).is_(False))
    ).all()
    return DigestExtras(subject=subject or "", items={
        item_id: ItemExtras(excerpt, url, alt) for item_id, excerpt, url, alt in rows
        if item_id is not None and (excerpt or url)})


@lru_cache(maxsize=16)
def _cached_extras(url: str, issue_id: int, version: str) -> DigestExtras:
    from newsletter import db

    with Session(db.get_engine()) as session:
        return read_extras(session=session, issue_id=issue_id)


def load_extras(issue: IssueContent) -> DigestExtras:
    """The extras of `issue` at its version, from the configured database.

    A snapshot built by hand (tests, benchmarks: no timestamp version) or without a
    database gets the defaults rather than an error or another issue's words.
    """
    try:  # load_issue versions a snapshot by Issue.updated_at; others were built by hand
        datetime.fromisoformat(issue.version)
    except ValueError:
        return DigestExtras()
    url = settings.effective_database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return DigestExtras()
    try:
        return _cached_extras(url, issue.id, issue.version)
    except SQLAlchemyError:
        return DigestExtras()


# --- text ----------------------------------------------------------------------------


def plain(text: str) -> str:
    """Inline Markdown an editor wrote (links, emphasis) as the words only."""
    return _MD_EMPHASIS.sub(r"\2", _MD_LINK.sub(r"\1", text))


@lru_cache(maxsize=1024)  # the same stories recur in every composition of an issue
def default_excerpt(body: str, words: int = EXCERPT_WORDS) -> str:
    """The first sentences of the story, up to about `words` words."""
    taken: list[str] = []
    count = 0
    for paragraph in (p for p in body.split("\n\n") if p.strip()):
        for sentence in sentences(" ".join(plain(paragraph).split())):
            n = len(sentence.split())
            if taken and count + n > words:
                return " ".join(taken)
            taken.append(sentence.strip())
            count += n
        if count >= words * 2 // 3:
            break
    text = " ".join(taken)
    if count > words * 3 // 2:  # one endless sentence: cut at a word
        text = " ".join(text.split()[:words]).rstrip(",;:–—-") + "…"
    return text


def _join_names(names: Sequence[str]) -> str:
    if len(names) <= 2:
        return " and ".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _stories(n: int) -> str:
    return "1 story" if n == 1 else f"{n} stories"


# --- the context --------------------------------------------------------------------


def _chips(issue: IssueContent, c: ChosenItem) -> list[dict[str, str]]:
    names = issue.topic_names
    if c.why == "pinned":
        also = [_chip(" · ".join(names.get(t, t) for t in c.matched[:2]), "topic")]
        return [_chip("Editor's pick", "pinned"), *(also if c.matched else [])]
    if c.why == "topic":
        return [_chip(" · ".join(names.get(t, t) for t in c.matched[:2]), "topic")]
    if getattr(c, "learned", ()):  # learned interest (engagement): "You often read ..."
        return [_chip(c.reason, "learned")]
    return [_chip(names.get(t, t), "plain") for t in c.item.topics[:2]]


def _chip(label: str, kind: str) -> dict[str, str]:
    bg, fg = CHIPS[kind]
    return {"label": label, "bg": bg, "fg": fg, "kind": kind}


_STARTERS = {"the", "this", "that", "these", "those", "and", "but", "for", "with", "its", "our",
             "we", "you", "new", "more", "also", "after", "while", "here", "there", "last",
             "next", "other", "meanwhile", "elsewhere", "today", "week", "news"}


def _names_in(text: str) -> set[str]:
    """Capitalised words (names, mostly; the usual sentence openers aside)."""
    found: set[str] = set()
    for word in re.findall(r"[\w’'.&-]+", text):
        word = word.strip(".’'")
        if len(word) > 2 and word[:1].isupper() and word.casefold() not in _STARTERS:
            found.add(word.casefold())
    return found


@lru_cache(maxsize=64)  # per composition render; the texts are the key
def _intro_topics(intro: str, stories: tuple[tuple[int, str], ...]
                  ) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Each intro paragraph with the stories it is about (by the names it shares with
    them; names common to most stories, like the company's own, do not count)."""
    story_names = {item_id: _names_in(text) for item_id, text in stories}
    counts: dict[str, int] = {}
    for names in story_names.values():
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    limit = max(1, len(stories) // 2)
    out = []
    for paragraph in (p.strip() for p in intro.split("\n\n") if p.strip()):
        names = {n for n in _names_in(paragraph) if counts.get(n, 0) <= limit}
        scores = {i: len(names & sn) for i, sn in story_names.items()}
        best = max(scores.values(), default=0)
        about = tuple(i for i, v in scores.items() if best and v == best)
        out.append((paragraph, about))
    return tuple(out)


def reader_intro(issue: IssueContent, composition: Composition) -> list[str]:
    """The editor's intro as far as it suits this reader's email, kept short.

    A paragraph about particular stories is left out: about a story the reader does
    not get, it would promise what isn't there; about one they do get, it repeats
    the story's excerpt a few lines below (the web page keeps the whole intro).
    General paragraphs ("This week: warehouses, luxury and livestreams.") stay while
    the intro is under INTRO_MAX_WORDS, so the first story stays near the top.
    """
    if not issue.intro.strip():
        return []
    stories = tuple((i.id, f"{i.headline}. {i.body}") for i in issue.items)
    chosen: list[str] = []
    words = 0
    for text, about in _intro_topics(issue.intro, stories):
        n = len(text.split())
        if about:
            continue
        if words + n > INTRO_MAX_WORDS:
            break
        chosen.append(plain(text))
        words += n
    return chosen


def _sections(composition: Composition) -> list[tuple[str, list[ChosenItem]]]:
    picks = [c for c in composition.items if c.why in ("pinned", "topic")]
    rest = [c for c in composition.items if c.why not in ("pinned", "topic")]
    if not any(c.why == "topic" for c in picks):
        return [("This week", picks + rest)]  # nothing matched: one plain section
    sections = [("Picked for you", picks)]
    if rest:
        sections.append(("Also this week", rest))
    return sections


def _summary(issue: IssueContent, composition: Composition) -> tuple[str, str]:
    """(sentence under the greeting, short form for the preheader)."""
    matched = [c for c in composition.items if c.why == "topic"]
    total = len(composition.items)
    if matched:
        slugs = list(dict.fromkeys(t for c in matched for t in c.matched))
        names = [issue.topic_names.get(t, t) for t in slugs]
        # Two names at most: the sentence must stay short above the first story.
        topics = _join_names(names) if len(names) <= 2 else ", ".join(names[:2]) + " and more"
        rest = total - len(matched)
        picked = f"{_stories(len(matched))} on {topics}"
        if not rest:
            return f"we picked {picked} for you.", f"{picked} for you"
        return (f"we picked {picked} for you, and {rest} more from the week "
                f"{'is' if rest == 1 else 'are'} below.",
                f"{picked} for you + {rest} more")
    follows = any(c.reason == "Also this week" for c in composition.items)
    if follows:
        return (f"nothing this week is on the topics you follow, so here is the whole "
                f"roundup: {_stories(total)}.", f"{_stories(total)} this week")
    return f"here {'is' if total == 1 else 'are'} this week's {_stories(total)}.", \
        f"{_stories(total)} this week"


def _preheader(summary: str, headlines: Sequence[str]) -> str:
    text = summary
    for headline in headlines:
        candidate = f"{text}: {headline}" if text == summary else f"{text} · {headline}"
        if len(candidate) > PREHEADER_CHARS:
            break
        text = candidate
    return text


def issue_url(issue: IssueContent) -> str:
    return settings.base_url.rstrip("/") + issue_path(issue.id, issue.title)


def _story(issue: IssueContent, c: ChosenItem, extras: DigestExtras,
           story_link: Callable[[str, int], str]) -> dict[str, Any]:
    item = c.item
    more = extras.items.get(item.id, ItemExtras())
    track = settings.track_clicks
    page = settings.base_url.rstrip("/") + story_path(item.id, item.headline)
    own = item.link_url if item.link_url.startswith(("https://", "http://")) else ""
    return {
        "id": item.id,
        "anchor": f"story-{item.id}",
        "headline": item.headline,
        "short_headline": short_headline(item.headline),
        "excerpt": plain(more.excerpt.strip()) or default_excerpt(item.body),
        "chips": _chips(issue, c),
        "why": c.why,
        "reason": c.reason,
        "image_url": more.image_url if more.image_url.startswith("https://") else "",
        "image_alt": more.image_alt or item.headline,
        "story_url": story_link("click", item.id) if track else page,
        # The story's own link is its click link + "/link": one token, one personal value.
        "own_url": (story_link("click", item.id) + "/link" if track else own) if own else "",
        "own_label": (item.link_text if item.link_text and len(item.link_text) <= 40
                      else "Read the original"),
        "kind": item.kind,
    }


def digest_context(
    issue: IssueContent, composition: Composition, personal: Mapping[str, str], *,
    test: bool, extras: DigestExtras, story_link: Callable[[str, int], str],
) -> dict[str, Any]:
    sections: list[dict[str, Any]] = [
        {"title": title, "items": [_story(issue, c, extras, story_link) for c in chosen]}
        for title, chosen in _sections(composition)
    ]
    items: list[dict[str, Any]] = [story for section in sections for story in section["items"]]
    summary, short_summary = _summary(issue, composition)
    d = issue.issue_date
    brand = branding.current()  # name, logo and footer set in /editor/settings (issue 10)
    return {
        "issue": {
            "id": issue.id,
            "title": issue.title,
            "date": d,
            "date_text": f"{d.strftime('%A')} {d.day} {d.strftime('%B %Y')}",
            "url": issue_url(issue),
        },
        "subject": extras.subject.strip() or issue.title,
        "masthead": brand.newsletter_name,
        "logo_url": brand.logo_url,
        "preheader": _preheader(short_summary, [s["short_headline"] for s in items]),
        "preheader_spacer": PREHEADER_SPACER,
        "summary": summary,
        # Someone who follows nothing: invite them to choose (the manage link is theirs).
        "suggest_topics": not any(c.why == "topic" or c.reason == "Also this week"
                                  for c in composition.items),
        "intro_paragraphs": reader_intro(issue, composition),
        "toc": items[:TOC_MAX] if len(items) >= 3 else [],
        "toc_more": max(0, len(items) - TOC_MAX),
        "sections": sections,
        "items": items,
        "personal": personal,
        "test": test,
        "list_name": brand.newsletter_name,
        "base_url": settings.base_url.rstrip("/"),
        "postal_address": brand.postal_address,
    }
