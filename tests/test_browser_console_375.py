"""Every page of the editors' console fits a 375 px phone: no sideways scroll."""

from __future__ import annotations

import pytest
from sqlmodel import select

from newsletter.editors import Editor
from newsletter.models import Delivery
from tests.fixtures.editor import browser_login, create_editor

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_every_console_page_fits_375_px(session, make_issue, make_subscriber, live_server,
                                        browser_page):
    account = create_editor(session)
    owner = session.exec(select(Editor).where(Editor.id == account.id)).one()
    owner.role = "owner"
    session.add(owner)
    sub = make_subscriber(email="a.rather.long.address.for.a.phone@subdomain.example.org",
                          name="Ana Lima", topics=["logistics", "luxury-fashion"])
    draft = make_issue(title="A draft with a long title about warehouses and payments",
                       items=[{"headline": "Alpha warehouse story", "topics": ["logistics"]},
                              {"headline": "Beta payments story", "topics": ["fintech"]}])
    approved = make_issue(items=["One"], status="approved")
    sent = make_issue(items=["Two"], status="sent")
    session.add(Delivery(issue_id=sent.id, subscriber_id=sub.id, status="sent",
                         message_id="<a.very.long.message.id.1234567890@roundup.example>"))
    session.commit()
    page = browser_page
    page.set_viewport_size({"width": 375, "height": 800})
    browser_login(page, live_server.url, account.email, account.password)
    paths = [
        "/editor", "/editor/issues", "/editor/issues/new", "/editor/issues/new?mode=write",
        f"/editor/issues/{draft.id}", f"/editor/issues/{draft.id}/preview",
        f"/editor/issues/{draft.id}/checks", f"/editor/issues/{approved.id}/send",
        f"/editor/issues/{approved.id}/send/confirm",
        f"/editor/issues/{approved.id}/schedule-at", f"/editor/issues/{sent.id}/results",
        f"/editor/issues/{sent.id}/send", "/editor/subscribers", "/editor/subscribers/new",
        f"/editor/subscribers/{sub.id}", "/editor/subscribers/import", "/editor/team",
        "/editor/account", "/editor/settings", "/editor/suppressions",
    ]
    too_wide = {}
    for path in paths:
        response = page.goto(live_server.url + path)
        assert response is not None and response.status == 200, path
        page.wait_for_load_state("load")
        widths = page.evaluate("[document.documentElement.scrollWidth, "
                               "document.documentElement.clientWidth]")
        if widths[0] > widths[1]:
            too_wide[path] = widths
    assert not too_wide, f"pages wider than the phone (scrollWidth, clientWidth): {too_wide}"
