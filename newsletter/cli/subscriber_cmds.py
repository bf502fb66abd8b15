"""`newsletter subscribers add|confirm|import|list|show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from sqlalchemy import func
from sqlmodel import Session, col, select

from newsletter.cli.common import cli_session, console, err_console, fail, print_json
from newsletter.models import Delivery, Event, Subscriber, Suppression
from newsletter.subscribers import (
    SubscriberError,
    add_subscriber,
    confirm,
    get_by_email,
    import_csv,
    topics_by_subscriber,
)

subscribers = typer.Typer(help="Manage subscribers.", no_args_is_help=True)


def _split(topics: str) -> list[str]:
    return [t.strip() for t in topics.split(",") if t.strip()]


@subscribers.command("add")
def add(
    email: str,
    topics: str = typer.Option("", help="Comma-separated topic slugs (see `newsletter topics`)."),
    name: str = typer.Option("", help="Display name used in the greeting."),
    timezone: str = typer.Option("UTC", help="IANA time zone, e.g. Europe/Paris."),
    only_my_topics: bool = typer.Option(False, "--only-my-topics",
                                        help="Send only items matching the topics."),
    confirmed: bool = typer.Option(False, "--confirmed",
                                   help="Skip double opt-in (the person already agreed)."),
) -> None:
    """Add one subscriber."""
    try:
        with cli_session() as session:
            sub = add_subscriber(session=session, email=email, name=name, topics=_split(topics),
                                 timezone=timezone, only_my_topics=only_my_topics,
                                 confirmed=confirmed, source="cli")
            session.flush()
            console.print(f"Added [bold]{sub.email}[/] ({sub.status}), id {sub.id}.",
                          highlight=False)
            if not confirmed:
                console.print(PENDING_HINT, highlight=False)
    except SubscriberError as exc:
        fail(str(exc))


PENDING_HINT = ("[dim]Pending subscribers get no digest until they confirm: they do that "
                "through the sign-up form's email, or confirm them here with "
                "`newsletter subscribers confirm EMAIL` if they already agreed.[/]")


@subscribers.command("confirm")
def confirm_(emails: list[str] = typer.Argument(..., help="Addresses to confirm.")) -> None:
    """Confirm pending subscribers who agreed elsewhere (skips double opt-in)."""
    missing = []
    with cli_session() as session:
        for raw in emails:
            sub = get_by_email(session=session, email=raw)
            if sub is None or sub.id is None:
                missing.append(raw)
            elif confirm(session=session, subscriber_id=sub.id, source="cli"):
                console.print(f"Confirmed [bold]{sub.email}[/].", highlight=False)
            else:
                console.print(f"{sub.email} is {sub.status}; nothing to confirm.",
                              highlight=False)
    if missing:
        fail(f"no subscriber with the address {', '.join(missing)}")


@subscribers.command("import")
def import_(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    confirmed: bool = typer.Option(False, "--confirmed",
                                   help="Import as confirmed (they opted in elsewhere)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Import subscribers from a CSV with an `email` column (optional name, topics, timezone)."""
    try:
        with cli_session() as session, Progress(
            TextColumn("Importing"), BarColumn(), MofNCompleteColumn(), console=err_console,
            transient=True, disable=as_json,
        ) as progress:
            task = progress.add_task("import", total=None)
            report = import_csv(
                session=session, path=file, confirmed=confirmed,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    except SubscriberError as exc:
        fail(str(exc))
    if as_json:
        print_json({"added": report.added, "rejected": [
            {"line": line, "email": email, "reason": reason}
            for line, email, reason in report.rejected]})
        return
    console.print(f"Imported [bold green]{report.added}[/] subscriber(s).")
    if report.added and not confirmed:
        console.print(PENDING_HINT, highlight=False)
    if report.rejected:
        table = Table(title=f"{len(report.rejected)} rejected row(s)", title_style="bold red")
        table.add_column("line", justify="right")
        table.add_column("email")
        table.add_column("reason")
        for line, email, reason in report.rejected:
            table.add_row(str(line), email, reason)
        console.print(table)


@subscribers.command("list")
def list_(
    status: str = typer.Option("", help="Only this status (pending, confirmed, ...)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List subscribers with their status and topics."""
    with cli_session() as session:
        query = select(Subscriber).order_by(col(Subscriber.id))
        if status:
            query = query.where(Subscriber.status == status)
        subs = session.exec(query).all()
        topics = topics_by_subscriber(session=session)
        rows: list[dict[str, Any]] = [
            {"id": s.id, "email": s.email, "name": s.name, "status": s.status,
             "topics": topics.get(s.id or 0, []), "only_my_topics": s.only_my_topics,
             "timezone": s.timezone, "source": s.source, "created_at": s.created_at}
            for s in subs
        ]
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"{len(rows)} subscriber(s)")
    for column in ("id", "email", "name", "status", "topics", "only mine"):
        table.add_column(column)
    for r in rows:
        table.add_row(str(r["id"]), r["email"], r["name"], r["status"], ", ".join(r["topics"]),
                      "yes" if r["only_my_topics"] else "")
    console.print(table)


def _subscriber_report(session: Session, email: str, limit: int) -> dict[str, Any] | None:
    """Status, suppression and recent events of one address (None: we never knew it)."""
    from newsletter.inbound.policy import soft_bounce_count

    sub = get_by_email(session=session, email=email)
    address = sub.email if sub is not None else email.strip().lower()
    suppression = session.get(Suppression, address)
    if sub is None and suppression is None:
        return None
    report: dict[str, Any] = {
        "email": address, "id": None, "status": "not subscribed",
        "suppressed": suppression is not None,
        "suppression": None if suppression is None else {
            "reason": suppression.reason, "since": suppression.created_at},
    }
    if sub is None or sub.id is None:
        return report | {"events": []}
    deliveries = dict(session.exec(  # type: ignore[call-overload]
        select(Delivery.status, func.count()).where(Delivery.subscriber_id == sub.id)
        .group_by(Delivery.status)).all())
    events = session.exec(select(Event).where(Event.subscriber_id == sub.id)
                          .order_by(col(Event.at).desc(), col(Event.id).desc()).limit(limit)).all()
    return report | {
        "id": sub.id, "name": sub.name, "status": sub.status, "paused": sub.paused,
        "topics": topics_by_subscriber(session=session, subscriber_ids=[sub.id]).get(sub.id, []),
        "only_my_topics": sub.only_my_topics, "timezone": sub.timezone, "source": sub.source,
        "created_at": sub.created_at, "confirmed_at": sub.confirmed_at,
        "unsubscribed_at": sub.unsubscribed_at,
        "soft_bounces_30_days": soft_bounce_count(session=session, subscriber_id=sub.id),
        "deliveries": deliveries,
        "events": [{"at": e.at, "kind": e.kind, "source": e.source, "issue_id": e.issue_id,
                    "data": json.loads(e.data or "{}")} for e in events],
    }


@subscribers.command("show")
def show(
    email: str = typer.Argument(..., help="The subscriber's address."),
    events: int = typer.Option(20, min=1, help="How many recent events to show."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One subscriber: status, suppression (why and since when), deliveries, recent events."""
    with cli_session() as session:
        report = _subscriber_report(session, email, events)
    if report is None:
        fail(f"no subscriber or suppression with the address {email}")
    if as_json:
        print_json(report)
        return
    table = Table(show_header=False, title=report["email"], title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    supp = report["suppression"]
    rows = [("Status", report["status"]),
            ("Suppressed", f"yes, since {supp['since']:%Y-%m-%d %H:%M} UTC: {supp['reason']}"
             if supp else "no")]
    if report["id"] is not None:
        rows += [("Id", str(report["id"])), ("Name", report["name"]),
                 ("Topics", ", ".join(report["topics"]) or "–"),
                 ("Paused", "yes" if report["paused"] else "no"),
                 ("Soft bounces (30 days)", str(report["soft_bounces_30_days"])),
                 ("Deliveries", ", ".join(f"{k} {v}" for k, v in
                                          sorted(report["deliveries"].items())) or "none")]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    if report["events"]:
        log = Table(title="Recent events", title_justify="left")
        for column in ("when (UTC)", "event", "source", "issue", "details"):
            log.add_column(column)
        for e in report["events"]:
            data = dict(e["data"])
            if "diagnostic" in data:  # a bounce: the reason repeats the diagnostic
                data.pop("reason", None)
            details = ", ".join(f"{k}: {v}" for k, v in data.items())
            log.add_row(f"{e['at']:%Y-%m-%d %H:%M}", e["kind"], e["source"],
                        str(e["issue_id"] or ""), details)
        console.print(log)


def register(app: typer.Typer) -> None:
    app.add_typer(subscribers, name="subscribers")
