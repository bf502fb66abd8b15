"""The preference centre's engagement parts: the "Don't record my clicks" switch and
one-click "Follow Logistics?" suggestions from what the reader reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from newsletter import subscribers as subs
from newsletter.engagement.interests import (
    Suggestion,
    learned_for,
    topic_suggestions,
    tracking_enabled,
)
from newsletter.models import Click, EventKind, Subscriber, Topic, utcnow


def set_click_tracking(*, session: Session, subscriber_id: int, enabled: bool,
                       source: str) -> int:
    """Turn recording of this reader's clicks on or off. Turning it off deletes the
    clicks already recorded (so nothing more is learned from them). Returns how many
    were deleted; logs the change as a preferences event."""
    sub = session.get(Subscriber, subscriber_id)
    if sub is None:
        raise subs.SubscriberError("Unknown subscriber.")
    deleted = 0
    if not enabled:
        result = session.execute(delete(Click).where(col(Click.subscriber_id) == subscriber_id))
        deleted = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if sub.track_clicks != enabled:
        sub.track_clicks = enabled
        sub.updated_at = utcnow()
        session.add(sub)
        subs.log_event(session=session, subscriber_id=subscriber_id,
                       kind=EventKind.preferences_changed, source=source,
                       data={"track_clicks": enabled, "clicks_deleted": deleted})
    return deleted


def follow_topic(*, session: Session, subscriber_id: int, slug: str, source: str) -> Topic:
    """Add one topic to those the reader follows (a no-op if they already do)."""
    topic = session.exec(select(Topic).where(Topic.slug == slug[:64])).first()
    if topic is None:
        raise subs.SubscriberError("That topic no longer exists.", field="topics")
    current = subs.followed_topics(session=session, subscriber_id=subscriber_id)
    if topic.slug not in current:
        subs.update_preferences(session=session, subscriber_id=subscriber_id, source=source,
                                topics=[*current, topic.slug])
    return topic


@dataclass
class EngagementView:
    """What the preference centre shows about clicks and suggestions."""

    service_tracks: bool  # TRACK_CLICKS
    clicks: int  # clicks recorded for this reader
    suggestions: list[Suggestion] = field(default_factory=list)
    offer: Topic | None = None  # ?follow=<slug> from a story page, not yet followed
    already: Topic | None = None  # ?follow=<slug> they already follow
    learned: list[str] = field(default_factory=list)  # names of topics we order by now


def engagement_view(*, session: Session, sub: Subscriber, follow: str | None) -> EngagementView:
    assert sub.id is not None
    followed = set(subs.followed_topics(session=session, subscriber_id=sub.id))
    clicks = session.exec(select(func.count()).select_from(Click)
                          .where(Click.subscriber_id == sub.id)).one()
    view = EngagementView(service_tracks=tracking_enabled(), clicks=int(clicks))
    if sub.track_clicks:
        view.suggestions = topic_suggestions(session=session, subscriber_id=sub.id)
        # Say what we learned, so the reader can judge the switch below.
        names = dict(session.exec(select(Topic.slug, Topic.name)).all())
        view.learned = [names.get(slug, slug)
                        for slug in learned_for(session=session, subscriber_id=sub.id)]
    if follow:
        topic = session.exec(select(Topic).where(Topic.slug == follow[:64])).first()
        if topic is not None and topic.slug in followed:
            view.already = topic
        elif topic is not None:
            view.offer = topic
            view.suggestions = [s for s in view.suggestions if s.slug != topic.slug]
    return view
