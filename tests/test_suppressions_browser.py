"""The console's suppression page in Debian's Chromium against a real uvicorn server:
add and remove through the real forms, and no sideways scroll at 375 px."""

from __future__ import annotations

import pytest

from newsletter.models import Suppression
from tests.fixtures.editor import create_editor
from tests.fixtures.web import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def open_as_editor(page, server, account, path):
    """At phone width, open `path`, log in on the page it leads to, and come back."""
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto(f"{server.url}{path}")
    page.fill("input[name=email]", account.email)
    page.fill("input[name=password]", account.password)
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"**{path}")
    return page


def test_suppressions_page_adds_and_removes_and_fits_a_phone(
        session, make_subscriber, live_server, browser_page):
    account = create_editor(session)
    make_subscriber(email="reader@example.org")
    long_local = "a.very.long.address.that.does.not.fit.on.a.phone.screen"
    session.add(Suppression(email=f"{long_local}@subdomain.example.org",
                            reason="hard bounce 5.1.1 on 2026-11-30 12:00 UTC (ses): smtp; 550 "
                                   "5.1.1 <someone@example.org>: Recipient address rejected: "
                                   "User unknown in virtual mailbox table"))
    for i in range(5):
        session.add(Suppression(email=f"old{i}@example.org", reason="imported from old.csv"))
    session.commit()

    page = open_as_editor(browser_page, live_server, account, "/editor/suppressions")

    page.fill("#suppress-form input[name=email]", "Reader@Example.org")
    page.fill("#suppress-form input[name=reason]", "asked us by phone")
    page.click("#suppress-form button[type=submit]")
    page.wait_for_url("**/editor/suppressions?notice=added*")
    assert "reader@example.org is suppressed" in page.locator("p.notice").inner_text()
    assert page.locator("table.suppressions tbody tr").count() == 7
    session.expire_all()
    assert session.get(Suppression, "reader@example.org").reason == "asked us by phone"

    shots = screenshot(page, "editor-suppressions")
    assert all(p.exists() for p in shots)

    page.once("dialog", lambda dialog: dialog.accept())
    row = page.locator("table.suppressions tr", has_text="reader@example.org")
    row.locator("button:has-text('Remove')").click()
    page.wait_for_url("**/editor/suppressions?notice=removed*")
    assert "off the list" in page.locator("p.notice").inner_text()
    session.expire_all()
    assert session.get(Suppression, "reader@example.org") is None

    page.fill("input[name=q]", "old3")
    page.click("form[role=search] button")
    page.wait_for_url("**q=old3*")
    assert page.locator("table.suppressions tbody tr").count() == 1
    screenshot(page, "editor-suppressions-search", widths=(375,))


def test_send_page_feedback_card_fits_a_phone(
        session, make_subscriber, make_issue, live_server, browser_page):
    from datetime import UTC, datetime

    from newsletter.inbound import policy
    from newsletter.models import Delivery, DeliveryStatus, IssueStatus

    account = create_editor(session)
    issue = make_issue(title="A week with bounces", status=IssueStatus.sent)
    subs = [make_subscriber(email=f"r{i}@example.org") for i in range(6)]
    for sub in subs:
        session.add(Delivery(issue_id=issue.id, subscriber_id=sub.id,
                             status=DeliveryStatus.sent, sent_at=datetime.now(UTC)))
    policy.record_bounce(session=session, email=subs[0].email, subscriber_id=subs[0].id,
                         issue_id=issue.id, hard=True, status="5.1.1", diagnostic="unknown",
                         source="test")
    policy.record_complaint(session=session, email=subs[1].email, subscriber_id=subs[1].id,
                            issue_id=issue.id, source="test")
    session.commit()

    page = open_as_editor(browser_page, live_server, account, f"/editor/issues/{issue.id}/send")
    card = page.locator("#feedback")
    assert "1 16.67 %" in " ".join(card.locator("[data-key=hard]").inner_text().split())
    assert card.locator("[data-key=unsubscribes]").inner_text().startswith("1")
    screenshot(page, "editor-send-feedback")
