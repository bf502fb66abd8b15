"""The topic taxonomy (newsletter/data/topics.toml) and tagging items with it.

Tagging is deliberately simple so an editor can predict it: an item gets a topic
when its headline and body mention enough of that topic's keywords (a headline
mention weighs more than a body mention). The roundup's tag line only tips the
balance for items that already mention the topic at least once; it never tags an
item on its own, because tag lines describe the whole roundup, not each story.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from newsletter.models import (
    Issue,
    Item,
    ItemTopic,
    Subscriber,
    SubscriberStatus,
    SubscriberTopic,
    Topic,
    utcnow,
)
from newsletter.settings import settings

SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")

HEADLINE_WEIGHT = 3  # a keyword in the headline says what the story is about
BODY_WEIGHT = 1  # per distinct keyword in the body ...
BODY_REPEAT_BONUS = 1  # ... plus this when it recurs (the story keeps coming back to it)
THRESHOLD = 3  # score an item needs for a topic
FALLBACK_THRESHOLD = 2  # an item that reaches THRESHOLD nowhere still gets its best topic at this
TAG_BONUS = 1  # the roundup's tag line counts as one more mention, for topics already mentioned
MAX_TOPICS = 3  # the strongest few: a long feature mentions everything once
SUBSTRING_MIN = 5  # tag lines run words together; only longer keywords are trusted inside them
# Where two tags were glued: "AfricaAlibaba", "Covid-19E-Commerce", "H&MJack Ma",
# "JCBWeather".
GLUED_BOUNDARY = re.compile(
    r"(?<=[a-z\u00e0-\u00ff])(?=[A-Z])|(?<=\d)(?=[A-Z][a-z-])|(?<=&[A-Z])(?=[A-Z][a-z])"
    r"|(?<=[A-Z]{2})(?=[A-Z][a-z]{2})"
)
# Words whose inner capitals look like glue ("AliExpress", "OKCupid"); known ones
# are kept whole when splitting a tag line.
INNER_CAPITALS = re.compile(r"[a-z][A-Z]|[A-Z]{2}[a-z]")


class TaxonomyError(ValueError):
    """The taxonomy file is unusable; the message names the file and line."""


@dataclass
class TopicSpec:
    """One topic as written in the taxonomy file."""

    slug: str
    name: str
    description: str
    keywords: list[str] = field(default_factory=list)


# --- Loading -------------------------------------------------------------------


def _topic_lines(text: str) -> list[int]:
    """Line numbers (1-based) where each [[topic]] table starts, for error messages."""
    return [n for n, line in enumerate(text.splitlines(), 1) if line.strip() == "[[topic]]"]


def load_taxonomy(path: Path | None = None) -> list[TopicSpec]:
    """Read and validate the taxonomy file (default: settings.topics_file)."""
    path = Path(path or settings.topics_file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaxonomyError(f"{path}: cannot read taxonomy file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise TaxonomyError(f"{path}: taxonomy file is not UTF-8 text") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib puts "(at line N, column M)" at the end of its message.
        match = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = match.group(1) if match else "1"
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise TaxonomyError(f"{path}:{line}: invalid TOML: {reason}") from exc

    tables = data.get("topic")
    if not isinstance(tables, list) or not tables:
        raise TaxonomyError(f"{path}:1: no [[topic]] tables found")
    starts = _topic_lines(text)
    specs: list[TopicSpec] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(tables):
        line = starts[index] if index < len(starts) else 1
        where = f"{path}:{line}"
        if not isinstance(table, dict):
            raise TaxonomyError(f"{where}: each topic must be a [[topic]] table")
        for key in ("slug", "name", "description"):
            value = table.get(key)
            if not isinstance(value, str) or not value.strip():
                raise TaxonomyError(f"{where}: topic is missing {key!r} (a non-empty string)")
        slug = table["slug"].strip()
        if not SLUG_RE.match(slug) or len(slug) > 64:
            raise TaxonomyError(
                f"{where}: slug {slug!r} must be lowercase letters, digits and hyphens"
            )
        if slug in seen:
            raise TaxonomyError(
                f"{where}: duplicate slug {slug!r} (first defined at line {seen[slug]})"
            )
        seen[slug] = line
        keywords = table.get("keywords", [])
        if (
            not isinstance(keywords, list)
            or not keywords
            or not all(isinstance(k, str) and k.strip() for k in keywords)
        ):
            raise TaxonomyError(f"{where}: topic {slug!r} needs 'keywords', a list of strings")
        specs.append(
            TopicSpec(
                slug=slug,
                name=table["name"].strip(),
                description=table["description"].strip(),
                keywords=[k.strip() for k in keywords],
            )
        )
    return specs


def taxonomy_from_db(*, session: Session) -> list[TopicSpec]:
    """The taxonomy as stored (so tagging follows what the site actually offers)."""
    topics = session.exec(select(Topic).order_by(col(Topic.id))).all()
    return [
        TopicSpec(
            slug=t.slug,
            name=t.name,
            description=t.description,
            keywords=[k for k in t.keywords.splitlines() if k.strip()],
        )
        for t in topics
    ]


def sync_topics(*, session: Session, path: Path | None = None) -> int:
    """Upsert the taxonomy file's topics by slug; return how many the file defines.

    Topics dropped from the file are deleted only when no item or subscriber uses
    them, so editing the file never silently loses anyone's choices.
    """
    specs = load_taxonomy(path)
    existing = {t.slug: t for t in session.exec(select(Topic)).all()}
    for spec in specs:
        topic = existing.get(spec.slug) or Topic(slug=spec.slug, name=spec.name)
        topic.name = spec.name
        topic.description = spec.description
        topic.keywords = "\n".join(spec.keywords)
        session.add(topic)
    wanted = {s.slug for s in specs}
    for slug, topic in existing.items():
        if slug in wanted:
            continue
        in_use = (
            session.exec(
                select(ItemTopic.item_id).where(ItemTopic.topic_id == topic.id).limit(1)
            ).first()
            is not None
            or session.exec(
                select(SubscriberTopic.subscriber_id)
                .where(SubscriberTopic.topic_id == topic.id)
                .limit(1)
            ).first()
            is not None
        )
        if not in_use:
            session.delete(topic)
    session.flush()
    return len(specs)


# --- Tagging -------------------------------------------------------------------


def _normalise(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'").casefold()


@lru_cache(maxsize=4096)
def _keyword_re(keyword: str) -> re.Pattern[str]:
    # \b fails next to keywords that start or end with punctuation ("11.11"), so
    # "not preceded/followed by a word character" is the boundary instead.
    return re.compile(r"(?<!\w)" + re.escape(_normalise(keyword)) + r"(?!\w)")


def _count(keyword: str, text: str) -> int:
    """Mentions of a keyword; "a|b" alternatives are synonyms counted together."""
    return sum(len(_keyword_re(alt).findall(text)) for alt in keyword.split("|") if alt)


def topic_scores(*, text: str, taxonomy: Sequence[TopicSpec], headline: str = "") -> dict[str, int]:
    """Each topic's keyword score for one item (topics with no mention are left out)."""
    body = _normalise(text)
    head = _normalise(headline)
    scores: dict[str, int] = {}
    for spec in taxonomy:
        score = 0
        for keyword in dict.fromkeys(_normalise(k) for k in spec.keywords):
            if head and _count(keyword, head):
                score += HEADLINE_WEIGHT
            hits = _count(keyword, body)
            if hits:
                score += BODY_WEIGHT + (BODY_REPEAT_BONUS if hits > 1 else 0)
        if score:
            scores[spec.slug] = score
    return scores


def tag_topics(*, tags: Sequence[str], taxonomy: Sequence[TopicSpec]) -> set[str]:
    """Topics the roundup's tag line mentions."""
    found: set[str] = set()
    for tag in tags:
        norm = _normalise(tag)
        for spec in taxonomy:
            for keyword in spec.keywords:
                key = _normalise(keyword)
                if _count(key, norm) or any(
                    len(alt) >= SUBSTRING_MIN and alt in norm for alt in key.split("|")
                ):
                    found.add(spec.slug)
                    break
    return found


def suggest_topics(
    *,
    text: str,
    tags: Sequence[str] = (),
    taxonomy: Sequence[TopicSpec],
    headline: str = "",
) -> list[str]:
    """Slugs an item should be tagged with, in taxonomy order.

    Score per topic: 3 for each keyword in the headline, 1 for each distinct keyword
    in the body (+1 when it recurs), +1 when the roundup's tag line names the topic
    and the item mentions it at all. An item gets the (at most three) strongest
    topics scoring 3 or more, or else its best topic if that scores 2.
    `text` is the item's body; pass the headline separately so it weighs more.
    """
    scores = topic_scores(text=text, taxonomy=taxonomy, headline=headline)
    for slug in tag_topics(tags=tags, taxonomy=taxonomy) if tags else ():
        if scores.get(slug):
            scores[slug] += TAG_BONUS
    order = {spec.slug: i for i, spec in enumerate(taxonomy)}
    ranked = sorted(scores, key=lambda slug: (-scores[slug], order[slug]))
    chosen = [slug for slug in ranked if scores[slug] >= THRESHOLD][:MAX_TOPICS]
    if not chosen and ranked and scores[ranked[0]] >= FALLBACK_THRESHOLD:
        chosen = ranked[:1]
    return sorted(chosen, key=order.__getitem__)


def split_tag_line(line: str, *, known: Sequence[str] = ()) -> list[str]:
    """Split a scraped, run-together tag line into tags.

    "AfricaAfrica Netpreneur PrizeAlibaba News RoundupdarazE-CommerceEurope" becomes
    Africa / Africa Netpreneur Prize / Alibaba News Roundup / Daraz / E-Commerce /
    Europe: a lowercase letter directly followed by a capital starts a new tag
    (except inside a known phrase such as "AliExpress"), and a known phrase glued
    to the end of a word ("Roundupdaraz") is cut off.
    """
    phrases = sorted({k for k in known if k.strip()}, key=len, reverse=True)
    protected: list[tuple[int, int]] = []
    lowered = line.casefold()
    for phrase in phrases:
        if not INNER_CAPITALS.search(phrase):
            continue
        for m in re.finditer(re.escape(phrase.casefold()), lowered):
            protected.append((m.start(), m.end()))
    cuts = [
        m.start()
        for m in GLUED_BOUNDARY.finditer(line)
        if not any(a < m.start() < b for a, b in protected)
    ]
    pieces: list[str] = []
    start = 0
    for cut in [*cuts, len(line)]:
        pieces.append(line[start:cut])
        start = cut
    tags: list[str] = []
    for piece in pieces:
        tags.extend(_cut_glued_suffix(piece.strip(), phrases))
    return [t for t in tags if t]


def _cut_glued_suffix(piece: str, phrases: Sequence[str]) -> list[str]:
    words = piece.split(" ")
    last = words[-1]
    if last.casefold() in {p.casefold() for p in phrases}:
        return [piece]  # "Livestreaming" is a word, not "Live" + "streaming"
    for phrase in phrases:
        if len(phrase) < SUBSTRING_MIN or " " in phrase:
            continue
        if (
            len(last) > len(phrase) + 2
            and last.casefold().endswith(phrase.casefold())
            and last[-len(phrase)].islower()
        ):
            head = " ".join([*words[:-1], last[: -len(phrase)]])
            return [head, phrase]
    return [piece]


# --- Editing tags ----------------------------------------------------------------


def set_item_topics(
    *, session: Session, item_id: int, slugs: Sequence[str], source: str = "editor"
) -> list[str]:
    """Replace an item's topics; return the slugs now set, in the order given."""
    item = session.get(Item, item_id)
    if item is None:
        raise ValueError(f"no item with id {item_id}")
    wanted = list(dict.fromkeys(s.strip() for s in slugs if s.strip()))
    topics = {t.slug: t.id for t in session.exec(select(Topic)).all() if t.id is not None}
    unknown = [s for s in wanted if s not in topics]
    if unknown:
        raise ValueError(
            f"unknown topic {', '.join(repr(s) for s in unknown)}; "
            f"valid topics: {', '.join(sorted(topics))}"
        )
    session.exec(delete(ItemTopic).where(col(ItemTopic.item_id) == item_id))  # type: ignore[call-overload]
    for slug in wanted:
        session.add(ItemTopic(item_id=item_id, topic_id=topics[slug], source=source))
    issue = session.get(Issue, item.issue_id)
    if issue is not None:
        issue.updated_at = utcnow()
        session.add(issue)
    session.flush()
    return wanted


def item_topic_slugs(*, session: Session, item_ids: Sequence[int]) -> dict[int, list[str]]:
    """Each item's topic slugs (taxonomy order), for listings."""
    result: dict[int, list[str]] = {i: [] for i in item_ids}
    if not item_ids:
        return result
    rows = session.exec(
        select(ItemTopic.item_id, Topic.slug)
        .join(Topic, col(Topic.id) == col(ItemTopic.topic_id))
        .where(col(ItemTopic.item_id).in_(list(item_ids)))
        .order_by(col(Topic.id))
    ).all()
    for item_id, slug in rows:
        result[item_id].append(slug)
    return result


def topic_counts(*, session: Session) -> list[tuple[Topic, int, int]]:
    """Every topic with its item count and confirmed-subscriber count."""
    items = dict(
        session.exec(
            select(ItemTopic.topic_id, func.count()).group_by(col(ItemTopic.topic_id))
        ).all()
    )
    subscribers = dict(
        session.exec(
            select(SubscriberTopic.topic_id, func.count())
            .join(Subscriber, col(Subscriber.id) == col(SubscriberTopic.subscriber_id))
            .where(Subscriber.status == SubscriberStatus.confirmed)
            .group_by(col(SubscriberTopic.topic_id))
        ).all()
    )
    topics = session.exec(select(Topic).order_by(col(Topic.id))).all()
    return [(t, int(items.get(t.id or 0, 0)), int(subscribers.get(t.id or 0, 0))) for t in topics]
