"""Acting on a send in progress: pause, resume, cancel, retrying failed rows, the sweep.

Each is a conditional UPDATE on the issue or its rows; batch tasks look at the issue
before claiming and every few messages while they send and hand back their untried
rows, and `wait_for_hand_back` lets the command or request that paused or cancelled
return only once that happened (a message already handed to the relay still goes out).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, func, literal, or_, select, update
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


def pause_send(*, session: Session | Connection, issue_id: int, reason: str = "") -> bool:
    """Stop sending: no new claims; running batches hand back their untried rows.

    `reason` (what a person reads in `newsletter status` and the console) says why:
    empty for a person's pause, the relay's words when the send paused itself.
    Call `wait_for_hand_back` after commit for the pause to be complete.
    """
    paused = bool(changed(session,
        update(I).where(I.c.id == issue_id, I.c.status == IssueStatus.sending)
        .values(status=IssueStatus.paused, status_reason=reason[:ERROR_LIMIT])
    ))
    if paused:
        log.warning("issue %s paused%s", issue_id, f": {reason}" if reason else "")
    return paused


def resume_send(*, session: Session, issue_id: int) -> bool:
    """paused -> sending; batches with pending rows are re-enqueued after commit."""
    if not changed(session,
        update(I).where(I.c.id == issue_id, I.c.status == IssueStatus.paused)
        .values(status=IssueStatus.sending, status_reason="")
    ):
        return False
    log.info("issue %s resumed", issue_id)
    enqueue_after_commit(session, issue_id, pending_batches(session=session, issue_id=issue_id))
    finish_if_done(session=session, issue_id=issue_id)
    return True


def cancel_send(*, session: Session, issue_id: int) -> int:
    """Cancel the issue; pending rows become `cancelled`. Returns rows cancelled.

    Rows a worker holds right now are cancelled by that worker within moments
    (it re-reads the issue while sending), or by the sweep if it died. Call
    `wait_for_hand_back` after commit for the cancel to be complete.
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
    log.warning("issue %s cancelled", issue_id)
    return int(changed(session,
        update(D).where(D.c.issue_id == issue_id, D.c.status == DeliveryStatus.pending)
        .values(status=DeliveryStatus.cancelled, updated_at=utcnow(), error="cancelled")
    ))


def in_flight(*, session: Session, issue_id: int) -> int:
    """Rows of the issue a worker holds right now (status `sending`)."""
    return int(session.execute(
        select(func.count()).select_from(D)
        .where(D.c.issue_id == issue_id, D.c.status == DeliveryStatus.sending)
    ).scalar_one())


def wait_for_hand_back(*, issue_id: int, timeout: float | None = None) -> int:
    """After a committed pause or cancel: wait until no row of the issue is `sending`.

    Running batches look at the issue every few messages and hand back their untried
    rows at once, so this takes a fraction of a second. Gives up after `timeout`
    (SEND_STOP_WAIT_SECONDS) and returns how many rows are still held: messages a
    relay is accepting right now, or rows of a worker that died (the sweep returns
    those when their lease ends). 0 means the pause or cancel is complete.
    """
    from newsletter import db

    timeout = settings.send_stop_wait_seconds if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while True:
        with Session(db.get_engine()) as session:
            held = in_flight(session=session, issue_id=issue_id)
        if not held or time.monotonic() >= deadline:
            return held
        time.sleep(0.05)


def retry_failed(*, session: Session, issue_id: int) -> int:
    """Rows that ended `failed` go back to `pending` with no attempts, and are enqueued.

    One conditional UPDATE: exactly the rows failed at this moment, each once (two
    retries racing reset each row once between them). A finished issue goes back to
    `sending`; a paused one keeps them for its resume. Returns the rows reset.
    """
    issue = session.get(Issue, issue_id)
    if issue is None:
        raise LookupError(f"no issue with id {issue_id}")
    session.refresh(issue)
    if issue.status not in (IssueStatus.sending, IssueStatus.paused, IssueStatus.sent):
        raise SendError(f"issue {issue_id} is {issue.status}; only a send that started "
                        "can retry its failed deliveries")
    failed = and_(D.c.issue_id == issue_id, D.c.status == DeliveryStatus.failed)
    batches = _batches_where(session, failed)
    reset = changed(session,
        update(D).where(failed).values(
            status=DeliveryStatus.pending, attempts=0, next_attempt_at=None, claim_token="",
            lease_until=None, updated_at=utcnow(), error="retry of a failed delivery")
    )
    if not reset:
        return 0
    changed(session,
        update(I).where(I.c.id == issue_id, I.c.status == IssueStatus.sent)
        .values(status=IssueStatus.sending, sent_at=None, status_reason="")
    )
    enqueue_after_commit(session, issue_id, sorted(b for _, b in batches))
    log.info("issue %s: %d failed deliveries go out again", issue_id, reset)
    return reset


def sweep_expired_leases(*, session: Session, now: datetime | None = None) -> int:
    """Expired leases -> pending (batches re-enqueued after commit); finish done issues.

    A worker SIGKILLed mid-batch leaves its rows `sending`; once the lease passes they
    are claimable again. Rows marked `sent` are never touched, so nobody gets two.
    Also cancels rows left open in cancelled issues, finishes issues with no open rows,
    and re-enqueues batches whose tasks were lost: every batch with pending rows when
    Redis lost its data (restarted without persistence: the queue went with it), and
    batches nobody has touched for two leases (a task lost with a dead worker's
    prefetch). Re-enqueueing is harmless: a batch task claims only what is due.

    Every query reads open rows through an index (`ix_delivery_lease_held` for leases,
    (issue, status) for the rest), never the whole ledger: beat runs this every
    SEND_SWEEP_SECONDS.
    """
    now = now or utcnow()
    cancelled_issues = select(I.c.id).where(I.c.status == IssueStatus.cancelled)
    expired = expired_leases(now)
    session.execute(
        update(D).where(D.c.issue_id.in_(cancelled_issues), or_(
            expired, D.c.status == DeliveryStatus.pending))
        .values(status=DeliveryStatus.cancelled, claim_token="", lease_until=None,
                updated_at=now, error="cancelled")
    )
    allowed = settings.send_max_retries + 1
    crashed = changed(session,
        update(D).where(expired, D.c.attempts >= allowed, ~D.c.issue_id.in_(cancelled_issues))
        .values(status=DeliveryStatus.failed, claim_token="", lease_until=None, updated_at=now,
                error=f"out of retries after {allowed} attempts: the worker stopped during "
                      "the attempt (crashed or killed)")
    )
    if crashed:
        log.error("sweep: %d rows out of attempts failed: their worker died during the "
                  "last attempt", crashed)
    jobs = _batches_where(session, expired)
    returned = changed(session,
        update(D).where(expired).values(
            status=DeliveryStatus.pending, claim_token="", lease_until=None, updated_at=now,
            error="lease expired; returned to pending",
        )
    )
    sending_issues = list(session.execute(
        select(I.c.id).where(I.c.status == IssueStatus.sending)
    ).scalars().all())
    stale = set()
    for issue_id in sending_issues:
        stale |= _pending_rows(session, issue_id, now)
        finish_if_done(session=session, issue_id=issue_id)
    lost = _lost_batches(session, sending_issues, stale)
    active = set(sending_issues)
    jobs = {j for j in jobs | lost if j[0] in active}
    for issue_id in {j[0] for j in jobs}:
        enqueue_after_commit(session, issue_id, [b for i, b in jobs if i == issue_id])
    if returned:
        log.warning("sweep: %d expired leases returned to pending", returned)
    return int(returned)


def expired_leases(now: datetime) -> Any:
    """Rows whose holder's lease has passed; matches the partial index ix_delivery_lease_held."""
    return and_(D.c.status == DeliveryStatus.sending, D.c.lease_until < now)


def _pending_rows(session: Session, issue_id: int, now: datetime) -> set[tuple[int, int]]:
    """One pass over a sending issue's pending rows (through its (issue, status) index).

    Fails the rows out of attempts that no batch will fail for us (left pending after
    SEND_MAX_RETRIES was lowered, or by a batch that died before recording them; claim()
    never takes them), so the issue can finish. Returns the batches whose due rows
    nobody has touched for two leases (a task lost with a dead worker's prefetch).
    """
    allowed = settings.send_max_retries + 1
    stale_before = now - timedelta(seconds=max(2 * settings.send_lease_seconds, 120))
    due_since = case((or_(D.c.next_attempt_at.is_(None), D.c.next_attempt_at < stale_before),
                      D.c.updated_at))
    pending = and_(D.c.issue_id == issue_id, D.c.status == DeliveryStatus.pending)
    spent, stale = [], set()
    for batch, attempts, touched in session.execute(
        select(D.c.batch, func.max(D.c.attempts), func.min(due_since))
        .where(pending).group_by(D.c.batch)
    ):
        if attempts >= allowed:
            spent.append(batch)
        if touched is not None and touched < stale_before:
            stale.add((issue_id, int(batch)))
    if spent:
        prefix = f"out of retries after {allowed} attempts: "
        left = changed(session,
            update(D).where(pending, D.c.batch.in_(spent), D.c.attempts >= allowed).values(
                status=DeliveryStatus.failed, updated_at=now,
                error=func.substr(literal(prefix) + D.c.error, 1, ERROR_LIMIT),
            )
        )
        log.error("sweep: issue %s: %d pending rows out of attempts failed", issue_id, left)
    return stale


def _lost_batches(session: Session, issue_ids: list[int],
                  stale: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Batches of sending issues whose tasks the broker no longer holds (or may not)."""
    from newsletter import queue

    if not issue_ids:
        return set()
    try:
        reset = queue.broker_was_reset()
    except Exception as exc:  # Redis is down: nothing could be published anyway
        log.warning("sweep: Redis does not answer (%s); batches are re-published once it does",
                    exc)
        return set()
    if reset:
        lost = {(i, b) for i in issue_ids for b in pending_batches(session=session, issue_id=i)}
        if lost:
            # Also the first sweep on a new Redis: harmless, a batch claims only what is due.
            log.info("sweep: Redis has no record of our queue (new, restarted or flushed): "
                     "published the %d batches with pending rows of issues %s again",
                     len(lost), sorted({i for i, _ in lost}))
        return lost
    # Once per lease period each, not every sweep: a batch waiting its turn behind a
    # long queue also looks untouched, and re-publishing it is only a wasted task.
    return {(i, b) for i, b in stale
            if queue.first_time(f"roundup:republished:{i}:{b}", settings.send_lease_seconds)}


def _batches_where(session: Session, condition: Any) -> set[tuple[int, int]]:
    query = select(D.c.issue_id, D.c.batch).distinct().where(condition)
    return {(int(i), int(b)) for i, b in session.execute(query)}
