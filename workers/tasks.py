"""Celery tasks. They take IDs, check state first, and are harmless to run twice."""

from __future__ import annotations

import logging

from celery import Task

from newsletter import db, delivery, schedule
from newsletter.settings import settings
from workers.celery_app import app

log = logging.getLogger(__name__)


def batch_task_retries() -> int:
    """The batch task's own retry cap: generous, because the real limit is per row.

    Each run claims every due row and defers the ones it could not send to one shared
    time, so a row gains an attempt per run and fails on its own after
    SEND_MAX_RETRIES + 1 attempts (ledger.attempts). The task cap only stops
    re-enqueueing a batch that keeps meeting fresh rows (a re-plan, the sweep returning
    a dead worker's rows, a pause); it fails nobody, and the sweep re-enqueues rows
    left pending for two leases.
    """
    return 2 * (settings.send_max_retries + 1)


@app.task(bind=True, acks_late=True, max_retries=batch_task_retries(),
          name="workers.tasks.send_batch")
def send_batch(self: Task, issue_id: int, batch: int) -> dict[str, int]:
    """Send one planned batch; while rows are deferred (4xx, relay trouble), retry at their time.

    Rows are failed only by their own attempt count in the ledger, never because this
    task ran out of retries (see batch_task_retries).
    """
    with db.session_scope() as session:
        outcome = delivery.run_batch(session=session, issue_id=issue_id, batch=batch)
    if outcome.retry_in is None:
        return outcome.counts
    limit = batch_task_retries()
    if self.request.retries >= limit:
        log.warning("batch %s/%s: task retried %d times; leaving its deferred rows to the "
                    "sweep (last error: %s)", issue_id, batch, limit, outcome.last_error)
        return outcome.counts
    log.info("batch %s/%s: %s deferred, retry in %.1fs", issue_id, batch,
             outcome.counts.get("deferred", 0), outcome.retry_in)
    raise self.retry(countdown=outcome.retry_in, max_retries=limit)


@app.task(acks_late=True, name="workers.tasks.sweep")
def sweep() -> int:
    """Return expired leases to pending, re-enqueue their batches, finish done issues."""
    with db.session_scope() as session:
        return delivery.sweep_expired_leases(session=session)


@app.task(acks_late=True, name="workers.tasks.send_due_issues")
def send_due_issues() -> list[int]:
    """Plan the issue due in this week's slot (if any); batches go out after commit."""
    with db.session_scope() as session:
        return schedule.send_due_issues(session=session)
