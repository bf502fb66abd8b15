"""The suppression list: addresses never mailed, each with the reason and the date.

The bounce policy adds to it (hard bounces, repeated soft bounces, complaints); editors
and operators add, remove and import here (CLI, console, API). Planning and the send-time
re-check both skip suppressed addresses (newsletter/delivery/), and sign-ups from them
are quietly ignored (newsletter/signup.py).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from newsletter.models import Subscriber, SubscriberStatus, Suppression, utcnow
from newsletter.subscribers import SubscriberError, log_event, normalise_email

MAX_REASON = 500
MAX_PAGE = 200
SUPPRESSED = "suppressed"  # Event.kind when someone adds an address by hand
UNSUPPRESSED = "unsuppressed"  # Event.kind when an address is taken off the list


class SuppressionError(SubscriberError):
    """A suppression that can't be added, removed or imported, in words for people."""


@dataclass(frozen=True)
class Removed:
    """What taking an address off the list did."""

    email: str
    restored: bool  # a `bounced` subscriber is `confirmed` again and will be mailed
    subscriber_status: str | None  # the subscriber's status now (None: not a subscriber)


def clean_address(raw: str, *, strict: bool = True) -> str:
    try:
        return normalise_email(raw)
    except SubscriberError as exc:
        # Suppressions recorded from bounces may hold addresses today's rules refuse:
        # they can still be found and removed.
        plain = (raw or "").strip().lower()
        if not strict and plain and "@" in plain and len(plain) <= 320:
            return plain
        raise SuppressionError(str(exc)) from None


def _reason(raw: str, default: str) -> str:
    reason = " ".join((raw or "").split())  # one line: reasons are shown in tables
    if len(reason) > MAX_REASON:
        raise SuppressionError(f"The reason is limited to {MAX_REASON} characters.",
                               field="reason")
    return reason or default


def _subscriber_id(session: Session, email: str) -> int | None:
    return session.exec(select(Subscriber.id).where(Subscriber.email == email)).first()


def list_suppressions(*, session: Session, search: str = "", offset: int = 0,
                      limit: int = 50) -> tuple[list[Suppression], int]:
    """Newest first, filtered by a piece of the address or the reason; with the total."""
    query = select(Suppression)
    count = select(func.count()).select_from(Suppression)
    term = search.strip().lower()[:320]
    if term:
        match = or_(col(Suppression.email).contains(term, autoescape=True),
                    func.lower(col(Suppression.reason)).contains(term, autoescape=True))
        query = query.where(match)
        count = count.where(match)
    total = int(session.exec(count).one())
    rows = session.exec(
        query.order_by(col(Suppression.created_at).desc(), col(Suppression.email))
        .offset(max(offset, 0)).limit(min(max(limit, 1), MAX_PAGE))
    ).all()
    return list(rows), total


def subscriber_statuses(*, session: Session, emails: list[str]) -> dict[str, str]:
    """address -> subscriber status, for the addresses that belong to a subscriber."""
    if not emails:
        return {}
    return dict(session.exec(
        select(Subscriber.email, Subscriber.status).where(col(Subscriber.email).in_(emails))
    ).all())


def add_suppression(*, session: Session, email: str, reason: str = "", source: str) -> bool:
    """Suppress an address (subscriber or not). False when it already was: the first
    reason and date are kept, as they say why it was suppressed in the first place."""
    address = clean_address(email)
    text = _reason(reason, f"added by hand ({source})")
    if session.get(Suppression, address) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(Suppression(email=address, reason=text[:MAX_REASON]))
            session.flush()
    except IntegrityError:  # added by someone else a moment ago
        return False
    sid = _subscriber_id(session, address)
    if sid is not None:
        log_event(session=session, subscriber_id=sid, kind=SUPPRESSED, source=source,
                  data={"reason": text[:MAX_REASON]})
    return True


def remove_suppression(*, session: Session, email: str, source: str) -> Removed | None:
    """Take an address off the list (None when it was not on it).

    A subscriber the list had `bounced` is `confirmed` again: the bounce was not their
    choice. One who unsubscribed or complained stays unsubscribed: only they can opt in.
    """
    address = clean_address(email, strict=False)
    suppression = session.get(Suppression, address)
    if suppression is None:
        return None
    reason = suppression.reason
    session.delete(suppression)
    session.flush()
    sub = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
    if sub is None or sub.id is None:
        return Removed(email=address, restored=False, subscriber_status=None)
    result = session.exec(  # type: ignore[call-overload]
        update(Subscriber)
        .where(col(Subscriber.id) == sub.id, col(Subscriber.status) == SubscriberStatus.bounced)
        .values(status=SubscriberStatus.confirmed, updated_at=utcnow())
    )
    restored = bool(result.rowcount)
    session.refresh(sub)
    log_event(session=session, subscriber_id=sub.id, kind=UNSUPPRESSED, source=source,
              data={"reason": reason, "restored": restored})
    return Removed(email=address, restored=restored, subscriber_status=sub.status)


# --- CSV import ----------------------------------------------------------------------


@dataclass
class ImportReport:
    """Addresses added, already on the list, and rejected lines as `file:line: why`."""

    added: int = 0
    existing: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (line, value, why)

    def errors(self, path: Path) -> list[str]:
        return [f"{path}:{line}: {why}" for line, _value, why in self.rejected]


def _rows(text: str) -> list[tuple[int, str, str]]:
    """(line, email, reason) for each non-empty row.

    With a header, the `email` column (and `reason` if present) is read; without one,
    the first column of every line is an address (a plain exported list).
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    numbered: list[tuple[int, list[str]]] = []
    start = 1
    for cells in reader:
        numbered.append((start, cells))
        start = reader.line_num + 1  # a quoted field may span lines
    if not numbered:
        return []
    first = [c.strip().lower() for c in numbered[0][1]]
    header = "email" in first and not any("@" in c for c in first)
    email_at = first.index("email") if header else 0
    reason_at = first.index("reason") if header and "reason" in first else None
    rows = []
    for line, cells in numbered[1:] if header else numbered:
        if not any(c.strip() for c in cells):
            continue
        email = cells[email_at].strip() if email_at < len(cells) else ""
        reason = ""
        if reason_at is not None and reason_at < len(cells):
            reason = cells[reason_at].strip()
        rows.append((line, email, reason))
    return rows


def import_csv(*, session: Session, path: Path, reason: str = "", source: str,
               progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """Suppress every address in a CSV (`email[,reason]` with a header, or one address
    per line). A bad line is reported with its number; the others still import."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SuppressionError(f"{path}: can't read the file: {exc}") from None
    try:
        rows = _rows(text)
    except csv.Error as exc:
        raise SuppressionError(f"{path}: not a CSV file: {exc}") from None
    default = _reason(reason, f"imported from {path.name}")
    report = ImportReport()
    for done, (line, email, row_reason) in enumerate(rows, start=1):
        try:
            if not email:
                raise SuppressionError("no address in the email column")
            with session.begin_nested():
                added = add_suppression(session=session, email=email,
                                        reason=row_reason or default, source=source)
            if added:
                report.added += 1
            else:
                report.existing += 1
        except SuppressionError as exc:
            report.rejected.append((line, email, str(exc)))
        if progress:
            progress(done, len(rows))
    return report
