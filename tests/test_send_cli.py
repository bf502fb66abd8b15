"""`newsletter send` and `newsletter status` through the CLI, on embedded services.

No Redis answers at REDIS_URL here, so `send` starts its own private redis-server and
a real Celery worker, exactly as on a fresh machine; mail goes to the test SMTP server.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from sqlalchemy import update
from sqlmodel import Session
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.models import Delivery, DeliveryStatus, Issue, IssueStatus, Subscriber
from newsletter.services import free_port
from newsletter.settings import settings
from tests.fixtures.mail import SMTPTestServer

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
