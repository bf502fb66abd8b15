"""The delivery engine against a relay that misbehaves: many connections, faults, pauses.

Real parts throughout: aiosmtpd injecting latency, 421, 451, 452, dropped connections
and fixed refusals (tests/fixtures/mail.py), Celery worker subprocesses on a private
Redis, SQLite and (with TEST_DATABASE_URL) PostgreSQL.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlmodel import Session

from newsletter import db, delivery
from newsletter.models import (
    Delivery,
    DeliveryStatus,
    Issue,
    IssueStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
    utcnow,
)
from newsletter.settings import settings
from tests.fixtures.mail import Faults, FaultyHandler, SMTPTestServer
from tests.fixtures.services import WorkerFactory, wait_until

ITEMS = ["A general story", {"headline": "Ports reopen", "topics": ["logistics"]}]


@pytest.fixture
def approved_issue(make_issue: Callable[..., Issue]) -> Issue:
    return make_issue(items=ITEMS, status=IssueStatus.approved)


def add_readers(session: Session, n: int, prefix: str = "reader") -> list[str]:
    """n confirmed subscribers in one insert (the ORM factory is too slow for hundreds)."""
    now = utcnow()
    emails = [f"{prefix}{i}@example.org" for i in range(n)]
    session.execute(Subscriber.__table__.insert(), [  # type: ignore[attr-defined]
        {"email": e, "name": "", "timezone": "UTC", "only_my_topics": False,
         "status": SubscriberStatus.confirmed, "paused": False, "source": "test",
         "created_at": now, "updated_at": now} for e in emails])
    session.commit()
    return emails


def counts(issue_id: int) -> dict[str, int]:
    with db.session_scope() as s:
        return delivery.status_counts(session=s, issue_id=issue_id)


def in_doubt(issue_id: int) -> set[str]:
    """Addresses whose rows are claimed but not marked: the only ones a fault may send
    twice (in flight, or accepted and not yet committed)."""
    with db.session_scope() as s:
        return set(s.execute(
            select(Subscriber.email).join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.sending)
        ).scalars())


def done(issue_id: int) -> bool:
    c = counts(issue_id)
    return not c["pending"] and not c["sending"]


def the_issue(issue_id: int) -> Issue:
    with db.session_scope() as s:
        issue = s.get(Issue, issue_id)
        assert issue is not None
        return issue


def plan(session: Session, issue_id: int) -> None:
    delivery.plan_send(session=session, issue_id=issue_id)
    session.commit()


# --- many connections, in process ------------------------------------------------------


def test_a_batch_keeps_many_transactions_in_flight_on_a_slow_relay(
    session: Session, approved_issue: Issue, faulty_smtp_server: FaultyHandler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "smtp_max_connections", 20)
    faulty_smtp_server.faults = Faults(data_latency=0.2)
    emails = add_readers(session, 100)
    plan(session, approved_issue.id)

    started = time.monotonic()
    outcome = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)
    took = time.monotonic() - started

    assert outcome.counts == {"sent": 100}
    assert Counter(faulty_smtp_server.recipients()) == Counter(emails)
    assert faulty_smtp_server.most_in_data >= 15  # one connection would be 1
    assert took < 100 * 0.2 / 4  # one at a time would take 20 s


def test_a_421_is_charged_to_the_row_in_flight_only_and_the_others_carry_on(
    session: Session, approved_issue: Issue, faulty_smtp_server: FaultyHandler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "smtp_max_connections", 5)
    faulty_smtp_server.faults = Faults(p421=0.2, data_latency=0.01)
    emails = add_readers(session, 60)
    plan(session, approved_issue.id)

    outcome = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    ledger = session.execute(select(Delivery.status, Delivery.attempts, Delivery.error)
                             .where(Delivery.issue_id == approved_issue.id)).all()
    deferred = [r for r in ledger if r.status == DeliveryStatus.pending]
    assert deferred and outcome.counts["deferred"] == len(deferred)
    assert all(r.attempts == 1 and r.error.startswith("421") for r in deferred)
    sent = [r for r in ledger if r.status == DeliveryStatus.sent]
    assert len(sent) + len(deferred) == len(emails)
    assert {r.attempts for r in sent} == {0}  # nobody else was charged for the 421s
    assert len(faulty_smtp_server.recipients()) == len(sent)


@pytest.fixture
def relay_allowing_three(session: Session, approved_issue: Issue,
                         faulty_smtp_server: FaultyHandler,
                         monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A relay refusing connections beyond 3 (Postfix's per-client limit, smaller), a
    worker allowed 10, and two planned batches of 40; the readers' addresses."""
    monkeypatch.setattr(settings, "smtp_max_connections", 10)
    monkeypatch.setattr(settings, "send_batch_size", 40)
    faulty_smtp_server.faults = Faults(data_latency=0.05)
    faulty_smtp_server.max_connections = 3
    emails = add_readers(session, 80)
    plan(session, approved_issue.id)
    return emails


def test_a_relay_refusing_connections_beyond_its_limit_gets_everyone_over_fewer(
    session: Session, approved_issue: Issue, faulty_smtp_server: FaultyHandler,
    relay_allowing_three: list[str],
) -> None:
    first = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    assert first.counts == {"sent": 40}
    assert faulty_smtp_server.refused_connections > 0
    assert counts(approved_issue.id)["failed"] == 0


def test_after_a_refused_connection_the_next_batch_opens_no_more_than_the_relay_allows(
    session: Session, approved_issue: Issue, faulty_smtp_server: FaultyHandler,
    relay_allowing_three: list[str],
) -> None:
    delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)
    refused = faulty_smtp_server.refused_connections

    second = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=2)

    assert second.counts == {"sent": 40}
    assert faulty_smtp_server.refused_connections == refused  # none tried beyond 3
    assert Counter(faulty_smtp_server.recipients()) == Counter(relay_allowing_three)
    assert faulty_smtp_server.most_in_data == 3


def test_a_relay_full_with_other_workers_connections_gets_the_rows_back_within_seconds(
    session: Session, approved_issue: Issue, faulty_smtp_server: FaultyHandler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import smtplib

    monkeypatch.setattr(settings, "send_retry_base_seconds", 300.0)
    faulty_smtp_server.max_connections = 2
    others = [smtplib.SMTP(faulty_smtp_server.host, faulty_smtp_server.port) for _ in range(2)]
    emails = add_readers(session, 5)
    plan(session, approved_issue.id)

    outcome = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    # "421 too many connections": the relay is alive, and another worker will hand a
    # connection back soon. Nobody is charged, and the rows wait seconds, not 300 s.
    assert outcome.counts == {"deferred": 5}
    assert outcome.retry_in is not None and outcome.retry_in <= 3
    ledger = session.execute(select(Delivery.attempts, Delivery.error)
                             .where(Delivery.issue_id == approved_issue.id)).all()
    assert {r.attempts for r in ledger} == {0}
    assert all("too many connections" in r.error for r in ledger)
    for other in others:
        other.quit()
    time.sleep(outcome.retry_in)

    again = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    assert again.counts == {"sent": 5}
    assert Counter(faulty_smtp_server.recipients()) == Counter(emails)


def test_a_batch_takes_the_connections_another_worker_hands_back(
    session: Session, approved_issue: Issue, faulty_smtp_server: FaultyHandler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import smtplib
    import threading

    from newsletter.delivery import sending

    monkeypatch.setattr(sending, "BUSY_RETRY_SECONDS", 0.1)  # knocks after 0.2, 0.4, 0.8 s
    monkeypatch.setattr(settings, "smtp_max_connections", 3)
    faulty_smtp_server.faults = Faults(data_latency=0.05)
    faulty_smtp_server.max_connections = 3
    # Another worker holds two of the three connections the relay allows, for 0.5 s.
    others = [smtplib.SMTP(faulty_smtp_server.host, faulty_smtp_server.port) for _ in range(2)]
    threading.Timer(0.5, lambda: [o.quit() for o in others]).start()
    emails = add_readers(session, 90)
    plan(session, approved_issue.id)

    outcome = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    assert outcome.counts == {"sent": 90}
    assert Counter(faulty_smtp_server.recipients()) == Counter(emails)
    assert faulty_smtp_server.refused_connections >= 2
    assert faulty_smtp_server.most_in_data == 3  # it had one; it took the other two back


def test_a_pause_stops_new_transactions_at_once_and_hands_every_untried_row_back(
    session: Session, approved_issue: Issue, faulty_smtp_server: FaultyHandler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(settings, "smtp_max_connections", 20)
    faulty_smtp_server.faults = Faults(data_latency=0.2)
    add_readers(session, 300)
    plan(session, approved_issue.id)

    def send() -> None:
        with db.session_scope() as s:
            delivery.run_batch(session=s, issue_id=approved_issue.id, batch=1)

    sender = ThreadPoolExecutor(1).submit(send)  # .result() re-raises what the batch raised
    wait_until(lambda: len(faulty_smtp_server.messages) >= 40)

    with db.session_scope() as s:
        assert delivery.pause_send(session=s, issue_id=approved_issue.id)
    paused_at = time.monotonic()
    # What pause_send's caller waits for: no row of the issue left `sending`.
    wait_until(lambda: counts(approved_issue.id)["sending"] == 0, timeout=5)
    handed_back_in = time.monotonic() - paused_at
    sender.result(timeout=10)

    # The transactions open at the pause finish (0.2 s); none starts after it. (The
    # margins are for a shared machine that stalls a thread now and then; a batch that
    # ignored the pause would send for seconds more.)
    late = [m for m in faulty_smtp_server.messages if m.received_at > paused_at + 0.2 + 0.6]
    assert late == []
    assert handed_back_in < 2.5
    c = counts(approved_issue.id)
    assert c["sent"] + c["pending"] == 300 and c["pending"] > 100
    pending = session.execute(select(Delivery.attempts).where(
        Delivery.issue_id == approved_issue.id, Delivery.status == DeliveryStatus.pending))
    assert set(pending.scalars()) == {0}  # handed back untouched


def test_a_mailbox_that_does_not_exist_bounces_and_is_suppressed(
    session: Session, approved_issue: Issue, faulty_smtp_server: FaultyHandler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "smtp_max_connections", 4)
    emails = add_readers(session, 12)
    faulty_smtp_server.reject(emails[3], "550 5.1.1 <x>: Recipient address rejected: unknown")
    faulty_smtp_server.reject(emails[5], "552 5.2.2 <x>: mailbox full")
    plan(session, approved_issue.id)

    delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    by_email = {e: (st, at) for e, st, at in session.execute(
        select(Subscriber.email, Delivery.status, Delivery.attempts)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id))}
    assert by_email[emails[3]] == (DeliveryStatus.failed, 1)
    assert session.get(Suppression, emails[3]) is not None
    assert by_email[emails[5]] == (DeliveryStatus.pending, 1)  # soft: tried again later
    assert session.get(Suppression, emails[5]) is None
    full = session.scalars(select(Subscriber).where(Subscriber.email == emails[5])).one()
    assert full.status == SubscriberStatus.confirmed
    assert issue_status(session, approved_issue.id) == IssueStatus.sending


def issue_status(session: Session, issue_id: int) -> str:
    session.expire_all()
    issue = session.get(Issue, issue_id)
    assert issue is not None
    return issue.status


def test_a_blocklisted_sending_ip_pauses_the_issue_and_charges_nobody(
    session: Session, approved_issue: Issue, faulty_smtp_server: FaultyHandler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "smtp_max_connections", 4)
    emails = add_readers(session, 30)
    blocked = "550 5.7.1 Service unavailable; client [192.0.2.7] blocked using zen.spamhaus.org"
    faulty_smtp_server.reject(emails[0], blocked)
    plan(session, approved_issue.id)

    delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    ledger = session.execute(select(Delivery.status, Delivery.attempts)
                             .where(Delivery.issue_id == approved_issue.id)).all()
    assert DeliveryStatus.failed not in {r.status for r in ledger}
    assert {r.attempts for r in ledger} == {0}
    assert session.get(Suppression, emails[0]) is None
    issue = the_issue(approved_issue.id)
    assert issue.status == IssueStatus.paused
    assert blocked in issue.status_reason


def test_a_relay_refusing_everyone_with_no_code_we_know_pauses_after_a_run_of_refusals(
    session: Session, approved_issue: Issue, faulty_smtp_server: FaultyHandler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "smtp_max_connections", 3)
    add_readers(session, 40)
    faulty_smtp_server.reject_all("550 Requested action not taken")
    plan(session, approved_issue.id)

    delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    c = counts(approved_issue.id)
    assert (c["failed"], c["pending"]) == (0, 40)
    issue = the_issue(approved_issue.id)
    assert issue.status == IssueStatus.paused
    assert "refused 10 recipients in a row" in issue.status_reason
    assert "550 Requested action not taken" in issue.status_reason


def test_the_rate_limit_holds_across_connections_through_redis(
    session: Session, approved_issue: Issue, faulty_smtp_server: FaultyHandler,
    monkeypatch: pytest.MonkeyPatch, redis_url: str,
) -> None:
    import redis

    from newsletter.delivery.ratelimit import RelayRateLimit

    starts: list[float] = []  # when each transaction was let through
    acquire = RelayRateLimit.acquire

    async def recorded(self: RelayRateLimit) -> None:
        await acquire(self)
        starts.append(time.time())

    monkeypatch.setattr(RelayRateLimit, "acquire", recorded)
    monkeypatch.setattr(settings, "smtp_max_connections", 10)
    monkeypatch.setattr(settings, "smtp_rate_limit", 20)
    add_readers(session, 50)
    plan(session, approved_issue.id)

    delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    assert len(faulty_smtp_server.messages) == 50
    # 50 at 20/s over ten connections: 20, then 20 a second later, then the last 10 a
    # second after that (ten connections alone send them all in a fraction of a second).
    # Only the span is asserted: a busy machine resumes a let-through transaction late.
    starts.sort()
    assert len(starts) == 50
    assert starts[-1] - starts[0] >= 1.9
    assert any(b"roundup-smtp" in k for k in redis.Redis.from_url(redis_url).keys("*"))


# --- through real Celery workers --------------------------------------------------------


@pytest.mark.slow
def test_421_451_and_452_deliver_everyone_once_and_fail_nobody(
    session: Session, approved_issue: Issue, celery_workers: WorkerFactory,
    faulty_smtp_server: FaultyHandler,
) -> None:
    faulty_smtp_server.faults = Faults(data_latency=0.01, p421=0.05, p451=0.05, p452=0.02)
    emails = add_readers(session, 600)
    plan(session, approved_issue.id)
    celery_workers.start(SMTP_MAX_CONNECTIONS="20", SEND_RETRY_BASE_SECONDS="0.2")
    delivery.enqueue_batches(approved_issue.id)

    wait_until(lambda: done(approved_issue.id), timeout=90, message=celery_workers.logs)

    c = counts(approved_issue.id)
    assert (c["sent"], c["failed"]) == (600, 0)
    assert Counter(faulty_smtp_server.recipients()) == Counter(emails)  # each exactly once


@pytest.mark.slow
def test_connections_dropped_after_data_lose_nobody_and_duplicate_only_those(
    session: Session, approved_issue: Issue, celery_workers: WorkerFactory,
    faulty_smtp_server: FaultyHandler,
) -> None:
    faulty_smtp_server.faults = Faults(data_latency=0.01, p_drop_after_data=0.02)
    emails = add_readers(session, 500)
    plan(session, approved_issue.id)
    celery_workers.start(SMTP_MAX_CONNECTIONS="20", SEND_RETRY_BASE_SECONDS="0.2")
    delivery.enqueue_batches(approved_issue.id)

    wait_until(lambda: done(approved_issue.id), timeout=90, message=celery_workers.logs)

    got = Counter(faulty_smtp_server.recipients())
    assert set(got) == set(emails)
    twice = Counter({e: n - 1 for e, n in got.items() if n > 1})
    assert twice and twice <= Counter(faulty_smtp_server.dropped)
    assert counts(approved_issue.id)["failed"] == 0


@pytest.mark.slow
def test_relay_access_denied_pauses_with_the_relays_words_and_resume_sends_to_all(
    session: Session, approved_issue: Issue, celery_workers: WorkerFactory,
    faulty_smtp_server: FaultyHandler,
) -> None:
    emails = add_readers(session, 300)
    denied = "554 5.7.1 <reader0@example.org>: Relay access denied"
    faulty_smtp_server.reject_all(denied)
    plan(session, approved_issue.id)
    celery_workers.start(SMTP_MAX_CONNECTIONS="10")
    delivery.enqueue_batches(approved_issue.id)

    wait_until(lambda: the_issue(approved_issue.id).status == IssueStatus.paused,
               message=celery_workers.logs)
    wait_until(lambda: counts(approved_issue.id)["sending"] == 0, message=celery_workers.logs)
    c = counts(approved_issue.id)
    assert (c["failed"], c["pending"]) == (0, 300)
    assert denied in the_issue(approved_issue.id).status_reason
    assert "Relay access denied" in celery_workers.logs()

    faulty_smtp_server.reject_all("")  # the operator fixes the relay
    with db.session_scope() as s:
        assert delivery.resume_send(session=s, issue_id=approved_issue.id)

    wait_until(lambda: the_issue(approved_issue.id).status == IssueStatus.sent, timeout=60,
               message=celery_workers.logs)
    assert Counter(faulty_smtp_server.recipients()) == Counter(emails)


@pytest.mark.slow
def test_a_worker_killed_with_many_connections_open_loses_nobody(
    session: Session, approved_issue: Issue, celery_workers: WorkerFactory,
    faulty_smtp_server: FaultyHandler,
) -> None:
    faulty_smtp_server.faults = Faults(data_latency=0.1)
    emails = add_readers(session, 400)
    plan(session, approved_issue.id)
    victim = celery_workers.start(SMTP_MAX_CONNECTIONS="20")
    delivery.enqueue_batches(approved_issue.id)

    wait_until(lambda: counts(approved_issue.id)["sent"] >= 60, message=celery_workers.logs)
    in_flight = faulty_smtp_server.in_data
    celery_workers.kill(victim)
    assert in_flight >= 5  # it really had many transactions open
    doubtful = in_doubt(approved_issue.id)
    assert doubtful

    faulty_smtp_server.faults = Faults()
    celery_workers.start(SMTP_MAX_CONNECTIONS="20")
    with db.session_scope() as s:  # what beat does every minute, once the lease is over
        delivery.sweep_expired_leases(session=s, now=utcnow() + timedelta(seconds=11))

    wait_until(lambda: done(approved_issue.id), timeout=60, message=celery_workers.logs)
    got = Counter(faulty_smtp_server.recipients())
    assert set(got) == set(emails)
    # Duplicates: only messages in flight at the kill, never a row already marked: the
    # 20 open transactions (the relay keeps each), plus 250s received in the writer's
    # last tick (10 ms) and not yet committed, a few at this rate.
    twice = {email for email, n in got.items() if n > 1}
    assert twice <= doubtful, twice - doubtful
    assert sum(got.values()) - len(emails) <= 20 + 10


@pytest.mark.slow
def test_the_workers_database_connection_cut_mid_send_costs_no_one(
    session: Session, approved_issue: Issue, celery_workers: WorkerFactory,
    faulty_smtp_server: FaultyHandler,
) -> None:
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    faulty_smtp_server.faults = Faults(data_latency=0.05)
    emails = add_readers(session, 400)
    plan(session, approved_issue.id)
    celery_workers.start(SMTP_MAX_CONNECTIONS="20")
    delivery.enqueue_batches(approved_issue.id)

    wait_until(lambda: counts(approved_issue.id)["sent"] >= 60, message=celery_workers.logs)
    killed = session.execute(text(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
    session.commit()
    assert killed

    wait_until(lambda: done(approved_issue.id), timeout=60, message=celery_workers.logs)
    got = Counter(faulty_smtp_server.recipients())
    assert set(got) == set(emails)
    # The marks are written again on a new connection while the claim holds: at most
    # the open transactions (20) and the marks of the tick in progress are in doubt.
    assert sum(got.values()) - len(emails) <= 20 + 10
    assert "re-opening it" in celery_workers.logs()


@pytest.mark.slow
def test_two_workers_share_one_rate_limit_through_redis(
    session: Session, approved_issue: Issue, celery_workers: WorkerFactory,
    faulty_smtp_server: FaultyHandler, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "send_batch_size", 30)
    add_readers(session, 60)
    plan(session, approved_issue.id)  # two batches of 30
    for _ in range(2):
        celery_workers.start(concurrency=1, SMTP_RATE_LIMIT="10", SMTP_MAX_CONNECTIONS="10")
    delivery.enqueue_batches(approved_issue.id)

    wait_until(lambda: done(approved_issue.id), timeout=60, message=celery_workers.logs)

    times = sorted(m.received_at for m in faulty_smtp_server.messages)
    assert len(times) == 60
    # 60 at 10/s between them takes over 5 s; each worker alone at 10/s would take 3.
    assert times[-1] - times[0] >= 4.5
    logs = sorted(celery_workers.log_dir.glob("worker-*.log"))
    assert len(logs) == 2
    assert all("send_batch" in p.read_text() for p in logs)  # both workers sent a batch


def test_a_starttls_relay_with_a_trusted_certificate_gets_the_batch(
    session: Session, approved_issue: Issue, starttls_smtp_server: SMTPTestServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "smtp_starttls", True)
    monkeypatch.setenv("SSL_CERT_FILE", starttls_smtp_server.ca_file)  # type: ignore[attr-defined]
    emails = add_readers(session, 12)
    plan(session, approved_issue.id)

    outcome = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    assert outcome.counts == {"sent": 12}
    assert Counter(starttls_smtp_server.recipients()) == Counter(emails)


def test_a_relay_certificate_we_cannot_verify_pauses_the_issue(
    session: Session, approved_issue: Issue, starttls_smtp_server: SMTPTestServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "smtp_starttls", True)  # and the certificate is not trusted
    add_readers(session, 3)
    plan(session, approved_issue.id)

    delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    issue = the_issue(approved_issue.id)
    assert issue.status == IssueStatus.paused
    assert "CERTIFICATE_VERIFY_FAILED" in issue.status_reason
    assert counts(approved_issue.id)["pending"] == 3
    assert starttls_smtp_server.messages == []
