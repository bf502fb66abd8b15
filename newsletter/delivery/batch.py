"""Running one batch: claim, re-check every reader, compose, send, record each row.

The sending itself (many transactions in flight on the worker's event loop, each row's
verdict) is `sending.BatchSend`; this module claims the rows, re-checks them against
the subscribers as they are now, chooses each reader's composition, and afterwards says
when the batch should run again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from newsletter.composer import Composition, load_issue
from newsletter.delivery import pool
from newsletter.delivery.ledger import (
    ClaimedRow,
    I,
    claim,
    finish_if_done,
    finish_rows,
    load_claimed,
    next_due,
)
from newsletter.delivery.planning import CompositionCache
from newsletter.delivery.sending import (
    LRU,
    MAX_RETRY_DELAY,
    SUPPRESSED,
    BatchOutcome,
    BatchSend,
)
from newsletter.delivery.writer import LedgerWriter
from newsletter.engagement.interests import interests_by_subscriber
from newsletter.models import DeliveryStatus, IssueStatus, utcnow
from newsletter.subscribers import topics_by_subscriber

# --- renders, cached per worker process ---------------------------------------------------


_issues = LRU(4)  # (issue_id, version) -> CompositionCache


def _issue_snapshot(session: Session, issue_id: int, version: str) -> CompositionCache:
    cached = _issues.get((issue_id, version))
    if cached is None:
        cached = CompositionCache(load_issue(session=session, issue_id=issue_id))
        _issues.put((issue_id, version), cached)
    return cached


# --- the batch ------------------------------------------------------------------------------


def run_batch(*, session: Session, issue_id: int, batch: int) -> BatchOutcome:
    """Claim, re-check, render, send over many connections at once, and record each row."""
    outcome = BatchOutcome()
    issue = session.execute(select(I.c.status, I.c.updated_at, I.c.send_started_at)
                            .where(I.c.id == issue_id)).first()
    if issue is None or issue.status != IssueStatus.sending:
        outcome.add("not_sending")
        return outcome
    version = issue.updated_at.isoformat()

    token, lease_until = claim(session=session, issue_id=issue_id, batch=batch)
    claimed = load_claimed(session, token)
    if claimed:
        snapshot = _issue_snapshot(session, issue_id, version)
        work = _prepare(session, token, snapshot, issue.send_started_at, claimed, outcome)
        session.commit()  # hand the connection back: the writer has its own while we send
        if work:
            writer = LedgerWriter(session.get_bind(), issue_id, token,  # type: ignore[arg-type]
                                  lease_until)
            writer.start()
            try:
                pool.run(BatchSend(writer, snapshot.issue, outcome).run(work))
            finally:
                writer.close()
            if writer.lost_marks:  # sent, but the row was no longer ours to mark
                outcome.add("sent", -writer.lost_marks)
                outcome.add("lost_lease", writer.lost_marks)
                if not outcome.counts["sent"]:
                    del outcome.counts["sent"]
    due = next_due(session, issue_id, batch)
    if due is not None:
        outcome.retry_in = min(MAX_RETRY_DELAY, max(0.1, (due - utcnow()).total_seconds()))
    finish_if_done(session=session, issue_id=issue_id)
    session.commit()
    return outcome


def _prepare(session: Session, token: str, snapshot: CompositionCache,
             started: datetime | None, claimed: list[ClaimedRow], outcome: BatchOutcome,
             ) -> list[tuple[ClaimedRow, Composition]]:
    """Re-check every subscriber now (they may have left since the plan) and compose."""
    gone = sorted(c.id for c in claimed if not c.eligible)
    if gone:
        finish_rows(session, token, gone, DeliveryStatus.suppressed, SUPPRESSED)
        outcome.add("suppressed", len(gone))
    live = [c for c in claimed if c.eligible]
    ids = [c.subscriber_id for c in live]
    topics = topics_by_subscriber(session=session, subscriber_ids=ids)
    # What each reader keeps opening orders their "Also this week" (issue 9). Counted up
    # to the send's start, so every batch of one send composes the same email.
    learned = interests_by_subscriber(session=session, subscriber_ids=ids, now=started)
    work: list[tuple[ClaimedRow, Composition]] = []
    skipped: list[int] = []
    for c in live:
        composition = snapshot.get(topics.get(c.subscriber_id, ()), c.only_my_topics,
                                   learned.get(c.subscriber_id, ()))
        if composition is None:
            skipped.append(c.id)
        else:
            work.append((c, composition))
    if skipped:
        finish_rows(session, token, skipped, DeliveryStatus.skipped, "no items match their topics")
        outcome.add("skipped", len(skipped))
    return work



