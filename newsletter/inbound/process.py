"""One message that came back, from bytes to a recorded outcome (shared by SMTP and IMAP).

`process_message` reads the message, finds whom it concerns and calls the policy, in one
transaction that is committed before it returns: the SMTP receiver answers 250 only
after that, the IMAP poller moves the message only after that. It is blocking (database,
files): the receiver runs it in a thread, never on its event loop.

Who a message concerns is decided by what a stranger cannot make up: the Message-ID of
our mail quoted in a report (random, stored in the ledger) wins; otherwise the VERP
address must name a subscriber and an issue they were really sent. A bounce for anybody
else changes nothing and is quarantined.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlmodel import Session, col

from newsletter import db, tokens
from newsletter.inbound import parse, policy
from newsletter.models import Delivery, DeliveryStatus, Subscriber, utcnow
from newsletter.settings import settings

log = logging.getLogger("newsletter.inbound")

VERP_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class Result:
    """What was done with one message for one recipient."""

    kind: str  # a policy outcome kind (hard_bounce, ..., ignored, unknown)
    subscriber_id: int | None = None
    issue_id: int | None = None
    duplicate: bool = False
    quarantined: Path | None = None
    detail: str = ""


def quarantine_dir() -> Path:
    return settings.data_dir / "inbound" / "quarantine"


def quarantine(raw: bytes, reason: str) -> Path:
    """Keep a message nobody acted on, for a person to look at (write, then rename)."""
    folder = quarantine_dir()
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.strftime('%Y%m%dT%H%M%S')}-{hashlib.sha256(raw).hexdigest()[:12]}.eml"
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(raw)
    tmp.replace(folder / name)
    (folder / f"{name}.reason.txt").write_text(reason + "\n", encoding="utf-8")
    return folder / name


def _match(session: Session,
           reading: parse.Reading) -> tuple[Subscriber | None, int | None, str]:
    """(subscriber, issue, how) for a report, or (None, None, why not).

    The subscriber comes with the ledger row in one query; the caller holds on to it so
    the policy finds it in the session (the identity map keeps only weak references)."""
    for message_id in reading.original_message_ids:
        row = session.execute(
            select(Subscriber, col(Delivery.issue_id))
            .join(Delivery, col(Delivery.subscriber_id) == col(Subscriber.id))
            .where(col(Delivery.message_id) == message_id).limit(1)
        ).first()
        if row is not None:
            return row[0], int(row[1]), "message-id"
    if reading.verp is None:
        return None, None, "no VERP address and no Message-ID of ours"
    sid, iid = reading.verp
    if iid is None:  # confirmation emails carry no issue
        sub = session.get(Subscriber, sid)
        if sub is None:
            return None, None, f"VERP names subscriber {sid}, who does not exist"
        return sub, None, "verp"
    # VERP ids are guessable: the ledger must show we sent them that issue recently
    # (real bounces come within days; a quoted Message-ID, above, needs no window).
    sent = session.execute(
        select(Subscriber, col(Delivery.sent_at))
        .join(Delivery, col(Delivery.subscriber_id) == col(Subscriber.id))
        .where(col(Delivery.subscriber_id) == sid, col(Delivery.issue_id) == iid,
               col(Delivery.status) == DeliveryStatus.sent).limit(1)
    ).first()
    if sent is None:
        return None, None, f"VERP names subscriber {sid} and issue {iid}: we sent them nothing"
    sent_at = sent[1] if sent[1] is None or sent[1].tzinfo else sent[1].replace(tzinfo=UTC)
    if sent_at is not None and sent_at < utcnow() - VERP_WINDOW:
        return None, None, (f"VERP names subscriber {sid} and issue {iid}, sent more than "
                            f"{VERP_WINDOW.days} days ago: too late to be a real bounce")
    return sent[0], iid, "verp"


def _act(session: Session, reading: parse.Reading, key: str,
         source: str) -> policy.Outcome:
    if reading.kind == parse.UNSUBSCRIBE:
        try:
            sid = tokens.read_token(tokens.UNSUBSCRIBE, reading.token)
        except tokens.BadToken as exc:
            return policy.record_ignored(session=session, message_key=key, source=source,
                                         reason=f"unsubscribe with an invalid token: {exc}")
        if session.get(Subscriber, sid) is None:
            return policy.record_ignored(session=session, message_key=key, source=source,
                                         reason=f"unsubscribe token for subscriber {sid}, "
                                         "who no longer exists")
        return policy.record_unsubscribe(session=session, subscriber_id=sid, issue_id=None,
                                         source="mailto", message_key=key)
    if reading.kind in (parse.UNREADABLE, parse.UNKNOWN, parse.DELAY):
        why = reading.reason or ("a delay notice: the server is still trying"
                                 if reading.kind == parse.DELAY else reading.kind)
        return policy.record_ignored(session=session, message_key=key, source=source, reason=why)
    subscriber, iid, how = _match(session, reading)
    if subscriber is None or subscriber.id is None:
        return policy.record_ignored(session=session, message_key=key, source=source,
                                     reason=f"{reading.kind} for nobody we know: {how}")
    sid = subscriber.id
    if reading.kind == parse.BOUNCE:
        return policy.record_bounce(
            session=session, email=reading.email, subscriber_id=sid, issue_id=iid,
            hard=reading.hard, status=reading.status, diagnostic=reading.diagnostic,
            source=source, message_key=key)
    if reading.kind == parse.COMPLAINT:
        return policy.record_complaint(
            session=session, email=reading.email, subscriber_id=sid, issue_id=iid,
            source=source, feedback_type=reading.feedback_type, message_key=key)
    return policy.record_auto_reply(session=session, subscriber_id=sid, issue_id=iid,
                                    source=source, kind=reading.auto_kind, message_key=key)


@dataclass(frozen=True)
class Incoming:
    """One accepted message for one recipient."""

    raw: bytes
    recipient: str
    mail_from: str = ""


def process_message(raw: bytes, *, recipient: str, mail_from: str = "",
                    source: str = "smtp") -> Result:
    """Read, match, record and commit one message for one accepted recipient."""
    result = process_batch([Incoming(raw, recipient, mail_from)], source=source)[0]
    if isinstance(result, BaseException):
        raise result
    return result


def process_batch(items: list[Incoming], *, source: str = "smtp") -> list[Result | Exception]:
    """Record several messages in one transaction (group commit: the receiver hands over
    whatever arrived while the previous batch was committing). If anything fails, each
    message is retried in a transaction of its own, so one bad message fails alone."""
    readings = [parse.read_message(i.raw, recipient=i.recipient, mail_from=i.mail_from)
                for i in items]
    # One message may reach us for several recipients: each is its own record.
    keys = [f"{r.message_key}|{i.recipient.strip('<>').lower()}"
            for r, i in zip(readings, items, strict=True)]
    try:
        with db.session_scope() as session:
            outcomes: list[policy.Outcome | Exception] = [
                _act(session, r, k, source) for r, k in zip(readings, keys, strict=True)]
    except Exception as exc:
        if len(items) == 1:
            return [exc]
        outcomes = []
        for reading, key in zip(readings, keys, strict=True):
            try:
                with db.session_scope() as session:
                    outcomes.append(_act(session, reading, key, source))
            except Exception as one:
                outcomes.append(one)
    return [o if isinstance(o, Exception) else _after_commit(i, r, o)
            for i, r, o in zip(items, readings, outcomes, strict=True)]


def _after_commit(item: Incoming, reading: parse.Reading, outcome: policy.Outcome) -> Result:
    kept = None
    if outcome.kind in (policy.IGNORED, policy.UNKNOWN) and not outcome.duplicate \
            and reading.kind != parse.DELAY:
        kept = quarantine(item.raw, f"{reading.kind}: {outcome.detail}")
        log.warning("inbound %s to %s from <%s>: %s, %s; kept in %s", reading.message_key,
                    item.recipient, item.mail_from.strip("<>"), reading.kind, outcome.detail,
                    kept)
    else:
        log.info("inbound %s to %s: %s%s %s", reading.message_key, item.recipient,
                 outcome.kind, " (already recorded)" if outcome.duplicate else "",
                 outcome.detail)
    return Result(kind=outcome.kind, subscriber_id=outcome.subscriber_id,
                  issue_id=outcome.issue_id, duplicate=outcome.duplicate, quarantined=kept,
                  detail=outcome.detail)
