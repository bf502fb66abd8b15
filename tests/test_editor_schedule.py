"""The console's scheduling page and the confirmation before sending."""

from __future__ import annotations

from datetime import UTC, datetime

from newsletter.models import Issue
from tests.fixtures.editor import editor_post


def test_send_confirmation_says_how_many_and_how_long(editor_client, make_issue,
                                                      make_subscriber):
    issue = make_issue(items=[{"headline": "A", "topics": ["logistics"]},
                              {"headline": "B", "topics": ["fintech"]}], status="approved")
    for topics in (["logistics"], ["fintech"], ["logistics"]):
        make_subscriber(topics=topics)
    page = editor_client.get(f"/editor/issues/{issue.id}/send/confirm").text
    assert "Send to 3 subscribers?" in page
    assert 'id="confirm-versions">2<' in page and "under a minute" in page
    assert f'action="/editor/issues/{issue.id}/send-now"' in page


def test_schedule_at_a_time_in_a_zone(editor_client, make_issue, session):
    issue = make_issue(items=["A"], status="approved")
    url = f"/editor/issues/{issue.id}/schedule-at"
    response = editor_post(editor_client, url, {"day": "2030-01-07", "time": "09:00",
                                                "timezone": "America/New_York", "mode": "zone"},
                           page=url)
    assert response.status_code == 303
    session.expire_all()
    saved = session.get(Issue, issue.id)
    assert saved.status == "scheduled"
    assert saved.scheduled_for == datetime(2030, 1, 7, 14, tzinfo=UTC)
    assert saved.local_send_time == ""


def test_schedule_in_each_readers_zone(editor_client, make_issue, make_subscriber, session):
    issue = make_issue(items=["A"], status="approved")
    make_subscriber(timezone="Asia/Tokyo")
    url = f"/editor/issues/{issue.id}/schedule-at"
    editor_post(editor_client, url, {"day": "2030-01-07", "time": "09:00",
                                     "timezone": "Europe/London", "mode": "local"}, page=url)
    session.expire_all()
    saved = session.get(Issue, issue.id)
    assert saved.local_send_time == "09:00"
    assert saved.scheduled_for == datetime(2030, 1, 7, 0, tzinfo=UTC)  # 09:00 in Tokyo


def test_a_past_time_is_shown_again_with_the_reason(editor_client, make_issue):
    issue = make_issue(items=["A"], status="approved")
    url = f"/editor/issues/{issue.id}/schedule-at"
    response = editor_post(editor_client, url, {"day": "2020-01-06", "time": "09:00",
                                                "timezone": "Europe/London", "mode": "zone"},
                           page=url)
    assert response.status_code == 400 and "has passed" in response.text
    assert 'value="2020-01-06"' in response.text


def test_a_draft_cannot_be_scheduled(editor_client, make_issue):
    issue = make_issue(items=["A"])
    page = editor_client.get(f"/editor/issues/{issue.id}/schedule-at").text
    assert "only an approved issue can be scheduled" in page
