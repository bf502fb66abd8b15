"""The console's suppression page in Debian's Chromium against a real uvicorn server:
add and remove through the real forms, and no sideways scroll at 375 px."""

from __future__ import annotations

import pytest

from newsletter.models import Suppression
from tests.fixtures.editor import create_editor
from tests.fixtures.web import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


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

    page = browser_page
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto(f"{live_server.url}/editor/suppressions")
    page.fill("input[name=email]", account.email)
    page.fill("input[name=password]", account.password)
    page.click("button:has-text('Log in')")
    page.wait_for_url("**/editor/suppressions")

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
