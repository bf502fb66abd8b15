"""`newsletter schedule ISSUE --at "YYYY-MM-DD HH:MM" [--timezone ZONE | --subscriber-local]`."""

from __future__ import annotations

from datetime import datetime

import typer

from newsletter.cli.common import cli_session, console, fail


def schedule(
    issue_id: int = typer.Argument(..., help="The issue (see `newsletter issues`)."),
    at: str = typer.Option(..., "--at", help='When, as "YYYY-MM-DD HH:MM".'),
    timezone: str = typer.Option("", "--timezone",
                                 help="Zone of --at (default: SCHEDULE_TIMEZONE); with "
                                      "--subscriber-local, the zone of readers without one."),
    subscriber_local: bool = typer.Option(
        False, "--subscriber-local",
        help="Deliver at --at in each reader's own time zone (readers without one get "
             "--timezone); the sending day then spans about 24 hours."),
) -> None:
    """Schedule an approved issue for a date and time, or for each reader's local time."""
    from newsletter import scheduling
    from newsletter.editorial import EditorialError

    try:
        when = datetime.strptime(at.strip(), "%Y-%m-%d %H:%M")
    except ValueError:
        fail(f'--at {at!r} must look like "2027-03-15 09:00"')
    try:
        with cli_session() as session:
            issue = scheduling.schedule_at(
                session=session, issue_id=issue_id, day=when.date(), at=when.time(),
                timezone=timezone or None, subscriber_local=subscriber_local)
            forecast = scheduling.forecast(session=session, issue_id=issue_id)
            starts = issue.scheduled_for
    except LookupError:
        fail(f"issue {issue_id}: no issue with id {issue_id}")
    except EditorialError as exc:
        fail(f"issue {issue_id}: {exc}")
    assert starts is not None
    where = "each reader's own time zone" if subscriber_local else (timezone or "the default zone")
    console.print(f"Issue {issue_id} scheduled for {when:%A %d %B %Y, %H:%M} in {where}; "
                  f"sending starts {starts:%Y-%m-%d %H:%M} UTC.", highlight=False,
                  soft_wrap=True)
    people = "subscriber" if forecast.recipients == 1 else "subscribers"
    console.print(f"{forecast.recipients:,} {people}, {forecast.versions} "
                  f"version{'s' if forecast.versions != 1 else ''}.", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("schedule")(schedule)
