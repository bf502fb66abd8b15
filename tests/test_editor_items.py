"""Editing items: drag-and-drop order, undo of the last change, topic names on chips,
and the live preview of the Markdown editor."""

from __future__ import annotations

import re

from sqlmodel import col, select

from newsletter.models import Item, ItemTopic
from tests.fixtures.editor import editor_post

ITEMS = [{"headline": "Alpha", "topics": ["logistics"]}, {"headline": "Beta"},
         {"headline": "Gamma", "topics": ["cloud-ai"]}]


def _order(session, issue_id):
    session.expire_all()
    return [i.headline for i in session.exec(
        select(Item).where(Item.issue_id == issue_id).order_by(col(Item.position)))]


def test_reorder_by_drag_and_drop_posts_the_whole_order(editor_client, make_issue, session):
    issue = make_issue(items=ITEMS)
    ids = {i.headline: i.id for i in session.exec(select(Item))}
    page = f"/editor/issues/{issue.id}"
    response = editor_post(editor_client, f"{page}/items/order",
                           {"order": f"{ids['Gamma']},{ids['Alpha']},{ids['Beta']}"}, page=page)
    assert response.status_code == 303
    assert _order(session, issue.id) == ["Gamma", "Alpha", "Beta"]


def test_a_partial_order_is_refused_with_a_message(editor_client, make_issue, session):
    issue = make_issue(items=ITEMS)
    first = session.exec(select(Item)).first()
    page = f"/editor/issues/{issue.id}"
    response = editor_post(editor_client, f"{page}/items/order", {"order": str(first.id)},
                           page=page)
    assert response.status_code == 400
    assert "every item of the issue once" in response.text
    assert _order(session, issue.id) == ["Alpha", "Beta", "Gamma"]


def test_every_change_shows_a_notice_that_can_be_undone(editor_client, make_issue, session):
    issue = make_issue(items=ITEMS)
    beta = session.exec(select(Item).where(Item.headline == "Beta")).one()
    page = f"/editor/issues/{issue.id}"
    editor_post(editor_client, f"{page}/items/{beta.id}/up", page=page)
    shown = editor_client.get(page).text
    assert "Moved “Beta” up." in shown and 'id="undo"' in shown
    assert _order(session, issue.id) == ["Beta", "Alpha", "Gamma"]
    assert editor_post(editor_client, f"{page}/undo", page=page).status_code == 303
    assert _order(session, issue.id) == ["Alpha", "Beta", "Gamma"]
    assert 'id="undo"' not in editor_client.get(page).text  # one step only


def test_undo_brings_back_a_deleted_item_with_its_topics(editor_client, make_issue, session):
    issue = make_issue(items=ITEMS)
    alpha = session.exec(select(Item).where(Item.headline == "Alpha")).one()
    page = f"/editor/issues/{issue.id}"
    editor_post(editor_client, f"{page}/items/{alpha.id}/delete", page=page)
    assert "Deleted “Alpha”." in editor_client.get(page).text
    editor_post(editor_client, f"{page}/undo", page=page)
    session.expire_all()
    restored = session.get(Item, alpha.id)
    assert restored is not None and restored.position == 0
    assert session.exec(select(ItemTopic).where(ItemTopic.item_id == alpha.id)).all()


def test_undo_after_another_change_is_refused(editor_client, make_issue, session):
    issue = make_issue(items=ITEMS)
    page = f"/editor/issues/{issue.id}"
    editor_post(editor_client, page, {"title": "New title", "intro": "x"}, page=page)
    from newsletter.editorial import update_issue

    update_issue(session=session, issue_id=issue.id, title="Changed elsewhere", intro="y")
    session.commit()
    response = editor_post(editor_client, f"{page}/undo", page=page)
    assert response.status_code == 409 and "nothing to undo" in response.text
    session.expire_all()
    from newsletter.models import Issue

    assert session.get(Issue, issue.id).title == "Changed elsewhere"


def test_topic_chips_show_names(editor_client, make_issue):
    issue = make_issue(items=ITEMS)
    page = editor_client.get(f"/editor/issues/{issue.id}").text
    assert re.search(r'<span class="tag" title="cloud-ai">Cloud &amp; AI</span>', page)


def test_markdown_preview_lists_items_or_names_the_line(editor_client):
    text = ("---\ntitle: \"Week\"\ndate: 2026-11-23\n---\n\n## First story\nTopics: logistics\n\n"
            "Body one.\n\n## Second story\n\nBody two.\n")
    ok = editor_post(editor_client, "/editor/issues/new/preview.json", {"text": text},
                     page="/editor/issues/new?mode=write").json()
    assert ok["ok"] and [i["headline"] for i in ok["items"]] == ["First story", "Second story"]
    assert ok["items"][0]["topics"] == ["Logistics"]
    bad = editor_post(editor_client, "/editor/issues/new/preview.json",
                      {"text": "---\ntitle: [unclosed\n---\n"},
                      page="/editor/issues/new?mode=write").json()
    assert not bad["ok"] and re.match(r"written-in-editor\.md:\d+: ", bad["error"])


def test_markdown_preview_refuses_unknown_topics_as_create_draft_does(editor_client):
    text = "---\ntitle: \"Week\"\n---\n\n## First story\nTopics: nosuch\n\nBody.\n"
    preview = editor_post(editor_client, "/editor/issues/new/preview.json", {"text": text},
                          page="/editor/issues/new?mode=write").json()
    assert not preview["ok"]
    assert preview["error"].startswith("written-in-editor.md:6: unknown topic 'nosuch'")
