"""Acting on a send in progress: pause, resume, cancel, the lease sweep, running out of retries.

Each is a conditional UPDATE on the issue or its rows; batch tasks look at the issue
before claiming and every few messages while they send, so these take effect within a
fraction of a second (a message already handed to the relay still goes out).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, literal, or_, select, update
from sqlmodel import Session

from newsletter.delivery.enqueue import enqueue_after_commit
from newsletter.delivery.ledger import (
    ERROR_LIMIT,
    D,
    I,
    SendError,
    changed,
    finish_if_done,
    pending_batches,
)
from newsletter.models import DeliveryStatus, Issue, IssueStatus, utcnow
from newsletter.settings import settings

log = logging.getLogger("newsletter.delivery")


def pause_send(*, session: Session, issue_id: int) -> bool:
    """Stop sending: no new claims; running batches hand back their untried rows."""
    return bool(changed(session,
        update(I).where(I.c.id == issue_id, I.c.status == IssueStatus.sending)
        .values(status=IssueStatus.paused)
    ))


def resume_send(*, session: Session, issue_id: int) -> bool:
    """paused -> sending; batches with pending rows are re-enqueued after commit."""
    if not changed(session,
        update(I).where(I.c.id == issue_id, I.c.status == IssueStatus.paused)
        .values(status=IssueStatus.sending)
    ):
        return False
    enqueue_after_commit(session, issue_id, pending_batches(session=session, issue_id=issue_id))
    finish_if_done(session=session, issue_id=issue_id)
    return True


def cancel_send(*, session: Session, issue_id: int) -> int:
    """Cancel the issue; pending rows become `cancelled`. Returns rows cancelled.

    Rows a worker holds right now are cancelled by that worker within moments
    (it re-reads the issue while sending), or by the sweep if it died.
    """
    won = changed(session,
        update(I)
        .where(I.c.id == issue_id, I.c.status.in_(
            (IssueStatus.approved, IssueStatus.scheduled, IssueStatus.sending, IssueStatus.paused)))
        .values(status=IssueStatus.cancelled)
    )
    if not won:
        issue = session.get(Issue, issue_id)
        if issue is None:
            raise LookupError(f"no issue with id {issue_id}")
        raise SendError(f"issue {issue_id} is {issue.status}; it cannot be cancelled")
    return int(changed(session,
        update(D).where(D.c.issue_id == issue_id, D.c.status == DeliveryStatus.pending)
        .values(status=DeliveryStatus.cancelled, updated_at=utcnow(), error="cancelled")
    ))


def sweep_expired_leases(*, session: Session, now: datetime | None = None) -> int:
    """Expired leases -> pending (batches re-enqueued after commit); finish done issues.

    A worker SIGKILLed mid-batch leaves its rows `sending`; once the lease passes they
    are claimable again. Rows marked `sent` are never touched, so nobody gets two.
    Also re-enqueues pending rows nobody has touched for a whole lease (a task lost
    with a dead worker's prefetch), cancels rows left open in cancelled issues, and
    finishes issues with no open rows.
    """
    now = now or utcnow()
    cancelled_issues = select(I.c.id).where(I.c.status == IssueStatus.cancelled)
    expired = and_(D.c.status == DeliveryStatus.sending, D.c.lease_until < now)
    session.execute(
        update(D).where(D.c.issue_id.in_(cancelled_issues), or_(
            expired, D.c.status == DeliveryStatus.pending))
        .values(status=DeliveryStatus.cancelled, claim_token="", lease_until=None,
                updated_at=now, error="cancelled")
    )
    _fail_spent(session, expired, now)
    jobs = _batches_where(session, expired)
    returned = changed(session,
        update(D).where(expired).values(
            status=DeliveryStatus.pending, claim_token="", lease_until=None, updated_at=now,
            error="lease expired; returned to pending",
        )
    )
    stale_before = now - timedelta(seconds=max(2 * settings.send_lease_seconds, 120))
    stale = and_(
        D.c.status == DeliveryStatus.pending,
        D.c.updated_at < stale_before,
        or_(D.c.next_attempt_at.is_(None), D.c.next_attempt_at < stale_before),
        D.c.issue_id.in_(select(I.c.id).where(I.c.status == IssueStatus.sending)),
    )
    stale_jobs = _batches_where(session, stale)
    if stale_jobs:
        # Touch them so the next sweep does not re-enqueue them again straight away.
        session.execute(update(D).where(stale).values(updated_at=now))
    sending_issues = session.execute(
        select(I.c.id).where(I.c.status == IssueStatus.sending)
    ).scalars().all()
    for issue_id in sending_issues:
        finish_if_done(session=session, issue_id=issue_id)
    active = set(sending_issues)
    jobs = {j for j in jobs | stale_jobs if j[0] in active}
    for issue_id in {j[0] for j in jobs}:
        enqueue_after_commit(session, issue_id, [b for i, b in jobs if i == issue_id])
    if returned:
        log.warning("sweep: %d expired leases returned to pending", returned)
    return int(returned)


def _fail_spent(session: Session, expired: Any, now: datetime) -> None:
    """Rows out of attempts that no batch will fail for us -> failed, so the issue can finish.

    A batch fails spent rows itself on a 4xx or relay error; these are the others: a
    worker killed (OOM, SIGKILL) or a batch crashing on the row's last attempt, which
    would otherwise come back through this sweep for ever, and rows left pending
    after SEND_MAX_RETRIES was lowered. claim() never takes a spent row.
    """
    allowed = settings.send_max_retries + 1
    spent = and_(D.c.attempts >= allowed,
                 D.c.issue_id.in_(select(I.c.id).where(I.c.status != IssueStatus.cancelled)))
    prefix = f"out of retries after {allowed} attempts: "
    crashed = changed(session,
        update(D).where(expired, spent).values(
            status=DeliveryStatus.failed, claim_token="", lease_until=None, updated_at=now,
            error=prefix + "the worker stopped during the attempt (crashed or killed)",
        )
    )
    left = changed(session,
        update(D).where(D.c.status == DeliveryStatus.pending, spent).values(
            status=DeliveryStatus.failed, updated_at=now,
            error=func.substr(literal(prefix) + D.c.error, 1, ERROR_LIMIT),
        )
    )
    if crashed or left:
        log.error("sweep: %d rows out of attempts failed (%d died with their worker)",
                  crashed + left, crashed)


def _batches_where(session: Session, condition: Any) -> set[tuple[int, int]]:
    query = select(D.c.issue_id, D.c.batch).distinct().where(condition)
    return {(int(i), int(b)) for i, b in session.execute(query)}
