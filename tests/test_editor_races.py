"""Races between the console and the workers: an edit or a "Schedule" that read the
issue before beat started sending it must not write its status back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlmodel import Session, select

from newsletter import db, editorial
from newsletter.editorial import EditorialError
from newsletter.models import Issue, IssueStatus, Item, utcnow
from tests.conftest import SEEDS
from tests.fixtures.editor import editor_post


def _start_sending_underneath(issue_id: int) -> None:
    """What plan_send does, committed by another connection."""
    with Session(db.get_engine()) as other:
        other.exec(update(Issue).where(Issue.id == issue_id)  # type: ignore[call-overload]
                   .values(status=IssueStatus.sending))
        other.commit()


def _first_item(session: Session, issue_id: int) -> int:
    item_id = session.exec(select(Item.id).where(Item.issue_id == issue_id)).first()
    assert item_id is not None
    return item_id


EDITS: dict[str, Callable[[Session, int, int], object]] = {
    "title": lambda s, i, _it: editorial.update_issue(session=s, issue_id=i, title="New",
                                                      intro=""),
    "item": lambda s, _i, it: editorial.update_item(session=s, item_id=it, headline="H",
                                                    body="", link_text="", link_url=""),
    "add": lambda s, i, _it: editorial.add_item(session=s, issue_id=i, headline="Added"),
    "pin": lambda s, _i, it: editorial.set_pinned(session=s, item_id=it, pinned=True),
    "move": lambda s, _i, it: editorial.move_item(session=s, item_id=it, direction="down"),
    "unapprove": lambda s, i, _it: editorial.unapprove_issue(session=s, issue_id=i),
    "schedule": lambda s, i, _it: editorial.schedule_issue(
        session=s, issue_id=i, when=utcnow() + timedelta(days=1)),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
@pytest.mark.parametrize("status", [IssueStatus.approved, IssueStatus.scheduled])
def test_a_stale_edit_never_takes_a_sending_issue_back(session, make_issue, edit, status):
    issue = make_issue(items=["A", "B"], status=status)
    item_id = _first_item(session, issue.id)
    session.get(Issue, issue.id)  # this session's view: still approved/scheduled
    _start_sending_underneath(issue.id)

    with pytest.raises(EditorialError, match="started sending; it can no longer be"):
        EDITS[edit](session, issue.id, item_id)
    session.rollback()

    session.expire_all()
    saved = session.get(Issue, issue.id)
    assert saved.status == IssueStatus.sending
    assert saved.title == "Weekly roundup"
    assert [i.headline for i in session.exec(
        select(Item).where(Item.issue_id == issue.id).order_by(Item.position)).all()] == [
        "A", "B"]


def test_an_edit_of_an_approved_issue_still_returns_it_to_draft(session, make_issue):
    issue = make_issue(items=["A"], status=IssueStatus.scheduled)
    editorial.update_issue(session=session, issue_id=issue.id, title="Changed", intro="")
    session.commit()
    session.expire_all()
    saved = session.get(Issue, issue.id)
    assert (saved.status, saved.title, saved.scheduled_for) == (IssueStatus.draft, "Changed",
                                                                  None)


def test_the_console_answers_a_stale_schedule_with_a_message(editor_client, make_issue,
                                                             session, monkeypatch):
    issue = make_issue(items=["A"], status=IssueStatus.approved)
    real = editorial._set_status

    def beat_wins_the_race(*args, **kwargs):  # plan_send commits between read and write
        _start_sending_underneath(issue.id)
        return real(*args, **kwargs)

    monkeypatch.setattr(editorial, "_set_status", beat_wins_the_race)
    response = editor_post(editor_client, f"/editor/issues/{issue.id}/schedule")
    assert response.status_code == 400
    assert "This issue started sending; it can no longer be scheduled." in response.text
    session.expire_all()
    assert session.get(Issue, issue.id).status == IssueStatus.sending


def test_the_editor_answers_a_stale_edit_with_a_message(editor_client, make_issue, session,
                                                        monkeypatch):
    issue = make_issue(items=["A"], status=IssueStatus.approved)
    real = editorial.touch_issue

    def beat_wins_the_race(**kwargs):  # after the status check, before any write
        _start_sending_underneath(issue.id)
        return real(**kwargs)

    monkeypatch.setattr(editorial, "touch_issue", beat_wins_the_race)
    response = editor_post(editor_client, f"/editor/issues/{issue.id}",
                           {"title": "Late change", "intro": ""})
    assert response.status_code == 400
    assert "This issue started sending; it can no longer be edited." in response.text
    session.expire_all()
    saved = session.get(Issue, issue.id)
    assert (saved.status, saved.title) == (IssueStatus.sending, "Weekly roundup")


def test_the_same_roundup_uploaded_twice_at_once_shows_the_first_issue(
        editor_client, session, monkeypatch):
    from newsletter.ingest import service

    text = (SEEDS / "001_0ca4f60e5a2a211f.txt").read_text()
    real_taxonomy = service.taxonomy_from_db
    raced = []

    def other_upload_commits_first(**kwargs):
        # Called after this request's "already uploaded?" look-up found nothing.
        if not raced:
            raced.append(True)
            with Session(db.get_engine()) as other:
                service.ingest_text(session=other, text=text, source_name="other.txt")
                other.commit()
        return real_taxonomy(**kwargs)

    monkeypatch.setattr(service, "taxonomy_from_db", other_upload_commits_first)
    response = editor_post(editor_client, "/editor/issues/new",
                           {"text": text, "mode": "paste", "source_name": "001.txt"})
    assert raced
    assert response.status_code == 303, response.text
    issues = session.exec(select(Issue)).all()
    assert len(issues) == 1
    assert response.headers["location"] == f"/editor/issues/{issues[0].id}?notice=existing"
    page = editor_client.get(response.headers["location"])
    assert "This roundup was uploaded before" in page.text
