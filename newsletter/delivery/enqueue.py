"""Publishing batch tasks, only ever after the transaction that planned them commits.

A task published before its rows are committed could run, find nothing, and be gone;
so writers call `enqueue_after_commit` and the session publishes on commit (and
forgets on rollback).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import event
from sqlmodel import Session

from newsletter.delivery.ledger import pending_batches

_AFTER_COMMIT_KEY = "roundup_enqueue"


def enqueue_after_commit(session: Session, issue_id: int, batches: Iterable[int]) -> None:
    """Publish these batch tasks when (and only if) the session's transaction commits."""
    pending: set[tuple[int, int]] = session.info.setdefault(_AFTER_COMMIT_KEY, set())
    pending.update((issue_id, b) for b in batches)


@event.listens_for(Session, "after_commit")
def _publish_after_commit(session: Session) -> None:
    jobs = session.info.pop(_AFTER_COMMIT_KEY, None)
    if jobs:
        publish_batches(sorted(jobs))


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT_KEY, None)


def publish_batches(jobs: Sequence[tuple[int, int]]) -> None:
    """Publish `send_batch(issue_id, batch)` tasks (by name) to the broker at REDIS_URL."""
    if not jobs:
        return
    from newsletter import queue

    queue.publish_many(queue.SEND_BATCH, jobs)


def enqueue_batches(issue_id: int, *, session: Session | None = None) -> int:
    """Publish a task for every batch of `issue_id` with pending rows. Call after commit."""
    if session is None:
        from newsletter import db

        with Session(db.get_engine()) as own:
            batches = pending_batches(session=own, issue_id=issue_id)
    else:
        batches = pending_batches(session=session, issue_id=issue_id)
    publish_batches([(issue_id, b) for b in batches])
    return len(batches)
