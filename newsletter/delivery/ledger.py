"""The delivery ledger: table handles, state queries, claiming, and a batch's row writes.

Every write here is a conditional UPDATE whose WHERE names the state it expects (and,
for a claimed row, the claim token), so a writer that lost a race changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, Executable, exists, func, or_, select, update
from sqlmodel import Session, col

from newsletter.models import (
    Delivery,
    DeliveryStatus,
    Issue,
    IssueStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
    utcnow,
)
from newsletter.settings import settings

log = logging.getLogger("newsletter.delivery")

D = Delivery.__table__  # type: ignore[attr-defined]
I = Issue.__table__  # type: ignore[attr-defined]  # noqa: E741
S = Subscriber.__table__  # type: ignore[attr-defined]

OPEN = (DeliveryStatus.pending, DeliveryStatus.sending)
ERROR_LIMIT = 1000


def changed(session: Session | Connection, statement: Executable) -> int:
    """Run a conditional UPDATE; the rows it changed (0: the state was not what it expected)."""
    return int(cast("CursorResult[Any]", session.execute(statement)).rowcount)


class SendError(RuntimeError):
    """The issue is not in a state that allows this operation."""


class AlreadyPlanned(SendError):
    """plan_send found the issue already sending/sent: nothing was planned twice."""


def status_counts(*, session: Session, issue_id: int) -> dict[str, int]:
    """Ledger rows of this issue by status (every status present, zeros included)."""
    counts = {s.value: 0 for s in DeliveryStatus}
    for status, n in session.execute(
        select(D.c.status, func.count()).where(D.c.issue_id == issue_id).group_by(D.c.status)
    ):
        counts[status] = int(n)
    return counts


@dataclass(frozen=True)
class Waiting:
    """Pending rows not due yet: retried later (a 4xx, a dropped connection) or due later
    in their reader's time zone. Time left is at least until the last of them."""

    rows: int
    first: datetime | None  # the soonest due
    last: datetime | None  # the latest due


def waiting_rows(*, session: Session, issue_id: int, now: datetime | None = None) -> Waiting:
    """This issue's pending rows whose next attempt is after `now`."""
    rows, first, last = session.execute(
        select(func.count(), func.min(D.c.next_attempt_at), func.max(D.c.next_attempt_at))
        .where(D.c.issue_id == issue_id, D.c.status == DeliveryStatus.pending,
               D.c.next_attempt_at > (now or utcnow()))
    ).one()
    return Waiting(rows=int(rows), first=first, last=last)  # aware: the column's type


def finish_if_done(*, session: Session, issue_id: int) -> bool:
    """sending -> sent once no row is pending or sending."""
    open_rows = select(D.c.id).where(D.c.issue_id == issue_id, D.c.status.in_(OPEN))
    return bool(changed(session,
        update(I)
        .where(I.c.id == issue_id, I.c.status == IssueStatus.sending, ~exists(open_rows))
        .values(sent_at=utcnow(), status=IssueStatus.sent)
    ))


def pending_batches(*, session: Session, issue_id: int) -> list[int]:
    """Batch numbers of this issue that still have pending rows."""
    rows = session.execute(
        select(D.c.batch).distinct()
        .where(D.c.issue_id == issue_id, D.c.status == DeliveryStatus.pending)
        .order_by(D.c.batch)
    ).scalars()
    return list(rows)


def next_due(session: Session, issue_id: int, batch: int) -> datetime | None:
    """When the batch's earliest deferred row may be tried again (None: nothing waits)."""
    return session.execute(
        select(func.min(D.c.next_attempt_at)).where(
            D.c.issue_id == issue_id, D.c.batch == batch, D.c.status == DeliveryStatus.pending,
            D.c.attempts <= settings.send_max_retries)
    ).scalar()


def claim(*, session: Session, issue_id: int, batch: int,
          now: datetime | None = None) -> tuple[str, datetime]:
    """Claim the batch's due pending rows with ONE conditional UPDATE.

    The issue must be `sending` in the same statement: a pause or cancel committed
    after the caller looked at the issue wins, and nothing is claimed.
    Returns the claim token and the lease's end.
    """
    now = now or utcnow()
    token = str(uuid.uuid4())
    lease_until = now + timedelta(seconds=settings.send_lease_seconds)
    issue_sending = select(I.c.id).where(I.c.id == issue_id, I.c.status == IssueStatus.sending)
    session.execute(
        update(D)
        .where(
            D.c.issue_id == issue_id, D.c.batch == batch, D.c.status == DeliveryStatus.pending,
            or_(D.c.next_attempt_at.is_(None), D.c.next_attempt_at <= now),
            # A row out of attempts is never tried again; the sweep fails it.
            D.c.attempts <= settings.send_max_retries,
            exists(issue_sending),
        )
        # No attempt is charged here: a row gains one only when its own transaction was
        # tried and failed (batch.py), so rows handed back untried cost nothing.
        .values(status=DeliveryStatus.sending, claim_token=token,
                lease_until=lease_until, updated_at=now)
    )
    session.commit()
    return token, lease_until


@dataclass
class ClaimedRow:
    """A claimed ledger row with what a send needs to know about its subscriber."""

    id: int
    subscriber_id: int
    attempts: int
    email: str
    name: str
    status: str
    paused: bool
    only_my_topics: bool
    suppressed: bool

    @property
    def eligible(self) -> bool:
        """Still wants mail right now (re-checked at send time, not only at planning)."""
        return self.status == SubscriberStatus.confirmed and not self.paused and not self.suppressed


def load_claimed(session: Session | Connection, token: str) -> list[ClaimedRow]:
    """The rows this claim token still holds, grouped by composition."""
    sup = exists(select(col(Suppression.email)).where(col(Suppression.email) == S.c.email))
    rows = session.execute(
        select(D.c.id, D.c.subscriber_id, D.c.attempts, S.c.email, S.c.name, S.c.status,
               S.c.paused, S.c.only_my_topics, sup)
        .join(S, S.c.id == D.c.subscriber_id)
        .where(D.c.claim_token == token, D.c.status == DeliveryStatus.sending)
        .order_by(D.c.composition_key, D.c.id)
    ).all()
    return [ClaimedRow(*r) for r in rows]


def finish_rows(conn: Session | Connection, token: str, row_ids: Sequence[int], status: str,
                error: str = "", *, charge: bool = False,
                next_attempt_at: datetime | None = None) -> int:
    """Claimed rows -> `status`, guarded by the claim token; the rows changed.

    `pending` frees them (with an optional backoff). `charge` adds the attempt the row
    just had; rows never tried (handed back, skipped, suppressed) are not charged.
    `cancelled` is for rows handed back from a cancelled issue.
    """
    if not row_ids:
        return 0
    values: dict[str, Any] = {"status": status, "error": error[:ERROR_LIMIT],
                              "updated_at": utcnow(), "lease_until": None}
    if status in (DeliveryStatus.pending, DeliveryStatus.cancelled):
        values.update(claim_token="", next_attempt_at=next_attempt_at)
    if charge:
        values["attempts"] = D.c.attempts + 1
    return changed(conn, update(D).where(
        D.c.id.in_(list(row_ids)), D.c.claim_token == token,
        D.c.status == DeliveryStatus.sending).values(**values))


def release_rows(conn: Session | Connection, token: str, row_ids: Sequence[int],
                 issue_status: str, why: str = "") -> int:
    """Hand back rows never tried because the issue is no longer sending (untouched)."""
    if issue_status == IssueStatus.cancelled:
        return finish_rows(conn, token, row_ids, DeliveryStatus.cancelled, "cancelled")
    return finish_rows(conn, token, row_ids, DeliveryStatus.pending,
                       why or f"released: issue {issue_status}")

