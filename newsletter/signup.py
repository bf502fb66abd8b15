"""What the web app does to subscribers: sign-up with double opt-in and its cooldown,
confirming, preferences, erasure and export. Plain keyword-only functions over a
session; the caller commits.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import update
from sqlmodel import Session, col, select

from newsletter import subscribers as subs
from newsletter import tokens
from newsletter.models import (
    Delivery,
    Event,
    EventKind,
    Subscriber,
    SubscriberStatus,
    SubscriberTopic,
    Suppression,
    Topic,
    utcnow,
)
from newsletter.ratelimit import Limiter, private_key
from newsletter.settings import settings

# Whether one more confirmation email may go to this address now (the daily cap).
Allow = Callable[[str], bool]

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
TRACKING_KEYS = ("referrer", *UTM_KEYS)
_TRACKING_MAX = 300
ERASED_SUFFIX = "@erased.invalid"  # an erased subscriber's placeholder address
CONFIRM_VALID_DAYS = 7  # how long a confirmation link works
CONFIRM_PREFS_SALT = "confirm-prefs"  # links that carry the preferences to apply
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


@dataclass(frozen=True)
class SignupRequest:
    """A validated sign-up on its way from the web request to the worker that decides
    what it means (new, pending, confirmed, suppressed, capped), so that the request
    does the same work, in the same time, whatever is known about the address."""

    signup: CleanSignup
    source: str
    source_data: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"email": self.signup.email, "name": self.signup.name,
                "topics": list(self.signup.topics), "timezone": self.signup.timezone,
                "only_my_topics": self.signup.only_my_topics, "source": self.source,
                "source_data": dict(self.source_data)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SignupRequest:
        return cls(
            signup=CleanSignup(email=str(data["email"]), name=str(data.get("name", "")),
                               topics=[str(t) for t in data.get("topics", [])],
                               timezone=str(data.get("timezone", "UTC")),
                               only_my_topics=bool(data.get("only_my_topics"))),
            source=str(data.get("source", ""))[:32],
            source_data={str(k): str(v) for k, v in dict(data.get("source_data", {})).items()},
        )


def daily_cap(limiter: Limiter) -> Allow:
    """At most CONFIRMATIONS_PER_DAY confirmation emails per address in any 24 hours
    (a moving window: it never re-arms early), counted atomically by the limiter."""

    def allow(email: str) -> bool:
        return limiter.hit(f"{settings.confirmations_per_day}/day", "confirm",
                           private_key(email))

    return allow


def process_signup(*, session: Session, request: SignupRequest,
                   allow: Allow | None = None) -> SignupOutcome:
    """The worker's half of a sign-up: decide, record, claim the email if one is due."""
    return sign_up(session=session, signup=request.signup, source=request.source,
                   source_data=request.source_data, allow=allow)


def sign_up(
    *, session: Session, signup: CleanSignup, source: str,
    source_data: Mapping[str, Any] | None = None, allow: Allow | None = None,
) -> SignupOutcome:
    """Record a sign-up; the outcome says whether to send a confirmation email.

    Known addresses are handled without telling the caller anything different:
    pending ones get a fresh confirmation (subject to the cooldown), unsubscribed
    ones start over as pending, confirmed/bounced/suppressed ones are left alone.
    `allow(email)` is asked before each confirmation email (the daily cap).
    A known address's stored preferences never change here: the ones submitted
    travel in the confirmation link (`confirm_url`) and apply on `confirm_signup`.
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
        return claim_confirmation(session=session, subscriber_id=sub.id, allow=allow)
    if existing.status not in (SubscriberStatus.unsubscribed, SubscriberStatus.pending):
        return SignupOutcome(subscriber_id=existing.id)
    # Anyone can type anyone's address: what they chose is applied only when the
    # address's owner confirms (it travels in the confirmation link).
    assert existing.id is not None
    if existing.status == SubscriberStatus.unsubscribed:
        subs.resubscribe(session=session, subscriber_id=existing.id, source=source)
    outcome = claim_confirmation(session=session, subscriber_id=existing.id, allow=allow)
    if outcome.claimed_at is not None:
        _record_requested(session=session, outcome=outcome, signup=signup, source=source)
    return outcome


# --- preferences that wait for confirmation ----------------------------------------------


def _preferences(signup: CleanSignup) -> dict[str, Any]:
    return {"name": signup.name, "topics": list(signup.topics), "timezone": signup.timezone,
            "only_my_topics": signup.only_my_topics}


def _record_requested(*, session: Session, outcome: SignupOutcome, signup: CleanSignup,
                      source: str) -> None:
    """Keep what this sign-up asked for with the claim of its confirmation email."""
    assert outcome.subscriber_id is not None and outcome.claimed_at is not None
    subs.log_event(session=session, subscriber_id=outcome.subscriber_id,
                   kind=EventKind.confirmation_sent, source=source,
                   data={"claim": outcome.claimed_at.isoformat(),
                         "requested": _preferences(signup)})


def requested_preferences(*, session: Session, subscriber_id: int) -> dict[str, Any] | None:
    """The preferences submitted with the sign-up that claimed the current confirmation
    email (None when that sign-up created the address, so they are already stored)."""
    sub = session.get(Subscriber, subscriber_id)
    if sub is None or sub.confirmation_sent_at is None:
        return None
    events = session.exec(
        select(Event).where(Event.subscriber_id == subscriber_id,
                            Event.kind == EventKind.confirmation_sent)
        .order_by(col(Event.at).desc(), col(Event.id).desc()).limit(20)
    ).all()
    for event in events:
        data = _json(event.data)
        if not isinstance(data, dict) or not isinstance(data.get("requested"), dict):
            continue
        try:
            claim = datetime.fromisoformat(str(data.get("claim")))
        except ValueError:
            continue
        if _same_instant(claim, sub.confirmation_sent_at):
            return dict(data["requested"])
    return None


def _same_instant(a: datetime, b: datetime) -> bool:
    # SQLite gives naive UTC datetimes back, PostgreSQL aware ones.
    def utc(d: datetime) -> datetime:
        return d.replace(tzinfo=None) if d.tzinfo is None else d.astimezone(UTC).replace(
            tzinfo=None)
    return abs(utc(a) - utc(b)) < timedelta(milliseconds=1)


def _confirm_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(list(tokens.secret_keys()), salt=CONFIRM_PREFS_SALT)


def confirm_url(*, session: Session, subscriber_id: int) -> str:
    """The link for the confirmation email about to go out. When the sign-up that
    claimed it asked for preferences, the signed link carries them, so confirming
    applies exactly what was submitted with this email, and nothing before."""
    wanted = requested_preferences(session=session, subscriber_id=subscriber_id)
    if wanted is None:
        return tokens.confirm_url(subscriber_id)
    token = _confirm_serializer().dumps({"id": subscriber_id, "prefs": wanted})
    return tokens.url_for_token("confirm", str(token))


@dataclass(frozen=True)
class ConfirmRequest:
    """What a confirmation link asks for: this subscriber, with these preferences."""

    subscriber_id: int
    preferences: dict[str, Any] | None = None


def read_confirm_token(token: str, *, max_age: int) -> ConfirmRequest | None:
    """Either kind of confirmation link (with or without preferences); None if invalid."""
    if len(token) > 2048:
        return None
    try:
        data = _confirm_serializer().loads(token, max_age=max_age)
    except BadSignature:
        try:
            return ConfirmRequest(tokens.read_token(tokens.CONFIRM, token, max_age=max_age))
        except tokens.BadToken:
            return None
    if (not isinstance(data, dict) or type(data.get("id")) is not int
            or not isinstance(data.get("prefs"), dict)):
        return None
    return ConfirmRequest(data["id"], data["prefs"])


def confirm_signup(*, session: Session, request: ConfirmRequest, source: str) -> bool:
    """pending -> confirmed, then the preferences the link carries. False (and nothing
    applied) when the address was not pending: an old link must not undo later choices."""
    if not subs.confirm(session=session, subscriber_id=request.subscriber_id, source=source):
        return False
    wanted = request.preferences
    if wanted:
        known = set(session.exec(select(Topic.slug)).all())  # topics may have gone since
        name, zone = wanted.get("name"), wanted.get("timezone")
        topics = wanted.get("topics")
        # Signed by us and validated at sign-up; a value no longer valid is skipped.
        with contextlib.suppress(subs.SubscriberError):
            subs.update_preferences(
                session=session, subscriber_id=request.subscriber_id, source=source,
                name=name if isinstance(name, str) else None,
                timezone=zone if isinstance(zone, str) else None,
                only_my_topics=bool(wanted.get("only_my_topics")),
                topics=[t for t in topics if t in known] if isinstance(topics, list) else None,
            )
    return True


def resubscribe(*, session: Session, subscriber_id: int, source: str,
                allow: Allow | None = None) -> SignupOutcome:
    """The unsubscribed page's "subscribe again": back to pending, confirmation needed."""
    sub = session.get(Subscriber, subscriber_id)
    if sub is None or sub.status != SubscriberStatus.unsubscribed:
        return SignupOutcome(subscriber_id=None)
    subs.resubscribe(session=session, subscriber_id=subscriber_id, source=source)
    return claim_confirmation(session=session, subscriber_id=subscriber_id, allow=allow)


def claim_confirmation(
    *, session: Session, subscriber_id: int, now: datetime | None = None,
    allow: Allow | None = None,
) -> SignupOutcome:
    """Claim the right to send one confirmation email: at most one per cooldown, and
    only if `allow(email)` (the daily cap) agrees.

    A conditional UPDATE, so two simultaneous sign-ups for one address (from any
    number of IPs) claim it once; the cap is asked only once the claim is ours, and
    a refusal gives the claim back.
    """
    now = now or utcnow()
    cutoff = now - timedelta(minutes=settings.signup_cooldown_minutes)
    row = session.exec(
        select(Subscriber.confirmation_sent_at, Subscriber.email)
        .where(Subscriber.id == subscriber_id)
    ).first()
    if row is None:
        return SignupOutcome(subscriber_id=subscriber_id)
    previous, email = row
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
    outcome = SignupOutcome(subscriber_id=subscriber_id, claimed_at=now,
                            previous_sent_at=previous)
    if allow is not None and not allow(email):
        release_confirmation(session=session, outcome=outcome)
        return SignupOutcome(subscriber_id=subscriber_id)
    return outcome


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
        select(Event).where(Event.subscriber_id == subscriber_id)
        .order_by(col(Event.at), col(Event.id))  # id: events made in the same instant
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
