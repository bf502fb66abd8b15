"""Per-issue results for editors: who opened which story and topic, and who left.

Rates are against the emails delivered (the server answered 250). A story that some
readers didn't get ("only my topics", the item cap) is still measured against all
of them, so its rate is a floor; the page says so.

Unsubscribes come in two kinds, kept apart because they mean different things:
* attributed: the unsubscribe link or List-Unsubscribe header of this issue's email
  (an Event with this issue_id);
* nearby: unsubscribes with no issue recorded (the preference centre, an older
  link) within UNSUB_WINDOW of the send starting: probably, not certainly, this issue.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, col, select

from newsletter.composer import load_issue
from newsletter.models import (
    Click,
    Delivery,
    DeliveryStatus,
    Event,
    EventKind,
    Issue,
    ItemTopic,
    Topic,
    as_utc,
)

UNSUB_WINDOW = timedelta(days=7)
CLICK_DAYS = 7  # the clicks-per-day chart covers the first week


@dataclass(frozen=True)
class Row:
    """One story or topic: unique readers who opened it, and their share of delivered."""

    label: str
    readers: int
    rate: float  # 0..1 of delivered
    key: str = ""  # item id or topic slug


@dataclass(frozen=True)
class IssueResults:
    issue_id: int
    delivered: int
    clickers: int  # readers who opened at least one story
    stories: list[Row]
    topics: list[Row]
    unsubscribes_attributed: int
    unsubscribes_nearby: int
    clicks_per_day: list[tuple[str, int]]  # first CLICK_DAYS days after the send
    sent_at: datetime | None

    @property
    def click_rate(self) -> float:
        return self.clickers / self.delivered if self.delivered else 0.0

    @property
    def unsubscribe_rate(self) -> float:
        return self.unsubscribes_attributed / self.delivered if self.delivered else 0.0


def issue_results(*, session: Session, issue_id: int) -> IssueResults:
    """Everything the results page shows, in a handful of grouped queries."""
    issue = session.get(Issue, issue_id)
    if issue is None:
        raise LookupError(f"no issue with id {issue_id}")
    content = load_issue(session=session, issue_id=issue_id)
    delivered = int(session.exec(select(func.count()).select_from(Delivery).where(
        Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.sent)).one())

    def rate(n: int) -> float:
        return n / delivered if delivered else 0.0

    per_item = dict(session.exec(
        select(Click.item_id, func.count()).where(Click.issue_id == issue_id)
        .group_by(col(Click.item_id))).all())
    stories = [Row(i.headline, int(per_item.get(i.id, 0)), rate(int(per_item.get(i.id, 0))),
                   str(i.id)) for i in content.items]
    readers = func.count(func.distinct(Click.subscriber_id))
    topics = [Row(name, int(n), rate(int(n)), slug) for slug, name, n in session.exec(
        select(Topic.slug, Topic.name, readers)
        .join(ItemTopic, col(ItemTopic.topic_id) == col(Topic.id))
        .join(Click, col(Click.item_id) == col(ItemTopic.item_id))
        .where(Click.issue_id == issue_id)
        .group_by(col(Topic.slug), col(Topic.name))
        .order_by(readers.desc(), col(Topic.slug))).all()]
    clickers = int(session.exec(select(readers).where(Click.issue_id == issue_id)).one())

    attributed = int(session.exec(select(func.count()).select_from(Event).where(
        Event.kind == EventKind.unsubscribed, Event.issue_id == issue_id)).one())
    started = issue.send_started_at or issue.sent_at
    nearby = 0
    per_day: list[tuple[str, int]] = []
    if started is not None:
        start = as_utc(started)
        nearby = int(session.exec(select(func.count()).select_from(Event).where(
            Event.kind == EventKind.unsubscribed, col(Event.issue_id).is_(None),
            col(Event.at) >= start, col(Event.at) < start + UNSUB_WINDOW)).one())
        # Bucketed in Python: day arithmetic differs between SQLite and PostgreSQL.
        days: Counter[int] = Counter(
            (as_utc(at) - start).days for at in session.exec(
                select(Click.at).where(Click.issue_id == issue_id)).all())
        per_day = [((start + timedelta(days=d)).strftime("%a %d"), days.get(d, 0))
                   for d in range(CLICK_DAYS)]
    stories.sort(key=lambda r: -r.readers)
    return IssueResults(issue_id, delivered, clickers, stories, topics, attributed, nearby,
                        per_day, started)
