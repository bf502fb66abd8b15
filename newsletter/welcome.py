"""The welcome email a subscriber gets once, when their subscription is confirmed.

`confirm` (any path: the link in the email, an editor, the CLI) asks for it after its
transaction commits; the Celery task renders and sends it. A `welcome_sent` event makes
a second run send nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import event
from sqlmodel import Session, col, select

from newsletter import tokens
from newsletter.engagement.links import issue_path
from newsletter.models import (
    Event,
    EventKind,
    Issue,
    IssueStatus,
    Subscriber,
    SubscriberStatus,
)
from newsletter.render import RenderedEmail, render_email
from newsletter.schedule import next_slot
from newsletter.settings import settings
from newsletter.subscribers import topics_by_subscriber

log = logging.getLogger(__name__)

SENT_KIND = EventKind.welcome_sent
_AFTER_COMMIT_KEY = "roundup_welcome"


@dataclass
class Welcome:
    """A rendered welcome email and who it is for."""

    subscriber: Subscriber
    email: RenderedEmail


def welcome_after_commit(session: Session, subscriber_id: int) -> None:
    """Queue the welcome email when (and only if) this session's transaction commits."""
    session.info.setdefault(_AFTER_COMMIT_KEY, set()).add(subscriber_id)


@event.listens_for(Session, "after_commit")
def _publish(session: Session) -> None:
    ids = session.info.pop(_AFTER_COMMIT_KEY, None)
    if not ids:
        return
    if not settings.redis_url:  # a CLI command with no broker: nobody could send it
        log.info("welcome email for %s not queued: no REDIS_URL", sorted(ids))
        return
    try:
        from newsletter import queue

        queue.publish_many(queue.SEND_WELCOME, [[subscriber_id] for subscriber_id in sorted(ids)])
    except Exception as exc:  # the broker is down: the subscription stands, say so
        log.warning("welcome email for %s not queued: %s", sorted(ids), exc)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT_KEY, None)


def already_welcomed(*, session: Session, subscriber_id: int) -> bool:
    return session.exec(select(Event.id).where(
        Event.subscriber_id == subscriber_id, Event.kind == SENT_KIND)).first() is not None


def render_welcome(*, session: Session, subscriber_id: int) -> Welcome | None:
    """The welcome email for a confirmed subscriber not yet welcomed, else None."""
    sub = session.get(Subscriber, subscriber_id)
    if sub is None or sub.id is None or sub.status != SubscriberStatus.confirmed:
        return None
    if already_welcomed(session=session, subscriber_id=sub.id):
        return None
    from newsletter.models import Topic

    names = {t.slug: t.name for t in session.exec(select(Topic)).all()}
    slugs = topics_by_subscriber(session=session, subscriber_ids=[sub.id]).get(sub.id, [])
    latest = session.exec(select(Issue).where(Issue.status == IssueStatus.sent)
                          .order_by(col(Issue.sent_at).desc(), col(Issue.id).desc())).first()
    base = settings.base_url.rstrip("/")
    slot = next_slot().astimezone(ZoneInfo(sub.timezone or "UTC"))
    name = " ".join(sub.name.split())
    email = render_email("welcome", {
        "greeting_name": name.split(" ", 1)[0] if name else "there",
        "topics": [names.get(s, s) for s in slugs],
        "only_my_topics": sub.only_my_topics,
        "weekday": slot.strftime("%A"),
        "next_send": slot.strftime("on %A %d %B around %H:%M"),
        "latest_url": base + issue_path(latest.id, latest.title) if latest and latest.id else "",
        "latest_title": latest.title if latest else "",
        "manage_url": tokens.manage_url(sub.id),
        "unsubscribe_url": tokens.unsubscribe_url(sub.id),
        "base_url": base,
    })
    return Welcome(subscriber=sub, email=email)
