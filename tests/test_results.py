"""Per-story results for editors: readers per story and topic against delivered
emails, and the unsubscribes an issue caused (attributed, and nearby in time)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlmodel import select

from newsletter.engagement.results import issue_results
from newsletter.models import (
    Click,
    Delivery,
    DeliveryStatus,
    Event,
    EventKind,
    IssueStatus,
    Item,
    utcnow,
)


@pytest.fixture
def sent(session, make_issue, make_subscriber):
    """An issue delivered to 10 readers (one more failed), three stories."""
    issue = make_issue(status=IssueStatus.sent, items=[
        {"headline": "Port robots", "topics": ["logistics"]},
        {"headline": "Rail freight", "topics": ["logistics", "europe"]},
        {"headline": "Paris fashion week", "topics": ["luxury-fashion", "europe"]},
    ])
    started = utcnow() - timedelta(days=2)
    issue.send_started_at = issue.sent_at = started
    session.add(issue)
    readers = [make_subscriber() for _ in range(11)]
    for n, reader in enumerate(readers):
        status = DeliveryStatus.failed if n == 10 else DeliveryStatus.sent
        session.add(Delivery(issue_id=issue.id, subscriber_id=reader.id, status=status))
    items = session.exec(select(Item).where(Item.issue_id == issue.id)
                         .order_by(Item.position)).all()
    port, rail, paris = (i.id for i in items)
    # 4 readers opened Port robots, 2 of them Rail freight too, 1 Paris fashion week.
    for reader, item in [(0, port), (1, port), (2, port), (3, port), (0, rail), (1, rail),
                         (4, paris)]:
        session.add(Click(subscriber_id=readers[reader].id, issue_id=issue.id, item_id=item,
                          at=started + timedelta(hours=reader)))
    # Unsubscribes: 2 from this email, 1 via the preference centre the next day (nearby),
    # 1 nine days before the send (not counted), 1 attributed to another issue.
    for n, (issue_id, at) in enumerate([
            (issue.id, started + timedelta(hours=1)), (issue.id, started + timedelta(hours=5)),
            (None, started + timedelta(days=1)), (None, started - timedelta(days=9)),
            (issue.id + 1, started + timedelta(hours=2))]):
        session.add(Event(subscriber_id=readers[5 + n].id, issue_id=issue_id,
                          kind=EventKind.unsubscribed, at=at, source="test"))
    session.commit()
    return issue


def test_results_count_readers_per_story_and_topic_against_delivered(session, sent):
    results = issue_results(session=session, issue_id=sent.id)
    assert results.delivered == 10
    assert results.clickers == 5
    assert [(r.label, r.readers, r.rate) for r in results.stories] == [
        ("Port robots", 4, 0.4), ("Rail freight", 2, 0.2), ("Paris fashion week", 1, 0.1)]
    topics = {r.key: (r.readers, r.rate) for r in results.topics}
    # Logistics: readers 0-3 (readers 0 and 1 opened two Logistics stories: counted once)
    assert topics == {"logistics": (4, 0.4), "europe": (3, 0.3), "luxury-fashion": (1, 0.1)}


def test_unsubscribes_attributed_and_nearby_are_counted_apart(session, sent):
    results = issue_results(session=session, issue_id=sent.id)
    assert (results.unsubscribes_attributed, results.unsubscribes_nearby) == (2, 1)
    assert results.unsubscribe_rate == 0.2


def test_clicks_per_day_start_on_the_send_day(session, sent):
    days = issue_results(session=session, issue_id=sent.id).clicks_per_day
    assert len(days) == 7 and days[0][1] == 7 and sum(n for _d, n in days) == 7


def test_results_page_shows_the_numbers_and_charts(editor_client, sent):
    page = editor_client.get(f"/editor/issues/{sent.id}/results")
    assert page.status_code == 200
    html = page.text
    assert re.search(r'id="total-delivered"><span class="big">10<', html)
    assert re.search(r'<td>Port robots</td><td class="num">4</td><td class="num">40.0%</td>',
                     html)
    assert re.search(r'data-topic="europe"><td>Europe</td><td class="num">3</td>', html)
    assert re.search(r'id="unsub-attributed">2<', html) and re.search(r'id="unsub-nearby">1<',
                                                                     html)
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart') == 5


def test_issue_pages_link_to_results(editor_client, sent):
    page = editor_client.get(f"/editor/issues/{sent.id}").text
    assert f'href="/editor/issues/{sent.id}/results"' in page


def test_results_need_an_editor(anon_client, sent):
    response = anon_client.get(f"/editor/issues/{sent.id}/results", follow_redirects=False)
    assert response.status_code == 303 and "/editor/login" in response.headers["location"]


def test_results_of_an_unsent_issue_say_so(editor_client, make_issue):
    issue = make_issue(items=["A"])
    page = editor_client.get(f"/editor/issues/{issue.id}/results")
    assert page.status_code == 200 and "hasn't been sent yet" in page.text
    assert editor_client.get("/editor/issues/99999/results").status_code == 404


def test_the_report_shows_the_delivery_timeline_and_what_became_of_the_messages(
        editor_client, session, make_issue, make_subscriber) -> None:
    from datetime import UTC, datetime, timedelta

    from newsletter.models import Delivery

    issue = make_issue(items=["A"], status="sent")
    start = datetime(2026, 11, 23, 9, tzinfo=UTC)
    for n in range(5):
        session.add(Delivery(issue_id=issue.id, subscriber_id=make_subscriber().id,
                             status="sent", sent_at=start + timedelta(minutes=n // 2)))
    session.add(Delivery(issue_id=issue.id, subscriber_id=make_subscriber().id,
                         status="failed"))
    session.commit()
    page = editor_client.get(f"/editor/issues/{issue.id}/results").text
    assert "Messages accepted by the relay per minute" in page
    assert "<title>Delivered, 09:00: 2</title>" in page
    assert "<title>Delivered, 09:02: 1</title>" in page
    assert "<title>Delivered: 5</title>" in page and "<title>Failed: 1</title>" in page
