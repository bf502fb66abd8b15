"""Celery tasks. They take IDs, check state first, and are harmless to run twice."""

from __future__ import annotations

import logging

from celery import Task

from newsletter import db, delivery, schedule
from newsletter.settings import settings
from workers.celery_app import app

log = logging.getLogger(__name__)


@app.task(bind=True, acks_late=True, max_retries=settings.send_max_retries,
          name="workers.tasks.send_batch")
def send_batch(self: Task, issue_id: int, batch: int) -> dict[str, int]:
    """Send one planned batch. Rows deferred by 4xx/disconnects retry the whole task.

    Each row also stops at SEND_MAX_RETRIES + 1 attempts on its own (the ledger counts
    them), so duplicates and re-enqueued tasks cannot retry a recipient for ever.
    """
    with db.session_scope() as session:
        outcome = delivery.run_batch(session=session, issue_id=issue_id, batch=batch)
    if outcome.retry_in is None:
        return outcome.counts
    if self.request.retries >= settings.send_max_retries:
        with db.session_scope() as session:
            delivery.fail_deferred(
                session=session, issue_id=issue_id, batch=batch,
                error=f"out of retries after {self.request.retries}: {outcome.last_error}",
            )
        return outcome.counts
    log.info("batch %s/%s: %s deferred, retry in %.1fs", issue_id, batch,
             outcome.counts.get("deferred", 0), outcome.retry_in)
    raise self.retry(countdown=outcome.retry_in, max_retries=settings.send_max_retries)


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
