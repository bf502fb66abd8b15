"""`newsletter subject` and `newsletter excerpt`: the words of the digest email."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from newsletter import editorial
from newsletter.checks import SUBJECT_MAX, SUBJECT_WARN
from newsletter.cli.common import cli_session, console, fail
from newsletter.editorial import EditorialError
from newsletter.ingest.subject import proposed_subject
from newsletter.models import Issue, Item


def subject_cmd(
    issue_id: Annotated[int, typer.Argument(help="Issue id.")],
    text: Annotated[str | None, typer.Argument(
        help="The new subject. Leave out to see the current one; \"\" proposes one again.")]
    = None,
) -> None:
    """Show or change an issue's email subject (about 70 characters at most).

    Like any edit, it sends an approved or scheduled issue back to draft."""
    try:
        with cli_session() as session:
            issue = session.get(Issue, issue_id)
            if issue is None:
                fail(f"no issue with id {issue_id}")
            if text is None:
                current = issue.subject or issue.title
                console.print(f"subject ({len(current)} characters): {escape(current)}",
                              highlight=False)
                console.print(f"proposed from the stories: "
                              f"{escape(proposed_subject(session=session, issue_id=issue_id))}",
                              highlight=False)
                return
            before = issue.status
            issue = editorial.set_subject(session=session, issue_id=issue_id, subject=text)
            subject, after = issue.subject, issue.status
    except EditorialError as exc:
        fail(f"issue {issue_id}: {exc}")
    console.print(f"issue {issue_id}: subject ({len(subject)} characters): {escape(subject)}",
                  highlight=False)
    if len(subject) > SUBJECT_MAX:
        console.print(f"[red]over {SUBJECT_MAX} characters: the checks will block the send[/red]")
    elif len(subject) > SUBJECT_WARN:
        console.print(f"[yellow]over {SUBJECT_WARN} characters: phones cut it short[/yellow]")
    if before != after:
        console.print(f"issue {issue_id} was {before}; it is a draft again: approve it again "
                      "before it is sent.")


def excerpt_cmd(
    item_id: Annotated[int, typer.Argument(help="Item id (see `newsletter items list`).")],
    text: Annotated[str, typer.Argument(
        help="What the email shows of the story; \"\" goes back to its first ~60 words.")],
) -> None:
    """Set the excerpt a story shows in the email."""
    try:
        with cli_session() as session:
            item = session.get(Item, item_id)
            if item is None:
                fail(f"no item with id {item_id}")
            editorial.update_item(session=session, item_id=item_id, headline=item.headline,
                                  body=item.body, link_text=item.link_text,
                                  link_url=item.link_url, excerpt=text)
    except EditorialError as exc:
        fail(f"item {item_id}: {exc}")
    console.print(f"item {item_id}: excerpt {'set' if text.strip() else 'cleared'}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("subject")(subject_cmd)
    app.command("excerpt")(excerpt_cmd)
