"""Planning a send: one ledger row per eligible subscriber, batched by composition."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import exists, func, insert, select, update
from sqlmodel import Session, col

from newsletter.composer import Composition, IssueContent, compose, load_issue
from newsletter.delivery.enqueue import enqueue_batches
from newsletter.delivery.ledger import (
    AlreadyPlanned,
    D,
    I,
    S,
    SendError,
    changed,
    finish_if_done,
)
from newsletter.models import (
    DeliveryStatus,
    Issue,
    IssueStatus,
    SubscriberStatus,
    Suppression,
    utcnow,
)
from newsletter.settings import settings
from newsletter.subscribers import topics_by_subscriber

PLANNABLE = (IssueStatus.approved, IssueStatus.scheduled)


class CompositionCache:
    """compose() once per distinct (topic set, only_my_topics) for one issue snapshot."""

    def __init__(self, issue: IssueContent) -> None:
        self.issue = issue
        self._cache: dict[tuple[frozenset[str], bool], Composition | None] = {}

    def get(self, topics: Iterable[str], only_my_topics: bool) -> Composition | None:
        key = (frozenset(topics), bool(only_my_topics))
        if key not in self._cache:
            self._cache[key] = compose(
                self.issue, followed=key[0], only_my_topics=key[1],
                max_items=settings.digest_max_items,
            )
        return self._cache[key]


def plan_send(*, session: Session, issue_id: int, replan: bool = False) -> int:
    """Move the issue to `sending` and write one ledger row per eligible subscriber.

    Eligible: confirmed, not paused, not suppressed. Rows whose composition is empty
    ("only my topics", no match) are written `skipped`. Pending rows get batches of
    SEND_BATCH_SIZE ordered by composition key, so a batch needs few renders.
    With `replan=True` an issue already sending (or paused) gets rows only for
    subscribers confirmed since; the unique (issue, subscriber) constraint keeps it at
    one row each. Returns the number of rows written. Call enqueue_batches after commit.
    """
    now = utcnow()
    won = changed(session,
        update(I)
        .where(I.c.id == issue_id, I.c.status.in_(PLANNABLE))
        .values(status=IssueStatus.sending, send_started_at=now)
    )
    if not won:
        issue = session.get(Issue, issue_id)
        if issue is None:
            raise LookupError(f"no issue with id {issue_id}")
        session.refresh(issue)
        if not (replan and issue.status in (IssueStatus.sending, IssueStatus.paused)):
            if issue.status in (IssueStatus.sending, IssueStatus.paused, IssueStatus.sent):
                raise AlreadyPlanned(
                    f"issue {issue_id} is already {issue.status}; not planned again")
            raise SendError(
                f"issue {issue_id} is {issue.status}; approve it before sending "
                "(`newsletter approve ISSUE` or `newsletter send ISSUE --approve`)"
            )

    already = select(D.c.subscriber_id).where(D.c.issue_id == issue_id)
    suppressed = select(col(Suppression.email)).where(col(Suppression.email) == S.c.email)
    subscribers = session.execute(
        select(S.c.id, S.c.only_my_topics)
        .where(
            S.c.status == SubscriberStatus.confirmed,
            S.c.paused.is_(False),
            ~exists(suppressed),
            S.c.id.not_in(already),
        )
        .order_by(S.c.id)
    ).all()
    if not subscribers:
        return 0
    # Many subscribers: one scan of the whole table beats a huge IN list.
    wanted = None if len(subscribers) > 500 else [s.id for s in subscribers]
    topics = topics_by_subscriber(session=session, subscriber_ids=wanted)
    compositions = CompositionCache(load_issue(session=session, issue_id=issue_id))

    pending: list[tuple[str, int]] = []
    skipped: list[int] = []
    for sid, only_mine in subscribers:
        composition = compositions.get(topics.get(sid, ()), only_mine)
        if composition is None:
            skipped.append(sid)
        else:
            pending.append((composition.key, sid))
    pending.sort()

    first_batch = (session.execute(
        select(func.max(D.c.batch)).where(D.c.issue_id == issue_id)
    ).scalar() or 0) + 1
    size = settings.send_batch_size
    base = {"issue_id": issue_id, "attempts": 0, "claim_token": "", "message_id": "",
            "error": "", "created_at": now, "updated_at": now}
    rows: list[dict[str, Any]] = [
        {**base, "subscriber_id": sid, "status": DeliveryStatus.pending, "composition_key": key,
         "batch": first_batch + index // size}
        for index, (key, sid) in enumerate(pending)
    ]
    rows += [
        {**base, "subscriber_id": sid, "status": DeliveryStatus.skipped, "composition_key": "",
         "batch": 0}
        for sid in skipped
    ]
    _insert_ignoring_duplicates(session, rows)
    return len(rows)


def _insert_ignoring_duplicates(session: Session, rows: list[dict[str, Any]]) -> None:
    """Bulk insert; a row that already exists for (issue, subscriber) is left alone."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        session.execute(insert(D), rows)
        return
    stmt = dialect_insert(D).on_conflict_do_nothing(index_elements=["issue_id", "subscriber_id"])
    for start in range(0, len(rows), 5000):
        session.execute(stmt, rows[start : start + 5000])


def start_send(*, issue_id: int, approve: bool = False) -> int:
    """Plan in its own transaction, then enqueue: what `newsletter send` does."""
    from newsletter import db

    with db.session_scope() as session:
        if approve:
            issue = session.get(Issue, issue_id)
            if issue is None:
                raise LookupError(f"no issue with id {issue_id}")
            if issue.status == IssueStatus.draft:
                from newsletter.editorial import approve_issue

                approve_issue(session=session, issue_id=issue_id)
        planned = plan_send(session=session, issue_id=issue_id)
        finish_if_done(session=session, issue_id=issue_id)
    enqueue_batches(issue_id)
    return planned
