"""The editors' console in Debian's Chromium against a real uvicorn server, a real
Celery worker and a real SMTP server."""

from __future__ import annotations

import pytest
from sqlmodel import select

from newsletter.models import Item
from tests.fixtures.editor import create_editor
from tests.fixtures.web import SCREENSHOTS, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ITEMS = [
    {"headline": "Alpha warehouse story", "topics": ["logistics"],
     "link_url": "https://example.com/alpha", "link_text": "Read Alpha"},
    {"headline": "Beta payments story", "topics": ["fintech"]},
    {"headline": "Gamma luxury story", "topics": ["luxury-fashion"]},
]


def _login(page, server, account, *, shoot=False):
    # The screenshots' size from the start: resizing just before a full-page capture
    # can catch the sandboxed preview iframes mid-relayout (squeezed to a sliver).
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{server.url}/editor")
    assert "/editor/login" in page.url
    if shoot:
        screenshot(page, "editor-login")
    page.fill("input[name=email]", account.email)
    page.fill("input[name=password]", account.password)
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{server.url}/editor")


def _frame_order(page, selector):
    page.wait_for_load_state("load")  # iframes included
    text = page.frame_locator(selector).locator("body").inner_text()
    found = sorted((text.find(h), h) for h in ("Alpha", "Beta", "Gamma") if h in text)
    return [h for _, h in found], text


def test_editor_logs_in_and_sees_the_dashboard_charts(
        session, make_subscriber, make_issue, live_server, browser_page):
    account = create_editor(session)
    for i in range(4):
        make_subscriber(email=f"fan{i}@example.org", topics=["fintech", "logistics"][: i % 2 + 1])
    make_issue(items=ITEMS)
    page = browser_page
    _login(page, live_server, account, shoot=True)
    charts = page.locator(".chart-wide svg.chart")
    assert charts.count() == 3
    for i in range(3):
        box = charts.nth(i).bounding_box()
        assert box and box["width"] > 200 and box["height"] > 50
    assert page.locator("#chart-topics rect.bar").count() >= 10
    screenshot(page, "editor-dashboard")


def test_edit_preview_check_test_send_approve_and_send(
        session, make_subscriber, make_issue, redis_url, smtp_server, celery_worker,
        live_server, browser_page):
    account = create_editor(session)
    issue = make_issue(title="Browser week", items=ITEMS)
    for i in range(3):
        make_subscriber(email=f"pay{i}@example.org", topics=["fintech"])
    make_subscriber(email="lux@example.org", topics=["luxury-fashion"])
    page = browser_page
    _login(page, live_server, account)

    # Reorder: move Alpha down; the preview beside the editor follows.
    page.goto(f"{live_server.url}/editor/issues/{issue.id}")
    order, _ = _frame_order(page, "#editor-preview")
    assert order == ["Alpha", "Beta", "Gamma"]
    alpha = session.exec(select(Item).where(Item.headline == ITEMS[0]["headline"])).one()
    page.click(f"#item-{alpha.id} button[data-action=down]")
    page.wait_for_url(f"**/editor/issues/{issue.id}#item-{alpha.id}")
    order, _ = _frame_order(page, "#editor-preview")
    assert order == ["Beta", "Alpha", "Gamma"]
    screenshot(page, "editor-issue", widths=(1280,))

    # Preview as a subscriber at both widths.
    page.goto(f"{live_server.url}/editor/issues/{issue.id}/preview")
    page.fill("#as-subscriber input[name=email]", "pay1@example.org")
    page.click("#as-subscriber button")
    page.wait_for_url("**/preview?email=pay1%40example.org")
    assert "3 subscribers get this version" in page.locator("#audience-count").inner_text()
    desktop = page.locator("#frame-desktop").bounding_box()
    phone = page.locator("#frame-phone").bounding_box()
    assert desktop and round(desktop["width"]) == 600
    assert phone and round(phone["width"]) == 375
    order, text = _frame_order(page, "#frame-phone")
    assert order[0] == "Beta"  # followed topic first
    assert "picked for you" in text.lower() and "Fintech" in text  # section and chip
    page.locator("#plain-text").wait_for()
    assert "List-Unsubscribe" in page.locator("#headers").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "editor-preview-1440.png"), full_page=True)

    # Test send to an address that is not a subscriber.
    page.fill("#test-send input[name=to]", "qa@outside.example")
    page.click("#test-send button")
    page.wait_for_selector("text=Test email sent to qa@outside.example")
    received = smtp_server.wait_for(1)[0]
    assert received.rcpt_tos == ("qa@outside.example",)
    assert "[TEST]" in str(received.parse()["Subject"])

    # Checks, then approve.
    page.click("nav.tabs >> text=Checks")
    page.wait_for_url(f"**/editor/issues/{issue.id}/checks")
    page.wait_for_load_state()
    assert page.locator("[data-check=unsubscribe][data-state=pass]").count() == 1
    assert page.locator("[data-state=fail]").count() == 0
    screenshot(page, "editor-checks", widths=(1280,))
    page.click("#approve-form button")
    page.wait_for_url(f"**/editor/issues/{issue.id}/send")

    # Send now through the worker and watch the progress reach done.
    smtp_server.clear()
    page.click("#btn-send-now")
    page.click("#btn-confirm-send")  # "Send to N subscribers?"
    page.wait_for_selector("#progress-state:has-text('Done: sent')", timeout=60_000)
    assert page.locator("[data-key=sent]").inner_text() == "4"
    assert page.locator("[data-key=pending]").inner_text() == "0"
    assert sorted(smtp_server.recipients()) == sorted(
        ["pay0@example.org", "pay1@example.org", "pay2@example.org", "lux@example.org"])
    screenshot(page, "editor-sent", widths=(1280,))
    page.click("nav.editor-nav >> text=Issues")
    assert "4 sent" in page.locator("table.issues").inner_text()
    screenshot(page, "editor-issues", widths=(1280,))


def test_deleting_an_item_asks_first(session, make_issue, live_server, browser_page):
    account = create_editor(session)
    issue = make_issue(items=ITEMS)
    page = browser_page
    _login(page, live_server, account)
    page.goto(f"{live_server.url}/editor/issues/{issue.id}")
    gamma = f"#items li:has-text('{ITEMS[2]['headline']}')"
    questions = []

    def answer(accept):
        def handle(dialog):
            questions.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()
        return handle

    page.once("dialog", answer(False))
    page.click(f"{gamma} button[data-action=delete]")
    assert "Delete “Gamma luxury story”" in questions[0]
    assert page.locator(gamma).count() == 1  # dismissed: nothing was posted
    page.once("dialog", answer(True))
    with page.expect_navigation():
        page.click(f"{gamma} button[data-action=delete]")
    assert page.locator(gamma).count() == 0
    assert page.locator("#items li.item").count() == 2


def test_issues_list_keeps_words_whole_on_desktop_and_stacks_on_a_phone(
        session, make_issue, live_server, browser_page):
    from newsletter.models import IssueStatus

    account = create_editor(session)
    for i, status in enumerate([IssueStatus.sent, IssueStatus.scheduled, IssueStatus.draft]):
        make_issue(title=f"A fairly long weekly roundup title number {i} for the list",
                   items=ITEMS, status=status)
    page = browser_page
    _login(page, live_server, account)
    page.goto(f"{live_server.url}/editor/issues")

    def one_line(selector):
        # A single line of text is no taller than about 1.6 line heights.
        for box in page.locator(selector).evaluate_all(
                "els => els.map(e => [e.textContent, e.getBoundingClientRect().height,"
                " parseFloat(getComputedStyle(e).lineHeight) || 20])"):
            text, height, line = box
            assert height < line * 1.6 + 12, f"{text!r} wraps: {height}px"

    one_line("table.issues th")
    one_line("table.issues .badge")
    one_line("table.issues td.date")
    page.set_viewport_size({"width": 375, "height": 800})
    one_line("table.issues .badge")
    one_line("table.issues td.date")
    # Stacked: each row's cells sit one under another, labelled, across the card.
    cells = page.locator("table.issues tbody tr").first.locator("td")
    boxes = [cells.nth(i).bounding_box() for i in range(cells.count())]
    assert all(b and b["width"] > 250 for b in boxes)
    assert all(a["y"] < b["y"] for a, b in zip(boxes, boxes[1:], strict=False))
    page.set_viewport_size({"width": 1280, "height": 800})
    screenshot(page, "editor-issues-list")
