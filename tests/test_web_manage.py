"""The preference centre at /manage/{token}: topics, name, time zone, only my topics,
pause, unsubscribe, download my data, delete me."""

from __future__ import annotations

import json
import re

from sqlmodel import select

from newsletter import tokens
from newsletter.models import Event, EventKind, Subscriber, SubscriberStatus, SubscriberTopic
from newsletter.subscribers import followed_topics
from tests.fixtures.web import path_of, submit


def _manage(sub) -> str:
    return path_of(tokens.manage_url(sub.id))


def _fresh(session, sub) -> Subscriber:
    session.expire_all()
    return session.get(Subscriber, sub.id)


def test_manage_page_shows_current_choices(client, make_subscriber):
    sub = make_subscriber(email="ana@example.org", topics=["travel"], name="Ana")
    page = client.get(_manage(sub))
    assert page.status_code == 200
    assert "ana@example.org" in page.text
    checked = re.findall(r'<input type="checkbox" name="topics" value="([\w-]+)"[^>]*\bchecked\b',
                         page.text)
    assert checked == ["travel"]
    assert 'value="Ana"' in page.text


def test_saving_changes_topics_and_preferences(client, session, make_subscriber):
    sub = make_subscriber(topics=["travel"])
    response = submit(client, _manage(sub), {
        "topics": ["fintech", "health"], "name": "Bea", "timezone": "Asia/Tokyo",
        "only_my_topics": "1", "paused": "1"})
    assert response.status_code == 200 and "Saved" in response.text
    fresh = _fresh(session, sub)
    assert (fresh.name, fresh.timezone, fresh.only_my_topics, fresh.paused) == (
        "Bea", "Asia/Tokyo", True, True)
    assert followed_topics(session=session, subscriber_id=sub.id) == ["fintech", "health"]
    kinds = {e.kind for e in session.exec(select(Event).where(Event.subscriber_id == sub.id))}
    assert {EventKind.topics_changed, EventKind.preferences_changed} <= kinds


def test_invalid_preferences_change_nothing(client, session, make_subscriber):
    sub = make_subscriber(topics=["travel"], name="Ana")
    response = submit(client, _manage(sub), {"topics": ["fintech", "bogus"],
                                             "name": "A\nB", "timezone": "UTC"})
    assert response.status_code == 422
    assert 'href="#topics"' in response.text and 'href="#name"' in response.text
    assert followed_topics(session=session, subscriber_id=sub.id) == ["travel"]
    assert _fresh(session, sub).name == "Ana"


def test_tampered_manage_token_is_404(client, make_subscriber):
    sub = make_subscriber()
    token = tokens.make_token(tokens.MANAGE, sub.id)
    assert client.get(f"/manage/{token[:-2]}xx").status_code == 404
    assert client.get(f"/manage/{tokens.make_token(tokens.UNSUBSCRIBE, sub.id)}").status_code \
        == 404


def test_unsubscribe_from_the_preference_centre(client, session, make_subscriber):
    sub = make_subscriber()
    response = submit(client, _manage(sub), {}, action=_manage(sub) + "/unsubscribe")
    assert "You're unsubscribed" in response.text
    assert _fresh(session, sub).status == SubscriberStatus.unsubscribed


def test_download_my_data_is_json(client, make_subscriber):
    sub = make_subscriber(email="ana@example.org", topics=["health"])
    response = submit(client, _manage(sub), {}, action=_manage(sub) + "/export")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert "attachment" in response.headers["content-disposition"]
    data = json.loads(response.text)
    assert data["subscriber"]["email"] == "ana@example.org"
    assert data["subscriber"]["topics"] == ["health"]
    assert [e["kind"] for e in data["events"]][:2] == ["signed_up", "confirmed"]


def test_delete_me_needs_the_box_ticked(client, session, make_subscriber):
    sub = make_subscriber(email="ana@example.org")
    response = submit(client, _manage(sub), {}, action=_manage(sub) + "/delete")
    assert response.status_code == 422
    assert _fresh(session, sub).email == "ana@example.org"


def test_delete_me_erases_personal_data_and_keeps_an_anonymous_event(
        client, session, make_subscriber):
    sub = make_subscriber(email="ana@example.org", name="Ana", topics=["health"])
    response = submit(client, _manage(sub), {"sure": "1"}, action=_manage(sub) + "/delete")
    assert response.status_code == 200 and "deleted" in response.text
    fresh = _fresh(session, sub)
    assert "ana" not in fresh.email and fresh.name == ""
    assert fresh.status == SubscriberStatus.unsubscribed
    assert session.exec(select(SubscriberTopic).where(
        SubscriberTopic.subscriber_id == sub.id)).all() == []
    assert session.exec(select(Event).where(Event.subscriber_id == sub.id)).all() == []
    deleted = session.exec(select(Event).where(Event.kind == EventKind.deleted)).one()
    assert deleted.subscriber_id is None and deleted.data == "{}"
    assert client.get(_manage(sub)).status_code == 404
    # The address can sign up afresh later.
    assert session.exec(select(Subscriber).where(Subscriber.email == "ana@example.org")).first() \
        is None


def test_pausing_takes_effect_for_the_next_send(client, session, make_subscriber, make_issue):
    from newsletter import delivery
    from newsletter.models import Delivery, IssueStatus

    pausing = make_subscriber(topics=["travel"])
    staying = make_subscriber(topics=["travel"])
    submit(client, _manage(pausing), {"topics": ["travel"], "paused": "1"})
    issue = make_issue(status=IssueStatus.approved,
                       items=[{"headline": "Trains", "topics": ["travel"]}])
    assert delivery.plan_send(session=session, issue_id=issue.id) == 1
    session.commit()
    planned = session.exec(select(Delivery.subscriber_id)).all()
    assert planned == [staying.id]
    page = client.get(_manage(pausing)).text
    assert "paused" in page and 'id="paused" name="paused" value="1"' in page


def test_delete_me_also_erases_the_address_quoted_in_delivery_errors(
        client, session, make_subscriber, make_issue):
    from newsletter.models import Delivery, DeliveryStatus

    sub = make_subscriber(email="ana@example.org")
    issue = make_issue()
    session.add(Delivery(issue_id=issue.id, subscriber_id=sub.id,
                         status=DeliveryStatus.failed,
                         error="550 5.1.1 <ana@example.org>: mailbox full"))
    session.commit()
    submit(client, _manage(sub), {"sure": "1"}, action=_manage(sub) + "/delete")
    session.expire_all()
    row = session.exec(select(Delivery).where(Delivery.subscriber_id == sub.id)).one()
    assert row.error == "" and row.status == DeliveryStatus.failed


def test_preference_changes_are_events_with_their_source(client, session, make_subscriber):
    sub = make_subscriber(topics=["travel"])
    submit(client, _manage(sub), {"topics": ["health"], "only_my_topics": "1"})
    events = session.exec(select(Event).where(
        Event.subscriber_id == sub.id,
        Event.kind.in_([EventKind.topics_changed, EventKind.preferences_changed]))).all()
    assert {(e.kind, e.source) for e in events} == {
        (EventKind.topics_changed, "manage"), (EventKind.preferences_changed, "manage")}
    assert all(e.at is not None for e in events)
    changed = json.loads(next(e.data for e in events if e.kind == EventKind.topics_changed))
    assert changed == {"before": ["travel"], "after": ["health"]}
