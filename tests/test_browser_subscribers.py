"""The subscribers screen in Debian's Chromium against a real uvicorn server: find a
subscriber, open their history, suppress them; import a CSV with bad rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from newsletter.models import Delivery, Suppression
from tests.fixtures.editor import browser_login, create_editor
from tests.fixtures.web import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _login(page, server, account):
    page.set_viewport_size({"width": 1280, "height": 800})
    browser_login(page, server.url, account.email, account.password, "/editor/subscribers")


def test_find_a_subscriber_open_their_history_and_suppress_them(
        session, make_subscriber, make_issue, live_server, browser_page):
    account = create_editor(session)
    for n in range(12):
        make_subscriber(email=f"reader{n}@example.org",
                        topics=["logistics", "fintech"][: n % 2 + 1])
    target = make_subscriber(email="ana.lima.with.a.very.long.address@subdomain.example.org",
                             name="Ana Lima", topics=["luxury-fashion", "europe"])
    issue = make_issue(title="Ports and warehouses week", items=["A"], status="sent")
    session.add(Delivery(issue_id=issue.id, subscriber_id=target.id, status="sent",
                         message_id="<20261123.4f9c2b7e1a.long-message-id@roundup.example>"))
    session.commit()
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())
    _login(page, live_server, account)
    screenshot(page, "editor-subscribers")
    page.fill("input[name=q]", "ana.lima")
    page.click("button:has-text('Find')")
    page.click("a:has-text('ana.lima.with')")
    page.wait_for_selector("h2:has-text('Deliveries')")
    assert "long-message-id@roundup.example" in page.inner_text("body")
    screenshot(page, "editor-subscriber")
    page.click("#btn-suppress")
    page.wait_for_selector("text=never be mailed")
    session.expire_all()
    assert session.get(Suppression, target.email) is not None


def test_import_a_csv_with_bad_rows(session, live_server, browser_page, tmp_path: Path):
    account = create_editor(session)
    csv_path = tmp_path / "people.csv"
    csv_path.write_text("email,name,topics\nok1@example.org,One,logistics\nnope,Bad,\n"
                        "ok2@example.org,Two,\n")
    page = browser_page
    _login(page, live_server, account)
    page.click("a:has-text('Import a CSV')")
    page.set_input_files("input[name=file]", str(csv_path))
    page.click("button:has-text('Upload and preview')")
    page.wait_for_selector("#start-import")
    screenshot(page, "editor-import-preview")
    page.click("#start-import")
    page.wait_for_selector("#error-report", timeout=30_000)
    assert "1 refused row" in page.inner_text("#error-report")
    screenshot(page, "editor-import-done")
    from newsletter.models import Subscriber

    session.expire_all()
    assert sorted(s.email for s in session.exec(select(Subscriber)).all()) == [
        "ok1@example.org", "ok2@example.org"]
