"""Sending an issue exactly once: planning, the ledger, claiming, SMTP batches, the sweep.

The `delivery` table is the source of truth, never the broker. Every state change is a
conditional UPDATE whose row count says whether we won:

    plan_send      issue approved/scheduled -> sending; one `pending` row per subscriber
    run_batch      pending -> sending (claim_token + lease) -> sent | failed | suppressed
                   | skipped, or back to pending with a backoff (4xx, dropped connection)
    sweep          sending rows whose lease expired -> pending, and their batch re-enqueued

A row is marked `sent` right after the server's 250, in its own tiny commit, so a worker
killed at any point loses at most the one message in flight between 250 and commit.
"""

from __future__ import annotations

import logging
import re
import smtplib
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, event, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from newsletter.composer import Composition, IssueContent, compose, load_issue
from newsletter.models import (
    Delivery,
    DeliveryStatus,
    Issue,
    IssueStatus,
    Subscriber,
    SubscriberStatus,
    SubscriberTopic,
    Suppression,
    Topic,
    utcnow,
)
from newsletter.settings import settings

if TYPE_CHECKING:
    from newsletter.message import MessageFactory, OutgoingMessage

log = logging.getLogger(__name__)

D = Delivery.__table__  # type: ignore[attr-defined]
I = Issue.__table__  # type: ignore[attr-defined]  # noqa: E741
S = Subscriber.__table__  # type: ignore[attr-defined]

OPEN = (DeliveryStatus.pending, DeliveryStatus.sending)
PLANNABLE = (IssueStatus.approved, IssueStatus.scheduled)
MAX_RETRY_DELAY = 600.0  # seconds: no ETA longer than this, or Redis redelivers it
ERROR_LIMIT = 1000


class SendError(RuntimeError):
    """The issue is not in a state that allows this operation."""


class AlreadyPlanned(SendError):
    """plan_send found the issue already sending/sent: nothing was planned twice."""


def backoff_seconds(attempts: int) -> float:
    """4xx backoff: SEND_RETRY_BASE_SECONDS, doubling per attempt, capped."""
    return min(MAX_RETRY_DELAY, settings.send_retry_base_seconds * 2 ** max(0, attempts - 1))


# --- enqueueing only after commit ---------------------------------------------------

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
    """Send `send_batch(issue_id, batch)` tasks to the broker at settings.redis_url."""
    if not jobs:
        return
    from workers.celery_app import producer
    from workers.tasks import send_batch

    with producer() as prod:
        for issue_id, batch in jobs:
            send_batch.apply_async((issue_id, batch), producer=prod)


def pending_batches(*, session: Session, issue_id: int) -> list[int]:
    rows = session.execute(
        select(D.c.batch).distinct()
        .where(D.c.issue_id == issue_id, D.c.status == DeliveryStatus.pending)
        .order_by(D.c.batch)
    ).scalars()
    return list(rows)


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


# --- planning -------------------------------------------------------------------------


def _followed_topics(
    session: Session, subscriber_ids: Sequence[int] | None
) -> dict[int, list[str]]:
    """subscriber id -> followed topic slugs, in one query (all, or the given ids)."""
    q = select(SubscriberTopic.subscriber_id, Topic.slug).join(
        Topic, col(Topic.id) == col(SubscriberTopic.topic_id)
    )
    if subscriber_ids is not None:
        q = q.where(col(SubscriberTopic.subscriber_id).in_(subscriber_ids))
    topics: dict[int, list[str]] = {}
    for sid, slug in session.execute(q):
        topics.setdefault(sid, []).append(slug)
    return topics


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
    won = session.execute(
        update(I)
        .where(I.c.id == issue_id, I.c.status.in_(PLANNABLE))
        .values(status=IssueStatus.sending, send_started_at=now)
    ).rowcount
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
    suppressed = select(Suppression.email).where(col(Suppression.email) == S.c.email)
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
    topics = _followed_topics(session, wanted)
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


# --- state -----------------------------------------------------------------------------


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
    return bool(session.execute(
        update(I)
        .where(I.c.id == issue_id, I.c.status == IssueStatus.sending, ~exists(open_rows))
        .values(sent_at=utcnow(), status=IssueStatus.sent)
    ).rowcount)


def pause_send(*, session: Session, issue_id: int) -> bool:
    """Stop claiming new batches (a batch already claimed finishes)."""
    return bool(session.execute(
        update(I).where(I.c.id == issue_id, I.c.status == IssueStatus.sending)
        .values(status=IssueStatus.paused)
    ).rowcount)


def resume_send(*, session: Session, issue_id: int) -> bool:
    """paused -> sending; batches with pending rows are re-enqueued after commit."""
    if not session.execute(
        update(I).where(I.c.id == issue_id, I.c.status == IssueStatus.paused)
        .values(status=IssueStatus.sending)
    ).rowcount:
        return False
    enqueue_after_commit(session, issue_id, pending_batches(session=session, issue_id=issue_id))
    finish_if_done(session=session, issue_id=issue_id)
    return True


def cancel_send(*, session: Session, issue_id: int) -> int:
    """Cancel the issue; pending rows become `cancelled`. Returns rows cancelled."""
    won = session.execute(
        update(I)
        .where(I.c.id == issue_id, I.c.status.in_(
            (IssueStatus.approved, IssueStatus.scheduled, IssueStatus.sending, IssueStatus.paused)))
        .values(status=IssueStatus.cancelled)
    ).rowcount
    if not won:
        issue = session.get(Issue, issue_id)
        if issue is None:
            raise LookupError(f"no issue with id {issue_id}")
        raise SendError(f"issue {issue_id} is {issue.status}; it cannot be cancelled")
    return int(session.execute(
        update(D).where(D.c.issue_id == issue_id, D.c.status == DeliveryStatus.pending)
        .values(status=DeliveryStatus.cancelled, updated_at=utcnow(), error="cancelled")
    ).rowcount)


def sweep_expired_leases(*, session: Session, now: datetime | None = None) -> int:
    """Expired leases -> pending (batches re-enqueued after commit); finish done issues.

    A worker SIGKILLed mid-batch leaves its rows `sending`; once the lease passes they
    are claimable again. Rows marked `sent` are never touched, so nobody gets two.
    Also re-enqueues pending rows nobody has touched for a whole lease (a task lost
    with a dead worker's prefetch) and finishes issues with no open rows.
    """
    now = now or utcnow()
    expired = and_(D.c.status == DeliveryStatus.sending, D.c.lease_until < now)
    jobs = _batches_where(session, expired)
    returned = session.execute(
        update(D).where(expired).values(
            status=DeliveryStatus.pending, claim_token="", lease_until=None, updated_at=now,
            error="lease expired; returned to pending",
        )
    ).rowcount
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


def _batches_where(session: Session, condition: Any) -> set[tuple[int, int]]:
    query = select(D.c.issue_id, D.c.batch).distinct().where(condition)
    return {(int(i), int(b)) for i, b in session.execute(query)}


def fail_deferred(*, session: Session, issue_id: int, batch: int, error: str) -> int:
    """Out of retries: this batch's pending rows that were tried at least once -> failed."""
    n = session.execute(
        update(D).where(
            D.c.issue_id == issue_id, D.c.batch == batch,
            D.c.status == DeliveryStatus.pending, D.c.attempts > 0,
        ).values(status=DeliveryStatus.failed, error=error[:ERROR_LIMIT], updated_at=utcnow())
    ).rowcount
    finish_if_done(session=session, issue_id=issue_id)
    return int(n)


# --- SMTP -------------------------------------------------------------------------------


def smtp_connect() -> smtplib.SMTP:
    """One authenticated connection to SMTP_HOST (reused for a whole batch)."""
    if not settings.smtp_host:
        raise SendError(
            "SMTP_HOST is not set (the CLI starts a local mail catcher when it is empty)")
    conn = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout)
    try:
        if settings.smtp_starttls:
            conn.starttls()
        if settings.smtp_username:
            conn.login(settings.smtp_username, settings.smtp_password)
    except BaseException:
        conn.close()
        raise
    return conn


def send_one(message: OutgoingMessage) -> None:
    """Send one message synchronously (test sends, transactional email). Raises on failure."""
    conn = smtp_connect()
    try:
        refused = conn.sendmail(message.envelope_from, [message.to], message.data)
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)
    finally:
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()


_HARD_BOUNCE_TEXT = re.compile(
    r"no such (user|mailbox|recipient)|user unknown|unknown user|mailbox (not found|unavailable)"
    r"|does not exist|invalid (recipient|mailbox|address)|recipient address rejected",
    re.IGNORECASE,
)
_HARD_BOUNCE_STATUS = re.compile(r"\b5\.1\.(?:[0-9]|10)\b")


def is_hard_bounce(code: int, text: str) -> bool:
    """A 5xx saying the address does not exist (5.1.x, or the usual wording)."""
    if not 500 <= code < 600:
        return False
    return bool(_HARD_BOUNCE_STATUS.search(text) or _HARD_BOUNCE_TEXT.search(text))


def deliver(conn: smtplib.SMTP, sender: str, rcpt: str, data: bytes) -> None:
    """One message to one recipient; raises smtplib's exceptions like `sendmail`.

    When the server offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go out in one
    write, saving two round trips per message, and dot-stuffing is a bytes.replace
    instead of smtplib's regex: this is the inner loop of every send.
    """
    conn.ehlo_or_helo_if_needed()
    if not (conn.has_extn("pipelining") and sender.isascii() and rcpt.isascii()
            and data.count(b"\n") == data.count(b"\r\n")):
        refused = conn.sendmail(sender, [rcpt], data)
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)
        return
    if "\r" in sender + rcpt or "\n" in sender + rcpt:
        raise ValueError("an SMTP address contains a line break")
    conn.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode("ascii"))
    mail_reply, rcpt_reply, data_reply = conn.getreply(), conn.getreply(), conn.getreply()
    if data_reply[0] == 354 and (mail_reply[0] != 250 or rcpt_reply[0] not in (250, 251)):
        conn.send(b".\r\n")  # the server wants a body we must not send: end it empty
        conn.getreply()
    if mail_reply[0] != 250:
        conn.rset()
        raise smtplib.SMTPSenderRefused(mail_reply[0], mail_reply[1], sender)
    if rcpt_reply[0] not in (250, 251):
        conn.rset()
        raise smtplib.SMTPRecipientsRefused({rcpt: rcpt_reply})
    if data_reply[0] != 354:
        conn.rset()
        raise smtplib.SMTPDataError(*data_reply)
    body = data.replace(b"\r\n.", b"\r\n..")
    if body.startswith(b"."):
        body = b"." + body
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    conn.send(body + b".\r\n")
    code, reply = conn.getreply()
    if code != 250:
        raise smtplib.SMTPDataError(code, reply)


def _reply_text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


@dataclass
class SendVerdict:
    """How one recipient's attempt ended."""

    kind: str  # sent | deferred | failed | bounced | disconnected
    error: str = ""


def classify(exc: BaseException) -> SendVerdict:
    """Map an smtplib/socket failure to what the ledger should do."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()), (0, b""))
        reply = f"{code} {_reply_text(text)}"
        if 400 <= code < 500:
            return SendVerdict("deferred", reply)
        return SendVerdict("bounced" if is_hard_bounce(code, reply) else "failed", reply)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return SendVerdict("disconnected", f"connection lost: {exc}")
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = f"{exc.smtp_code} {_reply_text(exc.smtp_error)}"
        if 400 <= exc.smtp_code < 500 or exc.smtp_code < 200:
            return SendVerdict("deferred", reply)
        if isinstance(exc, smtplib.SMTPSenderRefused):
            return SendVerdict("failed", reply)
        return SendVerdict("bounced" if is_hard_bounce(exc.smtp_code, reply) else "failed", reply)
    if isinstance(exc, OSError | smtplib.SMTPException):
        return SendVerdict("disconnected", f"{type(exc).__name__}: {exc}")
    raise exc


# --- the batch -------------------------------------------------------------------------


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


_issues = _LRU(4)  # (issue_id, version) -> (IssueContent, CompositionCache)
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


@dataclass
class BatchOutcome:
    """What run_batch did; `retry_in` is set when rows were deferred."""

    counts: dict[str, int] = field(default_factory=dict)
    retry_in: float | None = None
    last_error: str = ""

    def add(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n


@dataclass
class _Claimed:
    id: int
    subscriber_id: int
    attempts: int
    email: str
    name: str
    status: str
    paused: bool
    only_my_topics: bool
    suppressed: bool


class _Ledger:
    """The per-row writes of one claimed batch, each guarded by the claim token.

    `sent` is the hot path (one per message, committed at once), so it runs a
    prepared UPDATE on its own raw DBAPI connection instead of going through the ORM.
    """

    def __init__(self, session: Session, token: str, lease_until: datetime) -> None:
        self.session = session
        self.token = token
        self.lease_until = lease_until
        engine = session.get_bind()
        dialect = engine.dialect
        self._raw = engine.raw_connection()  # type: ignore[union-attr]
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self._mark_sent = (
            f"UPDATE delivery SET status={mark}, message_id={mark}, sent_at={mark}, "  # noqa: S608
            f"updated_at={mark}, lease_until=NULL, error='' "
            f"WHERE id={mark} AND claim_token={mark}"
        )
        self._when = D.c.sent_at.type.bind_processor(dialect) or (lambda value: value)
        if dialect.name == "postgresql":
            # One commit per sent row; waiting for the WAL flush on each would cap
            # throughput. A crash may lose the last marks (those few recipients could
            # get a duplicate): the same window as SQLite's synchronous=NORMAL.
            cur = self._raw.cursor()
            cur.execute("SET synchronous_commit = off")
            cur.close()
            self._raw.commit()

    def close(self) -> None:
        self._raw.close()

    def sent(self, row_id: int, message_id: str) -> bool:
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

    def finish(self, row_ids: Sequence[int], status: str, error: str = "",
               next_attempt_at: datetime | None = None) -> None:
        if not row_ids:
            return
        values: dict[str, Any] = {"status": status, "error": error[:ERROR_LIMIT],
                                  "updated_at": utcnow(), "lease_until": None}
        if status == DeliveryStatus.pending:
            values.update(claim_token="", next_attempt_at=next_attempt_at)
        self.session.execute(
            update(D).where(D.c.id.in_(row_ids), D.c.claim_token == self.token,
                            D.c.status == DeliveryStatus.sending).values(**values)
        )
        self.session.commit()

    def extend(self, until: datetime) -> None:
        self.session.execute(
            update(D).where(D.c.claim_token == self.token, D.c.status == DeliveryStatus.sending)
            .values(lease_until=until)
        )
        self.session.commit()


def claim(*, session: Session, issue_id: int, batch: int,
          now: datetime | None = None) -> tuple[str, datetime]:
    """Claim the batch's due pending rows with ONE conditional UPDATE.

    Returns the claim token and the lease's end.
    """
    now = now or utcnow()
    token = str(uuid.uuid4())
    lease_until = now + timedelta(seconds=settings.send_lease_seconds)
    session.execute(
        update(D)
        .where(
            D.c.issue_id == issue_id, D.c.batch == batch, D.c.status == DeliveryStatus.pending,
            or_(D.c.next_attempt_at.is_(None), D.c.next_attempt_at <= now),
        )
        .values(status=DeliveryStatus.sending, claim_token=token, attempts=D.c.attempts + 1,
                lease_until=lease_until, updated_at=now)
    )
    session.commit()
    return token, lease_until


def _load_claimed(session: Session, token: str) -> list[_Claimed]:
    sup = exists(select(Suppression.email).where(col(Suppression.email) == S.c.email))
    rows = session.execute(
        select(D.c.id, D.c.subscriber_id, D.c.attempts, S.c.email, S.c.name, S.c.status,
               S.c.paused, S.c.only_my_topics, sup)
        .join(S, S.c.id == D.c.subscriber_id)
        .where(D.c.claim_token == token, D.c.status == DeliveryStatus.sending)
        .order_by(D.c.composition_key, D.c.id)
    ).all()
    return [_Claimed(*r) for r in rows]


def _next_due(session: Session, issue_id: int, batch: int) -> datetime | None:
    return session.execute(
        select(func.min(D.c.next_attempt_at)).where(
            D.c.issue_id == issue_id, D.c.batch == batch, D.c.status == DeliveryStatus.pending)
    ).scalar()


def run_batch(*, session: Session, issue_id: int, batch: int) -> BatchOutcome:
    """Claim, re-check, render, send over one SMTP connection, and record each row."""
    outcome = BatchOutcome()
    issue = session.execute(select(I.c.status, I.c.updated_at).where(I.c.id == issue_id)).first()
    if issue is None or issue.status != IssueStatus.sending:
        outcome.add("not_sending")
        return outcome
    version = issue.updated_at.isoformat()

    token, lease_until = claim(session=session, issue_id=issue_id, batch=batch)
    claimed = _load_claimed(session, token)
    if not claimed:
        _schedule_retry_if_waiting(session, issue_id, batch, outcome)
        finish_if_done(session=session, issue_id=issue_id)
        session.commit()
        return outcome
    ledger = _Ledger(session, token, lease_until)
    try:
        _run_claimed(session, ledger, issue_id, version, claimed, outcome)
    finally:
        ledger.close()
    _schedule_retry_if_waiting(session, issue_id, batch, outcome)
    finish_if_done(session=session, issue_id=issue_id)
    session.commit()
    return outcome


def _run_claimed(session: Session, ledger: _Ledger, issue_id: int, version: str,
                 claimed: list[_Claimed], outcome: BatchOutcome) -> None:
    lease_until = ledger.lease_until

    # Re-check every subscriber now: they may have left since the plan.
    gone = {c.id for c in claimed
            if c.status != SubscriberStatus.confirmed or c.paused or c.suppressed}
    if gone:
        ledger.finish(sorted(gone), DeliveryStatus.suppressed,
                      "not confirmed, paused or suppressed at send time")
        outcome.add("suppressed", len(gone))
    live = [c for c in claimed if c.id not in gone]
    snapshot = _issue_snapshot(session, issue_id, version)
    topics = _followed_topics(session, [c.subscriber_id for c in live])
    work: list[tuple[_Claimed, Composition]] = []
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
        _send_rows(session, ledger, snapshot.issue, work, lease_until, outcome)


def _schedule_retry_if_waiting(session: Session, issue_id: int, batch: int,
                               outcome: BatchOutcome) -> None:
    due = _next_due(session, issue_id, batch)
    if due is not None:
        outcome.retry_in = min(MAX_RETRY_DELAY, max(0.1, (due - utcnow()).total_seconds()))


def _send_rows(session: Session, ledger: _Ledger, issue: IssueContent,
               work: list[tuple[_Claimed, Composition]], lease_until: datetime,
               outcome: BatchOutcome) -> None:
    from newsletter.message import Recipient

    lease = timedelta(seconds=settings.send_lease_seconds)
    conn: smtplib.SMTP | None = None
    try:
        for index, (row, composition) in enumerate(work):
            now = utcnow()
            if now >= lease_until - lease / 10:
                # Never send on an expired lease: the sweep may have handed it on.
                if now >= lease_until:
                    log.warning("lease of batch expired mid-batch; leaving the rest to the sweep")
                    return
                lease_until = now + lease
                ledger.extend(lease_until)
            try:
                message = _factory(issue, composition).build(
                    Recipient(subscriber_id=row.subscriber_id, email=row.email, name=row.name))
            except Exception as exc:  # a template/content bug: fail the row, keep going
                log.exception("building the message for delivery %s failed", row.id)
                ledger.finish([row.id], DeliveryStatus.failed, f"could not build message: {exc}")
                outcome.add("failed")
                continue
            try:
                if conn is None:
                    conn = smtp_connect()
                deliver(conn, message.envelope_from, message.to, message.data)
            except (smtplib.SMTPException, OSError) as exc:
                verdict = classify(exc)
            else:
                ledger.sent(row.id, message.message_id)
                outcome.add("sent")
                continue
            outcome.last_error = verdict.error
            if verdict.kind == "disconnected":
                # The connection is gone: defer this row and everything after it.
                rest = [r.id for r, _ in work[index:]]
                _defer(ledger, rest, row.attempts, verdict.error, outcome)
                conn = None
                return
            if verdict.kind == "deferred":
                _defer(ledger, [row.id], row.attempts, verdict.error, outcome)
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


def _defer(ledger: _Ledger, row_ids: list[int], attempts: int, error: str,
           outcome: BatchOutcome) -> None:
    ledger.finish(row_ids, DeliveryStatus.pending, error,
                  next_attempt_at=utcnow() + timedelta(seconds=backoff_seconds(attempts)))
    outcome.add("deferred", len(row_ids))


def _hard_bounce(session: Session, email: str, reason: str) -> None:
    """Suppress the address and mark the subscriber bounced (with an event)."""
    from newsletter.subscribers import mark_bounced

    try:
        mark_bounced(session=session, email=email, reason=reason)
        session.commit()
    except IntegrityError:  # another worker suppressed it a moment ago
        session.rollback()
