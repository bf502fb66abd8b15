"""Planning a send: one ledger row per eligible subscriber, batched by composition."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    exists,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
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
    SubscriberTopic,
    Suppression,
    Topic,
    utcnow,
)
from newsletter.scheduling import apply_local_due_times
from newsletter.settings import settings
from newsletter.subscribers import topics_by_subscriber

PLANNABLE = (IssueStatus.approved, IssueStatus.scheduled)
MAX_ISSUE_TOPICS = 62  # bits of the BIGINT mask planning groups subscribers by
# PostgreSQL memory for the planner's sorts and hashes (~150 bytes a subscriber, taken
# only as needed): 1,000,000 subscribers sort in memory instead of in temporary files.
PLAN_WORK_MEM = "384MB"
PLAN_TEMP_BUFFERS = "128MB"  # for the planner's temporary table (~50 bytes a subscriber)


class CompositionCache:
    """compose() once per distinct (topic set, only_my_topics) for one issue snapshot."""

    def __init__(self, issue: IssueContent) -> None:
        self.issue = issue
        self._cache: dict[tuple[frozenset[str], bool, tuple[str, ...]], Composition | None] = {}

    def get(self, topics: Iterable[str], only_my_topics: bool,
            learned: Iterable[str] = ()) -> Composition | None:
        """`learned`: the reader's learned interests (engagement.interests), which order
        the rest of the week; quantised there, so few distinct compositions."""
        key = (frozenset(topics), bool(only_my_topics), tuple(learned))
        if key not in self._cache:
            self._cache[key] = compose(
                self.issue, followed=key[0], only_my_topics=key[1],
                max_items=settings.digest_max_items, learned=key[2],
            )
        return self._cache[key]


def plan_send(*, session: Session, issue_id: int, replan: bool = False) -> int:
    """Move the issue to `sending` and write one ledger row per eligible subscriber.

    Eligible: confirmed, not paused, not suppressed. Rows whose composition is empty
    ("only my topics", no match) are written `skipped`. Pending rows get batches of at
    most SEND_BATCH_SIZE, each holding one composition, so a batch renders once.
    With `replan=True` an issue already sending (or paused) gets rows only for
    subscribers confirmed since; the unique (issue, subscriber) constraint keeps it at
    one row each. Returns the number of rows written. Call enqueue_batches after commit.

    Set-based: subscribers never pass through Python. One query writes each eligible
    subscriber's digest shape (see `_digest_shape`) into a temporary table, one groups
    and counts them;
    compose() runs once per group; each composition gets a range of batch numbers;
    one INSERT ... SELECT writes every row, numbering a composition's subscribers into
    its batches with a window function.
    """
    now = utcnow()
    won = changed(session,
        update(I)
        .where(I.c.id == issue_id, I.c.status.in_(PLANNABLE))
        .values(status=IssueStatus.sending, send_started_at=now, status_reason="")
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

    if session.get_bind().dialect.name == "postgresql":
        # Grouping and numbering every subscriber, and the temporary tables: in memory,
        # not in temporary files (this transaction only; temp_buffers takes effect only
        # on a connection that has not used temporary tables yet).
        session.execute(text(f"SET LOCAL work_mem = '{PLAN_WORK_MEM}'"))
        session.execute(text(f"SET LOCAL temp_buffers = '{PLAN_TEMP_BUFFERS}'"))
    content = load_issue(session=session, issue_id=issue_id)
    shape, plan_keys = _temporary_tables()
    bind = session.connection()
    for table in (shape, plan_keys):
        table.drop(bind, checkfirst=True)  # SQLite: a temp table can outlive a rollback
        table.create(bind)
    # Each eligible subscriber's shape, computed once for the grouping and the insert.
    # A fresh plan (we just moved the issue to `sending`) has no rows to step around.
    session.execute(insert(shape).from_select(
        ["id", "mask", "follows_any", "only_mine"],
        _digest_shape(session, issue_id, content, fresh=bool(won))))
    groups = session.execute(
        select(shape.c.mask, shape.c.follows_any, shape.c.only_mine, func.min(shape.c.id),
               func.count())
        .group_by(shape.c.mask, shape.c.follows_any, shape.c.only_mine)
    ).all()
    written = 0
    if groups:
        first_batch = (session.execute(
            select(func.max(D.c.batch)).where(D.c.issue_id == issue_id)
        ).scalar() or 0) + 1
        session.execute(insert(plan_keys), _group_keys(session, content, groups, first_batch))
        written = _insert_rows(session, issue_id, shape, plan_keys, now, fresh=bool(won))
    # Not in a `finally`: after an error PostgreSQL's rollback drops them anyway.
    for table in (shape, plan_keys):
        table.drop(bind)
    # "09:00 in each reader's time zone": every row gets its reader's due time.
    apply_local_due_times(session=session, issue_id=issue_id, now=now)
    return written


def _digest_shape(session: Session, issue_id: int, content: IssueContent, *,
                  fresh: bool) -> Any:
    """Eligible subscribers not yet planned, with what their digest depends on.

    compose() looks at followed topics only through those the issue's items carry (which
    items match, and their reasons) and through whether any topic is followed at all
    ("Also this week" vs "From this week's roundup"). So each subscriber is reduced to a
    bit mask over the issue's topics, `follows_any` and `only_my_topics`: a handful of
    groups however many subscribers. A mask is an integer sum of one bit per topic: exact,
    with no string aggregation order to rely on.
    """
    issue_slugs = sorted({t for item in content.items for t in item.topics})
    ids = dict(session.execute(
        select(col(Topic.slug), col(Topic.id)).where(col(Topic.slug).in_(issue_slugs))
    ).all()) if issue_slugs else {}
    bits = [(ids[slug], 1 << n) for n, slug in enumerate(issue_slugs) if slug in ids]
    if len(bits) > MAX_ISSUE_TOPICS:
        raise SendError(f"an issue can carry at most {MAX_ISSUE_TOPICS} distinct topics "
                        f"to be planned; this one carries {len(bits)}")
    st = SubscriberTopic.__table__  # type: ignore[attr-defined]
    bit = case(*[(st.c.topic_id == tid, literal(value, BigInteger)) for tid, value in bits],
               else_=literal(0, BigInteger)) if bits else literal(0, BigInteger)
    followed = (
        select(st.c.subscriber_id, func.sum(bit).label("mask"))
        .group_by(st.c.subscriber_id)
        .subquery("followed")
    )
    suppressed = select(col(Suppression.email)).where(col(Suppression.email) == S.c.email)
    wanted = [S.c.status == SubscriberStatus.confirmed, S.c.paused.is_(False), ~exists(suppressed)]
    if not fresh:
        wanted.append(~exists(
            select(D.c.id).where(D.c.issue_id == issue_id, D.c.subscriber_id == S.c.id)))
    return (
        select(
            S.c.id,
            func.coalesce(followed.c.mask, 0).label("mask"),
            followed.c.subscriber_id.is_not(None).label("follows_any"),
            S.c.only_my_topics.label("only_mine"),
        )
        .select_from(S.outerjoin(followed, followed.c.subscriber_id == S.c.id))
        .where(*wanted)
    )


def _group_keys(session: Session, content: IssueContent, groups: Sequence[Any],
                first_batch: int) -> list[dict[str, Any]]:
    """compose() once per group, with the real topics of the group's first subscriber;
    then each composition's first position in one numbering of all rows (key order)."""
    topics = topics_by_subscriber(session=session, subscriber_ids=[g[3] for g in groups])
    compositions = CompositionCache(content)
    keys = []
    per_key: dict[str, int] = {}
    for mask, follows_any, only_mine, first, count in groups:
        composition = compositions.get(topics.get(first, ()), only_mine)
        key = "" if composition is None else composition.key
        keys.append({"mask": int(mask), "follows_any": bool(follows_any),
                     "only_mine": bool(only_mine), "composition_key": key,
                     "skip": composition is None})
        if composition is not None:
            per_key[key] = per_key.get(key, 0) + int(count)
    # Batches are filled to SEND_BATCH_SIZE with whole runs of one composition after
    # another: a worker keeps up to SMTP_MAX_CONNECTIONS transactions of a batch in
    # flight, so a batch of 12 rare-composition rows would leave most of them idle.
    # Each process renders a composition once (batch.py's cache), wherever it falls.
    starts: dict[str, int] = {}
    offset = first_batch * settings.send_batch_size
    for key in sorted(per_key):
        starts[key] = offset
        offset += per_key[key]
    for row in keys:  # skipped rows: batch 0
        row["batch_first"] = starts.get(str(row["composition_key"]), 0)
    return keys


def _temporary_tables() -> tuple[Table, Table]:
    """Per-connection temporary tables: each subscriber's shape; group -> composition."""
    metadata = MetaData()
    shape = Table(
        "plan_shape", metadata,
        Column("id", Integer, nullable=False),
        Column("mask", BigInteger, nullable=False),
        Column("follows_any", Boolean, nullable=False),
        Column("only_mine", Boolean, nullable=False),
        prefixes=["TEMPORARY"],
    )
    plan_keys = Table(
        "plan_key", metadata,
        Column("mask", BigInteger, nullable=False),
        Column("follows_any", Boolean, nullable=False),
        Column("only_mine", Boolean, nullable=False),
        Column("composition_key", String(64), nullable=False),
        Column("skip", Boolean, nullable=False),
        Column("batch_first", Integer, nullable=False),
        prefixes=["TEMPORARY"],
    )
    return shape, plan_keys


def _insert_rows(session: Session, issue_id: int, shape: Any, plan_keys: Table,
                 now: datetime, *, fresh: bool) -> int:
    """One INSERT ... SELECT for every row.

    Rows are numbered composition by composition (id order within one) and cut into
    batches of SEND_BATCH_SIZE: batches are full, and a composition's rows are contiguous.

    A re-plan may race another (or the confirmations it adds): ON CONFLICT DO NOTHING
    keeps it at one row each. A fresh plan cannot: only the caller that moved the issue
    to `sending` writes it, so it skips the conflict checks.
    """
    position = func.row_number().over(
        partition_by=plan_keys.c.composition_key, order_by=shape.c.id)  # within its composition
    source = (
        select(
            literal(issue_id).label("issue_id"),
            shape.c.id.label("subscriber_id"),
            case((plan_keys.c.skip, literal(DeliveryStatus.skipped.value)),
                 else_=literal(DeliveryStatus.pending.value)).label("status"),
            plan_keys.c.composition_key,
            # `/` on two integers: integer division on both engines.
            case((plan_keys.c.skip, 0), else_=(plan_keys.c.batch_first + position - 1).op(
                "/", precedence=8)(settings.send_batch_size).self_group()).label("batch"),
            literal(0).label("attempts"),
            literal("").label("claim_token"),
            literal("").label("message_id"),
            literal("").label("error"),
            literal(now, type_=D.c.created_at.type).label("created_at"),
            literal(now, type_=D.c.updated_at.type).label("updated_at"),
        )
        .select_from(shape.join(plan_keys, and_(
            plan_keys.c.mask == shape.c.mask,
            plan_keys.c.follows_any == shape.c.follows_any,
            plan_keys.c.only_mine == shape.c.only_mine,
        )))
        .where(literal(True))  # SQLite: INSERT ... SELECT ... ON CONFLICT needs a WHERE
    )
    names = ["issue_id", "subscriber_id", "status", "composition_key", "batch", "attempts",
             "claim_token", "message_id", "error", "created_at", "updated_at"]
    stmt: Any = insert(D).from_select(names, source)
    if not fresh:
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import (  # type: ignore[assignment]
                insert as dialect_insert,
            )
        stmt = dialect_insert(D).from_select(names, source).on_conflict_do_nothing(
            index_elements=["issue_id", "subscriber_id"])
    # SQLAlchemy keeps an INSERT's row count only when asked to.
    return changed(session, stmt.execution_options(preserve_rowcount=True))


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
