"""A subscriber's whole journey in a real Chromium against a real uvicorn server, with
the confirmation emails sent by a real Celery worker to a real SMTP server."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlmodel import select

from newsletter.models import Subscriber, SubscriberStatus
from newsletter.subscribers import followed_topics
from tests.fixtures.mail import parse_email
from tests.fixtures.web import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LINK = re.compile(r"https?://[^\s\"<>]+/confirm/[A-Za-z0-9_.\-]+")


@pytest.fixture
def stack(web_settings: Any, redis_url: str, smtp_server: Any, monkeypatch: pytest.MonkeyPatch,
          request: pytest.FixtureRequest) -> Any:
    """Server and worker share the test's DB, Redis and SMTP server. No cooldown, so the
    re-subscription a minute later gets its own confirmation email."""
    monkeypatch.setattr(web_settings, "signup_cooldown_minutes", 0)
    server = request.getfixturevalue("live_server")
    request.getfixturevalue("celery_workers").start()
    return server


def _confirm_link(smtp_server: Any, n: int) -> str:
    messages = smtp_server.wait_for(n, timeout=30)
    text = parse_email(messages[n - 1].data).get_body(("plain",)).get_content()
    match = LINK.search(text)
    assert match, text
    return match.group(0)


def _subscriber(session: Any) -> Subscriber:
    session.expire_all()
    return session.exec(select(Subscriber).where(Subscriber.email == "ana@example.org")).one()


def test_sign_up_confirm_manage_unsubscribe_and_come_back(
        stack: Any, browser_page: Any, smtp_server: Any, session: Any) -> None:
    page = browser_page
    page.goto(f"{stack.url}/subscribe")
    # The inline script picked the browser's time zone.
    assert page.locator("#timezone").input_value() == "Europe/Paris"
    screenshot(page, "01-subscribe")

    page.get_by_label("Email address").fill("ana@example.org")
    page.get_by_label("Name (optional)").fill("Ana Lima")
    page.check("#topic-fintech")
    page.check("#topic-travel")
    page.check("#consent")
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()
    screenshot(page, "02-check-inbox")
    assert _subscriber(session).status == SubscriberStatus.pending

    page.goto(_confirm_link(smtp_server, 1))
    assert _subscriber(session).status == SubscriberStatus.pending  # opening is not confirming
    screenshot(page, "03-confirm")
    page.get_by_role("button", name="Confirm my subscription").click()
    page.get_by_role("heading", name="You're subscribed").wait_for()
    assert _subscriber(session).status == SubscriberStatus.confirmed

    page.get_by_role("link", name="Manage your topics").click()
    page.get_by_role("heading", name="Your subscription").wait_for()
    page.uncheck("#topic-travel")
    page.check("#topic-health")
    page.get_by_role("button", name="Save changes").click()
    page.get_by_text("Saved.").wait_for()
    screenshot(page, "04-manage")
    sub = _subscriber(session)
    assert followed_topics(session=session, subscriber_id=sub.id) == ["fintech", "health"]

    page.get_by_role("button", name="Unsubscribe").click()
    page.get_by_role("heading", name="You're unsubscribed").wait_for()
    screenshot(page, "05-unsubscribed")
    assert _subscriber(session).status == SubscriberStatus.unsubscribed

    page.get_by_role("button", name="Subscribe again").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()
    assert _subscriber(session).status == SubscriberStatus.pending
    page.goto(_confirm_link(smtp_server, 2))
    page.get_by_role("button", name="Confirm my subscription").click()
    page.get_by_role("heading", name="You're subscribed").wait_for()
    assert _subscriber(session).status == SubscriberStatus.confirmed


def test_invalid_sign_up_shows_the_errors_and_keeps_the_input(
        live_server: Any, browser_page: Any) -> None:
    page = browser_page
    page.goto(f"{live_server.url}/subscribe")
    page.get_by_label("Email address").fill("not-an-address")
    page.get_by_label("Name (optional)").fill("<b>Ana</b>")
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Please fix these problems").wait_for()
    assert page.get_by_label("Email address").input_value() == "not-an-address"
    assert page.locator("#email").get_attribute("aria-invalid") == "true"
    screenshot(page, "06-errors")


def test_embed_snippet_page_fits_a_phone(live_server: Any, browser_page: Any) -> None:
    browser_page.goto(f"{live_server.url}/subscribe/embed")
    screenshot(browser_page, "07-embed")
