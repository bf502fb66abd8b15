"""Editing items in Debian's Chromium: drag to reorder, undo, the Markdown live preview."""

from __future__ import annotations

import pytest
from sqlmodel import col, select

from newsletter.models import Item
from tests.fixtures.editor import browser_login, create_editor
from tests.fixtures.web import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _login(page, server, account, path):
    page.set_viewport_size({"width": 1280, "height": 900})
    browser_login(page, server.url, account.email, account.password, path)


def test_drag_an_item_to_the_top_then_undo(session, make_issue, live_server, browser_page):
    account = create_editor(session)
    issue = make_issue(items=[{"headline": "Alpha", "topics": ["logistics"]},
                              {"headline": "Beta"}, {"headline": "Gamma"}])
    page = browser_page
    _login(page, live_server, account, f"/editor/issues/{issue.id}")
    gamma = page.locator("li.item", has_text="Gamma").locator(".drag-handle")
    alpha = page.locator("li.item", has_text="Alpha").locator(".item-head")
    gamma.drag_to(alpha, target_position={"x": 5, "y": 2})
    page.wait_for_selector("#undo")
    session.expire_all()
    order = [i.headline for i in session.exec(
        select(Item).where(Item.issue_id == issue.id).order_by(col(Item.position)))]
    assert order[0] == "Gamma", order
    assert "Reordered the items" in page.inner_text("#undo-bar")
    screenshot(page, "editor-items-reordered")
    page.click("#undo")
    page.wait_for_selector("text=Undone.")
    session.expire_all()
    assert [i.headline for i in session.exec(
        select(Item).where(Item.issue_id == issue.id).order_by(col(Item.position)))] == [
        "Alpha", "Beta", "Gamma"]


def test_markdown_editor_previews_while_typing(session, live_server, browser_page):
    account = create_editor(session)
    page = browser_page
    _login(page, live_server, account, "/editor/issues/new?mode=write")
    page.fill("textarea[name=text]", "---\ntitle: \"Week\"\ndate: 2026-11-23\n---\n\n"
              "## Ports reopen\nTopics: logistics\n\nShips are moving again.\n")
    page.wait_for_selector("#md-preview-items li:has-text('Ports reopen')")
    assert "Logistics" in page.inner_text("#md-preview-items")
    page.fill("textarea[name=text]", "---\ntitle: [oops\n---\n")
    page.wait_for_selector("#md-preview-status.alert")
    assert "written-in-editor.md:" in page.inner_text("#md-preview-status")
    screenshot(page, "editor-markdown-preview")
