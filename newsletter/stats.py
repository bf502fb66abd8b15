"""Sign-up statistics from the event log: weekly sign-ups and unsubscribes, the
confirmation rate, the median time to confirm, and subscribers per topic.

Computed in Python over (kind, subscriber, time) triples so SQLite and PostgreSQL
agree on week boundaries (ISO weeks, UTC).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from newsletter.models import (
    Event,
    EventKind,
    Subscriber,
    SubscriberStatus,
    SubscriberTopic,
    Topic,
)


@dataclass(frozen=True)
class WeekRow:
    week: str  # ISO week, e.g. "2026-W47"
    week_start: str  # its Monday
    signups: int
    unsubscribes: int


@dataclass(frozen=True)
class TopicRow:
    slug: str
    name: str
    subscribers: int  # confirmed, not paused


@dataclass
class SignupStats:
    weeks: list[WeekRow] = field(default_factory=list)
    signups: int = 0
    confirmed: int = 0
    confirmation_rate: float | None = None  # confirmed sign-ups / sign-ups
    median_time_to_confirm_hours: float | None = None
    active_subscribers: int = 0
    topics: list[TopicRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _week(value: datetime) -> tuple[str, str]:
    year, week, _ = value.isocalendar()
    monday = (value - timedelta(days=value.weekday())).date()
    return f"{year}-W{week:02d}", monday.isoformat()


def signup_stats(*, session: Session) -> SignupStats:
    events = session.exec(
        select(Event.kind, Event.subscriber_id, Event.at)
        .where(col(Event.kind).in_([EventKind.signed_up, EventKind.confirmed,
                                    EventKind.unsubscribed]))
        .order_by(col(Event.at))
    ).all()
    signups: Counter[tuple[str, str]] = Counter()
    unsubscribes: Counter[tuple[str, str]] = Counter()
    signed_up_at: dict[int, datetime] = {}
    confirm_delays: dict[int, float] = {}
    total_signups = 0
    for kind, subscriber_id, at in events:
        at = _aware(at)
        if kind == EventKind.signed_up:
            signups[_week(at)] += 1
            total_signups += 1
            if subscriber_id is not None:
                # A re-subscription starts a new sign-up that needs its own confirmation.
                signed_up_at[subscriber_id] = at
                confirm_delays.pop(subscriber_id, None)
        elif kind == EventKind.unsubscribed:
            unsubscribes[_week(at)] += 1
        elif kind == EventKind.confirmed and subscriber_id in signed_up_at:
            start = signed_up_at[subscriber_id]
            confirm_delays.setdefault(subscriber_id, (at - start).total_seconds() / 3600)

    weeks = [
        WeekRow(week=w, week_start=start, signups=signups[(w, start)],
                unsubscribes=unsubscribes[(w, start)])
        for w, start in sorted(set(signups) | set(unsubscribes))
    ]
    delays = list(confirm_delays.values())
    active = (col(Subscriber.status) == SubscriberStatus.confirmed) & (
        col(Subscriber.paused).is_(False))
    per_topic = dict(session.exec(
        select(SubscriberTopic.topic_id, func.count())
        .join(Subscriber, col(Subscriber.id) == col(SubscriberTopic.subscriber_id))
        .where(active)
        .group_by(col(SubscriberTopic.topic_id))
    ).all())
    topics = [
        TopicRow(slug=t.slug, name=t.name, subscribers=int(per_topic.get(t.id or 0, 0)))
        for t in session.exec(select(Topic).order_by(col(Topic.id))).all()
    ]
    active_count = session.exec(select(func.count()).select_from(Subscriber).where(active)).one()
    return SignupStats(
        weeks=weeks,
        signups=total_signups,
        confirmed=len(delays),
        confirmation_rate=(len(delays) / len(signed_up_at)) if signed_up_at else None,
        median_time_to_confirm_hours=statistics.median(delays) if delays else None,
        active_subscribers=int(active_count),
        topics=topics,
    )


def bar(value: int, maximum: int, width: int = 24) -> str:
    """A terminal bar: full blocks plus one eighth-block for the remainder."""
    if maximum <= 0 or value <= 0:
        return ""
    eighths = round(value / maximum * width * 8)
    return "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]
