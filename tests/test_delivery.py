"""Delivery: planning, the ledger state machine, and exactly-once through real Celery.

In-process tests call the service functions against the real aiosmtpd server; the
worker tests run a real Celery worker subprocess on a private Redis.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlmodel import Session

from newsletter import db, delivery
from newsletter.models import (
    Delivery,
    DeliveryStatus,
    Event,
    EventKind,
    Issue,
    IssueStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
    utcnow,
)
from newsletter.subscribers import unsubscribe
from tests.fixtures.mail import SMTPTestServer, assert_email
from tests.fixtures.services import SlowRcpt, WorkerFactory, wait_until

ITEMS = [
    {"headline": "Payments grow fast", "topics": ["fintech"]},
    {"headline": "Ports reopen", "topics": ["logistics"]},
    "A general story",
]


@pytest.fixture(autouse=True)
def one_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests pin the ledger's state machine down one transaction at a time;
    tests/test_delivery_engine.py sends over many connections at once."""
    from newsletter.settings import settings

    monkeypatch.setattr(settings, "smtp_max_connections", 1)


@pytest.fixture
def approved_issue(make_issue: Callable[..., Issue]) -> Issue:
    return make_issue(items=ITEMS, status=IssueStatus.approved)


def rows(session: Session, issue_id: int) -> list[Delivery]:
    session.expire_all()
    return list(session.scalars(
        select(Delivery).where(Delivery.issue_id == issue_id).order_by(Delivery.id)))


def issue_status(session: Session, issue_id: int) -> str:
    session.expire_all()
    return session.get(Issue, issue_id).status


def counts(issue_id: int) -> dict[str, int]:
    with db.session_scope() as s:
        return delivery.status_counts(session=s, issue_id=issue_id)


def plan(session: Session, issue_id: int) -> int:
    n = delivery.plan_send(session=session, issue_id=issue_id)
    session.commit()
    return n


def done(issue_id: int) -> bool:
    c = counts(issue_id)
    return not c["pending"] and not c["sending"]


# --- planning ----------------------------------------------------------------------------


def test_plan_writes_one_pending_row_per_confirmed_subscriber_only(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber]
) -> None:
    confirmed = [make_subscriber(topics=["fintech"]) for _ in range(3)]
    make_subscriber(confirmed=False)
    gone = make_subscriber()
    unsubscribe(session=session, subscriber_id=gone.id, source="test")
    paused = make_subscriber()
    paused.paused = True
    session.add(paused)
    suppressed = make_subscriber()
    session.add(Suppression(email=suppressed.email, reason="complaint"))
    session.commit()

    assert plan(session, approved_issue.id) == 3
    assert sorted(r.subscriber_id for r in rows(session, approved_issue.id)) == sorted(
        s.id for s in confirmed)
    assert all(r.status == DeliveryStatus.pending for r in rows(session, approved_issue.id))
    assert issue_status(session, approved_issue.id) == IssueStatus.sending


def test_plan_marks_only_my_topics_without_a_match_skipped(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber]
) -> None:
    lonely = make_subscriber(topics=["travel"], only_my_topics=True)
    make_subscriber(topics=["fintech"], only_my_topics=True)

    plan(session, approved_issue.id)

    by_sub = {r.subscriber_id: r.status for r in rows(session, approved_issue.id)}
    assert by_sub[lonely.id] == DeliveryStatus.skipped
    assert Counter(by_sub.values()) == {DeliveryStatus.skipped: 1, DeliveryStatus.pending: 1}


def test_plan_twice_plans_once(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber]
) -> None:
    make_subscriber()
    plan(session, approved_issue.id)

    with pytest.raises(delivery.AlreadyPlanned, match="already sending"):
        delivery.plan_send(session=session, issue_id=approved_issue.id)
    assert len(rows(session, approved_issue.id)) == 1


def test_plan_refuses_a_draft(session: Session, make_issue: Callable[..., Issue]) -> None:
    draft = make_issue(items=ITEMS)
    with pytest.raises(delivery.SendError, match="approve it before sending"):
        delivery.plan_send(session=session, issue_id=draft.id)


def test_replan_adds_only_newly_confirmed_subscribers(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber]
) -> None:
    first = make_subscriber()
    plan(session, approved_issue.id)
    late = make_subscriber()

    added = delivery.plan_send(session=session, issue_id=approved_issue.id, replan=True)
    session.commit()

    assert added == 1
    assert sorted(r.subscriber_id for r in rows(session, approved_issue.id)) == [first.id, late.id]


def test_batches_group_subscribers_with_the_same_composition(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from newsletter.settings import settings

    monkeypatch.setattr(settings, "send_batch_size", 2)
    for topics in (["fintech"], ["logistics"], ["fintech"], ["logistics"]):
        make_subscriber(topics=topics)

    plan(session, approved_issue.id)

    planned = rows(session, approved_issue.id)
    keys_per_batch = {b: {r.composition_key for r in planned if r.batch == b}
                      for b in {r.batch for r in planned}}
    assert sorted(keys_per_batch) == [1, 2]
    assert all(len(keys) == 1 for keys in keys_per_batch.values())


def test_planning_20000_subscribers_takes_seconds(
    session: Session, approved_issue: Issue,
) -> None:
    now = utcnow()
    session.execute(Subscriber.__table__.insert(), [  # type: ignore[attr-defined]
        {"email": f"r{i}@example.org", "name": "", "timezone": "UTC", "only_my_topics": False,
         "status": SubscriberStatus.confirmed, "paused": False, "source": "test",
         "created_at": now, "updated_at": now}
        for i in range(20_000)
    ])
    session.commit()

    started = time.perf_counter()
    assert plan(session, approved_issue.id) == 20_000
    assert time.perf_counter() - started < 10


# --- one batch, in process -----------------------------------------------------------------


def test_batch_sends_each_pending_row_and_records_the_message_id(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    any_smtp_server: SMTPTestServer,
) -> None:
    reader = make_subscriber(email="ada@example.org", name="Ada", topics=["fintech"])
    plan(session, approved_issue.id)

    delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    [row] = rows(session, approved_issue.id)
    [received] = any_smtp_server.messages
    msg = assert_email(received.data, to=reader.email, both_contain=["Payments grow fast"])
    assert row.status == DeliveryStatus.sent
    assert row.message_id == msg["Message-ID"]
    assert issue_status(session, approved_issue.id) == IssueStatus.sent


def test_running_a_batch_twice_sends_nobody_twice(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    smtp_server: SMTPTestServer,
) -> None:
    readers = [make_subscriber() for _ in range(3)]
    plan(session, approved_issue.id)

    delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)
    second = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    assert "sent" not in second.counts
    assert sorted(smtp_server.recipients()) == sorted(r.email for r in readers)


def test_unsubscribe_after_planning_suppresses_at_send_time(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    smtp_server: SMTPTestServer,
) -> None:
    stays, leaves = make_subscriber(), make_subscriber()
    plan(session, approved_issue.id)
    unsubscribe(session=session, subscriber_id=leaves.id, source="test")
    session.commit()

    delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    assert smtp_server.recipients() == [stays.email]
    by_sub = {r.subscriber_id: r.status for r in rows(session, approved_issue.id)}
    assert by_sub[leaves.id] == DeliveryStatus.suppressed


def test_hard_bounce_fails_the_row_and_suppresses_the_address(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    any_smtp_server: SMTPTestServer,
) -> None:
    gone = make_subscriber(email="gone@example.org")
    make_subscriber()
    any_smtp_server.reject(gone.email, "550 5.1.1 <gone@example.org>: no such user")
    plan(session, approved_issue.id)

    delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    row = next(r for r in rows(session, approved_issue.id) if r.subscriber_id == gone.id)
    assert row.status == DeliveryStatus.failed
    assert "5.1.1" in row.error
    assert session.get(Suppression, gone.email) is not None
    session.refresh(gone)
    assert gone.status == SubscriberStatus.bounced
    assert session.scalars(select(Event).where(
        Event.subscriber_id == gone.id, Event.kind == EventKind.bounced)).first() is not None


def test_next_send_skips_a_bounced_address(
    session: Session, make_issue: Callable[..., Issue],
    make_subscriber: Callable[..., Subscriber], smtp_server: SMTPTestServer,
) -> None:
    gone = make_subscriber(email="gone@example.org")
    smtp_server.reject(gone.email, "550 5.1.1 no such user")
    first = make_issue(items=ITEMS, status=IssueStatus.approved)
    plan(session, first.id)
    delivery.run_batch(session=session, issue_id=first.id, batch=1)
    smtp_server.clear_failures()

    second = make_issue(items=ITEMS, status=IssueStatus.approved)
    assert plan(session, second.id) == 0
    assert smtp_server.rcpt_attempts == [gone.email]


def test_5xx_without_a_bounce_fails_the_row_but_keeps_the_subscriber(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    any_smtp_server: SMTPTestServer,
) -> None:
    reader = make_subscriber()
    any_smtp_server.fail_data_next("554 5.7.1 message refused as spam", times=1)
    plan(session, approved_issue.id)

    delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    [row] = rows(session, approved_issue.id)
    assert row.status == DeliveryStatus.failed
    assert row.error.endswith("554 5.7.1 message refused as spam")
    session.refresh(reader)
    assert reader.status == SubscriberStatus.confirmed
    assert session.get(Suppression, reader.email) is None


def test_4xx_puts_the_row_back_with_a_backoff(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    any_smtp_server: SMTPTestServer,
) -> None:
    busy = make_subscriber(email="busy@example.org")
    other = make_subscriber()
    any_smtp_server.fail_next(busy.email, "451 4.3.0 try later")
    plan(session, approved_issue.id)

    outcome = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    row = next(r for r in rows(session, approved_issue.id) if r.subscriber_id == busy.id)
    assert row.status == DeliveryStatus.pending
    assert row.next_attempt_at is not None and row.next_attempt_at > utcnow()
    assert outcome.retry_in is not None and 0 < outcome.retry_in <= delivery.MAX_RETRY_DELAY
    assert any_smtp_server.recipients() == [other.email]


def test_an_unreachable_relay_charges_nobody_and_the_rows_wait(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from newsletter.cli.local.services import free_port
    from newsletter.settings import settings

    monkeypatch.setattr(settings, "send_max_retries", 1)
    monkeypatch.setattr(settings, "send_retry_base_seconds", 0.01)
    monkeypatch.setattr(settings, "smtp_host", "127.0.0.1")
    monkeypatch.setattr(settings, "smtp_port", free_port())  # nobody listens
    make_subscriber()
    plan(session, approved_issue.id)

    for _ in range(3):  # more runs than the row has attempts
        outcome = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)
        assert outcome.counts == {"deferred": 1}
        time.sleep(0.02)

    [row] = rows(session, approved_issue.id)
    assert (row.status, row.attempts) == (DeliveryStatus.pending, 0)
    assert row.error.startswith("not tried: cannot open a session with the SMTP relay")
    assert issue_status(session, approved_issue.id) == IssueStatus.sending


@pytest.mark.parametrize("trouble", ["wrong password", "HELO refused", "sender refused"])
def test_a_relay_refusing_the_session_pauses_the_issue_and_resuming_sends_to_all(
    trouble: str, session: Session, approved_issue: Issue,
    make_subscriber: Callable[..., Subscriber], request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, redis_url: str,
) -> None:
    from newsletter.settings import settings

    # A mistyped password or a relay that will not have us is the operator's problem:
    # no subscriber may be failed or charged because of it, and the relay's words show.
    readers = [make_subscriber() for _ in range(3)]
    if trouble == "wrong password":
        server = request.getfixturevalue("auth_smtp_server")
        monkeypatch.setattr(settings, "smtp_password", "typo")
        expected = "535 5.7.8"
    else:
        server = request.getfixturevalue("troubled_smtp_server")
        if trouble == "HELO refused":
            server.helo_reply = expected = "554 5.7.1 go away"
        else:
            server.mail_reply = expected = "550 5.7.1 sender not allowed"
    plan(session, approved_issue.id)

    outcome = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    assert outcome.counts == {"released": 3}
    assert outcome.retry_in is None
    ledger = rows(session, approved_issue.id)
    assert {(r.status, r.attempts) for r in ledger} == {(DeliveryStatus.pending, 0)}
    issue = session.get(Issue, approved_issue.id)
    session.refresh(issue)
    assert issue.status == IssueStatus.paused
    assert expected in issue.status_reason
    assert f"127.0.0.1:{server.port}" in issue.status_reason
    assert any(r.levelname == "ERROR" and expected in r.getMessage() for r in caplog.records)
    assert server.messages == []

    monkeypatch.setattr(settings, "smtp_password", "s3cret")
    server.helo_reply = server.mail_reply = ""
    assert delivery.resume_send(session=session, issue_id=approved_issue.id)
    session.commit()
    delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    assert sorted(server.recipients()) == sorted(r.email for r in readers)
    assert {r.status for r in rows(session, approved_issue.id)} == {DeliveryStatus.sent}


def test_batch_of_a_paused_issue_sends_nothing(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    smtp_server: SMTPTestServer,
) -> None:
    make_subscriber()
    plan(session, approved_issue.id)
    assert delivery.pause_send(session=session, issue_id=approved_issue.id)
    session.commit()

    delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    assert smtp_server.messages == []
    assert rows(session, approved_issue.id)[0].status == DeliveryStatus.pending


def test_cancel_turns_pending_rows_cancelled(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
) -> None:
    make_subscriber(), make_subscriber()
    plan(session, approved_issue.id)

    assert delivery.cancel_send(session=session, issue_id=approved_issue.id) == 2
    session.commit()

    assert counts(approved_issue.id)["cancelled"] == 2
    assert issue_status(session, approved_issue.id) == IssueStatus.cancelled


def test_sweep_returns_expired_leases_and_leaves_sent_rows_alone(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    redis_url: str,
) -> None:
    make_subscriber(), make_subscriber()
    plan(session, approved_issue.id)
    token, _ = delivery.claim(session=session, issue_id=approved_issue.id, batch=1)
    first, second = rows(session, approved_issue.id)
    session.execute(update(Delivery).where(Delivery.id == first.id).values(
        status=DeliveryStatus.sent, message_id="<x@y>"))
    session.commit()

    later = utcnow() + timedelta(seconds=3600)
    assert delivery.sweep_expired_leases(session=session, now=later) == 1
    session.commit()

    first, second = rows(session, approved_issue.id)
    assert (first.status, second.status) == (DeliveryStatus.sent, DeliveryStatus.pending)
    assert second.claim_token == "" and token


def test_sweep_leaves_live_leases_alone(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
) -> None:
    make_subscriber()
    plan(session, approved_issue.id)
    delivery.claim(session=session, issue_id=approved_issue.id, batch=1)

    assert delivery.sweep_expired_leases(session=session) == 0
    assert rows(session, approved_issue.id)[0].status == DeliveryStatus.sending


# --- a batch interrupted while it sends -------------------------------------------------


class HookOnFirstData:
    """Mixin for the recording SMTP server: run `hook()` while answering the first DATA.

    The worker is then blocked waiting for that message's 250, so whatever the hook
    commits (a sweep, a pause, an unsubscribe) happens in the middle of the batch.
    """

    hook: Callable[[], object] | None = None
    hooked_at: float = 0.0  # time.monotonic() when the hook had run

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
            self.hooked_at = time.monotonic()
        return await super().handle_DATA(server, session, envelope)  # type: ignore[misc]


@pytest.fixture
def hooked_smtp_server(smtp_server: SMTPTestServer) -> SMTPTestServer:
    smtp_server.__class__ = type("HookedSMTPServer", (HookOnFirstData, type(smtp_server)), {})
    return smtp_server


def slowed(server: SMTPTestServer, delay: float) -> SMTPTestServer:
    """`server` answering every RCPT after `delay` s, so each transaction takes that long.

    A running batch sees a pause, cancel or lost lease within ~50 ms (the writer's status
    poll and its 10 ms tick): with transactions this slow, at most the one started just
    after the change also goes out, however busy the machine.
    """
    server.__class__ = type("Slowed", (SlowRcpt, type(server)), {})
    server.delay = delay  # type: ignore[attr-defined]
    return server


def in_own_session(action: Callable[[Session], object]) -> Callable[[], None]:
    """`action` in a committed session of its own (another process, in effect)."""
    def run() -> None:
        with db.session_scope() as s:
            action(s)
    return run


@pytest.fixture
def look_again_every_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """A running batch re-reads its issue and rows before every message, not every 2 s."""
    monkeypatch.setattr(delivery.writer, "REFRESH_SECONDS", 0.0)


def test_a_batch_stops_sending_rows_the_sweep_handed_on_once_a_mark_fails(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    hooked_smtp_server: SMTPTestServer, redis_url: str,
) -> None:
    # Another machine whose clock runs ahead sweeps our lease while we send message 1,
    # and a second worker claims the batch. The first mark that fails tells us: we stop
    # sending its rows within the few transactions already started.
    readers = [make_subscriber() for _ in range(30)]
    slowed(hooked_smtp_server, 0.1)
    plan(session, approved_issue.id)
    later = utcnow() + timedelta(hours=1)
    tokens: list[str] = []

    def take_over(s: Session) -> None:
        delivery.sweep_expired_leases(session=s, now=later)
        tokens.append(delivery.claim(session=s, issue_id=approved_issue.id, batch=1,
                                     now=later)[0])

    hooked_smtp_server.hook = in_own_session(take_over)

    outcome = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    sent = len(hooked_smtp_server.messages)
    assert sent <= 5
    assert outcome.counts == {"lost_lease": len(readers)}
    taken = rows(session, approved_issue.id)
    assert [r.status for r in taken] == [DeliveryStatus.sending] * len(readers)
    assert {r.claim_token for r in taken} == {tokens[0]}


def test_cancel_during_a_batch_stops_it_and_cancels_the_untried_rows(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    hooked_smtp_server: SMTPTestServer, look_again_every_message: None,
) -> None:
    for _ in range(3):
        make_subscriber()
    slowed(hooked_smtp_server, 0.2)
    plan(session, approved_issue.id)
    hooked_smtp_server.hook = in_own_session(
        lambda s: delivery.cancel_send(session=s, issue_id=approved_issue.id))

    outcome = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    # The status is looked at every 50 ms: the transaction after the cancelled one may
    # already have started; none after that.
    sent = len(hooked_smtp_server.messages)
    assert sent <= 2
    assert outcome.counts == {"sent": sent, "released": 3 - sent}
    c = counts(approved_issue.id)
    assert (c["sent"], c["cancelled"], c["pending"], c["sending"]) == (sent, 3 - sent, 0, 0)
    assert issue_status(session, approved_issue.id) == IssueStatus.cancelled


def test_pause_during_a_batch_hands_rows_back_and_resume_sends_each_once(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    hooked_smtp_server: SMTPTestServer, look_again_every_message: None, redis_url: str,
) -> None:
    readers = [make_subscriber() for _ in range(3)]
    slowed(hooked_smtp_server, 0.2)
    plan(session, approved_issue.id)
    hooked_smtp_server.hook = in_own_session(
        lambda s: delivery.pause_send(session=s, issue_id=approved_issue.id))

    delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    # The status is looked at every 50 ms: the transaction after the paused one may
    # already have started.
    sent = len(hooked_smtp_server.messages)
    assert sent <= 2
    handed_back = [r for r in rows(session, approved_issue.id)
                   if r.status == DeliveryStatus.pending]
    assert len(handed_back) == 3 - sent
    assert all(r.attempts == 0 and r.claim_token == "" for r in handed_back)
    assert delivery.resume_send(session=session, issue_id=approved_issue.id)
    session.commit()
    delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)
    assert Counter(hooked_smtp_server.recipients()) == Counter(r.email for r in readers)
    assert issue_status(session, approved_issue.id) == IssueStatus.sent


def test_pause_reaches_a_fast_batch_within_a_few_messages_not_seconds(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    hooked_smtp_server: SMTPTestServer,
) -> None:
    # Default timings: the lease refresh is 2 s away, far longer than these 80 take.
    for _ in range(80):
        make_subscriber()
    plan(session, approved_issue.id)
    hooked_smtp_server.hook = in_own_session(
        lambda s: delivery.pause_send(session=s, issue_id=approved_issue.id))

    outcome = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    # The status is read every 50 ms: messages finish within a fraction of a second of
    # the pause (a busy machine may delay the look a little), never seconds later.
    sent = len(hooked_smtp_server.messages)
    last = max(m.received_at for m in hooked_smtp_server.messages)
    assert last - hooked_smtp_server.hooked_at < 1.0  # type: ignore[attr-defined]
    assert sent < 80
    assert outcome.counts == {"sent": sent, "released": 80 - sent}
    assert counts(approved_issue.id)["pending"] == 80 - sent


def test_pause_reaches_a_batch_on_a_slow_relay_within_a_handful_of_messages(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    smtp_server: SMTPTestServer,
) -> None:
    smtp_server.__class__ = type("SlowHooked", (HookOnFirstData, SlowRcpt, type(smtp_server)), {})
    smtp_server.delay = 0.05  # type: ignore[attr-defined]  # 20 messages a second
    for _ in range(30):
        make_subscriber()
    plan(session, approved_issue.id)
    smtp_server.hook = in_own_session(  # type: ignore[attr-defined]
        lambda s: delivery.pause_send(session=s, issue_id=approved_issue.id))

    outcome = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    # Status read every 50 ms, 0.05 s a message: the one in flight plus one or two
    # (a few more when the machine is busy), not the 30 planned.
    assert len(smtp_server.messages) <= 6
    assert outcome.counts["released"] >= 23


def test_unsubscribe_during_a_batch_is_honoured_for_rows_not_yet_tried(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    smtp_server: SMTPTestServer, look_again_every_message: None,
) -> None:
    smtp_server.__class__ = type("SlowHooked", (HookOnFirstData, SlowRcpt, type(smtp_server)), {})
    smtp_server.delay = 0.05  # type: ignore[attr-defined]  # 15 to go: 0.75 s to notice
    readers = [make_subscriber() for _ in range(20)]
    leaving = readers[-5:]
    plan(session, approved_issue.id)

    def leave(s: Session) -> None:
        for reader in leaving:
            unsubscribe(session=s, subscriber_id=reader.id, source="test")

    smtp_server.hook = in_own_session(leave)  # type: ignore[attr-defined]

    delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    assert set(smtp_server.recipients()) == {r.email for r in readers[:15]}
    by_sub = {r.subscriber_id: r.status for r in rows(session, approved_issue.id)}
    assert {by_sub[r.id] for r in leaving} == {DeliveryStatus.suppressed}


def test_claim_takes_nothing_once_the_issue_is_paused(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
) -> None:
    # run_batch looks at the issue, then claims: a pause in between must win.
    make_subscriber()
    plan(session, approved_issue.id)
    delivery.pause_send(session=session, issue_id=approved_issue.id)
    session.commit()

    token, _ = delivery.claim(session=session, issue_id=approved_issue.id, batch=1)

    assert delivery.load_claimed(session, token) == []
    assert rows(session, approved_issue.id)[0].status == DeliveryStatus.pending


def test_sweep_cancels_expired_rows_of_a_cancelled_issue(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
) -> None:
    # A worker died holding rows of an issue the editor then cancelled.
    make_subscriber()
    plan(session, approved_issue.id)
    delivery.claim(session=session, issue_id=approved_issue.id, batch=1)
    delivery.cancel_send(session=session, issue_id=approved_issue.id)
    session.commit()

    delivery.sweep_expired_leases(session=session, now=utcnow() + timedelta(hours=1))
    session.commit()

    assert counts(approved_issue.id)["cancelled"] == 1
    assert counts(approved_issue.id)["pending"] == 0


def test_a_row_that_keeps_getting_4xx_fails_after_the_retry_limit(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from newsletter.settings import settings

    # The limit is per row, so it holds whichever task (a retry, a duplicate, one
    # re-enqueued by the sweep) makes the attempts.
    monkeypatch.setattr(settings, "send_max_retries", 1)
    monkeypatch.setattr(settings, "send_retry_base_seconds", 0.01)
    busy = make_subscriber()
    smtp_server.reject(busy.email, "451 4.3.0 mailbox busy")
    plan(session, approved_issue.id)

    first = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)
    time.sleep(0.05)
    second = delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    assert (first.counts, second.counts) == ({"deferred": 1}, {"failed": 1})
    [row] = rows(session, approved_issue.id)
    assert (row.status, row.attempts) == (DeliveryStatus.failed, 2)
    assert row.error.startswith("out of retries after 2 attempts: 451")
    assert second.retry_in is None
    assert issue_status(session, approved_issue.id) == IssueStatus.sent


def test_rows_out_of_attempts_are_never_claimed_again_and_the_sweep_fails_them(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch, redis_url: str,
) -> None:
    from newsletter.settings import settings

    monkeypatch.setattr(settings, "send_max_retries", 1)
    monkeypatch.setattr(settings, "send_lease_seconds", 10)
    fresh, spent = make_subscriber(), make_subscriber()
    plan(session, approved_issue.id)
    # One row has had its last attempt (SEND_MAX_RETRIES lowered since, say).
    session.execute(update(Delivery).where(Delivery.subscriber_id == spent.id)
                    .values(attempts=2))
    session.commit()

    token, _ = delivery.claim(session=session, issue_id=approved_issue.id, batch=1)
    assert [c.subscriber_id for c in delivery.load_claimed(session, token)] == [fresh.id]
    with db.session_scope() as s:  # the claimer died; the lease passes; beat sweeps
        delivery.sweep_expired_leases(session=s, now=utcnow() + timedelta(seconds=11))

    by_sub = {r.subscriber_id: r for r in rows(session, approved_issue.id)}
    assert by_sub[spent.id].status == DeliveryStatus.failed
    assert by_sub[spent.id].error.startswith("out of retries after 2 attempts")
    # Claiming is not an attempt: the row that was only claimed goes back uncharged.
    assert (by_sub[fresh.id].status, by_sub[fresh.id].attempts) == (DeliveryStatus.pending, 0)
    assert smtp_server.messages == []


def test_postgresql_sent_marks_leave_no_asynchronous_commit_in_the_pool(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    smtp_server: SMTPTestServer,
) -> None:
    engine = session.get_bind()
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    make_subscriber()
    plan(session, approved_issue.id)

    delivery.run_batch(session=session, issue_id=approved_issue.id, batch=1)

    # Check out every pooled connection at once: none may still commit asynchronously.
    raws = [engine.raw_connection() for _ in range(engine.pool.checkedin() + 1)]
    try:
        for raw in raws:
            cur = raw.cursor()
            cur.execute("SHOW synchronous_commit")
            assert cur.fetchone()[0] == "on"
            cur.close()
    finally:
        for raw in raws:
            raw.close()


# --- through a real Celery worker ------------------------------------------------------


def test_send_through_a_worker_delivers_one_message_per_confirmed_subscriber(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    smtp_server: SMTPTestServer, celery_workers: WorkerFactory,
) -> None:
    readers = [make_subscriber(topics=["fintech"]) for _ in range(5)]
    make_subscriber(confirmed=False)
    celery_workers.start()

    delivery.start_send(issue_id=approved_issue.id)

    wait_until(lambda: done(approved_issue.id), message=celery_workers.logs)
    assert sorted(smtp_server.recipients()) == sorted(r.email for r in readers)
    assert counts(approved_issue.id)["sent"] == 5
    # The last row's mark commits a moment before the batch marks the issue sent.
    wait_until(lambda: issue_status(session, approved_issue.id) == IssueStatus.sent,
               timeout=5, message=celery_workers.logs)


def test_enqueueing_every_batch_twice_sends_nobody_twice(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    smtp_server: SMTPTestServer, celery_workers: WorkerFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from newsletter.settings import settings

    monkeypatch.setattr(settings, "send_batch_size", 3)
    readers = [make_subscriber() for _ in range(9)]
    plan(session, approved_issue.id)
    delivery.enqueue_batches(approved_issue.id)
    delivery.enqueue_batches(approved_issue.id)
    celery_workers.start(concurrency=2)

    wait_until(lambda: done(approved_issue.id), message=celery_workers.logs)
    time.sleep(1)  # let any duplicate task run, so a double send would show
    assert Counter(smtp_server.recipients()) == Counter(r.email for r in readers)


def test_worker_killed_mid_batch_loses_nobody_and_sends_nobody_twice(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    slow_smtp_server: SMTPTestServer, celery_workers: WorkerFactory,
) -> None:
    readers = [make_subscriber() for _ in range(8)]
    # 1 s per RCPT: the kill must land while message 4 waits there, not after its 250
    # (the one window SMTP cannot close), even when this test is slow to notice.
    slow_smtp_server.delay = 1.0  # type: ignore[attr-defined]
    plan(session, approved_issue.id)
    victim = celery_workers.start(SEND_LEASE_SECONDS="10")
    delivery.enqueue_batches(approved_issue.id)

    # Kill while the worker waits on the server for message 4: 3 are sent and recorded.
    wait_until(lambda: counts(approved_issue.id)["sent"] >= 3, message=celery_workers.logs)
    celery_workers.kill(victim)
    assert counts(approved_issue.id)["sending"] > 0

    slow_smtp_server.delay = 0  # type: ignore[attr-defined]
    celery_workers.start()
    with db.session_scope() as s:  # what beat does every minute, once the lease is over
        delivery.sweep_expired_leases(session=s, now=utcnow() + timedelta(seconds=11))

    wait_until(lambda: done(approved_issue.id), message=celery_workers.logs)
    assert Counter(slow_smtp_server.recipients()) == Counter(r.email for r in readers)


def test_4xx_is_retried_by_the_worker_and_then_delivered(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    smtp_server: SMTPTestServer, celery_workers: WorkerFactory,
) -> None:
    busy = make_subscriber(email="busy@example.org")
    smtp_server.fail_next(busy.email, "451 4.3.0 mailbox busy", times=2)
    celery_workers.start()

    delivery.start_send(issue_id=approved_issue.id)

    wait_until(lambda: counts(approved_issue.id)["sent"] == 1, timeout=30,
               message=celery_workers.logs)
    assert smtp_server.rcpt_attempts == [busy.email] * 3
    assert smtp_server.recipients() == [busy.email]
    [row] = rows(session, approved_issue.id)
    assert row.attempts == 2  # the two failed transactions; the one that worked is free


def test_beat_firing_twice_sends_the_due_issue_once(
    session: Session, make_issue: Callable[..., Issue],
    make_subscriber: Callable[..., Subscriber], smtp_server: SMTPTestServer,
    celery_workers: WorkerFactory,
) -> None:
    from newsletter.queue import producer
    from workers.tasks import send_due_issues

    readers = [make_subscriber() for _ in range(3)]
    issue = make_issue(items=ITEMS, status=IssueStatus.scheduled)
    issue.scheduled_for = utcnow() - timedelta(minutes=1)
    session.add(issue)
    session.commit()
    celery_workers.start(concurrency=2)

    with producer() as prod:
        send_due_issues.apply_async(producer=prod)
        send_due_issues.apply_async(producer=prod)

    wait_until(lambda: counts(issue.id)["sent"] == 3, message=celery_workers.logs)
    time.sleep(1)
    assert Counter(smtp_server.recipients()) == Counter(r.email for r in readers)


def test_worker_gives_up_after_the_retry_limit_and_finishes_the_issue(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    smtp_server: SMTPTestServer, celery_workers: WorkerFactory,
) -> None:
    busy, fine = make_subscriber(), make_subscriber()
    smtp_server.reject(busy.email, "451 4.3.0 mailbox busy")
    celery_workers.start(SEND_MAX_RETRIES="2")

    delivery.start_send(issue_id=approved_issue.id)

    wait_until(lambda: issue_status(session, approved_issue.id) == IssueStatus.sent,
               timeout=30, message=celery_workers.logs)
    by_sub = {r.subscriber_id: r for r in rows(session, approved_issue.id)}
    assert by_sub[fine.id].status == DeliveryStatus.sent
    assert (by_sub[busy.id].status, by_sub[busy.id].attempts) == (DeliveryStatus.failed, 3)
    assert "out of retries" in by_sub[busy.id].error
    assert smtp_server.rcpt_attempts.count(busy.email) == 3


def test_greylisting_every_recipient_once_delivers_them_all(
    session: Session, approved_issue: Issue, make_subscriber: Callable[..., Subscriber],
    smtp_server: SMTPTestServer, celery_workers: WorkerFactory,
) -> None:
    # Each 451 used to get its own backoff, so the deferred rows came due one by one
    # and the task's retries ran out (failing rows tried once) long before the rows'.
    readers = [make_subscriber() for _ in range(100)]
    for reader in readers:
        smtp_server.fail_next(reader.email, "451 4.7.1 greylisted, come back later")
    plan(session, approved_issue.id)
    celery_workers.start(SEND_MAX_RETRIES="1", SEND_RETRY_BASE_SECONDS="1")

    delivery.enqueue_batches(approved_issue.id)

    wait_until(lambda: done(approved_issue.id), timeout=30, message=celery_workers.logs)
    assert counts(approved_issue.id)["sent"] == 100
    assert Counter(smtp_server.recipients()) == Counter(r.email for r in readers)
    assert {r.attempts for r in rows(session, approved_issue.id)} == {1}  # the greylisted one


def test_a_stand_alone_worker_without_smtp_host_refuses_to_start(app_settings: object) -> None:
    import os
    import subprocess
    import sys

    from newsletter.settings import REPO_ROOT

    # The Procfile's worker: no mail catcher behind it, so no SMTP_HOST is a config error.
    env = {k: v for k, v in os.environ.items()
           if k not in ("SMTP_HOST", "ROUNDUP_EMBEDDED_WORKER")}
    env["REDIS_URL"] = "redis://127.0.0.1:9/0"  # checked before any connection is made
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-c", "1",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )

    assert result.returncode == 78, result.stderr
    assert "SMTP_HOST is not set" in result.stderr
