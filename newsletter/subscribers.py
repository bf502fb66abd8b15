"""Subscribers: validation, sign-up states, followed topics, the event log, CSV import."""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from newsletter.errors import UserError
from newsletter.models import (
    Event,
    EventKind,
    Subscriber,
    SubscriberStatus,
    SubscriberTopic,
    Suppression,
    Topic,
    utcnow,
)

MAX_NAME = 200


class SubscriberError(UserError):
    """A problem with a subscriber's details."""

    default_field = "email"


def normalise_email(raw: str) -> str:
    """Validate syntax (no DNS look-ups) and return the address in one canonical form.

    Only addresses every SMTP relay can carry are accepted: no internationalised local
    parts (they need SMTPUTF8); internationalised domains are stored as punycode.
    """
    raw = (raw or "").strip()
    if not raw:
        raise SubscriberError("Please enter an email address.")
    if len(raw) > 254:
        raise SubscriberError("That email address is too long (254 characters at most).")
    try:
        info = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise SubscriberError(f"That doesn't look like a valid email address: {exc}") from None
    address = info.ascii_email or info.normalized
    if len(address.split("@", 1)[0]) > 64:
        raise SubscriberError("The part before the @ is too long (64 characters at most).")
    # Local parts are case-sensitive in theory, never in practice: lowercasing
    # keeps one person from subscribing twice as Ana@ and ana@.
    return address.lower()


def validate_name(raw: str | None) -> str:
    """Names are shown in emails: refuse control characters (CR/LF) and markup."""
    name = unicodedata.normalize("NFC", (raw or "").strip())
    if len(name) > MAX_NAME:
        raise SubscriberError(f"Names are limited to {MAX_NAME} characters.", field="name")
    if any(unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"} for ch in name):
        raise SubscriberError("Names can't contain line breaks or control characters.",
                              field="name")
    if "<" in name or ">" in name:
        raise SubscriberError("Names can't contain < or >.", field="name")
    return name


_ZONES: frozenset[str] | None = None


def validate_timezone(raw: str | None) -> str:
    global _ZONES
    zone = (raw or "").strip() or "UTC"
    if _ZONES is None:
        _ZONES = frozenset(available_timezones())
    if zone not in _ZONES and zone != "UTC":
        raise SubscriberError(f"Unknown time zone {zone!r}; use a name like Europe/Paris.",
                              field="timezone")
    ZoneInfo(zone)
    return zone


def validate_topics(*, session: Session, slugs: Iterable[str]) -> list[str]:
    """Return the slugs in taxonomy order, or raise naming the unknown ones."""
    wanted = {s.strip() for s in slugs if s and s.strip()}
    if not wanted:
        return []
    known = session.exec(select(Topic.slug).order_by(col(Topic.id))).all()
    unknown = sorted(wanted - set(known))
    if unknown:
        raise SubscriberError(
            f"Unknown topic(s): {', '.join(unknown)}. Known topics: {', '.join(known)}.",
            field="topics",
        )
    return [s for s in known if s in wanted]


def log_event(
    *, session: Session, subscriber_id: int | None, kind: str, source: str,
    data: dict[str, Any] | None = None, issue_id: int | None = None,
) -> Event:
    event = Event(subscriber_id=subscriber_id, issue_id=issue_id, kind=kind, source=source[:32],
                  data=json.dumps(data or {}, sort_keys=True))
    session.add(event)
    return event


def get_by_email(*, session: Session, email: str) -> Subscriber | None:
    try:
        normal = normalise_email(email)
    except SubscriberError:
        return None
    return session.exec(select(Subscriber).where(Subscriber.email == normal)).first()


def followed_topics(*, session: Session, subscriber_id: int) -> list[str]:
    return list(session.exec(
        select(Topic.slug)
        .join(SubscriberTopic, col(SubscriberTopic.topic_id) == col(Topic.id))
        .where(SubscriberTopic.subscriber_id == subscriber_id)
        .order_by(col(Topic.id))
    ).all())


def topics_by_subscriber(
    *, session: Session, subscriber_ids: Sequence[int] | None = None
) -> dict[int, list[str]]:
    """subscriber id -> followed topic slugs (sorted), in one query: for everyone, or for
    the given ids. The bulk form of `followed_topics`, for sends, previews and listings."""
    query = select(SubscriberTopic.subscriber_id, Topic.slug).join(
        Topic, col(Topic.id) == col(SubscriberTopic.topic_id)).order_by(col(Topic.slug))
    if subscriber_ids is not None:
        query = query.where(col(SubscriberTopic.subscriber_id).in_(subscriber_ids))
    topics: dict[int, list[str]] = {}
    for sid, slug in session.exec(query).all():
        topics.setdefault(sid, []).append(slug)
    return topics


def _replace_topics(*, session: Session, subscriber_id: int, slugs: Sequence[str]) -> None:
    session.exec(delete(SubscriberTopic).where(  # type: ignore[call-overload]
        col(SubscriberTopic.subscriber_id) == subscriber_id))
    if slugs:
        ids = session.exec(select(Topic.id).where(col(Topic.slug).in_(slugs))).all()
        session.add_all(SubscriberTopic(subscriber_id=subscriber_id, topic_id=tid)
                        for tid in ids if tid is not None)


def add_subscriber(
    *, session: Session, email: str, name: str = "", topics: Iterable[str] = (),
    timezone: str = "UTC", only_my_topics: bool = False, confirmed: bool = False,
    source: str = "cli", source_data: dict[str, Any] | None = None,
) -> Subscriber:
    """Create a subscriber (pending unless `confirmed`) and log the sign-up."""
    address = normalise_email(email)
    clean_name = validate_name(name)
    zone = validate_timezone(timezone)
    slugs = validate_topics(session=session, slugs=topics)
    if session.exec(select(Subscriber.id).where(Subscriber.email == address)).first():
        raise SubscriberError(f"{address} is already subscribed.")
    now = utcnow()
    sub = Subscriber(
        email=address, name=clean_name, timezone=zone, only_my_topics=only_my_topics,
        source=source[:32],
        status=SubscriberStatus.confirmed if confirmed else SubscriberStatus.pending,
        confirmed_at=now if confirmed else None,
    )
    session.add(sub)
    session.flush()
    assert sub.id is not None
    _replace_topics(session=session, subscriber_id=sub.id, slugs=slugs)
    log_event(session=session, subscriber_id=sub.id, kind=EventKind.signed_up, source=source,
              data={**(source_data or {}), "topics": slugs})
    if confirmed:
        log_event(session=session, subscriber_id=sub.id, kind=EventKind.confirmed, source=source)
    return sub


def set_topics(*, session: Session, subscriber_id: int, slugs: Iterable[str],
               source: str) -> list[str]:
    clean = validate_topics(session=session, slugs=slugs)
    before = followed_topics(session=session, subscriber_id=subscriber_id)
    if clean != before:
        _replace_topics(session=session, subscriber_id=subscriber_id, slugs=clean)
        _touch(session=session, subscriber_id=subscriber_id)
        log_event(session=session, subscriber_id=subscriber_id, kind=EventKind.topics_changed,
                  source=source, data={"before": before, "after": clean})
    return clean


def update_preferences(
    *, session: Session, subscriber_id: int, source: str, name: str | None = None,
    timezone: str | None = None, only_my_topics: bool | None = None,
    paused: bool | None = None, topics: Iterable[str] | None = None,
) -> Subscriber:
    """Apply the preference centre's changes; validation happens before anything is written."""
    sub = session.get(Subscriber, subscriber_id)
    if sub is None:
        raise SubscriberError("Unknown subscriber.")
    changes: dict[str, Any] = {}
    new_name = validate_name(name) if name is not None else None
    new_zone = validate_timezone(timezone) if timezone is not None else None
    new_topics = validate_topics(session=session, slugs=topics) if topics is not None else None
    for attr, value in (("name", new_name), ("timezone", new_zone),
                        ("only_my_topics", only_my_topics), ("paused", paused)):
        if value is not None and getattr(sub, attr) != value:
            changes[attr] = {"before": getattr(sub, attr), "after": value}
            setattr(sub, attr, value)
    if changes:
        sub.updated_at = utcnow()
        session.add(sub)
        log_event(session=session, subscriber_id=subscriber_id,
                  kind=EventKind.preferences_changed, source=source,
                  data={k: v["after"] for k, v in changes.items() if k != "name"})
    if new_topics is not None:
        set_topics(session=session, subscriber_id=subscriber_id, slugs=new_topics, source=source)
    return sub


def _touch(*, session: Session, subscriber_id: int) -> None:
    session.exec(update(Subscriber).where(col(Subscriber.id) == subscriber_id)  # type: ignore[call-overload]
                 .values(updated_at=utcnow()))


def _transition(*, session: Session, subscriber_id: int, to: SubscriberStatus,
                allowed_from: Sequence[SubscriberStatus], **values: Any) -> bool:
    # Conditional UPDATE: two clicks on the same link change the row once.
    result = session.exec(  # type: ignore[call-overload]
        update(Subscriber)
        .where(col(Subscriber.id) == subscriber_id, col(Subscriber.status).in_(allowed_from))
        .values(status=to, updated_at=utcnow(), **values)
    )
    session.expire_all()
    return bool(result.rowcount)


def confirm(*, session: Session, subscriber_id: int, source: str) -> bool:
    """pending -> confirmed. False when there was nothing to confirm."""
    changed = _transition(session=session, subscriber_id=subscriber_id,
                          to=SubscriberStatus.confirmed,
                          allowed_from=[SubscriberStatus.pending], confirmed_at=utcnow())
    if changed:
        log_event(session=session, subscriber_id=subscriber_id, kind=EventKind.confirmed,
                  source=source)
        from newsletter.welcome import welcome_after_commit

        welcome_after_commit(session, subscriber_id)
    return changed


def unsubscribe(*, session: Session, subscriber_id: int, source: str,
                data: dict[str, Any] | None = None, issue_id: int | None = None) -> bool:
    changed = _transition(session=session, subscriber_id=subscriber_id,
                          to=SubscriberStatus.unsubscribed,
                          allowed_from=[SubscriberStatus.pending, SubscriberStatus.confirmed],
                          unsubscribed_at=utcnow())
    if changed:
        log_event(session=session, subscriber_id=subscriber_id, kind=EventKind.unsubscribed,
                  source=source, data=data, issue_id=issue_id)
    return changed


def resubscribe(*, session: Session, subscriber_id: int, source: str) -> None:
    """An unsubscribed address starts over as pending: it must confirm again."""
    if _transition(session=session, subscriber_id=subscriber_id, to=SubscriberStatus.pending,
                   allowed_from=[SubscriberStatus.unsubscribed], confirmed_at=None,
                   unsubscribed_at=None):
        log_event(session=session, subscriber_id=subscriber_id, kind=EventKind.signed_up,
                  source=source, data={"resubscribe": True})


def mark_bounced(*, session: Session, email: str, reason: str, source: str = "smtp",
                 issue_id: int | None = None, data: dict[str, Any] | None = None) -> bool:
    """Hard bounce: never mail this address again. True when the subscriber became bounced
    (then a `bounced` event was logged)."""
    address = email.lower()
    if session.get(Suppression, address) is None:
        session.add(Suppression(email=address, reason=reason[:500]))
    sub = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
    if sub is not None and sub.id is not None and _transition(
        session=session, subscriber_id=sub.id, to=SubscriberStatus.bounced,
        allowed_from=[SubscriberStatus.pending, SubscriberStatus.confirmed],
    ):
        log_event(session=session, subscriber_id=sub.id, kind=EventKind.bounced,
                  source=source, issue_id=issue_id, data={**(data or {}), "reason": reason[:500]})
        return True
    return False


# --- CSV import --------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did: rows added, and rows rejected with the line and reason."""

    added: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (line, email, reason)


def read_csv(path: Path, *, label: str = "") -> list[tuple[int, dict[str, str]]]:
    """The rows of a subscribers CSV with the line each starts on, keys lower-cased.

    Raises SubscriberError naming the file as `label` (default: the path) and the line.
    """
    label = label or str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SubscriberError(f"{label}: can't read the file: {exc}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "email" not in [f.strip().lower() for f in reader.fieldnames]:
        raise SubscriberError(f"{label}:1: the header row must have an 'email' column")
    # The line a row starts on: a quoted field may span lines, so count, don't assume.
    rows: list[tuple[int, dict[str, str]]] = []
    start = reader.line_num + 1
    try:
        for raw in reader:
            rows.append((start, {(k or "").strip().lower(): (v or "").strip()
                                 for k, v in raw.items() if k and isinstance(v, str)}))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise SubscriberError(f"{label}:{reader.line_num}: {exc}") from None
    return rows


def import_row(*, session: Session, row: dict[str, str], confirmed: bool,
               source_data: dict[str, Any]) -> str | None:
    """Add one CSV row in its own savepoint; the reason it was refused, or None."""
    topics = [t for t in row.get("topics", "").replace("|", ";").split(";") if t.strip()]
    try:
        with session.begin_nested():
            add_subscriber(
                session=session, email=row.get("email", ""), name=row.get("name", ""),
                topics=topics, timezone=row.get("timezone", "") or "UTC",
                only_my_topics=row.get("only_my_topics", "").lower() in {"1", "true", "yes"},
                confirmed=confirmed, source="import", source_data=source_data,
            )
    except SubscriberError as exc:
        return str(exc)
    return None


def import_csv(
    *, session: Session, path: Path, confirmed: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import `email[,name,topics,timezone,only_my_topics]` rows; topics split by ';' or '|'.

    Each row is validated alone (a savepoint per row), so one bad row is reported
    with its line number and the rest still import.
    """
    report = ImportReport()
    rows = read_csv(path)
    for index, (line, row) in enumerate(rows):
        error = import_row(session=session, row=row, confirmed=confirmed,
                           source_data={"file": path.name})
        if error is None:
            report.added += 1
        else:
            report.rejected.append((line, row.get("email", ""), error))
        if progress:
            progress(index + 1, len(rows))
    return report
