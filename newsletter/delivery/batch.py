"""Running one batch: claim, re-check, render once per composition, send, record each row.

While it sends, a batch looks again every REFRESH_SECONDS (and at once when a row
turns out not to be ours any more, or the issue is no longer sending): it extends its
lease on the rows it still holds, drops rows the sweep handed on, suppresses
subscribers who left meanwhile, and hands back its untried rows when the issue was
paused or cancelled. The issue's status alone is read far more often (every
STATUS_EVERY_MESSAGES messages or STATUS_EVERY_SECONDS), so those stop it at once.
"""

from __future__ import annotations

import logging
import smtplib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from newsletter.composer import Composition, IssueContent, load_issue
from newsletter.delivery.ledger import (
    BatchLedger,
    ClaimedRow,
    I,
    SendError,
    claim,
    finish_if_done,
    load_claimed,
    next_due,
)
from newsletter.delivery.planning import CompositionCache
from newsletter.delivery.smtp import classify, deliver, describe, relay_name, smtp_connect
from newsletter.models import DeliveryStatus, IssueStatus, utcnow
from newsletter.settings import settings
from newsletter.subscribers import topics_by_subscriber

if TYPE_CHECKING:
    from newsletter.message import MessageFactory

log = logging.getLogger("newsletter.delivery")

MAX_RETRY_DELAY = 600.0  # seconds: no ETA longer than this, or Redis redelivers it
REFRESH_SECONDS = 2.0  # how often a running batch extends its lease and re-reads its rows
# How often it looks at the issue's status alone (one primary-key SELECT), whichever
# comes first: at ~1,000 messages a second, pause and cancel stop it within ~20 messages.
STATUS_EVERY_MESSAGES = 20
STATUS_EVERY_SECONDS = 0.2


def backoff_seconds(attempts: int) -> float:
    """4xx backoff: SEND_RETRY_BASE_SECONDS, doubling per attempt, capped."""
    return min(MAX_RETRY_DELAY, settings.send_retry_base_seconds * 2 ** max(0, attempts - 1))


# --- renders, cached per worker process ---------------------------------------------------


class _LRU:
    """A small process-level cache: renders are expensive, memory must stay flat."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)


_issues = _LRU(4)  # (issue_id, version) -> CompositionCache
_factories = _LRU(256)  # (issue_id, version, composition key) -> MessageFactory


def _issue_snapshot(session: Session, issue_id: int, version: str) -> CompositionCache:
    cached = _issues.get((issue_id, version))
    if cached is None:
        cached = CompositionCache(load_issue(session=session, issue_id=issue_id))
        _issues.put((issue_id, version), cached)
    return cached


def _factory(issue: IssueContent, composition: Composition) -> MessageFactory:
    from newsletter.message import MessageFactory
    from newsletter.render import render_digest

    key = (issue.id, issue.version, composition.key)
    factory = _factories.get(key)
    if factory is None:
        factory = MessageFactory(digest=render_digest(issue, composition), issue_id=issue.id)
        _factories.put(key, factory)
    return factory


# --- the batch ------------------------------------------------------------------------------


@dataclass
class BatchOutcome:
    """What run_batch did; `retry_in` is set when rows were deferred."""

    counts: dict[str, int] = field(default_factory=dict)
    retry_in: float | None = None
    retry_at: datetime | None = None  # the one next_attempt_at of every row deferred here
    last_error: str = ""

    def add(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n


def run_batch(*, session: Session, issue_id: int, batch: int) -> BatchOutcome:
    """Claim, re-check, render, send over one SMTP connection, and record each row."""
    outcome = BatchOutcome()
    issue = session.execute(select(I.c.status, I.c.updated_at).where(I.c.id == issue_id)).first()
    if issue is None or issue.status != IssueStatus.sending:
        outcome.add("not_sending")
        return outcome
    version = issue.updated_at.isoformat()

    token, lease_until = claim(session=session, issue_id=issue_id, batch=batch)
    claimed = load_claimed(session, token)
    if claimed:
        ledger = BatchLedger(session, issue_id, token, lease_until)
        try:
            _run_claimed(session, ledger, version, claimed, outcome)
        finally:
            ledger.close()
    due = next_due(session, issue_id, batch)
    if due is not None:
        outcome.retry_in = min(MAX_RETRY_DELAY, max(0.1, (due - utcnow()).total_seconds()))
    finish_if_done(session=session, issue_id=issue_id)
    session.commit()
    return outcome


def _run_claimed(session: Session, ledger: BatchLedger, version: str,
                 claimed: list[ClaimedRow], outcome: BatchOutcome) -> None:
    # Re-check every subscriber now: they may have left since the plan.
    _suppress(ledger, [c.id for c in claimed if not c.eligible], outcome)
    live = [c for c in claimed if c.eligible]
    snapshot = _issue_snapshot(session, ledger.issue_id, version)
    topics = topics_by_subscriber(session=session,
                                  subscriber_ids=[c.subscriber_id for c in live])
    work: list[tuple[ClaimedRow, Composition]] = []
    skipped: list[int] = []
    for c in live:
        composition = snapshot.get(topics.get(c.subscriber_id, ()), c.only_my_topics)
        if composition is None:
            skipped.append(c.id)
        else:
            work.append((c, composition))
    if skipped:
        ledger.finish(skipped, DeliveryStatus.skipped, "no items match their topics")
        outcome.add("skipped", len(skipped))
    if work:
        _send_rows(session, ledger, snapshot.issue, work, outcome)


def _suppress(ledger: BatchLedger, row_ids: list[int], outcome: BatchOutcome) -> None:
    if row_ids:
        ledger.finish(sorted(row_ids), DeliveryStatus.suppressed,
                      "not confirmed, paused or suppressed at send time")
        outcome.add("suppressed", len(row_ids))


def _recheck(ledger: BatchLedger, remaining: list[ClaimedRow],
             outcome: BatchOutcome) -> set[int] | None:
    """Extend the lease and look again; the row ids still to send, or None to stop."""
    issue_status, rows = ledger.refresh()
    wanted = {r.id for r in remaining}
    mine = {r.id: r for r in rows if r.id in wanted}
    if issue_status != IssueStatus.sending:
        ledger.release(sorted(mine), issue_status)
        outcome.add("released", len(mine))
        log.info("issue %s is %s: handed back %d rows", ledger.issue_id, issue_status, len(mine))
        return None
    if len(mine) < len(wanted):
        log.warning("batch lost %d rows to the sweep; not sending them",
                    len(wanted) - len(mine))
    _suppress(ledger, [i for i, r in mine.items() if not r.eligible], outcome)
    return {i for i, r in mine.items() if r.eligible}


def _send_rows(session: Session, ledger: BatchLedger, issue: IssueContent,
               work: list[tuple[ClaimedRow, Composition]], outcome: BatchOutcome) -> None:
    from newsletter.message import Recipient

    half_lease = timedelta(seconds=settings.send_lease_seconds / 2)
    held = {row.id for row, _ in work}
    look_again_at = time.monotonic() + REFRESH_SECONDS
    status_at, status_after = time.monotonic() + STATUS_EVERY_SECONDS, STATUS_EVERY_MESSAGES
    lost_a_row = False
    conn: smtplib.SMTP | None = None
    try:
        for index, (row, composition) in enumerate(work):
            stopped = False
            status_after -= 1
            if status_after <= 0 or time.monotonic() >= status_at:
                stopped = ledger.issue_status() != IssueStatus.sending
                status_at = time.monotonic() + STATUS_EVERY_SECONDS
                status_after = STATUS_EVERY_MESSAGES
            if (stopped or lost_a_row or time.monotonic() >= look_again_at
                    or utcnow() >= ledger.lease_until - half_lease):
                rechecked = _recheck(ledger, [r for r, _ in work[index:] if r.id in held], outcome)
                if rechecked is None:
                    return
                held, lost_a_row = rechecked, False
                look_again_at = time.monotonic() + REFRESH_SECONDS
                status_at = time.monotonic() + STATUS_EVERY_SECONDS
                status_after = STATUS_EVERY_MESSAGES
            if row.id not in held:
                continue
            try:
                message = _factory(issue, composition).build(
                    Recipient(subscriber_id=row.subscriber_id, email=row.email, name=row.name))
            except Exception as exc:  # a template/content bug: fail the row, keep going
                log.exception("building the message for delivery %s failed", row.id)
                ledger.finish([row.id], DeliveryStatus.failed, f"could not build message: {exc}")
                outcome.add("failed")
                continue
            if conn is None:
                try:
                    conn = smtp_connect()
                except (smtplib.SMTPException, OSError, SendError) as exc:
                    _relay_down(ledger, [r for r, _ in work[index:] if r.id in held],
                                f"cannot open a session with the SMTP relay {relay_name()}: "
                                f"{describe(exc)}", outcome)
                    return
            try:
                deliver(conn, message.envelope_from, message.to, message.data)
            except (smtplib.SMTPException, OSError) as exc:
                verdict = classify(exc)
            else:
                if ledger.sent(row.id, message.message_id):
                    outcome.add("sent")
                else:
                    # The row was handed on while we sent it: the rest may be too.
                    outcome.add("lost_lease")
                    lost_a_row = True
                continue
            outcome.last_error = verdict.error
            if verdict.kind in ("disconnected", "relay"):
                # The connection is gone, or the relay refuses us whoever the recipient:
                # defer this row and everything after it.
                rest = [r for r, _ in work[index:] if r.id in held]
                if verdict.kind == "relay":
                    _relay_down(ledger, rest, verdict.error, outcome)
                else:
                    _defer(ledger, rest, verdict.error, outcome)
                    conn.close()  # no QUIT on a dead connection: it could wait a timeout
                    conn = None
                return
            if verdict.kind == "deferred":
                _defer(ledger, [row], verdict.error, outcome)
            else:
                ledger.finish([row.id], DeliveryStatus.failed, verdict.error)
                outcome.add("failed")
                if verdict.kind == "bounced":
                    _hard_bounce(session, row.email, verdict.error)
                    outcome.add("bounced")
    finally:
        if conn is not None:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()


def _relay_down(ledger: BatchLedger, rows: list[ClaimedRow], error: str,
                outcome: BatchOutcome) -> None:
    """The relay refused us (connect, HELO, STARTTLS, login, MAIL FROM): no recipient's fault.

    A wrong password or host must not fail every subscriber, so the rows wait like
    after a 4xx; only a row out of attempts fails, and its error names the relay.
    """
    outcome.last_error = error
    log.error("issue %s: %s; %d rows deferred. Check the SMTP_* settings and the relay.",
              ledger.issue_id, error, len(rows))
    _defer(ledger, rows, error, outcome)


def _defer(ledger: BatchLedger, rows: list[ClaimedRow], error: str,
           outcome: BatchOutcome) -> None:
    """4xx or a dropped connection: back to pending with a backoff, or failed when spent.

    The limit is per row (its attempts in the ledger), so it holds however many tasks
    a batch has had: duplicates, sweeps and task retries all count the same attempts.
    Every row deferred in one run gets the same next_attempt_at (the first deferral's
    backoff), so the task's one retry finds them all due instead of a trickle.
    """
    allowed = settings.send_max_retries + 1
    spent = [r.id for r in rows if r.attempts >= allowed]
    if spent:
        ledger.finish(spent, DeliveryStatus.failed,
                      f"out of retries after {allowed} attempts: {error}")
        outcome.add("failed", len(spent))
    waiting = [r for r in rows if r.attempts < allowed]
    if not waiting:
        return
    if outcome.retry_at is None:
        attempts = max(r.attempts for r in waiting)
        outcome.retry_at = utcnow() + timedelta(seconds=backoff_seconds(attempts))
    ledger.finish([r.id for r in waiting], DeliveryStatus.pending, error,
                  next_attempt_at=outcome.retry_at)
    outcome.add("deferred", len(waiting))


def _hard_bounce(session: Session, email: str, reason: str) -> None:
    """Suppress the address and mark the subscriber bounced (with an event)."""
    from newsletter.subscribers import mark_bounced

    try:
        mark_bounced(session=session, email=email, reason=reason)
        session.commit()
    except IntegrityError:  # another worker suppressed it a moment ago
        session.rollback()
