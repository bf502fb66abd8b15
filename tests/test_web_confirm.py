"""Double opt-in: the confirmation email (real SMTP server), and the confirm page,
which only a POST can act on."""

from __future__ import annotations

import re

from sqlmodel import select

from newsletter import tokens
from newsletter.models import Event, EventKind, Subscriber, SubscriberStatus
from tests.fixtures.mail import assert_email
from tests.fixtures.services import wait_until
from tests.fixtures.web import path_of, submit
from workers.signup_tasks import send_confirmation

LINK = re.compile(r"https?://[^\s\"<>]+/confirm/[A-Za-z0-9_.\-]+")


def _status(session, subscriber_id: int) -> str:
    session.expire_all()
    return session.get(Subscriber, subscriber_id).status


def test_confirmation_email_carries_a_signed_link(session, web_settings, smtp_server,
                                                  make_subscriber):
    sub = make_subscriber(email="ana@example.org", name="Ana Lima", confirmed=False,
                          topics=["fintech"])
    assert send_confirmation(sub.id) == "sent"
    [received] = smtp_server.wait_for(1)
    # The token embeds a timestamp, so compare what it carries, not its exact text.
    prefix = tokens.confirm_url(sub.id).rsplit("/", 1)[0] + "/"
    msg = assert_email(received.data, to="ana@example.org", subject_contains="Confirm",
                       both_contain=["Hi Ana", prefix])
    for part in ("plain", "html"):
        body = msg.get_body((part,)).get_content()
        token = re.search(re.escape(prefix) + r"([\w.-]+)", body).group(1)
        assert tokens.read_token("confirm", token) == sub.id
    assert msg["List-Unsubscribe"] is None
    assert session.exec(select(Event).where(Event.kind == EventKind.confirmation_sent)).one()


def test_no_confirmation_email_for_a_confirmed_subscriber(session, web_settings, smtp_server,
                                                          make_subscriber):
    sub = make_subscriber(confirmed=True)
    assert send_confirmation(sub.id).startswith("skipped")
    assert smtp_server.messages == []


def test_fetching_the_link_does_not_confirm(client, session, make_subscriber):
    sub = make_subscriber(confirmed=False)
    page = client.get(path_of(tokens.confirm_url(sub.id)))
    assert page.status_code == 200
    assert "Confirm my subscription" in page.text
    assert _status(session, sub.id) == SubscriberStatus.pending


def test_the_confirm_button_confirms(client, session, make_subscriber):
    sub = make_subscriber(confirmed=False)
    response = submit(client, path_of(tokens.confirm_url(sub.id)), {})
    assert response.status_code == 200
    assert "You're subscribed" in response.text
    assert _status(session, sub.id) == SubscriberStatus.confirmed


def test_confirm_post_without_csrf_changes_nothing(client, session, make_subscriber):
    sub = make_subscriber(confirmed=False)
    response = client.post(path_of(tokens.confirm_url(sub.id)))
    assert response.status_code == 400
    assert _status(session, sub.id) == SubscriberStatus.pending


def test_a_manage_token_cannot_confirm(client, session, make_subscriber):
    sub = make_subscriber(confirmed=False)
    token = tokens.make_token(tokens.MANAGE, sub.id)
    assert client.get(f"/confirm/{token}").status_code == 404
    assert _status(session, sub.id) == SubscriberStatus.pending


def test_expired_confirm_link_is_refused(client, session, make_subscriber, monkeypatch):
    import time

    sub = make_subscriber(confirmed=False)
    url = path_of(tokens.confirm_url(sub.id))
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 8 * 24 * 3600)
    assert client.get(url).status_code == 404
    assert _status(session, sub.id) == SubscriberStatus.pending


def test_sign_up_to_confirmed_through_a_real_worker(
        session, web_settings, redis_url, smtp_server, celery_worker):
    """The whole path: form -> commit -> Celery (real broker, real worker) -> SMTP -> link."""
    from fastapi.testclient import TestClient

    from newsletter.web.app import create_app

    client = TestClient(create_app())
    submit(client, "/subscribe", {"email": "real@example.org", "topics": ["travel"],
                                  "consent": "1"})
    [received] = smtp_server.wait_for(1, timeout=30)
    msg = assert_email(received.data, to="real@example.org", subject_contains="Confirm")
    link = LINK.search(msg.get_body(("plain",)).get_content()).group(0)
    submit(client, path_of(link), {})
    sub = session.exec(select(Subscriber).where(Subscriber.email == "real@example.org")).one()
    wait_until(lambda: _status(session, sub.id) == SubscriberStatus.confirmed)


def test_confirming_is_an_event_with_its_own_source(client, session, make_subscriber):
    sub = make_subscriber(confirmed=False)
    submit(client, path_of(tokens.confirm_url(sub.id)), {})
    event = session.exec(select(Event).where(Event.subscriber_id == sub.id,
                                             Event.kind == EventKind.confirmed)).one()
    assert event.source == "confirm-link" and event.at is not None


def test_a_returning_subscribers_new_topics_apply_only_when_they_confirm(
        client, session, make_subscriber, sent_confirmations, smtp_server):
    """An unsubscribed address signs up again with other topics: nothing changes until
    the link in the email it receives is confirmed, and then exactly those topics apply."""
    from newsletter.subscribers import followed_topics, unsubscribe

    sub = make_subscriber(email="back@example.org", topics=["logistics"])
    unsubscribe(session=session, subscriber_id=sub.id, source="test")
    session.commit()
    submit(client, "/subscribe", {"email": "back@example.org", "topics": ["europe", "travel"],
                                  "consent": "1"})
    assert followed_topics(session=session, subscriber_id=sub.id) == ["logistics"]
    assert sent_confirmations == [sub.id]
    assert send_confirmation(sub.id) == "sent"
    [received] = smtp_server.wait_for(1)
    msg = assert_email(received.data, to="back@example.org", subject_contains="Confirm")
    link = LINK.search(msg.get_body(("plain",)).get_content()).group(0)
    assert submit(client, path_of(link), {}).status_code == 200
    session.expire_all()
    assert _status(session, sub.id) == SubscriberStatus.confirmed
    assert sorted(followed_topics(session=session, subscriber_id=sub.id)) == ["europe", "travel"]
