"""`newsletter preview`: see the digest one subscriber (or a set of topics) would get."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from newsletter.cli.common import cli_session, err_console, fail


class Format(enum.StrEnum):
    html = "html"
    text = "text"
    eml = "eml"


def _split_topics(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


def preview(
    issue_id: Annotated[int, typer.Argument(metavar="ISSUE", help="The issue's id.")],
    subscriber: Annotated[
        str | None,
        typer.Option("--subscriber", "-s", help="Preview as this subscriber (email address)."),
    ] = None,
    topics: Annotated[
        str | None,
        typer.Option("--topics", help="Preview as someone following these topic slugs (a,b)."),
    ] = None,
    only_my_topics: Annotated[
        bool, typer.Option("--only-my-topics", help="With --topics: only matching items.")
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="What to print.")] = Format.html,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Render ISSUE exactly as one subscriber would receive it (HTML, text or .eml)."""
    from newsletter.composer import compose, load_issue
    from newsletter.engagement.interests import learned_for
    from newsletter.message import MessageFactory
    from newsletter.render import Recipient, render_digest
    from newsletter.settings import settings
    from newsletter.subscribers import (
        SubscriberError,
        followed_topics,
        get_by_email,
        validate_topics,
    )

    if subscriber and topics is not None:
        fail("give either --subscriber or --topics, not both")
    with cli_session() as session:
        try:
            issue = load_issue(session=session, issue_id=issue_id)
        except LookupError:
            fail(f"no issue with id {issue_id} (see `newsletter issues`)")
        if subscriber:
            sub = get_by_email(session=session, email=subscriber)
            if sub is None or sub.id is None:
                fail(f"no subscriber with email {subscriber!r}")
            followed = followed_topics(session=session, subscriber_id=sub.id)
            only_mine = sub.only_my_topics
            learned = learned_for(session=session, subscriber_id=sub.id)
            recipient = Recipient(subscriber_id=sub.id, email=sub.email, name=sub.name)
            who = sub.email
        else:
            try:
                followed = validate_topics(
                    session=session, slugs=_split_topics(topics) if topics else []
                )
            except SubscriberError as exc:
                fail(str(exc))
            only_mine = only_my_topics
            learned = []
            domain = settings.mail_from_address.rpartition("@")[2] or "localhost"
            recipient = Recipient(subscriber_id=0, email=f"preview@{domain}", name="")
            who = f"someone following {', '.join(followed) or 'no topics'}"

    composition = compose(
        issue, followed=followed, only_my_topics=only_mine, max_items=settings.digest_max_items,
        learned=learned,
    )
    if composition is None:
        typer.echo(
            f"{who} would get nothing from issue {issue_id}: they chose only their own "
            "topics and none of this week's items match them, so no email is sent."
        )
        return

    digest = render_digest(issue, composition)
    if fmt is Format.eml:
        data = MessageFactory(digest=digest, issue_id=issue_id).build(recipient).data
    else:
        html, text = digest.personalise(recipient)
        data = (html if fmt is Format.html else text).encode("utf-8")

    if output is None:
        typer.echo(data, nl=False)  # bytes: click writes them to the binary stream
        return
    try:
        output.write_bytes(data)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    err_console.print(
        f"Wrote the {fmt.value} preview for {who} ({len(composition.items)} items, "
        f"{len(data) / 1024:.1f} KB) to {output}",
        highlight=False,
        markup=False,
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("preview")(preview)
