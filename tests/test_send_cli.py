"""`newsletter send` and `newsletter status` through the CLI, on embedded services.

No Redis answers at REDIS_URL here, so `send` starts its own private redis-server and
a real Celery worker, exactly as on a fresh machine; mail goes to the test SMTP server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import update
from sqlmodel import Session, select
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.cli.local.services import free_port
from newsletter.models import Delivery, DeliveryStatus, Issue, IssueStatus, Subscriber
from newsletter.settings import settings
from tests.fixtures.mail import FaultyHandler, SMTPTestServer

runner = CliRunner()


@pytest.fixture
def no_redis(app_settings: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """REDIS_URL points where nobody listens: the CLI must bring its own."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setattr(settings, "redis_url", dead)
    monkeypatch.setenv("REDIS_URL", dead)


def status_json(issue_id: int) -> dict[str, object]:
    result = runner.invoke(app, ["status", str(issue_id), "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.output)
    return data


def test_send_approve_wait_delivers_and_status_reports_the_counts(
    session: Session, make_issue: Callable[..., Issue],
    make_subscriber: Callable[..., Subscriber], smtp_server: SMTPTestServer, no_redis: None,
) -> None:
    readers = [make_subscriber(topics=["fintech"]) for _ in range(3)]
    make_subscriber(confirmed=False)
    issue = make_issue(items=[{"headline": "Payments grow fast", "topics": ["fintech"]}])

    result = runner.invoke(app, ["send", str(issue.id), "--approve", "--wait"])

    assert result.exit_code == 0, result.output
    assert "planned 3 deliveries" in result.output
    assert sorted(smtp_server.recipients()) == sorted(r.email for r in readers)
    report = status_json(issue.id)
    assert report["status"] == IssueStatus.sent
    assert report["counts"] == {**{s.value: 0 for s in DeliveryStatus}, "sent": 3}

    again = runner.invoke(app, ["send", str(issue.id), "--wait"])

    assert again.exit_code == 1
    assert "already sent" in again.output and "Traceback" not in again.output
    assert again.exception is None or isinstance(again.exception, SystemExit)
    assert len(smtp_server.messages) == 3


def test_send_wait_stops_and_says_why_when_the_relay_refuses_us(
    session: Session, make_issue: Callable[..., Issue],
    make_subscriber: Callable[..., Subscriber], faulty_smtp_server: FaultyHandler,
    no_redis: None,
) -> None:
    # The relay refuses every recipient: the issue pauses itself. Waiting on would show
    # a bar that never moves; the command says why and how to go on, and fails nobody.
    for _ in range(3):
        make_subscriber(topics=["fintech"])
    issue = make_issue(items=[{"headline": "Payments grow fast", "topics": ["fintech"]}])
    # Brackets as relays write them: printed as they are, not read as rich markup.
    faulty_smtp_server.reject_all("554 5.7.1 <x@example.org>: Relay access denied "
                                  "[blocked] [/x] [1.2.3.4].")

    result = runner.invoke(app, ["send", str(issue.id), "--approve", "--wait",
                                 "--timeout", "120"])

    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    assert f"issue {issue.id} is paused" in output
    assert "Relay access denied [blocked] [/x] [1.2.3.4]. pending 3." in output
    assert f"newsletter resume {issue.id}" in output
    assert "still sending after" not in output  # it did not sit out the timeout
    report = status_json(issue.id)
    assert report["status"] == IssueStatus.paused
    assert report["counts"]["failed"] == 0 and report["counts"]["pending"] == 3


def test_send_picks_up_an_issue_left_sending_by_an_interrupted_run(
    session: Session, make_issue: Callable[..., Issue],
    make_subscriber: Callable[..., Subscriber], smtp_server: SMTPTestServer, no_redis: None,
) -> None:
    from newsletter import delivery

    readers = [make_subscriber() for _ in range(2)]
    issue = make_issue(items=["A story"], status=IssueStatus.approved)
    # An earlier `send` planned, sent to the first reader and was killed: its private
    # Redis (and the queued batch) died with it.
    delivery.plan_send(session=session, issue_id=issue.id)
    session.execute(update(Delivery).where(Delivery.subscriber_id == readers[0].id)
                    .values(status=DeliveryStatus.sent, message_id="<earlier@x>"))
    session.commit()

    result = runner.invoke(app, ["send", str(issue.id)])

    assert result.exit_code == 0, result.output
    assert "already sending" in result.output
    assert smtp_server.recipients() == [readers[1].email]
    assert status_json(issue.id)["status"] == IssueStatus.sent


@pytest.mark.parametrize(("status", "message"), [
    (IssueStatus.draft, "is a draft"),
    (IssueStatus.cancelled, "was cancelled"),
    (IssueStatus.paused, "newsletter resume"),
])
def test_send_refuses_clearly_before_starting_anything(
    make_issue: Callable[..., Issue], status: IssueStatus, message: str, no_redis: None,
) -> None:
    issue = make_issue(items=["A story"], status=status)

    result = runner.invoke(app, ["send", str(issue.id), "--wait"])

    assert result.exit_code == 1
    assert message in result.output
    assert "private" not in result.output  # refused before any Redis or worker started


def test_send_and_status_of_an_unknown_issue(app_settings: object, no_redis: None) -> None:
    for command in (["send", "404"], ["status", "404", "--json"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1
        assert "no issue with id 404" in result.output


def test_pause_resume_cancel_speak_in_sentences(
    session: Session, make_issue: Callable[..., Issue],
    make_subscriber: Callable[..., Subscriber], no_redis: None,
) -> None:
    from newsletter import delivery

    for _ in range(3):
        make_subscriber()
    issue = make_issue(items=["A story"], status=IssueStatus.approved)

    unknown = runner.invoke(app, ["pause", "999"])
    assert unknown.exit_code == 1 and "No issue 999." in unknown.output
    idle = runner.invoke(app, ["pause", str(issue.id)])
    assert idle.exit_code == 1
    assert f"Issue {issue.id} is not sending" in idle.output
    assert "nothing to pause" in idle.output

    delivery.plan_send(session=session, issue_id=issue.id)
    session.commit()
    paused = runner.invoke(app, ["pause", str(issue.id)])
    assert paused.exit_code == 0, paused.output
    assert f"Issue {issue.id} paused." in paused.output
    again = runner.invoke(app, ["pause", str(issue.id)])
    assert again.exit_code == 1 and "nothing to pause" in again.output

    resumed = runner.invoke(app, ["resume", str(issue.id)])
    assert resumed.exit_code == 0, resumed.output
    assert f"Issue {issue.id} resumed: 3 deliveries left to send." in resumed.output
    assert f"newsletter send {issue.id}" in resumed.output  # its private Redis is gone
    not_paused = runner.invoke(app, ["resume", str(issue.id)])
    assert not_paused.exit_code == 1 and "nothing to resume" in not_paused.output

    cancelled = runner.invoke(app, ["cancel", str(issue.id)])
    assert cancelled.exit_code == 0, cancelled.output
    assert f"Issue {issue.id} cancelled: 3 deliveries will not be sent." in cancelled.output
    twice = runner.invoke(app, ["cancel", str(issue.id)])
    assert twice.exit_code == 1 and "cannot be cancelled" in twice.output
    assert "No issue 999." in runner.invoke(app, ["cancel", "999"]).output


def test_status_says_which_pending_rows_are_due_later_and_when(
    session: Session, make_issue: Callable[..., Issue],
    make_subscriber: Callable[..., Subscriber], app_settings: object,
) -> None:
    from newsletter import delivery

    for _ in range(3):
        make_subscriber()
    issue = make_issue(items=["A story"], status=IssueStatus.approved)
    delivery.plan_send(session=session, issue_id=issue.id)
    later = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    session.execute(update(Delivery).where(Delivery.subscriber_id.in_(  # type: ignore[attr-defined]
        session.exec(select(Subscriber.id).limit(2)).all())).values(next_attempt_at=later))
    session.commit()

    result = runner.invoke(app, ["status", str(issue.id)])

    assert result.exit_code == 0, result.output
    assert "Due later: 2 of the pending" in result.output
    assert "2031-05-06 07:08:09 UTC" in " ".join(result.output.split())
    assert status_json(issue.id)["due_later"] == {
        "rows": 2, "first": "2031-05-06T07:08:09+00:00", "last": "2031-05-06T07:08:09+00:00"}


def test_send_wait_without_a_worker_hints_and_gives_up_at_the_timeout(
    session: Session, make_issue: Callable[..., Issue],
    make_subscriber: Callable[..., Subscriber], smtp_server: SMTPTestServer, redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from newsletter.cli import send_cmds

    monkeypatch.setattr(send_cmds, "NO_WORKER_HINT_SECONDS", 0.5)
    make_subscriber()
    issue = make_issue(items=["A story"], status=IssueStatus.approved)

    result = runner.invoke(app, ["send", str(issue.id), "--wait", "--timeout", "2"])

    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "no worker seems to be running" in output and "newsletter worker" in output
    assert f"issue {issue.id} is still sending after 2s: pending 1" in output
    assert smtp_server.messages == []


def test_send_says_where_the_mail_catcher_put_the_mail(
    session: Session, make_issue: Callable[..., Issue],
    make_subscriber: Callable[..., Subscriber], no_redis: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "smtp_host", "")
    monkeypatch.delenv("SMTP_HOST", raising=False)
    monkeypatch.setattr(settings, "redis_url", "")
    monkeypatch.delenv("REDIS_URL", raising=False)
    make_subscriber()
    issue = make_issue(items=["A story"], status=IssueStatus.approved)

    result = runner.invoke(app, ["send", str(issue.id)])

    assert result.exit_code == 0, result.output
    assert "REDIS_URL is not set; starting a private Redis" in result.output
    mail_dir = settings.mail_dir.resolve()
    assert f".eml files in {mail_dir}\n" in result.output  # never wrapped: copy and paste it
    assert len(list(mail_dir.glob("*.eml"))) == 1
