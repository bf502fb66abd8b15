"""Editors and the email's words: the subject and excerpts in the console and the CLI,
and the checks on them (subject length, dead calls to action)."""

from __future__ import annotations

from sqlmodel import select
from typer.testing import CliRunner

from newsletter import checks
from newsletter.cli import app
from newsletter.models import Issue, IssueStatus, Item
from tests.fixtures.editor import editor_post

runner = CliRunner()
ITEMS = [{"headline": "Cainiao Opens Two Smart Hubs", "topics": ["logistics"],
          "body": "Cainiao opened two hubs."},
         {"headline": "Nanushka Comes to Tmall", "topics": ["luxury-fashion"],
          "body": "Nanushka opened a store."}]


def _check(session, issue_id: int, name: str) -> checks.CheckResult:
    report = checks.run_checks(session=session, issue_id=issue_id)
    return next(r for r in report.results if r.name == name)


def _set_subject(session, issue: Issue, subject: str) -> None:
    issue.subject = subject
    session.add(issue)
    session.commit()


def test_a_subject_up_to_70_characters_passes(session, make_issue) -> None:
    issue = make_issue(items=ITEMS)
    _set_subject(session, issue, "x" * 70)
    assert _check(session, issue.id, "subject").ok


def test_a_subject_over_70_characters_is_a_warning(session, make_issue) -> None:
    issue = make_issue(items=ITEMS)
    _set_subject(session, issue, "x" * 71)
    result = _check(session, issue.id, "subject")
    assert not result.ok and not result.blocking and "70" in result.reason


def test_a_subject_over_120_characters_blocks_the_send(session, make_issue) -> None:
    issue = make_issue(items=ITEMS)
    _set_subject(session, issue, "x" * 121)
    result = _check(session, issue.id, "subject")
    assert not result.ok and result.blocking and "120" in result.reason


def test_the_checks_flag_a_dead_call_to_action(session, make_issue) -> None:
    issue = make_issue(items=[{"headline": "Cainiao Hubs", "topics": ["logistics"],
                               "body": "Two hubs opened. Click here to read more."}])
    result = _check(session, issue.id, "cta")
    assert not result.ok and not result.blocking
    assert result.details == ("“Cainiao Hubs”: “Click here to read more.”",)
    assert _check(session, make_issue(items=ITEMS).id, "cta").ok


def test_the_console_saves_the_subject(editor_client, make_issue, session) -> None:
    issue = make_issue(items=ITEMS)
    page = editor_client.get(f"/editor/issues/{issue.id}").text
    assert 'name="subject"' in page
    response = editor_post(editor_client, f"/editor/issues/{issue.id}",
                           {"title": "T", "intro": "", "subject": "Cainiao’s hubs + 1 more"})
    assert response.status_code == 303
    session.expire_all()
    assert session.get(Issue, issue.id).subject == "Cainiao’s hubs + 1 more"


def test_an_empty_subject_is_proposed_again_from_the_stories(editor_client, make_issue,
                                                             session) -> None:
    issue = make_issue(items=ITEMS)
    editor_post(editor_client, f"/editor/issues/{issue.id}",
                {"title": "T", "intro": "", "subject": "  "})
    session.expire_all()
    assert session.get(Issue, issue.id).subject == \
        "Cainiao Opens Two Smart Hubs, Nanushka Comes to Tmall"


def test_a_subject_on_two_lines_reshows_the_form_with_a_message(editor_client, make_issue,
                                                               session) -> None:
    issue = make_issue(items=ITEMS)
    _set_subject(session, issue, "Kept")
    response = editor_post(editor_client, f"/editor/issues/{issue.id}",
                           {"title": "T", "intro": "", "subject": "One\r\nBcc: x@evil.test"})
    assert response.status_code == 400
    assert "The subject must be a single line." in response.text
    assert "Bcc: x@evil.test" in response.text  # what was typed, to fix
    session.expire_all()
    assert session.get(Issue, issue.id).subject == "Kept"


def test_the_console_saves_an_items_excerpt(editor_client, make_issue, session) -> None:
    issue = make_issue(items=ITEMS)
    item = session.exec(select(Item).where(Item.issue_id == issue.id)).first()
    response = editor_post(editor_client, f"/editor/issues/{issue.id}/items/{item.id}", {
        "headline": item.headline, "body": item.body, "link_text": "", "link_url": "",
        "topics": ["logistics"], "excerpt": "Two hubs, 400,000 parcels a day."})
    assert response.status_code == 303
    session.expire_all()
    assert session.get(Item, item.id).excerpt == "Two hubs, 400,000 parcels a day."


def test_the_cli_shows_and_changes_the_subject(make_issue, session) -> None:
    issue = make_issue(items=ITEMS, status=IssueStatus.approved)
    shown = runner.invoke(app, ["subject", str(issue.id)])
    assert shown.exit_code == 0, shown.output
    assert "proposed from the stories: Cainiao Opens Two Smart Hubs" in shown.output
    changed = runner.invoke(app, ["subject", str(issue.id), "Two hubs and a store"])
    assert changed.exit_code == 0, changed.output
    assert "it is a draft again" in changed.output
    session.expire_all()
    saved = session.get(Issue, issue.id)
    assert (saved.subject, saved.status) == ("Two hubs and a store", IssueStatus.draft)
    too_long = runner.invoke(app, ["subject", str(issue.id), "y" * 130])
    assert "the checks will block the send" in too_long.output


def test_the_cli_refuses_a_subject_for_a_sent_issue(make_issue) -> None:
    issue = make_issue(items=ITEMS, status=IssueStatus.sent)
    result = runner.invoke(app, ["subject", str(issue.id), "Late"])
    assert result.exit_code == 1
    assert "no longer be edited" in result.output
