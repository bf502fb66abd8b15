"""The team and scheduling flows in Debian's Chromium: invite an editor who accepts in
another browser, deactivate them (their session ends), schedule in readers' zones."""

from __future__ import annotations

import pytest
from sqlmodel import select

from newsletter.editors import Editor
from newsletter.models import Issue
from tests.fixtures.editor import browser_login, create_editor
from tests.fixtures.web import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _log_in(page, server, email, password):
    browser_login(page, server.url, email, password)


def _owner(session):
    account = create_editor(session)
    editor = session.exec(select(Editor).where(Editor.id == account.id)).one()
    editor.role = "owner"
    session.add(editor)
    session.commit()
    return account


def test_invite_accept_then_deactivate_ends_their_session(session, live_server, browser_page,
                                                           _chromium):
    owner = _owner(session)
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 900})
    _log_in(page, live_server, owner.email, owner.password)
    page.click("nav a:has-text('Team')")
    page.fill("input[name=email]", "nia@example.org")
    page.click("button:has-text('Create invitation link')")
    link = page.input_value("#invite-link")
    screenshot(page, "editor-team-invite")

    other = _chromium.new_context(viewport={"width": 375, "height": 800})
    invitee = other.new_page()
    try:
        invitee.goto(link)
        invitee.fill("input[name=name]", "Nia")
        invitee.fill("input[name=password]", "a brand new password")
        invitee.fill("input[name=password_again]", "a brand new password")
        invitee.click("button:has-text('Join')")
        invitee.wait_for_url(f"{live_server.url}/editor")
        assert "Team" not in invitee.inner_text("nav")  # an editor, not an owner

        page.reload()
        nia = session.exec(select(Editor).where(Editor.email == "nia@example.org")).one()
        page.on("dialog", lambda dialog: dialog.accept())
        page.click(f"#deactivate-{nia.id}")
        page.wait_for_selector("text=can no longer log in")
        invitee.goto(f"{live_server.url}/editor/issues")
        assert "/editor/login" in invitee.url
    finally:
        other.close()


def test_schedule_in_each_readers_time_zone(session, make_issue, make_subscriber, live_server,
                                            browser_page):
    owner = _owner(session)
    issue = make_issue(items=["A"], status="approved")
    make_subscriber(timezone="America/New_York")
    make_subscriber(timezone="Asia/Tokyo")
    page = browser_page
    page.set_viewport_size({"width": 375, "height": 800})
    _log_in(page, live_server, owner.email, owner.password)
    page.goto(f"{live_server.url}/editor/issues/{issue.id}/send")
    page.click("#btn-schedule-at")
    page.fill("input[name=day]", "2030-01-07")
    page.fill("input[name=time]", "09:00")
    page.check("input[value=local]")
    screenshot(page, "editor-schedule", widths=(375,))
    page.click("button:has-text('Schedule')")
    page.wait_for_selector("text=in each reader's time zone")
    session.expire_all()
    saved = session.get(Issue, issue.id)
    assert saved.status == "scheduled" and saved.local_send_time == "09:00"
