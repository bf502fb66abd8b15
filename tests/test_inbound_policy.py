"""The bounce policy: what each outcome changes, recorded once, and the bounce-rate pause."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, col, select

from newsletter.inbound import policy
from newsletter.models import (
    Delivery,
    DeliveryStatus,
    Event,
    InboundMessage,
    Issue,
    IssueStatus,
    Subscriber,
    Suppression,
    utcnow,
)
from newsletter.settings import settings


def _sent(session: Session, issue: Issue, sub: Subscriber, *, ago: timedelta = timedelta(0),
          status: str = DeliveryStatus.sent) -> None:
    session.add(Delivery(issue_id=issue.id, subscriber_id=sub.id, status=status,
                         sent_at=utcnow() - ago, message_id=f"<{issue.id}.{sub.id}@x>"))
    session.commit()


def _status(session: Session, sub: Subscriber) -> str:
    session.expire_all()
    fresh = session.get(Subscriber, sub.id)
    assert fresh is not None
    return fresh.status


def _bounce(session: Session, sub: Subscriber, issue: Issue | None, *, hard: bool,
            key: str | None = None) -> policy.Outcome:
    outcome = policy.record_bounce(
        session=session, email=None, subscriber_id=sub.id,
        issue_id=issue.id if issue else None, hard=hard,
        status="5.1.1" if hard else "4.2.2",
        diagnostic="550 5.1.1 no such user" if hard else "452 4.2.2 mailbox full",
        source="test", message_key=key)
    session.commit()
    return outcome


def test_hard_bounce_suppresses_at_once_with_reason_and_issue_event(session, make_issue,
                                                                     make_subscriber):
    issue, sub = make_issue(), make_subscriber()
    outcome = _bounce(session, sub, issue, hard=True)
    assert outcome.suppressed and outcome.kind == policy.HARD_BOUNCE
    assert _status(session, sub) == "bounced"
    suppression = session.get(Suppression, sub.email)
    assert suppression is not None and "5.1.1" in suppression.reason
    events = session.exec(select(Event).where(Event.kind == "bounced")).all()
    assert [(e.subscriber_id, e.issue_id, e.source) for e in events] == [(sub.id, issue.id, "test")]


def test_soft_bounces_suppress_on_the_limit(session, make_issue, make_subscriber):
    issue, sub = make_issue(), make_subscriber()
    for n in range(1, settings.soft_bounce_limit):
        assert not _bounce(session, sub, issue, hard=False).suppressed, n
        assert _status(session, sub) == "confirmed"
        assert session.get(Suppression, sub.email) is None
    assert _bounce(session, sub, issue, hard=False).suppressed
    assert _status(session, sub) == "bounced"
    assert session.get(Suppression, sub.email) is not None


def test_a_later_successful_delivery_resets_the_soft_bounce_count(session, make_issue,
                                                                  make_subscriber):
    first, second = make_issue(), make_issue()
    sub = make_subscriber()
    _sent(session, first, sub, ago=timedelta(days=2))
    for _ in range(settings.soft_bounce_limit - 1):
        _bounce(session, sub, first, hard=False)
    _sent(session, second, sub)  # delivered, and it did not bounce
    assert policy.soft_bounce_count(session=session, subscriber_id=sub.id) == 0
    assert not _bounce(session, sub, first, hard=False).suppressed
    assert _status(session, sub) == "confirmed"


def test_soft_bounces_on_several_issues_are_not_reset_by_their_own_deliveries(
        session, make_issue, make_subscriber):
    sub = make_subscriber()
    issues = [make_issue() for _ in range(settings.soft_bounce_limit)]
    outcome = None
    for n, issue in enumerate(issues):
        _sent(session, issue, sub, ago=timedelta(days=len(issues) - n))
        outcome = _bounce(session, sub, issue, hard=False)
    assert outcome is not None and outcome.suppressed


def test_soft_bounces_older_than_30_days_do_not_count(session, make_issue, make_subscriber):
    issue, sub = make_issue(), make_subscriber()
    for _ in range(settings.soft_bounce_limit - 1):
        _bounce(session, sub, issue, hard=False)
    for event in session.exec(select(Event).where(Event.kind == "soft_bounced")).all():
        event.at = utcnow() - timedelta(days=31)
        session.add(event)
    session.commit()
    assert not _bounce(session, sub, issue, hard=False).suppressed


def test_the_same_message_twice_records_once(session, make_issue, make_subscriber):
    issue, sub = make_issue(), make_subscriber()
    for _ in range(settings.soft_bounce_limit + 1):
        _bounce(session, sub, issue, hard=False, key="smtp:<same@x>")
    assert policy.soft_bounce_count(session=session, subscriber_id=sub.id) == 1
    assert _status(session, sub) == "confirmed"
    again = _bounce(session, sub, issue, hard=False, key="smtp:<same@x>")
    assert again.duplicate
    assert len(session.exec(select(InboundMessage)).all()) == 1


def test_complaint_unsubscribes_and_suppresses(session, make_issue, make_subscriber):
    issue, sub = make_issue(), make_subscriber()
    outcome = policy.record_complaint(session=session, email=sub.email, subscriber_id=None,
                                      issue_id=issue.id, source="test")
    session.commit()
    assert outcome.unsubscribed and outcome.suppressed and outcome.subscriber_id == sub.id
    assert _status(session, sub) == "unsubscribed"
    assert "complaint" in session.get(Suppression, sub.email).reason
    kinds = session.exec(select(Event.kind).where(Event.issue_id == issue.id)).all()
    assert sorted(kinds) == ["complained", "unsubscribed"]


def test_unsubscribe_is_attributed_to_the_last_issue_sent(session, make_issue, make_subscriber):
    old, new = make_issue(), make_issue()
    sub = make_subscriber()
    _sent(session, old, sub, ago=timedelta(days=7))
    _sent(session, new, sub)
    outcome = policy.record_unsubscribe(session=session, subscriber_id=sub.id, issue_id=None,
                                        source="mailto")
    session.commit()
    assert outcome.unsubscribed and outcome.issue_id == new.id
    assert _status(session, sub) == "unsubscribed"
    assert session.get(Suppression, sub.email) is None  # they may come back


def test_auto_reply_is_an_event_and_nothing_else(session, make_issue, make_subscriber):
    issue, sub = make_issue(), make_subscriber()
    outcome = policy.record_auto_reply(session=session, subscriber_id=sub.id, issue_id=issue.id,
                                       source="test", kind="vacation")
    session.commit()
    assert not (outcome.suppressed or outcome.unsubscribed)
    assert _status(session, sub) == "confirmed"
    assert policy.soft_bounce_count(session=session, subscriber_id=sub.id) == 0
    assert policy.issue_outcome_counts(session=session, issue_id=issue.id)["auto_reply"] == 1


def test_bounce_for_nobody_we_know_changes_nothing(session, make_issue):
    issue = make_issue()
    outcome = policy.record_bounce(session=session, email=None, subscriber_id=99999,
                                   issue_id=issue.id, hard=True, status="5.1.1",
                                   diagnostic="", source="test", message_key="k")
    session.commit()
    assert outcome.kind == policy.UNKNOWN
    assert session.exec(select(Suppression)).all() == []
    assert session.exec(select(Event).where(col(Event.issue_id) == issue.id)).all() == []


def test_hard_bounce_rate_above_the_limit_pauses_the_send(session, make_issue, make_subscriber,
                                                          monkeypatch):
    monkeypatch.setattr(policy, "PAUSE_MIN_DELIVERIES", 20)
    issue = make_issue(status=IssueStatus.sending)
    subscribers = [make_subscriber() for _ in range(20)]
    for sub in subscribers:
        _sent(session, issue, sub)
    # 5 % of 20 is one bounce: the first does not pause, the second does.
    assert not _bounce(session, subscribers[0], issue, hard=True).paused
    assert _bounce(session, subscribers[1], issue, hard=True).paused
    session.expire_all()
    paused = session.get(Issue, issue.id)
    assert paused.status == IssueStatus.paused
    assert "2 of 20" in paused.status_reason and "BOUNCE_PAUSE_RATE" in paused.status_reason


def test_bounce_rate_is_not_judged_before_the_minimum_deliveries(session, make_issue,
                                                                  make_subscriber):
    issue = make_issue(status=IssueStatus.sending)
    subscribers = [make_subscriber() for _ in range(3)]
    for sub in subscribers:
        _sent(session, issue, sub)
        _bounce(session, sub, issue, hard=True)
    session.expire_all()
    assert session.get(Issue, issue.id).status == IssueStatus.sending
