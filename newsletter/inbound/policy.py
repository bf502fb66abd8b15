"""The bounce policy, and the one place every outcome of mail coming back is recorded.

Callers (the SMTP receiver, the IMAP poller, the provider webhooks) parse what came back
and call one of these; none of them commits, the caller does (the receiver commits before
it answers 250). Signatures, stable for every caller:

    record_bounce(*, session, email: str | None, subscriber_id: int | None,
                  issue_id: int | None, hard: bool, status: str, diagnostic: str,
                  source: str, message_key: str | None = None) -> Outcome
    record_complaint(*, session, email: str | None, subscriber_id: int | None,
                     issue_id: int | None, source: str, feedback_type: str = "abuse",
                     message_key: str | None = None) -> Outcome
    record_unsubscribe(*, session, subscriber_id: int, issue_id: int | None, source: str,
                       message_key: str | None = None) -> Outcome
    record_auto_reply(*, session, subscriber_id: int | None, issue_id: int | None,
                      source: str, kind: str, message_key: str | None = None) -> Outcome
    record_ignored(*, session, message_key: str, source: str, reason: str) -> Outcome
    issue_outcome_counts(*, session, issue_id: int) -> dict[str, int]
    soft_bounce_count(*, session, subscriber_id: int) -> int
    hard_bounce_rate(*, session, issue_id: int) -> tuple[int, int]  # (bounced, deliveries)
    is_recorded(*, session, message_key: str) -> bool

The subscriber is found by `subscriber_id` (it wins: a VERP address names them even when
their mail was forwarded) or else by `email`. An address that is nobody's (a provider
reporting a pending sign-up's confirmation mail, say) is still suppressed by a hard
bounce or a complaint; an unknown `issue_id` is dropped, not stored.

`message_key` makes a call idempotent: the provider's event id or the message's Message-ID
(prefix it with the source, e.g. "ses:<id>"); a second call with the same key records
nothing and returns an Outcome with `duplicate=True`. The key is claimed with an INSERT
under a unique index, so two receivers racing on one message record it once.

Policy:
* a hard bounce suppresses the address at once (Suppression with the reason and date)
  and marks the subscriber `bounced`;
* soft bounces suppress it after SOFT_BOUNCE_LIMIT of them within 30 days; a later
  successful delivery (a `sent` ledger row for an issue that did not bounce, sent after
  the soft bounces) starts the count again;
* a complaint unsubscribes and suppresses: that address is never mailed again;
* an unsubscribe is recorded like the web one-click (an `unsubscribed` event);
* an auto-reply (vacation, out-of-office, challenge-response) is an event and nothing
  more: it is never a bounce;
* when an issue's hard-bounce rate passes BOUNCE_PAUSE_RATE percent after at least
  PAUSE_MIN_DELIVERIES deliveries, its send pauses (sending -> paused, a conditional
  UPDATE) with the reason in Issue.status_reason.

Events (all carry the subscriber and, when known, the issue): `bounced` (hard, or the soft
bounce that crossed the limit), `soft_bounced`, `complained`, `unsubscribed`, `auto_reply`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Integer, bindparam, distinct, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from newsletter import subscribers as subs
from newsletter.models import (
    Delivery,
    DeliveryStatus,
    Event,
    EventKind,
    InboundMessage,
    Issue,
    IssueStatus,
    Subscriber,
    Suppression,
    utcnow,
)
from newsletter.settings import settings

log = logging.getLogger("newsletter.inbound")

SOFT_BOUNCE_WINDOW = timedelta(days=30)
PAUSE_MIN_DELIVERIES = 200

# Event kinds (Event.kind); `bounced` and `unsubscribed` are the existing EventKind values.
BOUNCED = EventKind.bounced.value
SOFT_BOUNCED = "soft_bounced"
COMPLAINED = "complained"
UNSUBSCRIBED = EventKind.unsubscribed.value
AUTO_REPLY = "auto_reply"

# Outcome kinds (Outcome.kind, InboundMessage.outcome).
HARD_BOUNCE = "hard_bounce"
SOFT_BOUNCE = "soft_bounce"
COMPLAINT = "complaint"
UNSUBSCRIBE = "unsubscribe"
AUTO_REPLY_OUTCOME = "auto_reply"
UNKNOWN = "unknown"  # nobody we know: nothing changed
IGNORED = "ignored"  # read, and deliberately left alone (or quarantined)


@dataclass(frozen=True)
class Outcome:
    """What recording one message did."""

    kind: str
    subscriber_id: int | None = None
    issue_id: int | None = None
    suppressed: bool = False  # the address is suppressed now (by this call or before)
    unsubscribed: bool = False  # this call unsubscribed the subscriber
    paused: bool = False  # this call paused the issue's send (bounce rate)
    duplicate: bool = False  # the message_key was recorded before: nothing was done
    detail: str = ""


# --- idempotency -------------------------------------------------------------------


def key_hash(message_key: str) -> str:
    return hashlib.sha256(message_key.encode("utf-8", "surrogateescape")).hexdigest()


_TABLE = InboundMessage.__table__  # type: ignore[attr-defined]


def _claim_statement(insert: Any) -> Any:
    # Built once with bind parameters: building it per message was measurable.
    # RETURNING, not rowcount: psycopg reports -1 for this statement.
    columns = ("key", "ref", "source", "outcome", "subscriber_id", "issue_id", "detail",
               "received_at")
    return insert(_TABLE).values({c: bindparam(c, type_=_TABLE.c[c].type) for c in columns}) \
        .on_conflict_do_nothing(index_elements=["key"]).returning(_TABLE.c.id)


_CLAIM = {"sqlite": _claim_statement(sqlite_insert), "postgresql": _claim_statement(pg_insert)}


@dataclass(frozen=True)
class _Claim:
    """The row a call inserted, as inserted: `_finish` updates it only if it differs."""

    key: str
    kind: str
    subscriber_id: int | None
    issue_id: int | None


def _claim(session: Session, message_key: str | None, source: str, *, kind: str,
           subscriber_id: int | None, issue_id: int | None, detail: str) -> _Claim | None | bool:
    """Insert the message's row with the outcome we expect; False if it was recorded
    before, None without a key. One INSERT .. ON CONFLICT DO NOTHING: a receiver racing
    on the same message waits on the unique key, then finds it taken (no read-then-write)."""
    if message_key is None:
        return None
    digest = key_hash(message_key)
    values = {"key": digest, "ref": message_key[:255], "source": source[:32], "outcome": kind,
              "subscriber_id": subscriber_id, "issue_id": issue_id, "detail": detail[:1000],
              "received_at": utcnow()}
    dialect = session.get_bind().dialect.name
    claimed = _Claim(digest, kind, subscriber_id, issue_id)
    if dialect in _CLAIM:
        return claimed if session.execute(_CLAIM[dialect], values).first() is not None \
            else False
    try:  # other databases: a savepoint around a plain INSERT
        with session.begin_nested():
            session.execute(_TABLE.insert().values(**values))
    except IntegrityError:
        return False
    return claimed


def _finish(session: Session, claimed: _Claim | None | bool, outcome: Outcome) -> Outcome:
    """Correct the row when the outcome is not the one claimed (nobody we know, ...)."""
    if isinstance(claimed, _Claim) and (claimed.kind, claimed.subscriber_id,
                                        claimed.issue_id) != (
            outcome.kind, outcome.subscriber_id, outcome.issue_id):
        session.execute(_TABLE.update().where(_TABLE.c.key == claimed.key).values(
            outcome=outcome.kind, subscriber_id=outcome.subscriber_id,
            issue_id=outcome.issue_id, detail=outcome.detail[:1000]))
    return outcome


def is_recorded(*, session: Session, message_key: str) -> bool:
    """True when a message with this key was recorded (the IMAP poller moves only those)."""
    return session.execute(
        select(col(InboundMessage.id)).where(col(InboundMessage.key) == key_hash(message_key))
    ).first() is not None


# --- who it concerns ---------------------------------------------------------------


def _resolve(session: Session, email: str | None,
             subscriber_id: int | None) -> tuple[Subscriber | None, str | None]:
    """The subscriber (the id wins: a VERP address names them even when mail was
    forwarded elsewhere) and the address to suppress."""
    sub = session.get(Subscriber, subscriber_id) if subscriber_id is not None else None
    if sub is None and email:
        sub = subs.get_by_email(session=session, email=email)
    address = sub.email if sub is not None else (email.strip().lower() if email else None)
    return sub, address or None


_KNOWN_ISSUES: set[tuple[str, int]] = set()  # (database, issue) that exist: sent issues stay


def _issue_id(session: Session, issue_id: int | None) -> int | None:
    if issue_id is None:
        return None
    known = (str(session.get_bind().engine.url), issue_id)
    if known not in _KNOWN_ISSUES:
        if session.get(Issue, issue_id) is None:
            return None
        _KNOWN_ISSUES.add(known)
    return issue_id


def _suppress(session: Session, address: str, reason: str) -> None:
    if session.get(Suppression, address) is not None:
        return
    try:
        with session.begin_nested():
            session.add(Suppression(email=address, reason=reason[:500]))
            session.flush()
    except IntegrityError:  # suppressed by someone else a moment ago
        pass


def _when() -> str:
    return utcnow().strftime("%Y-%m-%d %H:%M UTC")


# --- the policy --------------------------------------------------------------------


def record_bounce(
    *, session: Session, email: str | None, subscriber_id: int | None, issue_id: int | None,
    hard: bool, status: str, diagnostic: str, source: str, message_key: str | None = None,
) -> Outcome:
    """A delivery failure reported after the relay accepted the message."""
    kind = HARD_BOUNCE if hard else SOFT_BOUNCE
    row = _claim(session, message_key, source, kind=kind, subscriber_id=subscriber_id,
                 issue_id=issue_id, detail=f"{'hard' if hard else 'soft'} bounce {status}")
    if row is False:
        return Outcome(kind=kind, duplicate=True,
                       subscriber_id=subscriber_id, issue_id=issue_id)
    sub, address = _resolve(session, email, subscriber_id)
    issue = _issue_id(session, issue_id)
    sid = sub.id if sub is not None else None
    data: dict[str, Any] = {"status": status[:20], "diagnostic": diagnostic[:500]}
    if email and address and email.strip().lower() != address:
        data["reported_address"] = email.strip().lower()[:320]
    if address is None:
        return _finish(session, row, Outcome(kind=UNKNOWN, issue_id=issue,
                                             detail=f"bounce {status} for nobody we know"))
    if not hard:
        return _finish(session, row, _soft_bounce(session, sub, address, issue, status,
                                                  diagnostic, source, data))
    reason = f"hard bounce {status} on {_when()} ({source}): {diagnostic}".strip()
    _suppress(session, address, reason)
    became = subs.mark_bounced(session=session, email=address, reason=reason, source=source,
                               issue_id=issue, data={**data, "hard": True})
    if sid is not None and not became:
        # Already bounced or unsubscribed: still one event per bounce, for the issue's rate.
        subs.log_event(session=session, subscriber_id=sid, kind=BOUNCED, source=source,
                       issue_id=issue, data={**data, "hard": True})
    paused = issue is not None and sid is not None and _pause_if_bouncing(session, issue)
    return _finish(session, row, Outcome(kind=HARD_BOUNCE, subscriber_id=sid, issue_id=issue,
                                         suppressed=True, paused=paused, detail=reason))


def _soft_bounce(session: Session, sub: Subscriber | None, address: str, issue: int | None,
                 status: str, diagnostic: str, source: str, data: dict[str, Any]) -> Outcome:
    sid = sub.id if sub is not None else None
    if sid is None:  # a provider reporting a soft bounce for a non-subscriber: nothing to count
        return Outcome(kind=SOFT_BOUNCE, issue_id=issue, detail=f"soft bounce {status}")
    # Counted before this one is added (+1): no flush in the middle of the transaction.
    count = soft_bounce_count(session=session, subscriber_id=sid, extra_issue=issue) + 1
    subs.log_event(session=session, subscriber_id=sid, kind=SOFT_BOUNCED, source=source,
                   issue_id=issue, data={**data, "hard": False})
    detail = f"soft bounce {status} ({count} of {settings.soft_bounce_limit} within 30 days)"
    if count < settings.soft_bounce_limit:
        return Outcome(kind=SOFT_BOUNCE, subscriber_id=sid, issue_id=issue, detail=detail)
    reason = (f"{count} soft bounces within 30 days, the last {status} on {_when()} "
              f"({source}): {diagnostic}").strip()
    _suppress(session, address, reason)
    subs.mark_bounced(session=session, email=address, reason=reason, source=source,
                      issue_id=issue, data={**data, "hard": False, "soft_bounces": count})
    return Outcome(kind=SOFT_BOUNCE, subscriber_id=sid, issue_id=issue, suppressed=True,
                   detail=reason)


def _soft_count_statement() -> Any:
    """Soft bounces since a time that no successful delivery followed: one statement,
    built once (it runs for every soft bounce)."""
    e, later, d = Event.__table__, Event.__table__.alias("later"), Delivery.__table__  # type: ignore[attr-defined]
    sid = bindparam("sid", type_=Integer)
    bounced_issues = select(later.c.issue_id).where(
        later.c.subscriber_id == sid, later.c.kind.in_((SOFT_BOUNCED, BOUNCED)),
        later.c.issue_id.is_not(None))
    success_after = select(d.c.id).where(
        d.c.subscriber_id == sid, d.c.status == DeliveryStatus.sent.value,
        d.c.sent_at > e.c.at, d.c.issue_id != bindparam("extra", type_=Integer),
        d.c.issue_id.not_in(bounced_issues)).exists()
    return select(func.count()).select_from(e).where(
        e.c.subscriber_id == sid, e.c.kind == SOFT_BOUNCED,
        e.c.at > bindparam("since", type_=DateTime()), ~success_after)


_SOFT_COUNT = _soft_count_statement()


def soft_bounce_count(*, session: Session, subscriber_id: int, now: datetime | None = None,
                      extra_issue: int | None = None) -> int:
    """Soft bounces in the last 30 days not followed by a successful delivery.

    Successful means a `sent` row, later than the bounce, for an issue that has no bounce
    from them: a message the relay accepted and that bounced later is not a success.
    `extra_issue`: an issue whose bounce is being recorded right now (not logged yet).
    """
    since = (now or utcnow()) - SOFT_BOUNCE_WINDOW
    return int(session.execute(_SOFT_COUNT, {
        "sid": subscriber_id, "since": since,
        "extra": -1 if extra_issue is None else extra_issue}).scalar_one())


def hard_bounce_rate(*, session: Session, issue_id: int) -> tuple[int, int]:
    """(subscribers who hard-bounced, deliveries attempted) for an issue."""
    deliveries = int(session.execute(
        select(func.count()).select_from(Delivery).where(
            col(Delivery.issue_id) == issue_id,
            col(Delivery.status).in_((DeliveryStatus.sent, DeliveryStatus.failed)),
        )
    ).scalar_one())
    bounced = int(session.execute(
        select(func.count(distinct(col(Event.subscriber_id)))).where(
            col(Event.issue_id) == issue_id, col(Event.kind) == BOUNCED,
        )
    ).scalar_one())
    return bounced, deliveries


def _pause_if_bouncing(session: Session, issue_id: int) -> bool:
    session.flush()
    bounced, deliveries = hard_bounce_rate(session=session, issue_id=issue_id)
    limit = settings.bounce_pause_rate * deliveries / 100
    if deliveries < PAUSE_MIN_DELIVERIES or bounced <= limit:
        return False
    reason = (f"Paused automatically on {_when()}: {bounced} of {deliveries} deliveries "
              f"({bounced / deliveries:.1%}) hard-bounced, above BOUNCE_PAUSE_RATE "
              f"{settings.bounce_pause_rate:g} %. Check where these addresses came from "
              "before resuming.")
    result = session.execute(
        update(Issue).where(col(Issue.id) == issue_id, col(Issue.status) == IssueStatus.sending)
        .values(status=IssueStatus.paused, status_reason=reason)
    )
    paused = bool(getattr(result, "rowcount", 0))
    if paused:
        log.warning("issue %s: %s", issue_id, reason)
    return paused


def record_complaint(
    *, session: Session, email: str | None, subscriber_id: int | None, issue_id: int | None,
    source: str, feedback_type: str = "abuse", message_key: str | None = None,
) -> Outcome:
    """A reader marked our mail as spam: unsubscribe them and never mail the address again."""
    row = _claim(session, message_key, source, kind=COMPLAINT, subscriber_id=subscriber_id,
                 issue_id=issue_id, detail=f"complaint ({feedback_type[:40]})")
    if row is False:
        return Outcome(kind=COMPLAINT, duplicate=True, subscriber_id=subscriber_id,
                       issue_id=issue_id)
    sub, address = _resolve(session, email, subscriber_id)
    issue = _issue_id(session, issue_id)
    if address is None:
        return _finish(session, row, Outcome(kind=UNKNOWN, issue_id=issue,
                                             detail="complaint about nobody we know"))
    reason = f"complaint ({feedback_type[:40]}) on {_when()} ({source})"
    _suppress(session, address, reason)
    sid = sub.id if sub is not None else None
    unsubscribed = False
    if sid is not None:
        data = {"feedback_type": feedback_type[:40]}
        subs.log_event(session=session, subscriber_id=sid, kind=COMPLAINED, source=source,
                       issue_id=issue, data=data)
        unsubscribed = subs.unsubscribe(session=session, subscriber_id=sid, source=source,
                                        issue_id=issue, data={**data, "complaint": True})
    return _finish(session, row, Outcome(kind=COMPLAINT, subscriber_id=sid, issue_id=issue,
                                         suppressed=True, unsubscribed=unsubscribed,
                                         detail=reason))


def _last_issue_sent(session: Session, subscriber_id: int) -> int | None:
    return session.execute(
        select(col(Delivery.issue_id)).where(
            col(Delivery.subscriber_id) == subscriber_id,
            col(Delivery.status) == DeliveryStatus.sent,
        ).order_by(col(Delivery.sent_at).desc()).limit(1)
    ).scalar()


def record_unsubscribe(
    *, session: Session, subscriber_id: int, issue_id: int | None, source: str,
    message_key: str | None = None,
) -> Outcome:
    """An unsubscribe request (mailto, provider): recorded like the web one-click.

    Without an issue it is attributed to the last issue the subscriber was sent (the
    event's data says so), which is what per-issue unsubscribe counts want.
    """
    row = _claim(session, message_key, source, kind=UNSUBSCRIBE, subscriber_id=subscriber_id,
                 issue_id=issue_id, detail="unsubscribe")
    if row is False:
        return Outcome(kind=UNSUBSCRIBE, duplicate=True, subscriber_id=subscriber_id,
                       issue_id=issue_id)
    if session.get(Subscriber, subscriber_id) is None:
        return _finish(session, row, Outcome(kind=UNKNOWN, detail="unsubscribe for nobody"))
    issue = _issue_id(session, issue_id)
    data: dict[str, Any] = {}
    if issue is None:
        issue = _last_issue_sent(session, subscriber_id)
        if issue is not None:
            data["issue_inferred"] = True
    changed = subs.unsubscribe(session=session, subscriber_id=subscriber_id, source=source,
                               issue_id=issue, data=data)
    return _finish(session, row, Outcome(
        kind=UNSUBSCRIBE, subscriber_id=subscriber_id, issue_id=issue, unsubscribed=changed,
        detail="unsubscribed" if changed else "was not subscribed"))


def record_auto_reply(
    *, session: Session, subscriber_id: int | None, issue_id: int | None, source: str,
    kind: str, message_key: str | None = None,
) -> Outcome:
    """A vacation/out-of-office/challenge-response reply: an event, never a bounce."""
    row = _claim(session, message_key, source, kind=AUTO_REPLY_OUTCOME,
                 subscriber_id=subscriber_id, issue_id=issue_id, detail=f"auto-reply ({kind[:40]})")
    if row is False:
        return Outcome(kind=AUTO_REPLY_OUTCOME, duplicate=True, subscriber_id=subscriber_id,
                       issue_id=issue_id)
    sid = subscriber_id if subscriber_id is not None and session.get(
        Subscriber, subscriber_id) is not None else None
    issue = _issue_id(session, issue_id)
    if sid is not None:
        subs.log_event(session=session, subscriber_id=sid, kind=AUTO_REPLY, source=source,
                       issue_id=issue, data={"kind": kind[:40]})
    return _finish(session, row, Outcome(kind=AUTO_REPLY_OUTCOME, subscriber_id=sid,
                                         issue_id=issue, detail=f"auto-reply ({kind[:40]})"))


def record_ignored(*, session: Session, message_key: str, source: str, reason: str) -> Outcome:
    """A message read and deliberately left alone (unreadable, unknown, forged): recorded
    so it is not read again, and so the IMAP poller may move it out of the inbox."""
    row = _claim(session, message_key, source, kind=IGNORED, subscriber_id=None, issue_id=None,
                 detail=reason)
    if row is False:
        return Outcome(kind=IGNORED, duplicate=True)
    return _finish(session, row, Outcome(kind=IGNORED, detail=reason))


def issue_outcome_counts(*, session: Session, issue_id: int) -> dict[str, int]:
    """Subscribers with each outcome for an issue: bounced (hard), soft_bounced,
    complained, unsubscribed, auto_reply (distinct subscribers per kind)."""
    counts = {k: 0 for k in (BOUNCED, SOFT_BOUNCED, COMPLAINED, UNSUBSCRIBED, AUTO_REPLY)}
    for kind, n in session.execute(
        select(col(Event.kind), func.count(distinct(col(Event.subscriber_id))))
        .where(col(Event.issue_id) == issue_id, col(Event.kind).in_(tuple(counts)))
        .group_by(col(Event.kind))
    ):
        counts[kind] = int(n)
    return counts
