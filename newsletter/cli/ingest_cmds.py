"""`newsletter ingest`, `newsletter issues`, `newsletter items ...` and `newsletter topics`."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import func
from sqlmodel import col, select

from newsletter import db, editorial
from newsletter.cli.common import ensure_database
from newsletter.editorial import EditorialError
from newsletter.ingest import IngestError, IngestResult, ingest_file
from newsletter.models import Delivery, Issue, Item
from newsletter.topics import item_topic_slugs, topic_counts

console = Console()
errors = Console(stderr=True, soft_wrap=True)  # "file:line: message" must stay on one line

items_app = typer.Typer(help="List and tag an issue's items.", no_args_is_help=True)


def _parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date (YYYY-MM-DD)", param_hint="--date"
        ) from None


def _print_json(data: object) -> None:
    # Plain print: rich would wrap long lines and break the JSON.
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


def ingest(
    files: Annotated[list[Path], typer.Argument(help="Roundup files (.txt or .md).")],
    date_: Annotated[
        str | None,
        typer.Option("--date", help="Issue date YYYY-MM-DD (default: front matter, else today)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Turn roundup files into draft issues. Each file is its own transaction."""
    issue_date = _parse_date(date_)
    ensure_database()
    results: list[tuple[Path, IngestResult]] = []
    failed: list[IngestError] = []
    for path in files:
        try:
            with db.session_scope() as session:
                results.append(
                    (path, ingest_file(session=session, path=path, issue_date=issue_date))
                )
        except IngestError as exc:
            failed.append(exc)
            errors.print(f"[red]{escape(str(exc))}[/red]")
    if as_json:
        _print_json(
            {
                "issues": [
                    {
                        "file": str(path),
                        "issue_id": r.issue_id,
                        "title": r.title,
                        "items": r.item_count,
                        "created": r.created,
                    }
                    for path, r in results
                ],
                "errors": [{"file": e.path, "line": e.line, "message": e.message} for e in failed],
            }
        )
    elif results:
        table = Table("issue", "title", "items", "status", "file")
        for path, r in results:
            table.add_row(
                str(r.issue_id),
                escape(r.title),
                str(r.item_count),
                "created" if r.created else "existing",
                escape(str(path)),
            )
        console.print(table)
    if failed:
        raise typer.Exit(1)


@items_app.command("list")
def items_list(
    issue_id: Annotated[int, typer.Argument(help="Issue id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """An issue's items in order, with their topics."""
    ensure_database()
    with db.session_scope() as session:
        issue = session.get(Issue, issue_id)
        if issue is None:
            errors.print(f"[red]no issue with id {issue_id}[/red]")
            raise typer.Exit(1)
        items = session.exec(
            select(Item).where(Item.issue_id == issue_id).order_by(col(Item.position))
        ).all()
        topics = item_topic_slugs(session=session, item_ids=[i.id for i in items if i.id])
        rows = [
            {
                "id": i.id,
                "position": i.position,
                "headline": i.headline,
                "kind": i.kind,
                "pinned": i.pinned,
                "topics": topics.get(i.id or 0, []),
            }
            for i in items
        ]
        title = issue.title
    if as_json:
        _print_json(rows)
        return
    table = Table("id", "pos", "headline", "topics", title=escape(title))
    for row in rows:
        table.add_row(
            str(row["id"]),
            str(row["position"]),
            escape(str(row["headline"])),
            escape(", ".join(row["topics"])),  # type: ignore[arg-type]
        )
    console.print(table)


@items_app.command("tag")
def items_tag(
    item_id: Annotated[int, typer.Argument(help="Item id.")],
    topics: Annotated[
        str, typer.Option("--topics", help="Comma-separated topic slugs (empty clears).")
    ],
) -> None:
    """Replace an item's topics. Like the web console: an approved or scheduled issue
    goes back to draft (approve it again), a sending or sent one is refused."""
    ensure_database()
    slugs = [s.strip() for s in topics.split(",") if s.strip()]
    try:
        with db.session_scope() as session:
            item = session.get(Item, item_id)
            owner = session.get(Issue, item.issue_id) if item else None
            before = owner.status if owner else None
            issue = editorial.set_topics(session=session, item_id=item_id, topics=slugs)
            now = item_topic_slugs(session=session, item_ids=[item_id]).get(item_id, [])
            issue_id, after = issue.id, issue.status
    except (LookupError, EditorialError) as exc:
        errors.print(f"[red]item {item_id}: {escape(str(exc))}[/red]")
        raise typer.Exit(1) from None
    console.print(f"item {item_id}: {escape(', '.join(now)) or '(no topics)'}")
    if before is not None and before != after:
        console.print(f"issue {issue_id} was {before}; it is a draft again: "
                      f"approve it again before it is sent.")


def topics_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Topics with how many items and confirmed subscribers each has."""
    ensure_database()
    with db.session_scope() as session:
        rows = [
            {"slug": t.slug, "name": t.name, "items": items, "subscribers": subs}
            for t, items, subs in topic_counts(session=session)
        ]
    if as_json:
        _print_json(rows)
        return
    table = Table("slug", "name", "items", "subscribers")
    for row in rows:
        table.add_row(
            escape(str(row["slug"])),
            escape(str(row["name"])),
            str(row["items"]),
            str(row["subscribers"]),
        )
    console.print(table)


def issues_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Every issue, newest first: date, status, item count and delivery results."""
    ensure_database()
    with db.session_scope() as session:
        issues = session.exec(
            select(Issue).order_by(col(Issue.issue_date).desc(), col(Issue.id).desc())
        ).all()
        items = dict(session.exec(
            select(Item.issue_id, func.count()).group_by(col(Item.issue_id))
        ).all())
        deliveries: dict[int, dict[str, int]] = defaultdict(dict)
        for issue_id, status, n in session.exec(
            select(Delivery.issue_id, Delivery.status, func.count())
            .group_by(col(Delivery.issue_id), col(Delivery.status))
        ).all():
            deliveries[issue_id][str(status)] = int(n)
        rows = [
            {"id": i.id, "date": i.issue_date.isoformat(), "status": str(i.status),
             "items": int(items.get(i.id or 0, 0)), "title": i.title,
             "deliveries": deliveries.get(i.id or 0, {})}
            for i in issues
        ]
    if as_json:
        _print_json(rows)
        return
    if not rows:
        console.print("No issues yet: `newsletter ingest FILE` creates one.")
        return
    table = Table("id", "date", "status", "items", "title", "deliveries")
    for row in rows:
        counts: dict[str, int] = row["deliveries"]  # type: ignore[assignment]
        table.add_row(
            str(row["id"]), str(row["date"]), str(row["status"]), str(row["items"]),
            escape(str(row["title"])),
            ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "—",
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("ingest")(ingest)
    app.add_typer(items_app, name="items")
    app.command("topics")(topics_cmd)
    app.command("issues")(issues_cmd)
