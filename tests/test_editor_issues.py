"""The issue list, creating issues, and editing them (service functions and HTTP)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlmodel import col, select

from newsletter import editorial
from newsletter.composer import load_issue
from newsletter.models import Delivery, Issue, IssueStatus, Item, utcnow
from newsletter.topics import item_topic_slugs
from tests.conftest import SEEDS
from tests.fixtures.editor import editor_post


def _headlines(session, issue_id):
    session.expire_all()
    return [i.headline for i in load_issue(session=session, issue_id=issue_id).items]


def _age(session, issue):
    issue.updated_at = utcnow() - timedelta(hours=1)
    session.add(issue)
    session.commit()
    return issue.updated_at


# --- service functions -------------------------------------------------------------------


def test_move_item_swaps_with_its_neighbour_and_bumps_updated_at(session, make_issue):
    issue = make_issue(items=["A", "B", "C"])
    before = _age(session, issue)
    b = session.exec(select(Item).where(Item.headline == "B")).one()
    assert editorial.move_item(session=session, item_id=b.id, direction="up")
    session.commit()
    assert _headlines(session, issue.id) == ["B", "A", "C"]
    assert session.get(Issue, issue.id).updated_at > before


def test_move_item_past_the_end_changes_nothing(session, make_issue):
    issue = make_issue(items=["A", "B"])
    b = session.exec(select(Item).where(Item.headline == "B")).one()
    assert not editorial.move_item(session=session, item_id=b.id, direction="down")
    assert _headlines(session, issue.id) == ["A", "B"]


def test_every_kind_of_edit_bumps_updated_at(session, make_issue):
    issue = make_issue(items=["A", "B"])
    a = session.exec(select(Item).where(Item.headline == "A")).one()
    edits = [
        lambda: editorial.update_issue(session=session, issue_id=issue.id, title="T", intro="I"),
        lambda: editorial.update_item(session=session, item_id=a.id, headline="A2", body="b",
                                      link_text="", link_url="https://example.com/a"),
        lambda: editorial.set_pinned(session=session, item_id=a.id, pinned=True),
        lambda: editorial.set_hidden(session=session, item_id=a.id, hidden=True),
        lambda: editorial.set_topics(session=session, item_id=a.id, topics=["logistics"]),
        lambda: editorial.add_item(session=session, issue_id=issue.id, headline="C"),
        lambda: editorial.delete_item(session=session, item_id=a.id),
    ]
    for edit in edits:
        before = _age(session, issue)
        edit()
        session.commit()
        assert session.get(Issue, issue.id).updated_at > before, edit


def test_editing_an_approved_issue_sends_it_back_to_draft(session, make_issue):
    issue = make_issue(items=["A"], status=IssueStatus.approved)
    editorial.update_issue(session=session, issue_id=issue.id, title="Changed", intro="")
    session.commit()
    assert session.get(Issue, issue.id).status == IssueStatus.draft


def test_an_issue_being_sent_cannot_be_edited(session, make_issue):
    issue = make_issue(items=["A"], status=IssueStatus.sending)
    with pytest.raises(editorial.EditorialError, match="no longer be edited"):
        editorial.update_issue(session=session, issue_id=issue.id, title="Changed", intro="")


@pytest.mark.parametrize("url", ["javascript:alert(1)", "example.com/x", "https://exa mple.com",
                                 "ftp://example.com/x", "https://localhost-only/x"])
def test_items_refuse_malformed_links(session, make_issue, url):
    issue = make_issue(items=["A"])
    with pytest.raises(editorial.EditorialError, match="http|spaces"):
        editorial.add_item(session=session, issue_id=issue.id, headline="B", link_url=url)


def test_headlines_must_be_one_line(session, make_issue):
    issue = make_issue(items=["A"])
    with pytest.raises(editorial.EditorialError, match="single line"):
        editorial.add_item(session=session, issue_id=issue.id, headline="B\r\nBcc: x@y")


def test_unknown_topics_are_refused_with_the_valid_ones_listed(session, make_issue):
    issue = make_issue(items=["A"])
    a = session.exec(select(Item).where(Item.issue_id == issue.id)).one()
    with pytest.raises(editorial.EditorialError, match="valid topics"):
        editorial.set_topics(session=session, item_id=a.id, topics=["no-such-topic"])


def test_delete_item_renumbers_the_rest(session, make_issue):
    issue = make_issue(items=["A", "B", "C"])
    b = session.exec(select(Item).where(Item.headline == "B")).one()
    editorial.delete_item(session=session, item_id=b.id)
    session.commit()
    positions = session.exec(select(Item.position).where(Item.issue_id == issue.id)
                             .order_by(col(Item.position))).all()
    assert positions == [0, 1]


# --- HTTP ------------------------------------------------------------------------------


def test_issue_list_shows_status_date_item_count_and_delivery_counts(
        editor_client, make_issue, make_subscriber, session):
    draft = make_issue(title="Draft one", items=["A", "B", "C"])
    sent = make_issue(title="Sent one", items=["A"], status=IssueStatus.sent)
    sub = make_subscriber()
    session.add(Delivery(issue_id=sent.id, subscriber_id=sub.id, status="sent"))
    session.commit()
    page = editor_client.get("/editor/issues").text
    row = re.search(r"<tr>\s*<td[^>]*>2026-11-23</td>\s*<td[^>]*><a[^>]*>Draft one</a>.*?</tr>",
                    page, re.S)
    assert row and "draft" in row.group(0) and re.search(r'<td class="num"[^>]*>3</td>',
                                                         row.group(0))
    sent_row = re.search(r"Sent one</a>.*?</tr>", page, re.S)
    assert sent_row and "1 sent" in sent_row.group(0)
    assert draft.id != sent.id


def test_pasting_a_roundup_creates_a_draft_issue(editor_client, session):
    text = (SEEDS / "001_0ca4f60e5a2a211f.txt").read_text()
    response = editor_post(editor_client, "/editor/issues/new",
                           {"text": text, "mode": "paste", "source_name": "001.txt"})
    assert response.status_code == 303
    issue_id = int(response.headers["location"].rsplit("/", 1)[1])
    issue = session.get(Issue, issue_id)
    assert issue.status == IssueStatus.draft
    assert len(session.exec(select(Item).where(Item.issue_id == issue_id)).all()) == 6


def test_uploading_a_roundup_file_creates_a_draft_issue(editor_client, session):
    data = (SEEDS / "000_e30772e42d6be7fd.txt").read_bytes()
    page = editor_client.get("/editor/issues/new")
    from tests.fixtures.web import csrf_token

    response = editor_client.post(
        "/editor/issues/new", data={"mode": "paste", "csrf_token": csrf_token(page.text)},
        files={"file": ("000.txt", data, "text/plain")}, follow_redirects=False)
    assert response.status_code == 303, response.text
    issue_id = int(response.headers["location"].rsplit("/", 1)[1])
    assert session.get(Issue, issue_id).source_name == "000.txt"


def test_a_roundup_file_larger_than_the_form_limit_still_uploads(editor_client, session):
    # Forms elsewhere are capped at 64 KB; the upload form takes roundups up to 1 MB.
    items = "".join(f"## Story number {n}\n\n{'Plenty of words in this body. ' * 40}\n\n"
                    for n in range(120))
    data = f"---\ntitle: A long week\ndate: 2026-11-30\n---\n\n{items}".encode()
    assert len(data) > 128 * 1024
    page = editor_client.get("/editor/issues/new")
    from tests.fixtures.web import csrf_token

    response = editor_client.post(
        "/editor/issues/new", data={"mode": "paste", "csrf_token": csrf_token(page.text)},
        files={"file": ("long.md", data, "text/markdown")}, follow_redirects=False)
    assert response.status_code == 303, response.text[:500]
    issue_id = int(response.headers["location"].rsplit("/", 1)[1])
    assert len(session.exec(select(Item).where(Item.issue_id == issue_id)).all()) == 120


def test_writing_an_issue_in_markdown_keeps_its_topics_and_pins(editor_client, session):
    text = ("---\ntitle: Written here\ndate: 2026-11-30\n---\n\n## First\n\nTopics: logistics\n\n"
            "Body one.\n\n[Read more](https://example.com/one)\n\n## Second\n\nPinned: yes\n\n"
            "Body two.\n")
    response = editor_post(editor_client, "/editor/issues/new", {"text": text, "mode": "write"})
    assert response.status_code == 303, response.text
    issue_id = int(response.headers["location"].rsplit("/", 1)[1])
    items = session.exec(select(Item).where(Item.issue_id == issue_id)
                         .order_by(col(Item.position))).all()
    assert [i.headline for i in items] == ["First", "Second"]
    assert items[1].pinned
    assert item_topic_slugs(session=session, item_ids=[items[0].id])[items[0].id] == ["logistics"]


def test_a_bad_roundup_returns_the_form_with_file_and_line(editor_client, session):
    text = "---\ntitle: Bad\n---\n\n## First\n\nTopics: not-a-topic\n\nBody.\n"
    response = editor_post(editor_client, "/editor/issues/new",
                           {"text": text, "mode": "write", "source_name": "mine.md"})
    assert response.status_code == 400
    assert "mine.md:7" in response.text
    assert "not-a-topic" in response.text
    assert "Topics: not-a-topic" in response.text  # the text is kept, nothing is lost
    assert session.exec(select(Issue)).all() == []


def test_an_empty_submission_returns_the_form_with_a_message(editor_client):
    response = editor_post(editor_client, "/editor/issues/new", {"text": "  ", "mode": "paste"})
    assert response.status_code == 400
    assert "Paste a roundup or choose a file" in response.text


def test_a_bad_date_returns_the_form_with_a_message(editor_client):
    response = editor_post(editor_client, "/editor/issues/new",
                           {"text": "## A\n\nBody.\n", "issue_date": "next monday"})
    assert response.status_code == 400
    assert "2026-11-23" in response.text


def test_saving_the_title_and_intro(editor_client, make_issue, session):
    issue = make_issue(items=["A"])
    response = editor_post(editor_client, f"/editor/issues/{issue.id}",
                           {"title": "New title", "intro": "New intro."})
    assert response.status_code == 303
    session.expire_all()
    assert session.get(Issue, issue.id).title == "New title"


def test_an_empty_title_returns_the_editor_with_a_message(editor_client, make_issue, session):
    issue = make_issue(title="Kept", items=["A"])
    response = editor_post(editor_client, f"/editor/issues/{issue.id}",
                           {"title": "", "intro": "Kept intro"})
    assert response.status_code == 400
    assert "The title can&#39;t be empty" in response.text
    session.expire_all()
    assert session.get(Issue, issue.id).title == "Kept"


def test_a_bad_link_on_an_item_returns_the_editor_with_a_message(editor_client, make_issue):
    issue = make_issue(items=["A"])
    response = editor_post(editor_client, f"/editor/issues/{issue.id}/items",
                           {"headline": "New", "link_url": "javascript:alert(1)"})
    assert response.status_code == 400
    assert "Links must be absolute" in response.text
    assert 'value="javascript:alert(1)"' in response.text  # what was typed is kept


def test_moving_an_item_down_changes_the_preview_order(editor_client, make_issue, session):
    issue = make_issue(items=["Alpha story", "Beta story"])
    alpha = session.exec(select(Item).where(Item.headline == "Alpha story")).one()
    frame = editor_client.get(f"/editor/issues/{issue.id}/preview/frame").text
    assert frame.index("Alpha story") < frame.index("Beta story")
    response = editor_post(editor_client, f"/editor/issues/{issue.id}/items/{alpha.id}/down")
    assert response.status_code == 303
    frame = editor_client.get(f"/editor/issues/{issue.id}/preview/frame").text
    assert frame.index("Beta story") < frame.index("Alpha story")


def test_hiding_an_item_removes_it_from_the_preview(editor_client, make_issue, session):
    issue = make_issue(items=["Alpha story", "Beta story"])
    alpha = session.exec(select(Item).where(Item.headline == "Alpha story")).one()
    editor_post(editor_client, f"/editor/issues/{issue.id}/items/{alpha.id}/hide")
    assert "Alpha story" not in editor_client.get(f"/editor/issues/{issue.id}/preview/frame").text


def test_editing_an_item_with_topics(editor_client, make_issue, session):
    issue = make_issue(items=["A"])
    item = session.exec(select(Item).where(Item.issue_id == issue.id)).one()
    response = editor_post(editor_client, f"/editor/issues/{issue.id}/items/{item.id}", {
        "headline": "A, rewritten", "body": "New body.", "link_text": "Read",
        "link_url": "https://example.com/a", "topics": ["logistics", "fintech"]})
    assert response.status_code == 303
    session.expire_all()
    assert session.get(Item, item.id).headline == "A, rewritten"
    assert set(item_topic_slugs(session=session, item_ids=[item.id])[item.id]) == {
        "logistics", "fintech"}


def test_an_item_of_another_issue_is_not_found(editor_client, make_issue, session):
    first = make_issue(items=["A"])
    other = make_issue(items=["B"])
    b = session.exec(select(Item).where(Item.issue_id == other.id)).one()
    response = editor_post(editor_client, f"/editor/issues/{first.id}/items/{b.id}/delete")
    assert response.status_code == 404
    assert session.get(Item, b.id) is not None


def test_unknown_issue_and_unknown_action_give_a_404_page(editor_client, make_issue, session):
    assert editor_client.get("/editor/issues/9999").status_code == 404
    issue = make_issue(items=["A"])
    a = session.exec(select(Item).where(Item.issue_id == issue.id)).one()
    assert editor_post(editor_client, f"/editor/issues/{issue.id}/items/{a.id}/explode"
                       ).status_code == 404


def test_reorder_items_puts_them_in_the_given_order(session, make_issue):
    issue = make_issue(items=["A", "B", "C"])
    ids = {i.headline: i.id for i in session.exec(select(Item).where(Item.issue_id == issue.id))}
    editorial.reorder_items(session=session, issue_id=issue.id,
                            item_ids=[ids["C"], ids["A"], ids["B"]])
    session.commit()
    assert _headlines(session, issue.id) == ["C", "A", "B"]
    with pytest.raises(editorial.EditorialError, match="every item"):
        editorial.reorder_items(session=session, issue_id=issue.id, item_ids=[ids["A"]])
