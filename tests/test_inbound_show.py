"""`newsletter subscribers show EMAIL`: status, suppression reason and recent events."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.inbound import policy


def show(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["subscribers", "show", *args], catch_exceptions=False)


def test_show_json_gives_status_suppression_and_recent_events(session, make_issue,
                                                              make_subscriber):
    issue, sub = make_issue(), make_subscriber(email="gone@example.org", topics=["fintech"])
    policy.record_bounce(session=session, email=None, subscriber_id=sub.id, issue_id=issue.id,
                         hard=True, status="5.1.1", diagnostic="550 5.1.1 user unknown",
                         source="smtp")
    session.commit()
    result = show("Gone@Example.org", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["status"] == "bounced" and data["topics"] == ["fintech"]
    assert data["suppressed"] is True
    assert "5.1.1" in data["suppression"]["reason"] and data["suppression"]["since"]
    newest = data["events"][0]
    assert (newest["kind"], newest["issue_id"], newest["source"]) == ("bounced", issue.id, "smtp")
    assert newest["data"]["status"] == "5.1.1"
    assert [e["kind"] for e in data["events"]][-1] == "signed_up"


def test_show_table_names_the_suppression_reason(session, make_subscriber):
    sub = make_subscriber(email="angry@example.org")
    policy.record_complaint(session=session, email=sub.email, subscriber_id=None,
                            issue_id=None, source="smtp")
    session.commit()
    result = show("angry@example.org")
    assert result.exit_code == 0, result.output
    assert "unsubscribed" in result.output and "complaint (abuse)" in result.output
    assert "complained" in result.output


def test_show_an_unknown_address_fails_clearly(session):
    result = show("nobody@example.org")
    assert result.exit_code == 1
    assert "no subscriber or suppression with the address nobody@example.org" in result.output
