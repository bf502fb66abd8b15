"""Unsubscribe: a GET never unsubscribes, the page's button does, RFC 8058 one-click
works without cookies or CSRF, and a planned send skips the address."""

from __future__ import annotations

import pytest
from sqlmodel import select

from newsletter import tokens
from newsletter.models import (
    Delivery,
    DeliveryStatus,
    Event,
    EventKind,
    IssueStatus,
    Subscriber,
    SubscriberStatus,
)
from tests.fixtures.services import wait_until
from tests.fixtures.web import path_of, submit

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def _unsub(sub) -> str:
    return path_of(tokens.unsubscribe_url(sub.id))


def _status(session, sub) -> str:
    session.expire_all()
    return session.get(Subscriber, sub.id).status


def test_get_shows_a_button_and_changes_nothing(client, session, make_subscriber):
    sub = make_subscriber()
    page = client.get(_unsub(sub))
    assert page.status_code == 200 and "<button" in page.text
    assert _status(session, sub) == SubscriberStatus.confirmed


def test_the_button_unsubscribes(client, session, make_subscriber):
    sub = make_subscriber()
    response = submit(client, _unsub(sub), {})
    assert response.status_code == 200 and "You're unsubscribed" in response.text
    assert _status(session, sub) == SubscriberStatus.unsubscribed


def test_button_without_csrf_changes_nothing(client, session, make_subscriber):
    sub = make_subscriber()
    assert client.post(_unsub(sub)).status_code == 400
    assert _status(session, sub) == SubscriberStatus.confirmed


def test_one_click_post_without_cookies_unsubscribes(web_app, session, make_subscriber):
    from fastapi.testclient import TestClient

    sub = make_subscriber()
    response = TestClient(web_app).post(_unsub(sub), data=ONE_CLICK)
    assert response.status_code == 200
    assert _status(session, sub) == SubscriberStatus.unsubscribed
    event = session.exec(select(Event).where(Event.kind == EventKind.unsubscribed)).one()
    assert event.source == "one-click"


def test_tampered_token_changes_nothing_and_says_the_link_is_not_valid(
        client, session, make_subscriber):
    sub = make_subscriber()
    good = _unsub(sub)
    bad = good[:-3] + ("abc" if not good.endswith("abc") else "xyz")
    bad_response = client.post(bad, data=ONE_CLICK)
    assert bad_response.status_code == 404 and "not valid" in bad_response.text
    page = client.get(bad)
    assert page.status_code == 404 and "This link isn&#39;t valid" in page.text
    assert _status(session, sub) == SubscriberStatus.confirmed


def test_a_genuine_link_for_an_erased_subscriber_tells_nothing(client, session,
                                                              make_subscriber):
    # Only we can sign a token, so this reveals nothing to a stranger: the answer is
    # the same as for a subscriber who is there.
    sub = make_subscriber()
    unknown = client.post(path_of(tokens.unsubscribe_url(999_999)), data=ONE_CLICK)
    known = client.post(_unsub(sub), data=ONE_CLICK)
    assert unknown.status_code == known.status_code == 200
    assert unknown.text == known.text


def test_resubscribe_from_the_unsubscribed_page_needs_confirmation(
        client, session, make_subscriber, sent_confirmations):
    sub = make_subscriber()
    done = submit(client, _unsub(sub), {})
    from tests.fixtures.web import csrf_token

    response = client.post(_unsub(sub) + "/resubscribe",
                           data={"csrf_token": csrf_token(done.text)})
    assert response.status_code == 200 and "Check your inbox" in response.text
    assert _status(session, sub) == SubscriberStatus.pending
    assert sent_confirmations == [sub.id]


def test_one_click_unsubscribe_stops_an_already_planned_send(
        web_app, session, make_issue, make_subscriber, redis_url, smtp_server, celery_workers):
    from fastapi.testclient import TestClient

    from newsletter import delivery

    leaving = make_subscriber(email="leaving@example.org", topics=["travel"])
    staying = make_subscriber(email="staying@example.org", topics=["travel"])
    issue = make_issue(status=IssueStatus.approved,
                       items=[{"headline": "Trains are back", "topics": ["travel"]}])
    assert delivery.plan_send(session=session, issue_id=issue.id) == 2
    session.commit()
    assert delivery.enqueue_batches(issue.id, session=session) >= 1  # to the private broker

    TestClient(web_app).post(_unsub(leaving), data=ONE_CLICK)
    celery_workers.start()

    def settled() -> bool:
        session.expire_all()
        rows = session.exec(select(Delivery).where(Delivery.issue_id == issue.id)).all()
        return all(r.status not in (DeliveryStatus.pending, DeliveryStatus.sending)
                   for r in rows)

    wait_until(settled, timeout=60, message=celery_workers.logs)
    assert smtp_server.recipients() == [staying.email]
    row = session.exec(select(Delivery).where(Delivery.subscriber_id == leaving.id)).one()
    assert row.status == DeliveryStatus.suppressed


def test_one_click_as_multipart_form_data_unsubscribes(web_app, session, make_subscriber):
    from fastapi.testclient import TestClient

    sub = make_subscriber()
    response = TestClient(web_app).post(_unsub(sub),
                                        files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200
    assert _status(session, sub) == SubscriberStatus.unsubscribed


def test_one_click_without_a_content_type_unsubscribes(web_app, session, make_subscriber):
    """RFC 8058 specifies the body; a sender that leaves out Content-Type still works."""
    from fastapi.testclient import TestClient

    sub = make_subscriber()
    response = TestClient(web_app).post(_unsub(sub), content=b"List-Unsubscribe=One-Click")
    assert response.status_code == 200
    assert _status(session, sub) == SubscriberStatus.unsubscribed


def test_one_click_from_a_browser_with_cookies_needs_no_csrf(client, session, make_subscriber):
    sub = make_subscriber()
    client.get(_unsub(sub))  # the browser now holds a CSRF cookie
    assert client.post(_unsub(sub), data=ONE_CLICK).status_code == 200
    assert _status(session, sub) == SubscriberStatus.unsubscribed


@pytest.mark.parametrize("body", [{"List-Unsubscribe": "one-click"},
                                  {"List-Unsubscribe": "Yes"}, {"One-Click": "1"}])
def test_anything_but_the_one_click_body_needs_csrf(web_app, session, make_subscriber, body):
    from fastapi.testclient import TestClient

    sub = make_subscriber()
    assert TestClient(web_app).post(_unsub(sub), data=body).status_code == 400
    assert _status(session, sub) == SubscriberStatus.confirmed


def test_the_unsubscribe_link_in_a_digest_is_the_one_click_endpoint(
        web_app, session, make_subscriber):
    """What providers POST to is the URL in the email's List-Unsubscribe header."""
    from fastapi.testclient import TestClient

    from newsletter.message import Recipient, build_message

    sub = make_subscriber(email="ana@example.org")
    message = build_message(subject="Weekly", html="<p>Hi</p>", text="Hi",
                            recipient=Recipient(subscriber_id=sub.id, email=sub.email,
                                                name=""))
    header = message.data.split(b"List-Unsubscribe:", 1)[1].split(b">", 1)[0]
    url = header.decode().strip().lstrip("<")
    assert TestClient(web_app).post(path_of(url), data=ONE_CLICK).status_code == 200
    assert _status(session, sub) == SubscriberStatus.unsubscribed


def test_unsubscribing_from_an_issue_email_ties_the_event_to_that_issue(
        client, session, make_subscriber, make_issue):
    from newsletter.models import Delivery

    sub = make_subscriber()
    issue = make_issue(items=["A"], status="sent")
    other = make_issue(items=["B"], status="sent")
    session.add(Delivery(issue_id=issue.id, subscriber_id=sub.id, status="sent"))
    session.commit()
    assert client.post(_unsub(sub) + f"?i={issue.id}", data=ONE_CLICK).status_code == 200
    event = session.exec(select(Event).where(Event.kind == EventKind.unsubscribed)).one()
    assert event.issue_id == issue.id
    # An issue that was never sent to the reader is not believed.
    sub2 = make_subscriber()
    client.post(_unsub(sub2) + f"?i={other.id}", data=ONE_CLICK)
    events = session.exec(select(Event).where(Event.kind == EventKind.unsubscribed,
                                              Event.subscriber_id == sub2.id)).all()
    assert [e.issue_id for e in events] == [None]


def test_digest_links_and_headers_name_the_issue(session, make_issue, make_subscriber):
    from newsletter.composer import compose, load_issue
    from newsletter.message import MessageFactory, Recipient
    from newsletter.render import render_digest

    issue = make_issue(items=["A"])
    sub = make_subscriber(email="ana@example.org")
    content = load_issue(session=session, issue_id=issue.id)
    digest = render_digest(content, compose(content, followed=()))
    data = MessageFactory(digest=digest, issue_id=issue.id).build(
        Recipient(subscriber_id=sub.id, email=sub.email, name="")).data
    assert f"?i={issue.id}>".encode() in data  # List-Unsubscribe
