"""Per-issue feedback: bounces reported by webhooks show up, with rates, in
`newsletter status ISSUE` and on the console's send page."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.inbound.stats import issue_feedback
from newsletter.models import Delivery, DeliveryStatus, IssueStatus
from newsletter.subscribers import unsubscribe

SECRET = "generic-webhook-secret-0123456789"  # noqa: S105 - test value


@pytest.fixture
def sent_issue(session, make_subscriber, make_issue, web_settings, monkeypatch):
    """An issue sent to 8 subscribers; message i went to reader i."""
    monkeypatch.setattr(web_settings, "webhook_secret", SECRET)
    issue = make_issue(title="Feedback week", status=IssueStatus.sent)
    subs = [make_subscriber(email=f"reader{i}@example.org") for i in range(8)]
    for i, sub in enumerate(subs):
        session.add(Delivery(issue_id=issue.id, subscriber_id=sub.id,
                             status=DeliveryStatus.sent, message_id=f"<m{i}@roundup.example>",
                             sent_at=datetime.now(UTC)))
    session.commit()
    return issue, subs


def report(client, events):
    response = client.post("/webhooks/bounces/generic", json={"events": events},
                           headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status_code == 200, response.text


def bounce(i: int, status: str) -> dict[str, str]:
    return {"type": "bounce", "email": f"reader{i}@example.org", "status": status,
            "message_id": f"<m{i}@roundup.example>"}


@pytest.fixture
def feedback_reported(client, session, sent_issue):
    issue, subs = sent_issue
    report(client, [bounce(0, "5.1.1"), bounce(1, "5.1.1"), bounce(2, "4.2.2"),
                    bounce(2, "4.2.2"),  # the same reader twice: one subscriber
                    {"type": "complaint", "email": "reader3@example.org",
                     "message_id": "<m3@roundup.example>"}])
    unsubscribe(session=session, subscriber_id=subs[4].id, source="web", issue_id=issue.id)
    session.commit()
    return issue


def test_issue_feedback_counts_subscribers_per_outcome(session, feedback_reported):
    feedback = issue_feedback(session=session, issue_id=feedback_reported.id)
    # The complaint also unsubscribed reader3: two unsubscribes in all.
    assert (feedback.delivered, feedback.hard_bounces, feedback.soft_bounces,
            feedback.complaints, feedback.unsubscribes) == (8, 2, 1, 1, 2)
    assert feedback.as_dict()["hard_bounces_rate"] == 0.25


def test_soft_bounces_past_the_limit_stay_soft_in_the_counts(
        client, session, sent_issue, web_settings, monkeypatch):
    issue, _ = sent_issue
    monkeypatch.setattr(web_settings, "soft_bounce_limit", 2)
    report(client, [bounce(5, "4.2.2"), bounce(5, "4.2.2")])  # suppressed on the second
    feedback = issue_feedback(session=session, issue_id=issue.id)
    assert (feedback.hard_bounces, feedback.soft_bounces) == (0, 1)


def test_newsletter_status_shows_counts_and_rates(session, feedback_reported):
    runner = CliRunner()
    issue_id = str(feedback_reported.id)
    text = runner.invoke(app, ["status", issue_id])
    assert text.exit_code == 0, text.output
    assert ("Of 8 delivered: hard bounces 2 (25 %), soft bounces 1 (12.50 %), "
            "complaints 1 (12.50 %), unsubscribes 2 (25 %)") in " ".join(text.stdout.split())
    data = json.loads(runner.invoke(app, ["status", issue_id, "--json"]).stdout)
    assert data["feedback"]["complaints"] == 1
    assert data["feedback"]["complaints_rate"] == 0.125


def test_status_of_an_unsent_issue_has_no_rates(session, make_issue, app_settings):
    issue = make_issue()
    data = json.loads(CliRunner().invoke(app, ["status", str(issue.id), "--json"]).stdout)
    assert data["feedback"]["delivered"] == 0
    assert data["feedback"]["hard_bounces_rate"] is None


def test_console_send_page_shows_the_feedback(editor_client, feedback_reported):
    page = editor_client.get(f"/editor/issues/{feedback_reported.id}/send")
    assert page.status_code == 200
    assert 'id="feedback"' in page.text
    assert 'data-key="hard">2 <small class="hint">25.00&nbsp;%' in page.text
    assert 'data-key="complaints">1 <small class="hint">12.50&nbsp;%' in page.text
