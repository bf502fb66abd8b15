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

from sqlalchemy import CursorResult, Executable, case, exists, func, or_, select, update
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


def changed(session: Session, statement: Executable) -> int:
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
        .values(status=DeliveryStatus.sending, claim_token=token, attempts=D.c.attempts + 1,
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


def load_claimed(session: Session, token: str) -> list[ClaimedRow]:
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


class BatchLedger:
    """The per-row writes of one claimed batch, each guarded by the claim token.

    `sent` is the hot path (one per message, committed at once), so it runs a
    prepared UPDATE on its own raw DBAPI connection instead of going through the ORM.
    """

    def __init__(self, session: Session, issue_id: int, token: str, lease_until: datetime) -> None:
        self.session = session
        self.issue_id = issue_id
        self.token = token
        self.lease_until = lease_until
        engine = session.get_bind()
        dialect = engine.dialect
        self._postgres = dialect.name == "postgresql"
        self._raw = engine.raw_connection()  # type: ignore[union-attr]
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self._mark_sent = (
            f"UPDATE delivery SET status={mark}, message_id={mark}, sent_at={mark}, "  # noqa: S608
            f"updated_at={mark}, lease_until=NULL, error='' "
            f"WHERE id={mark} AND claim_token={mark}"
        )
        self._issue_status = f"SELECT status FROM issue WHERE id={mark}"  # noqa: S608
        self._when = D.c.sent_at.type.bind_processor(dialect) or (lambda value: value)
        if self._postgres:
            # One commit per sent row; waiting for the WAL flush on each would cap
            # throughput. A crash may lose the last marks (those few recipients could
            # get a duplicate): the same window as SQLite's synchronous=NORMAL.
            self._raw_execute("SET synchronous_commit = off")

    def _raw_execute(self, sql: str) -> None:
        cur = self._raw.cursor()
        try:
            cur.execute(sql)
        finally:
            cur.close()
        self._raw.commit()

    def close(self) -> None:
        try:
            if self._postgres:
                # The connection goes back to the pool: nobody else may inherit
                # asynchronous commits (a claim or a bounce must be durable).
                self._raw_execute("RESET synchronous_commit")
        finally:
            self._raw.close()

    def sent(self, row_id: int, message_id: str) -> bool:
        """Record the server's 250. False: the row was no longer ours (lease lost)."""
        at = self._when(utcnow())
        cur = self._raw.cursor()
        try:
            cur.execute(self._mark_sent, (DeliveryStatus.sent.value, message_id[:255], at, at,
                                          row_id, self.token))
            ok = cur.rowcount == 1
        finally:
            cur.close()
        self._raw.commit()
        if not ok:
            log.error("delivery %s was sent but its lease was lost (sent twice?)", row_id)
        return ok

    def issue_status(self) -> str:
        """The issue's status now: one primary-key SELECT, cheap enough to run every few
        messages so a pause or cancel stops the batch almost at once."""
        cur = self._raw.cursor()
        try:
            cur.execute(self._issue_status, (self.issue_id,))
            row = cur.fetchone()
        finally:
            cur.close()
        self._raw.commit()  # end the read: PostgreSQL must not sit idle in a transaction
        return str(row[0]) if row else ""

    def finish(self, row_ids: Sequence[int], status: str, error: str = "",
               next_attempt_at: datetime | None = None) -> None:
        """Claimed rows -> `status` (pending frees them, with an optional backoff)."""
        if not row_ids:
            return
        values: dict[str, Any] = {"status": status, "error": error[:ERROR_LIMIT],
                                  "updated_at": utcnow(), "lease_until": None}
        if status == DeliveryStatus.pending:
            values.update(claim_token="", next_attempt_at=next_attempt_at)
        self._update_held(row_ids, values)

    def release(self, row_ids: Sequence[int], issue_status: str) -> None:
        """Hand back claimed rows that were never tried (the issue was paused or cancelled)."""
        if not row_ids:
            return
        if issue_status == IssueStatus.cancelled:
            values: dict[str, Any] = {"status": DeliveryStatus.cancelled, "error": "cancelled"}
        else:
            values = {"status": DeliveryStatus.pending, "claim_token": "",
                      "error": f"released: issue {issue_status}"}
        # Not tried, so the claim's attempt does not count against the retry limit.
        values.update(updated_at=utcnow(), lease_until=None,
                      attempts=case((D.c.attempts > 0, D.c.attempts - 1), else_=0))
        self._update_held(row_ids, values)

    def _update_held(self, row_ids: Sequence[int], values: dict[str, Any]) -> None:
        self.session.execute(
            update(D).where(D.c.id.in_(row_ids), D.c.claim_token == self.token,
                            D.c.status == DeliveryStatus.sending).values(**values)
        )
        self.session.commit()

    def refresh(self) -> tuple[str, list[ClaimedRow]]:
        """Extend the lease on the rows still ours; return the issue's status and those rows.

        A row is ours while it is `sending` with our token; the sweep (after our lease
        passed, maybe by another machine's clock) may have handed it to someone else.
        Extending only rows still ours is safe against the sweep either way round: its
        UPDATE and ours both re-check the row they change.
        """
        now = utcnow()
        self.lease_until = now + timedelta(seconds=settings.send_lease_seconds)
        self.session.execute(
            update(D).where(D.c.claim_token == self.token, D.c.status == DeliveryStatus.sending)
            .values(lease_until=self.lease_until)
        )
        self.session.commit()
        status = self.session.execute(
            select(I.c.status).where(I.c.id == self.issue_id)).scalar_one()
        return str(status), load_claimed(self.session, self.token)
