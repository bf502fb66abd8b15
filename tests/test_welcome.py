"""The welcome email: sent once when a subscription is confirmed, by a real worker."""

from __future__ import annotations

import re

from sqlmodel import select

from newsletter import tokens
from newsletter.models import Event, EventKind
from newsletter.subscribers import confirm, unsubscribe
from tests.fixtures.mail import assert_email
from tests.fixtures.web import path_of, submit
from workers.welcome_tasks import send_welcome


def test_confirming_through_the_link_sends_the_welcome_through_a_real_worker(
        session, web_settings, redis_url, smtp_server, celery_worker, make_subscriber,
        make_issue):
    from fastapi.testclient import TestClient

    from newsletter.web.app import create_app

    make_issue(title="Ports and warehouses week", items=["A"], status="sent")
    sub = make_subscriber(email="ana@example.org", name="Ana Lima", confirmed=False,
                          topics=["logistics"])
    client = TestClient(create_app())
    submit(client, path_of(tokens.confirm_url(sub.id)), {})
    [received] = smtp_server.wait_for(1, timeout=30)
    msg = assert_email(received.data, to="ana@example.org", subject_contains="Welcome",
                       both_contain=["Ana", "Logistics", "Ports and warehouses week"])
    body = msg.get_body(("plain",)).get_content()
    assert re.search(r"/issues/\d+/ports-and-warehouses-week", body)
    assert tokens.manage_url(sub.id).rsplit("/", 1)[0] in body
    assert msg["List-Unsubscribe"] is not None


def test_the_welcome_is_sent_once(session, web_settings, smtp_server, make_subscriber):
    sub = make_subscriber(email="bo@example.org")  # confirmed
    assert send_welcome(sub.id) == "sent"
    assert send_welcome(sub.id) == "skipped"
    assert len(smtp_server.wait_for(1)) == 1
    assert len(session.exec(select(Event).where(
        Event.subscriber_id == sub.id, Event.kind == EventKind.welcome_sent)).all()) == 1


def test_no_welcome_for_someone_who_left(session, web_settings, smtp_server,
                                         make_subscriber):
    sub = make_subscriber(email="cy@example.org")
    unsubscribe(session=session, subscriber_id=sub.id, source="test")
    session.commit()
    assert send_welcome(sub.id) == "skipped"
    assert smtp_server.messages == []


def test_confirming_without_a_broker_still_confirms(session, app_settings, make_subscriber,
                                                    monkeypatch):
    monkeypatch.setattr(app_settings, "redis_url", "")
    sub = make_subscriber(email="di@example.org", confirmed=False)
    assert confirm(session=session, subscriber_id=sub.id, source="cli")
    session.commit()  # publishes after commit: no broker, only a log line


def test_welcomes_wait_on_their_own_queue_not_ahead_of_confirmation_emails(
        session, app_settings, redis_url, make_subscriber):
    """Confirming an imported list queues a welcome for everyone at once: those must not
    stand between a new reader and the confirmation link they are waiting for."""
    import redis as redis_lib

    from newsletter.queue import DEFAULT_QUEUE, LATER_QUEUE

    subs = [make_subscriber(email=f"imported{i}@example.org", confirmed=False)
            for i in range(5)]
    for sub in subs:
        assert confirm(session=session, subscriber_id=sub.id, source="cli")
    session.commit()
    client = redis_lib.Redis.from_url(redis_url)
    assert client.llen(LATER_QUEUE) == 5
    assert client.llen(DEFAULT_QUEUE) == 0
