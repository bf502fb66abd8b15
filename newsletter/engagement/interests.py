"""Learned interests: the topics a reader keeps clicking, for ordering "Also this week"
and for the preference centre's "Follow Logistics?" suggestions.

A click counts 1 when it happens and half as much every HALF_LIFE after (in weekly
steps), so a reader whose tastes change is followed within a few weeks. Only the
TOP_TOPICS strongest topics they don't follow, scoring at least THRESHOLD, are
returned: that keeps the signal stable from week to week and the number of distinct
digests (composition keys) within 2x today's (bench/bench_compositions.py).

Nothing is learned when click tracking is off for the service (TRACK_CLICKS) or for
the reader (Subscriber.track_clicks).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, exists, func
from sqlmodel import Session, col, select

from newsletter.models import Click, ItemTopic, Subscriber, SubscriberTopic, Topic, utcnow
from newsletter.settings import settings

HALF_LIFE = timedelta(weeks=4)
WINDOW = timedelta(weeks=16)  # older clicks weigh under 1/16: not worth reading
THRESHOLD = 2.5  # about three recent clicks on a topic before we say "You often read it"
TOP_TOPICS = 2  # learned topics kept per reader (quantises the signal, see module doc)
SUGGEST_WINDOW = timedelta(days=30)  # "You read 4 Logistics stories this month"
SUGGEST_MIN_STORIES = 3


def tracking_enabled() -> bool:
    """The service-wide switch (TRACK_CLICKS, default on)."""
    return bool(getattr(settings, "track_clicks", True))


def decayed_weight(age: timedelta) -> float:
    """1 for a click now, 0.5 one HALF_LIFE ago, 0.25 two ago."""
    return float(0.5 ** (max(age, timedelta(0)) / HALF_LIFE))


def strongest(scores: dict[str, float], *, threshold: float = THRESHOLD,
              top: int = TOP_TOPICS) -> list[str]:
    """The `top` slugs scoring at least `threshold`, strongest first (ties by slug)."""
    ranked = sorted((s for s in scores.items() if s[1] >= threshold), key=lambda s: (-s[1], s[0]))
    return [slug for slug, _score in ranked[:top]]


def interests_by_subscriber(
    *, session: Session, subscriber_ids: Sequence[int] | None = None,
    now: datetime | None = None, threshold: float = THRESHOLD, top: int = TOP_TOPICS,
) -> dict[int, list[str]]:
    """subscriber id -> learned topic slugs (at most `top`, strongest first), in one
    query: for everyone who clicked recently, or for the given ids. Pass the result's
    entry to `compose(..., learned=...)`; readers absent from it learned nothing.
    (`threshold` and `top` are for the bench that shows why they are what they are.)

    Only clicks up to `now` count: planning and every batch of one send pass the same
    moment (the issue's send_started_at), so they compose the same email for a reader
    even if the reader clicks something in between."""
    if not tracking_enabled():
        return {}
    now = now or utcnow()
    # Summed in SQL with the decay as weekly steps (a CASE on the click time against
    # cut-offs computed here), so the same query runs on SQLite and PostgreSQL and
    # only (reader, topic) pairs above the threshold come back: 20,000 readers with
    # 50,000 clicks return a few thousand rows instead of every click.
    steps = [(now - timedelta(weeks=week + 1), decayed_weight(timedelta(weeks=week + 0.5)))
             for week in range(WINDOW // timedelta(weeks=1))]
    weight = case(*[(col(Click.at) >= since, w) for since, w in steps], else_=0.0)
    score = func.sum(weight)
    query = (
        select(Click.subscriber_id, Topic.slug, score)
        .join(ItemTopic, col(ItemTopic.item_id) == col(Click.item_id))
        .join(Topic, col(Topic.id) == col(ItemTopic.topic_id))
        .join(Subscriber, col(Subscriber.id) == col(Click.subscriber_id))
        .where(col(Click.at) >= now - WINDOW, col(Click.at) <= now,
               col(Subscriber.track_clicks).is_(True),
               # Followed topics lead the email already: learn what else they read.
               ~exists(select(SubscriberTopic.topic_id).where(
                   col(SubscriberTopic.subscriber_id) == col(Click.subscriber_id),
                   col(SubscriberTopic.topic_id) == col(Topic.id))))
        .group_by(col(Click.subscriber_id), col(Topic.slug))
        .having(score >= threshold)
    )
    if subscriber_ids is not None:
        query = query.where(col(Click.subscriber_id).in_(list(subscriber_ids)))
    scores: dict[int, dict[str, float]] = defaultdict(dict)
    for sid, slug, value in session.exec(query).all():
        scores[sid][slug] = float(value)
    learned = {sid: strongest(per_topic, threshold=threshold, top=top)
               for sid, per_topic in scores.items()}
    return {sid: slugs for sid, slugs in learned.items() if slugs}


def learned_for(*, session: Session, subscriber_id: int, now: datetime | None = None
                ) -> list[str]:
    """One reader's learned topics (previews)."""
    return interests_by_subscriber(session=session, subscriber_ids=[subscriber_id],
                                   now=now).get(subscriber_id, [])


@dataclass(frozen=True)
class Suggestion:
    """A topic the reader reads a lot but doesn't follow."""

    slug: str
    name: str
    stories: int  # distinct stories on it they opened in SUGGEST_WINDOW


def topic_suggestions(*, session: Session, subscriber_id: int, now: datetime | None = None,
                      limit: int = 2) -> list[Suggestion]:
    """Unfollowed topics with at least SUGGEST_MIN_STORIES stories read this month."""
    if not tracking_enabled():
        return []
    now = now or utcnow()
    followed = select(SubscriberTopic.topic_id).where(
        SubscriberTopic.subscriber_id == subscriber_id)
    stories = func.count(func.distinct(Click.item_id))
    rows = session.exec(
        select(Topic.slug, Topic.name, stories)
        .join(ItemTopic, col(ItemTopic.topic_id) == col(Topic.id))
        .join(Click, col(Click.item_id) == col(ItemTopic.item_id))
        .where(Click.subscriber_id == subscriber_id, col(Click.at) >= now - SUGGEST_WINDOW,
               col(Topic.id).not_in(followed))
        .group_by(col(Topic.slug), col(Topic.name))
        .having(stories >= SUGGEST_MIN_STORIES)
        .order_by(stories.desc(), col(Topic.slug))
        .limit(limit)
    ).all()
    return [Suggestion(slug, name, int(n)) for slug, name, n in rows]
