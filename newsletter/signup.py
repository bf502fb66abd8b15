"""What the web app does to subscribers: sign-up with double opt-in and its cooldown,
confirming, preferences, erasure and export. Plain keyword-only functions over a
session; the caller commits.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from newsletter import subscribers as subs
from newsletter.models import (
    Delivery,
    Event,
    EventKind,
    Subscriber,
    SubscriberStatus,
    SubscriberTopic,
    Suppression,
    utcnow,
)
from newsletter.settings import settings

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
TRACKING_KEYS = ("referrer", *UTM_KEYS)
_TRACKING_MAX = 300
ERASED_SUFFIX = "@erased.invalid"  # an erased subscriber's placeholder address
CONFIRM_VALID_DAYS = 7  # how long a confirmation link works
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


class SignupInvalid(ValueError):
    """Every problem with a submitted form, by field, so the form can show them all."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = dict(errors)


@dataclass(frozen=True)
class CleanSignup:
    email: str
    name: str = ""
    topics: list[str] = field(default_factory=list)
    timezone: str = "UTC"
    only_my_topics: bool = False


@dataclass(frozen=True)
class SignupOutcome:
    """What a sign-up did. `claimed_at` is set when a confirmation email must go out."""

    subscriber_id: int | None
    claimed_at: datetime | None = None
    previous_sent_at: datetime | None = None


def validate_signup(
    *, session: Session, email: str, name: str = "", topics: Iterable[str] = (),
    timezone: str = "UTC", only_my_topics: bool = False,
) -> CleanSignup:
    """Check every field; SignupInvalid lists all the problems at once."""
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    checks = (
        ("email", lambda: subs.normalise_email(email)),
        ("name", lambda: subs.validate_name(name)),
        ("topics", lambda: subs.validate_topics(session=session, slugs=topics)),
        ("timezone", lambda: subs.validate_timezone(timezone)),
    )
    for key, check in checks:
        try:
            clean[key] = check()
        except subs.SubscriberError as exc:
            errors[exc.field or key] = str(exc)
    if errors:
        raise SignupInvalid(errors)
    return CleanSignup(only_my_topics=bool(only_my_topics), **clean)


def tracking_data(values: Mapping[str, Any]) -> dict[str, str]:
    """Referrer and utm_* parameters, trimmed and stripped of control characters."""
    data: dict[str, str] = {}
    for key in TRACKING_KEYS:
        raw = values.get(key)
        if isinstance(raw, str):
            value = _CONTROL.sub("", raw).strip()[:_TRACKING_MAX]
            if value:
                data[key] = value
    return data


def sign_up(
    *, session: Session, signup: CleanSignup, source: str,
    source_data: Mapping[str, Any] | None = None,
) -> SignupOutcome:
    """Record a sign-up; the outcome says whether to send a confirmation email.

    Known addresses are handled without telling the caller anything different:
    pending ones get a fresh confirmation (subject to the cooldown), unsubscribed
    ones start over as pending, confirmed/bounced/suppressed ones are left alone.
    """
    if session.get(Suppression, signup.email) is not None:
        return SignupOutcome(subscriber_id=None)
    existing = session.exec(select(Subscriber).where(Subscriber.email == signup.email)).first()
    if existing is None:
        sub = subs.add_subscriber(
            session=session, email=signup.email, name=signup.name, topics=signup.topics,
            timezone=signup.timezone, only_my_topics=signup.only_my_topics,
            confirmed=False, source=source, source_data=dict(source_data or {}),
        )
        session.flush()
        assert sub.id is not None
        subscriber_id = sub.id
    elif existing.status == SubscriberStatus.unsubscribed:
        assert existing.id is not None
        subscriber_id = existing.id
        subs.resubscribe(session=session, subscriber_id=subscriber_id, source=source)
        # They filled the form in again: what they chose now is what they want.
        subs.update_preferences(
            session=session, subscriber_id=subscriber_id, source=source,
            name=signup.name, timezone=signup.timezone, only_my_topics=signup.only_my_topics,
            topics=signup.topics,
        )
    elif existing.status == SubscriberStatus.pending:
        assert existing.id is not None
        subscriber_id = existing.id
    else:
        return SignupOutcome(subscriber_id=existing.id)
    return claim_confirmation(session=session, subscriber_id=subscriber_id)


def resubscribe(*, session: Session, subscriber_id: int, source: str) -> SignupOutcome:
    """The unsubscribed page's "subscribe again": back to pending, confirmation needed."""
    sub = session.get(Subscriber, subscriber_id)
    if sub is None or sub.status != SubscriberStatus.unsubscribed:
        return SignupOutcome(subscriber_id=None)
    subs.resubscribe(session=session, subscriber_id=subscriber_id, source=source)
    return claim_confirmation(session=session, subscriber_id=subscriber_id)


def claim_confirmation(
    *, session: Session, subscriber_id: int, now: datetime | None = None
) -> SignupOutcome:
    """Claim the right to send one confirmation email, at most once per cooldown.

    A conditional UPDATE, so two simultaneous sign-ups for one address (from any
    number of IPs) claim it once.
    """
    now = now or utcnow()
    cutoff = now - timedelta(minutes=settings.signup_cooldown_minutes)
    previous = session.exec(
        select(Subscriber.confirmation_sent_at).where(Subscriber.id == subscriber_id)
    ).first()
    result = session.exec(  # type: ignore[call-overload]
        update(Subscriber)
        .where(
            col(Subscriber.id) == subscriber_id,
            col(Subscriber.status) == SubscriberStatus.pending,
            (col(Subscriber.confirmation_sent_at).is_(None))
            | (col(Subscriber.confirmation_sent_at) <= cutoff),
        )
        .values(confirmation_sent_at=now)
    )
    if not result.rowcount:
        return SignupOutcome(subscriber_id=subscriber_id)
    return SignupOutcome(subscriber_id=subscriber_id, claimed_at=now, previous_sent_at=previous)


def release_confirmation(*, session: Session, outcome: SignupOutcome) -> None:
    """Undo a claim whose email could not be queued, so the person can try again."""
    if outcome.subscriber_id is None or outcome.claimed_at is None:
        return
    session.exec(  # type: ignore[call-overload]
        update(Subscriber)
        .where(col(Subscriber.id) == outcome.subscriber_id,
               col(Subscriber.confirmation_sent_at) == outcome.claimed_at)
        .values(confirmation_sent_at=outcome.previous_sent_at)
    )


def erase_subscriber(*, session: Session, subscriber_id: int, source: str) -> bool:
    """Delete me: erase personal data, keep one anonymous `deleted` event.

    The row stays (anonymised) because the delivery ledger points at it; its address
    becomes a unique, undeliverable `.invalid` one and it can never be mailed again.
    """
    sub = session.get(Subscriber, subscriber_id)
    if sub is None or sub.email.endswith(ERASED_SUFFIX):
        return False
    now = utcnow()
    session.exec(  # type: ignore[call-overload]
        SubscriberTopic.__table__.delete().where(  # type: ignore[attr-defined]
            SubscriberTopic.__table__.c.subscriber_id == subscriber_id  # type: ignore[attr-defined]
        )
    )
    # Events keep their kind and time for the statistics, without who or where from.
    session.exec(  # type: ignore[call-overload]
        update(Event).where(col(Event.subscriber_id) == subscriber_id)
        .values(subscriber_id=None, data="{}")
    )
    # SMTP errors in the ledger quote the address ("550 <ana@…>: no such user").
    session.exec(  # type: ignore[call-overload]
        update(Delivery).where(col(Delivery.subscriber_id) == subscriber_id).values(error="")
    )
    sub.email = f"{uuid.uuid4().hex}{ERASED_SUFFIX}"
    sub.name = ""
    sub.timezone = "UTC"
    sub.only_my_topics = False
    sub.paused = True
    sub.source = ""
    sub.status = SubscriberStatus.unsubscribed
    sub.unsubscribed_at = sub.unsubscribed_at or now
    sub.updated_at = now
    session.add(sub)
    subs.log_event(session=session, subscriber_id=None, kind=EventKind.deleted, source=source)
    return True


def export_subscriber(*, session: Session, subscriber_id: int) -> dict[str, Any]:
    """Everything we hold about one subscriber, as JSON-ready data."""
    sub = session.get(Subscriber, subscriber_id)
    if sub is None:
        raise subs.SubscriberError("Unknown subscriber.")
    events = session.exec(
        select(Event).where(Event.subscriber_id == subscriber_id).order_by(col(Event.at))
    ).all()
    deliveries = session.exec(
        select(Delivery).where(Delivery.subscriber_id == subscriber_id)
        .order_by(col(Delivery.id))
    ).all()

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "exported_at": utcnow().isoformat(),
        "subscriber": {
            "email": sub.email,
            "name": sub.name,
            "status": sub.status,
            "timezone": sub.timezone,
            "only_my_topics": sub.only_my_topics,
            "paused": sub.paused,
            "source": sub.source,
            "topics": subs.followed_topics(session=session, subscriber_id=subscriber_id),
            "created_at": iso(sub.created_at),
            "confirmed_at": iso(sub.confirmed_at),
            "unsubscribed_at": iso(sub.unsubscribed_at),
            "confirmation_sent_at": iso(sub.confirmation_sent_at),
        },
        "events": [
            {"kind": e.kind, "at": iso(e.at), "source": e.source, "data": _json(e.data)}
            for e in events
        ],
        "deliveries": [
            {"issue_id": d.issue_id, "status": d.status, "sent_at": iso(d.sent_at),
             "message_id": d.message_id}
            for d in deliveries
        ],
    }


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {}
