"""Delivery at scale: set-based planning, the sweep's index, retrying failed rows,
pause and cancel that are complete when they return, the sweep after Redis lost its
queue, and two worker processes sharing one send.

The worker tests run real Celery worker subprocesses on a private Redis and the test
SMTP server; the planning and sweep tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select, text, update
from sqlmodel import Session

from newsletter import db, delivery, queue
from newsletter.cli.local.services import (
    free_port,
    redis_server_binary,
    settings_env,
    worker_process,
)
from newsletter.composer import compose, load_issue
from newsletter.delivery.control import expired_leases
from newsletter.models import Delivery, DeliveryStatus, Issue, IssueStatus, Subscriber, utcnow
from newsletter.settings import settings
from newsletter.subscribers import topics_by_subscriber
from tests.fixtures.mail import SMTPTestServer
from tests.fixtures.services import TEST_WORKER_ENV, wait_until

ITEMS = [
    {"headline": "Payments grow fast", "topics": ["fintech"]},
    {"headline": "Ports reopen", "topics": ["logistics", "fintech"]},
    {"headline": "Pinned note", "pinned": True},
    "A general story",
]


@pytest.fixture
def approved_issue(make_issue: Callable[..., Issue]) -> Issue:
    return make_issue(items=ITEMS, status=IssueStatus.approved)


def ledger(issue_id: int) -> list[Delivery]:
    with Session(db.get_engine()) as s:
        return list(s.scalars(
            select(Delivery).where(Delivery.issue_id == issue_id).order_by(Delivery.id)))


def counts(issue_id: int) -> dict[str, int]:
    with db.session_scope() as s:
        return delivery.status_counts(session=s, issue_id=issue_id)


def done(issue_id: int) -> bool:
    c = counts(issue_id)
    return not c["pending"] and not c["sending"]


def plan(session: Session, issue_id: int) -> int:
    n = delivery.plan_send(session=session, issue_id=issue_id)
    session.commit()
    return n


# --- planning, set-based ----------------------------------------------------------------


def test_planned_keys_are_what_compose_gives_each_subscriber(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
) -> None:
    choices: list[tuple[list[str], bool]] = [
        ([], False), ([], True), (["fintech"], False), (["fintech"], True),
        (["logistics"], False), (["logistics", "fintech"], False), (["travel"], False),
        (["travel"], True), (["travel", "fintech"], True), (["travel", "logistics"], False),
    ]
    subs = [make_subscriber(topics=t, only_my_topics=o) for t, o in choices for _ in range(2)]

    assert plan(session, approved_issue.id) == len(subs)

    content = load_issue(session=session, issue_id=approved_issue.id)
    topics = topics_by_subscriber(session=session)
    by_sub = {r.subscriber_id: r for r in ledger(approved_issue.id)}
    for sub in subs:
        expected = compose(content, followed=topics.get(sub.id, ()),
                           only_my_topics=sub.only_my_topics,
                           max_items=settings.digest_max_items)
        row = by_sub[sub.id]
        if expected is None:
            assert (row.status, row.composition_key, row.batch) == ("skipped", "", 0)
        else:
            assert (row.status, row.composition_key) == ("pending", expected.key)


def test_batches_are_full_and_each_composition_is_one_run_of_rows(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "send_batch_size", 3)
    for topics in (["fintech"], ["logistics"], [], ["fintech"], ["logistics"], [], ["fintech"]):
        make_subscriber(topics=topics)

    plan(session, approved_issue.id)

    rows = ledger(approved_issue.id)
    sizes = Counter(r.batch for r in rows)
    assert sorted(sizes) == [1, 2, 3] and sorted(sizes.values()) == [1, 3, 3]  # full batches
    # Rows of one composition sit together: it spans consecutive batches only.
    for key in {r.composition_key for r in rows}:
        spanned = sorted({r.batch for r in rows if r.composition_key == key})
        assert spanned == list(range(spanned[0], spanned[-1] + 1)), (key, spanned)


def test_a_large_composition_is_cut_into_batches_of_at_most_the_batch_size(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "send_batch_size", 3)
    for _ in range(10):
        make_subscriber(topics=["fintech"])

    plan(session, approved_issue.id)

    sizes = Counter(r.batch for r in ledger(approved_issue.id))
    assert sorted(sizes) == [1, 2, 3, 4]
    assert sorted(sizes.values()) == [1, 3, 3, 3]


def test_an_issue_with_many_topics_is_planned_with_wide_masks(
    session: Session, make_issue: Callable[..., Issue],
    make_subscriber: Callable[..., Subscriber],
) -> None:
    from newsletter.models import Topic

    for n in range(40):  # past 31 bits: masks are 64-bit from query to temporary table
        session.add(Topic(slug=f"extra-{n:02}", name=f"Extra {n}", description=""))
    session.commit()
    issue = make_issue(status=IssueStatus.approved, items=[
        {"headline": f"Story {n}", "topics": [f"extra-{n:02}"]} for n in range(40)])
    last = make_subscriber(topics=["extra-39"], only_my_topics=True)
    nothing = make_subscriber(topics=["fintech"], only_my_topics=True)

    assert plan(session, issue.id) == 2

    rows = {r.subscriber_id: r for r in ledger(issue.id)}
    assert (rows[last.id].status, rows[nothing.id].status) == ("pending", "skipped")


def test_replanning_appends_new_subscribers_in_new_batches(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
) -> None:
    first = [make_subscriber() for _ in range(2)]
    plan(session, approved_issue.id)
    late = make_subscriber(topics=["fintech"])

    assert delivery.plan_send(session=session, issue_id=approved_issue.id, replan=True) == 1
    session.commit()
    assert delivery.plan_send(session=session, issue_id=approved_issue.id, replan=True) == 0

    rows = {r.subscriber_id: r.batch for r in ledger(approved_issue.id)}
    assert rows == {first[0].id: 1, first[1].id: 1, late.id: 2}


def test_planning_leaves_no_temporary_table_behind(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
) -> None:
    from sqlalchemy import inspect

    make_subscriber()
    assert delivery.plan_send(session=session, issue_id=approved_issue.id) == 1
    tables = inspect(session.connection())  # the planning connection, before it is returned
    assert not tables.has_table("plan_shape") and not tables.has_table("plan_key")
    session.commit()
    second = Issue(title="Another", intro="", status=IssueStatus.approved,
                   issue_date=approved_issue.issue_date)
    session.add(second)
    session.commit()

    assert plan(session, second.id) == 1  # the same connection plans again


# --- the sweep's index ------------------------------------------------------------------


def _plan_text(session: Session, statement: Any) -> str:
    bind = session.get_bind()
    sql = str(statement.compile(bind, compile_kwargs={"literal_binds": True}))
    if bind.dialect.name == "postgresql":
        session.execute(text("ANALYZE delivery"))
        return "\n".join(session.execute(text("EXPLAIN " + sql)).scalars())
    return "\n".join(str(r[-1]) for r in session.execute(text("EXPLAIN QUERY PLAN " + sql)))


def _ledger(session: Session, issue: Issue, status: str, n: int = 5_000) -> list[int]:
    """`n` subscribers with a ledger row each in `status`, 250 to a batch; their ids."""
    now = utcnow()
    session.execute(Subscriber.__table__.insert(), [  # type: ignore[attr-defined]
        {"email": f"r{i}@example.org", "name": "", "timezone": "UTC", "only_my_topics": False,
         "status": "confirmed", "paused": False, "source": "test", "created_at": now,
         "updated_at": now} for i in range(n)])
    ids = list(session.scalars(select(Subscriber.id)).all())
    session.execute(Delivery.__table__.insert(), [  # type: ignore[attr-defined]
        {"issue_id": issue.id, "subscriber_id": sid, "status": status,
         "composition_key": "k", "batch": 1 + i // 250, "created_at": now, "updated_at": now}
        for i, sid in enumerate(ids)])
    return ids


def test_the_sweep_finds_expired_leases_through_the_partial_index(
    session: Session, approved_issue: Issue,
) -> None:
    now = utcnow()
    ids = _ledger(session, approved_issue, "sent")
    session.execute(update(Delivery).where(Delivery.subscriber_id.in_(ids[:5])).values(
        status="sending", lease_until=now))
    session.commit()

    plan_text = _plan_text(session, select(Delivery.id).where(expired_leases(utcnow())))

    assert "ix_delivery_lease_held" in plan_text, plan_text
    with db.session_scope() as s:
        assert delivery.sweep_expired_leases(session=s) == 5


def test_a_claim_reads_only_its_own_batch_through_the_index(
    session: Session, approved_issue: Issue,
) -> None:
    # Through (issue_id, status) alone, each batch of a 1,000,000-row send read every
    # pending row of the issue; with the batch in the index it reads its own.
    _ledger(session, approved_issue, "pending")
    approved_issue.status = IssueStatus.sending  # a claim needs the issue sending
    session.add(approved_issue)
    session.commit()

    plan_text = _plan_text(session, select(Delivery.id).where(
        Delivery.issue_id == approved_issue.id, Delivery.batch == 3,
        Delivery.status == "pending"))

    assert "ix_delivery_issue_status_batch" in plan_text, plan_text
    if session.get_bind().dialect.name == "sqlite":
        assert "batch=?" in plan_text, plan_text  # the batch is part of the search
    token, _ = delivery.claim(session=session, issue_id=approved_issue.id, batch=3)
    claimed = session.scalars(select(Delivery.batch).where(Delivery.claim_token == token)).all()
    assert claimed == [3] * 250


# --- retrying failed rows ---------------------------------------------------------------


def _fail(issue_id: int, subscriber_ids: list[int]) -> None:
    with db.session_scope() as s:
        s.execute(update(Delivery).where(
            Delivery.issue_id == issue_id, Delivery.subscriber_id.in_(subscriber_ids)).values(
            status=DeliveryStatus.failed, attempts=9, error="out of retries after 9 attempts"))


def test_retry_failed_resets_exactly_the_failed_rows_once(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    redis_url: str,
) -> None:
    subs = [make_subscriber() for _ in range(5)]
    plan(session, approved_issue.id)
    with db.session_scope() as s:
        s.execute(update(Delivery).values(status=DeliveryStatus.sent))
        s.execute(update(Issue).values(status=IssueStatus.sent))
    _fail(approved_issue.id, [subs[1].id, subs[3].id])

    with db.session_scope() as s:
        assert delivery.retry_failed(session=s, issue_id=approved_issue.id) == 2
    with db.session_scope() as s:
        assert delivery.retry_failed(session=s, issue_id=approved_issue.id) == 0

    by_sub = {r.subscriber_id: r for r in ledger(approved_issue.id)}
    assert {s.id for s in subs if by_sub[s.id].status == "pending"} == {subs[1].id, subs[3].id}
    assert all(by_sub[s].attempts == 0 for s in (subs[1].id, subs[3].id))
    session.expire_all()
    assert session.get(Issue, approved_issue.id).status == IssueStatus.sending
    assert redis.Redis.from_url(redis_url).llen(queue.BULK_QUEUE) == 1  # their one batch


def test_retry_failed_refuses_an_issue_that_never_started(
    session: Session, approved_issue: Issue,
) -> None:
    with pytest.raises(delivery.SendError, match="only a send that started"):
        delivery.retry_failed(session=session, issue_id=approved_issue.id)


def test_send_retry_failed_sends_exactly_the_failed_rows_once_each(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    smtp_server: SMTPTestServer, celery_workers: Any,
) -> None:
    from typer.testing import CliRunner

    from newsletter.cli import app

    subs = [make_subscriber() for _ in range(6)]
    celery_workers.start()
    delivery.start_send(issue_id=approved_issue.id)
    wait_until(lambda: done(approved_issue.id), message=celery_workers.logs)
    smtp_server.clear()
    failed = [subs[0].id, subs[4].id, subs[5].id]
    _fail(approved_issue.id, failed)

    result = CliRunner().invoke(app, ["send", str(approved_issue.id), "--retry-failed",
                                      "--wait", "--timeout", "30"])

    assert result.exit_code == 0, result.output
    assert "3 deliveries that had failed go out again" in result.output
    time.sleep(0.5)  # a duplicate task would show by now
    assert Counter(smtp_server.recipients()) == Counter(
        s.email for s in subs if s.id in failed)
    assert counts(approved_issue.id)["sent"] == 6


# --- pause and cancel are complete when they return --------------------------------------


@pytest.fixture
def sending_slowly(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    slow_smtp_server: SMTPTestServer, celery_workers: Any, monkeypatch: pytest.MonkeyPatch,
) -> Issue:
    """An issue of 30 sending through a relay that takes 0.15 s per recipient, two
    transactions at a time (so it is still sending when the test acts)."""
    for _ in range(30):
        make_subscriber()
    monkeypatch.setattr(settings, "smtp_max_connections", 2)
    monkeypatch.setenv("SMTP_MAX_CONNECTIONS", "2")
    slow_smtp_server.delay = 0.15  # type: ignore[attr-defined]
    celery_workers.start()
    delivery.start_send(issue_id=approved_issue.id)
    wait_until(lambda: counts(approved_issue.id)["sent"] >= 2, message=celery_workers.logs)
    return approved_issue


@pytest.mark.parametrize("command", ["pause", "cancel"])
def test_pause_and_cancel_return_only_once_no_row_is_sending(
    command: str, sending_slowly: Issue, slow_smtp_server: SMTPTestServer,
) -> None:
    from typer.testing import CliRunner

    from newsletter.cli import app

    result = CliRunner().invoke(app, [command, str(sending_slowly.id)])

    assert result.exit_code == 0, result.output
    assert "No message is being sent now." in result.output
    assert counts(sending_slowly.id)["sending"] == 0
    delivered = len(slow_smtp_server.messages)
    time.sleep(1.0)  # nothing starts after the command returned
    assert len(slow_smtp_server.messages) == delivered
    left = "pending" if command == "pause" else "cancelled"
    assert counts(sending_slowly.id)[left] == 30 - delivered


def test_wait_for_hand_back_reports_rows_a_dead_worker_still_holds(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
) -> None:
    make_subscriber()
    make_subscriber()
    plan(session, approved_issue.id)
    token, _ = delivery.claim(session=session, issue_id=approved_issue.id, batch=1)
    with db.session_scope() as s:
        assert delivery.pause_send(session=s, issue_id=approved_issue.id)

    started = time.monotonic()
    assert delivery.wait_for_hand_back(issue_id=approved_issue.id, timeout=0.3) == 2
    assert 0.3 <= time.monotonic() - started < 2


# --- why a send stopped -----------------------------------------------------------------


def test_status_shows_the_reason_a_send_paused_itself(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    redis_url: str,
) -> None:
    import json

    from typer.testing import CliRunner

    from newsletter.cli import app

    make_subscriber()
    plan(session, approved_issue.id)
    words = "554 5.7.1 <r@example.org>: Relay access denied"
    with db.session_scope() as s:
        delivery.pause_send(session=s, issue_id=approved_issue.id, reason=words)

    table = CliRunner().invoke(app, ["status", str(approved_issue.id)])
    as_json = CliRunner().invoke(app, ["status", str(approved_issue.id), "--json"])

    assert table.exit_code == 0 and words in table.output
    assert json.loads(as_json.output)["status_reason"] == words
    with db.session_scope() as s:
        assert delivery.resume_send(session=s, issue_id=approved_issue.id)
    assert json.loads(CliRunner().invoke(
        app, ["status", str(approved_issue.id), "--json"]).output)["status_reason"] == ""


# --- Redis lost and back ----------------------------------------------------------------


def test_the_sweep_republishes_every_pending_batch_once_redis_lost_its_queue(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "send_batch_size", 2)
    for _ in range(5):
        make_subscriber()
    plan(session, approved_issue.id)
    client = redis.Redis.from_url(redis_url)
    with db.session_scope() as s:  # a first sweep on this Redis sets its marker
        delivery.sweep_expired_leases(session=s)
    client.delete(queue.BULK_QUEUE)
    with db.session_scope() as s:  # nothing lost: nothing re-published
        delivery.sweep_expired_leases(session=s)
    assert client.llen(queue.BULK_QUEUE) == 0

    client.flushall()  # what a restart without persistence does
    with db.session_scope() as s:
        delivery.sweep_expired_leases(session=s)

    assert client.llen(queue.BULK_QUEUE) == 3  # batches 1, 2 and 3
    with db.session_scope() as s:
        delivery.sweep_expired_leases(session=s)
    assert client.llen(queue.BULK_QUEUE) == 3


def test_batches_nobody_touched_for_two_leases_are_republished_once_per_lease(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import timedelta

    monkeypatch.setattr(settings, "send_batch_size", 2)
    for _ in range(4):
        make_subscriber()
    plan(session, approved_issue.id)
    client = redis.Redis.from_url(redis_url)
    with db.session_scope() as s:  # the first sweep on this Redis: it sets its marker
        delivery.sweep_expired_leases(session=s)
    client.delete(queue.BULK_QUEUE)
    long_ago = utcnow() - timedelta(seconds=3 * settings.send_lease_seconds)
    with db.session_scope() as s:  # a task lost with a dead worker's prefetch
        s.execute(update(Delivery).where(Delivery.batch == 2).values(updated_at=long_ago))

    for _ in range(3):
        with db.session_scope() as s:
            delivery.sweep_expired_leases(session=s)

    assert client.llen(queue.BULK_QUEUE) == 1  # batch 2, once, rows untouched
    assert {r.updated_at.replace(tzinfo=None) for r in ledger(approved_issue.id)
            if r.batch == 2} == {long_ago.replace(tzinfo=None)}


class RedisProcess:
    """A redis-server of this test's own, on a fixed port, that can be killed and restarted."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._answers, timeout=10, message="redis-server to answer")

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=0.2).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def own_redis(app_settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisProcess]:
    with tempfile.TemporaryDirectory(prefix="roundup-redis-") as tmp:
        server = RedisProcess(Path(tmp))
        server.start()
        monkeypatch.setattr(settings, "redis_url", server.url)
        monkeypatch.setenv("REDIS_URL", server.url)
        try:
            yield server
        finally:
            server.kill()


@contextlib.contextmanager
def worker_and_beat(log_dir: Path, **env: str) -> Iterator[None]:
    """A Procfile-style `worker` and a separate `beat`, both on this test's Redis."""
    with worker_process(concurrency=1, log_path=log_dir / "worker.log",
                        extra_env={**TEST_WORKER_ENV, **env}):
        beat_env = {**os.environ, **settings_env(), **env,
                    "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        with open(log_dir / "beat.log", "ab") as out:
            beat = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat",
                 "-l", "INFO", "-s", str(log_dir / "beat-schedule")],
                env=beat_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield
        finally:
            beat.terminate()
            beat.wait(10)


@pytest.mark.slow
def test_a_send_resumes_within_a_minute_of_redis_coming_back(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    slow_smtp_server: SMTPTestServer, own_redis: RedisProcess, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "send_batch_size", 5)
    readers = [make_subscriber() for _ in range(60)]
    slow_smtp_server.delay = 0.05  # type: ignore[attr-defined]

    def logs() -> str:
        return "\n".join(p.read_text()[-3000:] for p in tmp_path.glob("*.log"))

    # Default lease and sweep period: recovery must not depend on short test settings.
    with worker_and_beat(tmp_path, SEND_BATCH_SIZE="5", SEND_LEASE_SECONDS="300"):
        delivery.start_send(issue_id=approved_issue.id)
        wait_until(lambda: counts(approved_issue.id)["sent"] >= 10, timeout=30, message=logs)

        own_redis.kill()  # queued batch tasks vanish with it
        time.sleep(2)
        own_redis.start()  # same port, empty
        back = time.monotonic()

        wait_until(lambda: done(approved_issue.id), timeout=60, interval=0.5,
                   message=lambda: f"{counts(approved_issue.id)}\n{logs()}")
        took = time.monotonic() - back

    assert Counter(slow_smtp_server.recipients()) == Counter(r.email for r in readers)
    print(f"send completed {took:.1f}s after Redis came back (wait_until allowed 60 s)")


# --- several worker processes -----------------------------------------------------------


@pytest.mark.slow
def test_two_worker_processes_share_a_send_on_postgresql_with_no_duplicates(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    smtp_server: SMTPTestServer, celery_workers: Any, database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("several worker machines share PostgreSQL (SQLite is one machine's file)")
    monkeypatch.setattr(settings, "send_batch_size", 10)
    readers = [make_subscriber() for _ in range(200)]
    # Two `worker` instances as the Procfile starts them: separate processes, same
    # database and Redis, each with its own pool.
    celery_workers.start(concurrency=2, SEND_BATCH_SIZE="10")
    celery_workers.start(concurrency=2, SEND_BATCH_SIZE="10")
    plan(session, approved_issue.id)
    delivery.enqueue_batches(approved_issue.id)
    delivery.enqueue_batches(approved_issue.id)  # every batch twice: workers race for rows

    wait_until(lambda: done(approved_issue.id), timeout=60, message=celery_workers.logs)
    time.sleep(1)  # let the duplicate tasks run, so a double send would show

    assert Counter(smtp_server.recipients()) == Counter(r.email for r in readers)
    logs = [p.read_text() for p in sorted(Path(celery_workers.log_dir).glob("worker-*.log"))]
    assert all("workers.tasks.send_batch" in text and "succeeded" in text for text in logs)


def test_no_module_under_newsletter_imports_workers() -> None:
    root = Path(__file__).resolve().parent.parent / "newsletter"
    offenders = [
        str(path.relative_to(root.parent)) for path in root.rglob("*.py")
        if path.name != "public.py"  # newsletter/web/public.py: converted by the lead
        and any(line.lstrip().startswith(("from workers", "import workers"))
                for line in path.read_text().splitlines())
    ]
    assert offenders == []
    assert os.path.exists(root / "queue.py")


# --- the console ------------------------------------------------------------------------


def _pause_itself(issue_id: int, words: str) -> None:
    with db.session_scope() as s:
        assert delivery.pause_send(session=s, issue_id=issue_id, reason=words)


def test_the_send_page_shows_the_relays_words_escaped_and_retries_failed_rows(
    editor_client: Any, session: Session, approved_issue: Issue,
    make_subscriber: Callable[..., Subscriber], redis_url: str,
) -> None:
    from tests.fixtures.editor import editor_post

    subs = [make_subscriber() for _ in range(3)]
    plan(session, approved_issue.id)
    _fail(approved_issue.id, [subs[2].id])
    _pause_itself(approved_issue.id, "554 5.7.1 <x@example.org>: Relay access denied")

    page = editor_client.get(f"/editor/issues/{approved_issue.id}/send")

    assert "The send paused itself." in page.text
    assert "554 5.7.1 &lt;x@example.org&gt;: Relay access denied" in page.text
    assert "Retry failed (1)" in page.text
    assert editor_client.get(
        f"/editor/issues/{approved_issue.id}/progress.json").json()["status_reason"]

    answer = editor_post(editor_client, f"/editor/issues/{approved_issue.id}/retry-failed",
                         page=f"/editor/issues/{approved_issue.id}/send")
    assert answer.status_code == 303
    assert counts(approved_issue.id)["failed"] == 0
    again = editor_post(editor_client, f"/editor/issues/{approved_issue.id}/retry-failed",
                        page=f"/editor/issues/{approved_issue.id}/send")
    assert again.status_code == 400 and "no failed deliveries" in again.text


def test_pausing_from_the_console_answers_once_the_batch_handed_its_rows_back(
    editor_client: Any, sending_slowly: Issue, slow_smtp_server: SMTPTestServer,
) -> None:
    from tests.fixtures.editor import editor_post

    answer = editor_post(editor_client, f"/editor/issues/{sending_slowly.id}/pause",
                         page=f"/editor/issues/{sending_slowly.id}/send")

    assert answer.status_code == 303
    assert counts(sending_slowly.id)["sending"] == 0
    delivered = len(slow_smtp_server.messages)
    time.sleep(1.0)
    assert len(slow_smtp_server.messages) == delivered


@pytest.mark.browser
@pytest.mark.slow
def test_the_paused_send_page_in_chromium(
    live_server: Any, browser_page: Any, session: Session, approved_issue: Issue,
    make_subscriber: Callable[..., Subscriber], redis_url: str,
) -> None:
    from tests.fixtures.editor import create_editor
    from tests.fixtures.web import screenshot

    account = create_editor(session)
    subs = [make_subscriber() for _ in range(4)]
    plan(session, approved_issue.id)
    _fail(approved_issue.id, [subs[0].id])
    _pause_itself(approved_issue.id, "535 5.7.8 Authentication credentials invalid "
                  "(the relay refused our SMTP_USERNAME / SMTP_PASSWORD)")
    page = browser_page
    page.goto(f"{live_server.url}/editor/login")
    page.fill("input[name=email]", account.email)
    page.fill("input[name=password]", account.password)
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{live_server.url}/editor")

    page.goto(f"{live_server.url}/editor/issues/{approved_issue.id}/send")

    assert "Authentication credentials invalid" in page.inner_text("#status-reason")
    assert page.is_visible("#btn-retry-failed")
    screenshot(page, "send-paused-by-relay")
