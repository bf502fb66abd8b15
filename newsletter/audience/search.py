"""Finding subscribers for the editors: filters, keyset pages, CSV export, one person's history.

Pages are keyset-paginated on the primary key (newest first), never OFFSET: page 400
of a million subscribers costs what page 1 costs, one index range scan.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import exists, func, or_
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from newsletter.models import (
    Click,
    Delivery,
    Event,
    Issue,
    Item,
    Subscriber,
    SubscriberStatus,
    SubscriberTopic,
    Suppression,
    Topic,
)
from newsletter.subscribers import topics_by_subscriber

PAGE_SIZE = 50
# Counting every match of a filter over a million rows costs more than the page itself;
# past this many the screen says "10,000+" (the export still has them all).
COUNT_CAP = 10_000
EXPORT_CHUNK = 1000
HISTORY_LIMIT = 200

# Where a subscriber came from, as editors think of it; the stored `source` is finer.
SOURCES: dict[str, tuple[str, ...]] = {
    "form": ("form", "embed"),
    "import": ("import",),
    "api": ("api",),
    "editor": ("editor", "cli"),
}
SOURCE_LABELS = {"form": "Sign-up form", "import": "CSV import", "api": "API",
                 "editor": "Added by an editor", "other": "Other"}
EXPORT_COLUMNS = ["email", "name", "status", "topics", "timezone", "only_my_topics", "paused",
                  "source", "created_at", "confirmed_at", "unsubscribed_at"]


@dataclass(frozen=True)
class Filters:
    """What the subscribers screen is narrowed to (every field optional)."""

    q: str = ""
    status: str = ""
    topic: str = ""
    source: str = ""
    since: date | None = None
    until: date | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        q = self.q.strip().lower()
        if q:
            pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(or_(col(Subscriber.email).like(pattern, escape="\\"),
                             func.lower(col(Subscriber.name)).like(pattern, escape="\\")))
        if self.status in {s.value for s in SubscriberStatus}:
            where.append(col(Subscriber.status) == self.status)
        elif self.status == "paused":
            where.append(col(Subscriber.paused).is_(True))
        if self.topic:
            where.append(exists().where(
                col(SubscriberTopic.subscriber_id) == col(Subscriber.id),
                col(SubscriberTopic.topic_id) == select(Topic.id).where(
                    Topic.slug == self.topic).scalar_subquery()))
        if self.source in SOURCES:
            where.append(col(Subscriber.source).in_(SOURCES[self.source]))
        elif self.source == "other":
            known = [s for group in SOURCES.values() for s in group]
            where.append(col(Subscriber.source).not_in(known))
        if self.since:
            where.append(col(Subscriber.created_at) >= datetime.combine(self.since, time.min, UTC))
        if self.until:
            where.append(col(Subscriber.created_at)
                         < datetime.combine(self.until + timedelta(days=1), time.min, UTC))
        return where

    def query_string(self, **override: Any) -> str:
        from urllib.parse import urlencode

        values = {"q": self.q, "status": self.status, "topic": self.topic,
                  "source": self.source, "since": self.since.isoformat() if self.since else "",
                  "until": self.until.isoformat() if self.until else "", **override}
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})


@dataclass
class Row:
    """One line of the subscribers table."""

    subscriber: Subscriber
    topics: list[str]
    suppressed: bool


@dataclass
class PageOfSubscribers:
    rows: list[Row]
    next_before: int | None  # the cursor for the next (older) page, None on the last
    total: int | None = None  # how many match, up to COUNT_CAP
    more_than: bool = False  # True: more than COUNT_CAP match


def find(*, session: Session, filters: Filters, before: int | None = None,
         page_size: int = PAGE_SIZE, count: bool = True) -> PageOfSubscribers:
    """One page of subscribers matching `filters`, newest first, older than id `before`."""
    query = select(Subscriber).where(*filters.conditions())
    if before is not None:
        query = query.where(col(Subscriber.id) < before)
    subscribers = list(session.exec(
        query.order_by(col(Subscriber.id).desc()).limit(page_size + 1)).all())
    more = len(subscribers) > page_size
    subscribers = subscribers[:page_size]
    ids = [s.id for s in subscribers if s.id is not None]
    topics = topics_by_subscriber(session=session, subscriber_ids=ids) if ids else {}
    emails = [s.email for s in subscribers]
    suppressed: set[str] = set()
    if emails:
        suppressed = set(session.exec(
            select(Suppression.email).where(col(Suppression.email).in_(emails))).all())
    total = None
    if count:
        capped = select(Subscriber.id).where(*filters.conditions()).limit(COUNT_CAP + 1)
        total = int(session.exec(select(func.count()).select_from(capped.subquery())).one())
    return PageOfSubscribers(
        rows=[Row(s, topics.get(s.id or 0, []), s.email in suppressed) for s in subscribers],
        next_before=ids[-1] if more and ids else None,
        total=min(total, COUNT_CAP) if total is not None else None,
        more_than=total is not None and total > COUNT_CAP)


def export_rows(*, session: Session, filters: Filters) -> Iterator[str]:
    """The CSV of everyone matching `filters`, in chunks (a header line first), so a
    million rows stream without being held in memory. Importable by `import_csv`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    before: int | None = None
    while True:
        chunk = find(session=session, filters=filters, before=before, page_size=EXPORT_CHUNK,
                     count=False)
        for row in chunk.rows:
            s = row.subscriber
            writer.writerow([
                safe_cell(s.email), safe_cell(s.name), s.status, ";".join(row.topics),
                s.timezone, "yes" if s.only_my_topics else "no", "yes" if s.paused else "no",
                s.source, _iso(s.created_at), _iso(s.confirmed_at), _iso(s.unsubscribed_at),
            ])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if chunk.next_before is None:
            return
        before = chunk.next_before
        session.expunge_all()  # flat memory across a long export


def safe_cell(value: str) -> str:
    # A cell starting with = + - @ runs as a formula in spreadsheets (CSV injection).
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


# --- one subscriber's history ------------------------------------------------------


@dataclass
class HistoryEntry:
    """Something that happened to a subscriber, for the timeline on their page."""

    at: datetime | None
    kind: str
    detail: str = ""
    issue_id: int | None = None
    issue_title: str = ""


@dataclass
class Profile:
    subscriber: Subscriber
    topics: list[str]
    suppression: Suppression | None
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    clicks: list[dict[str, Any]] = field(default_factory=list)


def profile(*, session: Session, subscriber_id: int) -> Profile | None:
    """A subscriber with their topics, suppression, deliveries, clicks and event history."""
    sub = session.get(Subscriber, subscriber_id)
    if sub is None:
        return None
    topics = topics_by_subscriber(session=session, subscriber_ids=[subscriber_id]).get(
        subscriber_id, [])
    deliveries = [
        {"issue_id": d.issue_id, "title": title, "status": d.status,
         "message_id": d.message_id, "sent_at": d.sent_at, "attempts": d.attempts,
         "error": d.error}
        for d, title in session.exec(
            select(Delivery, Issue.title).join(Issue, col(Issue.id) == col(Delivery.issue_id))
            .where(Delivery.subscriber_id == subscriber_id)
            .order_by(col(Delivery.id).desc()).limit(HISTORY_LIMIT)).all()
    ]
    clicks = [
        {"at": c.at, "issue_id": c.issue_id, "headline": headline}
        for c, headline in session.exec(
            select(Click, Item.headline).join(Item, col(Item.id) == col(Click.item_id))
            .where(Click.subscriber_id == subscriber_id)
            .order_by(col(Click.at).desc()).limit(HISTORY_LIMIT)).all()
    ]
    titles: dict[int, str] = {}
    history = []
    for event in session.exec(
        select(Event).where(Event.subscriber_id == subscriber_id)
        .order_by(col(Event.at).desc(), col(Event.id).desc()).limit(HISTORY_LIMIT)
    ).all():
        if event.issue_id and event.issue_id not in titles:
            issue = session.get(Issue, event.issue_id)
            titles[event.issue_id] = issue.title if issue else f"Issue {event.issue_id}"
        history.append(HistoryEntry(
            at=event.at, kind=event.kind, detail=_describe(event.kind, event.source, event.data),
            issue_id=event.issue_id, issue_title=titles.get(event.issue_id or 0, "")))
    return Profile(subscriber=sub, topics=topics,
                   suppression=session.get(Suppression, sub.email),
                   deliveries=deliveries, history=history, clicks=clicks)


def _describe(kind: str, source: str, data: str) -> str:
    """A short human line for an event's details (its JSON is for machines)."""
    try:
        values = json.loads(data or "{}")
    except ValueError:
        values = {}
    parts = [f"via {source}"] if source else []
    if isinstance(values, dict):
        for key in ("reason", "status", "diagnostic", "feedback_type", "topics", "after",
                    "file"):
            value = values.get(key)
            if value:
                text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
                parts.append(f"{key.replace('_', ' ')}: {text[:200]}")
    return "; ".join(parts)


def topic_choices(*, session: Session) -> Sequence[tuple[str, str]]:
    return [(t.slug, t.name) for t in session.exec(select(Topic).order_by(col(Topic.name))).all()]
