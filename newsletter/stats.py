"""Sign-up statistics from the event log: weekly sign-ups and unsubscribes, the
confirmation rate, the median time to confirm, and subscribers per topic.

Computed in Python over (kind, subscriber, time) triples so SQLite and PostgreSQL
agree on week boundaries (ISO weeks, UTC).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
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
    as_utc,
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
    weeks: list[WeekRow] = field(default_factory=list)  # every week from the first to the last
    signups: int = 0  # every sign-up, however it came (form, embed, API, import, CLI)
    opt_in_signups: int = 0  # those that had to be confirmed by the subscriber
    confirmed: int = 0  # opt-in sign-ups whose link was followed
    confirmation_rate: float | None = None  # confirmed / opt_in_signups
    median_time_to_confirm_hours: float | None = None
    active_subscribers: int = 0
    topics: list[TopicRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _monday(value: datetime) -> date:
    return (value - timedelta(days=value.weekday())).date()


def _week_rows(signups: Counter[date], unsubscribes: Counter[date]) -> list[WeekRow]:
    """One row per week from the first active week to the last, quiet weeks included,
    so the chart's gaps are real."""
    mondays = set(signups) | set(unsubscribes)
    if not mondays:
        return []
    rows = []
    monday, last = min(mondays), max(mondays)
    while monday <= last:
        year, week, _ = monday.isocalendar()
        rows.append(WeekRow(week=f"{year}-W{week:02d}", week_start=monday.isoformat(),
                            signups=signups[monday], unsubscribes=unsubscribes[monday]))
        monday += timedelta(days=7)
    return rows


def signup_stats(*, session: Session) -> SignupStats:
    """Every statistic from the event log and the current subscriptions.

    A sign-up and its confirmation pair up per subscriber. One confirmed in the same
    act (an import or `subscribers add --confirmed` logs both with one source) never
    waited for a link, so it stays out of the confirmation rate and time to confirm;
    links log `confirm-link`, which no sign-up uses. Events of erased subscribers are
    anonymous: they count per week but cannot be paired.
    """
    events = session.exec(
        select(Event.kind, Event.subscriber_id, Event.at, Event.source)
        .where(col(Event.kind).in_([EventKind.signed_up, EventKind.confirmed,
                                    EventKind.unsubscribed]))
        .order_by(col(Event.at), col(Event.id))
    ).all()
    signups: Counter[date] = Counter()
    unsubscribes: Counter[date] = Counter()
    waiting: dict[int, tuple[datetime, str]] = {}  # open sign-up per subscriber
    opt_in = 0
    delays: list[float] = []
    for kind, subscriber_id, at, source in events:
        at = as_utc(at)
        if kind == EventKind.signed_up:
            signups[_monday(at)] += 1
            if subscriber_id is not None:
                # A re-subscription is a new sign-up needing its own confirmation.
                waiting[subscriber_id] = (at, source)
                opt_in += 1
        elif kind == EventKind.unsubscribed:
            unsubscribes[_monday(at)] += 1
        elif subscriber_id is not None and subscriber_id in waiting:
            started, signup_source = waiting.pop(subscriber_id)
            if source == signup_source:
                opt_in -= 1
            else:
                delays.append((at - started).total_seconds() / 3600)

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
        weeks=_week_rows(signups, unsubscribes),
        signups=sum(signups.values()),
        opt_in_signups=opt_in,
        confirmed=len(delays),
        confirmation_rate=(len(delays) / opt_in) if opt_in else None,
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
