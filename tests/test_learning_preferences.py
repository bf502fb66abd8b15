"""The preference centre's engagement parts: "Don't record my clicks" (which deletes
what was recorded) and one-click "Follow Logistics?" suggestions."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlmodel import select

from newsletter import tokens
from newsletter.models import Click, Event, EventKind, IssueStatus, Subscriber, utcnow
from newsletter.subscribers import followed_topics
from tests.fixtures.web import csrf_token, path_of, submit
from tests.test_learning import tracking_off


def _manage(sub) -> str:
    return path_of(tokens.manage_url(sub.id))


def _clicks(session, sub, issue, n: int) -> None:
    items = [i.id for i in issue_items(session, issue)][:n]
    for item_id in items:
        session.add(Click(subscriber_id=sub.id, issue_id=issue.id, item_id=item_id,
                          at=utcnow() - timedelta(days=2)))
    session.commit()


def issue_items(session, issue):
    from newsletter.models import Item

    return session.exec(select(Item).where(Item.issue_id == issue.id).order_by(Item.id)).all()


def _logistics_issue(make_issue):
    return make_issue(status=IssueStatus.sent, items=[
        {"headline": f"Logistics {n}", "topics": ["logistics"]} for n in range(4)])


def test_dont_record_my_clicks_turns_tracking_off_and_deletes_clicks(
        client, session, make_subscriber, make_issue):
    sub, other = make_subscriber(topics=["travel"]), make_subscriber()
    issue = _logistics_issue(make_issue)
    _clicks(session, sub, issue, 3)
    _clicks(session, other, issue, 2)
    page = client.get(_manage(sub)).text
    assert "Don't record my clicks" in page and "delete the 3 clicks" in page
    assert "stories on Logistics come first in your “Also this week”" in page

    response = submit(client, _manage(sub), {"topics": ["travel"], "timezone": "UTC",
                                             "no_click_tracking": "1"})
    assert response.status_code == 200 and "Saved" in response.text
    session.expire_all()
    assert session.get(Subscriber, sub.id).track_clicks is False
    remaining = session.exec(select(Click.subscriber_id)).all()
    assert sorted(remaining) == [other.id, other.id]
    event = session.exec(select(Event).where(Event.subscriber_id == sub.id,
                                             Event.kind == EventKind.preferences_changed)).one()
    assert '"clicks_deleted": 3' in event.data
    assert re.search(r'id="no_click_tracking"[^>]*checked', response.text)


def test_turning_tracking_back_on(client, session, make_subscriber):
    sub = make_subscriber()
    sub.track_clicks = False
    session.add(sub)
    session.commit()
    submit(client, _manage(sub), {"timezone": "UTC"})
    session.expire_all()
    assert session.get(Subscriber, sub.id).track_clicks is True


def test_switch_is_hidden_and_kept_when_the_service_does_not_track(
        client, session, make_subscriber, monkeypatch):
    sub = make_subscriber()
    sub.track_clicks = False
    session.add(sub)
    session.commit()
    tracking_off(monkeypatch)
    assert "Don't record my clicks" not in client.get(_manage(sub)).text
    submit(client, _manage(sub), {"timezone": "UTC"})
    session.expire_all()
    assert session.get(Subscriber, sub.id).track_clicks is False


def test_suggests_a_topic_read_often_and_follows_it_in_one_click(
        client, session, make_subscriber, make_issue):
    sub = make_subscriber(topics=["travel"])
    _clicks(session, sub, _logistics_issue(make_issue), 4)
    page = client.get(_manage(sub))
    assert "You read 4 Logistics stories this month. Follow Logistics?" in page.text
    response = client.post(_manage(sub) + "/follow",
                           data={"topic": "logistics", "csrf_token": csrf_token(page.text)})
    assert response.status_code == 200 and "You now follow Logistics" in response.text
    assert followed_topics(session=session, subscriber_id=sub.id) == ["logistics", "travel"]
    assert "Follow Logistics?" not in client.get(_manage(sub)).text


def test_no_suggestion_below_three_stories_or_for_a_followed_topic(
        client, session, make_subscriber, make_issue):
    issue = _logistics_issue(make_issue)
    few, following = make_subscriber(), make_subscriber(topics=["logistics"])
    _clicks(session, few, issue, 2)
    _clicks(session, following, issue, 4)
    assert "Follow Logistics?" not in client.get(_manage(few)).text
    assert "Follow Logistics?" not in client.get(_manage(following)).text


def test_follow_needs_a_valid_csrf_token(client, session, make_subscriber):
    sub = make_subscriber()
    client.get(_manage(sub))
    response = client.post(_manage(sub) + "/follow", data={"topic": "logistics",
                                                           "csrf_token": "forged"})
    assert response.status_code == 400
    assert followed_topics(session=session, subscriber_id=sub.id) == []


def test_follow_an_unknown_topic_is_a_message_not_an_error(client, session, make_subscriber):
    sub = make_subscriber()
    response = submit(client, _manage(sub), {"topic": "nope"}, action=_manage(sub) + "/follow")
    assert response.status_code == 422 and "no longer exists" in response.text


def test_arriving_from_a_story_offers_that_topic(client, make_subscriber):
    sub = make_subscriber(topics=["travel"])
    page = client.get(_manage(sub) + "?follow=logistics").text
    assert "You were reading a story on <strong>Logistics</strong>" in page
    assert 'name="topic" value="logistics"' in page
    assert "You already follow Travel" in client.get(_manage(sub) + "?follow=travel").text
