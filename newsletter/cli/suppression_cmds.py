"""`newsletter suppressions list|add|remove|import`: addresses that are never mailed."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from newsletter.cli.common import cli_session, console, fail, print_json, progress_bar
from newsletter.inbound.suppressions import (
    MAX_PAGE,
    SuppressionError,
    add_suppression,
    clean_address,
    import_csv,
    list_suppressions,
    remove_suppression,
)

suppressions = typer.Typer(help="The suppression list: addresses never mailed, and why.",
                           no_args_is_help=True)


@suppressions.command("list")
def list_(
    search: str = typer.Option("", "--search", "-s", help="Part of an address or reason."),
    limit: int = typer.Option(100, min=1, max=200, help="Rows to show (200 at most)."),
    offset: int = typer.Option(0, min=0, help="Rows to skip, for the next page."),
    every: bool = typer.Option(False, "--all", help="Every row (e.g. to export with --json)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List suppressed addresses, newest first, with the reason and date."""
    with cli_session() as session:
        rows, total = list_suppressions(session=session, search=search, offset=offset,
                                        limit=limit if not every else MAX_PAGE)
        while every and offset + len(rows) < total:
            more, _ = list_suppressions(session=session, search=search,
                                        offset=offset + len(rows), limit=MAX_PAGE)
            if not more:
                break
            rows += more
        data = [{"email": r.email, "reason": r.reason, "created_at": r.created_at.isoformat()}
                for r in rows]
    if as_json:
        print_json({"total": total, "offset": offset, "suppressions": data})
        return
    if not data:
        console.print("No suppressed addresses" + (f" match {search!r}." if search else ".")
                      + (f" ({total} in all; --offset is past the end.)" if total else ""),
                      highlight=False)
        return
    shown = f"{offset + 1}–{offset + len(data)} of {total}"
    table = Table(title=f"Suppressed addresses ({shown})")
    table.add_column("email")
    table.add_column("since")
    table.add_column("reason")
    for r in data:
        table.add_row(escape(r["email"]), r["created_at"][:16].replace("T", " "),
                      escape(r["reason"]))
    console.print(table)
    if offset + len(data) < total:
        console.print(f"[dim]More: --offset {offset + len(data)}[/]")


@suppressions.command("add")
def add(
    emails: list[str] = typer.Argument(..., help="Addresses to suppress."),
    reason: str = typer.Option("", help="Why (kept with the date); default: added by hand."),
) -> None:
    """Never mail these addresses (subscribers or not)."""
    bad = []
    for raw in emails:
        try:
            clean_address(raw)
        except SuppressionError as exc:
            bad.append(f"{raw!r}: {exc}")
    if bad:
        fail("; ".join(bad) + " Nothing was added.")
    try:
        with cli_session() as session:
            for raw in emails:
                address = escape(clean_address(raw))
                if add_suppression(session=session, email=raw, reason=reason, source="cli"):
                    console.print(f"Suppressed [bold]{address}[/].", highlight=False)
                else:
                    console.print(f"{address} was already suppressed.", highlight=False)
    except SuppressionError as exc:
        fail(str(exc))


@suppressions.command("remove")
def remove(emails: list[str] = typer.Argument(..., help="Addresses to take off the list.")) -> None:
    """Take addresses off the list; bounced subscribers are mailed again."""
    missing = []
    try:
        with cli_session() as session:
            for raw in emails:
                removed = remove_suppression(session=session, email=raw, source="cli")
                if removed is None:
                    missing.append(raw)
                    continue
                note = ""
                if removed.restored:
                    note = " The subscriber is confirmed again and gets the next issue."
                elif removed.subscriber_status not in (None, "confirmed"):
                    note = (f" The subscriber stays {removed.subscriber_status}: only they "
                            "can sign up again.")
                console.print(f"Removed [bold]{escape(removed.email)}[/] from the list.{note}",
                              highlight=False)
    except SuppressionError as exc:
        fail(str(exc))
    if missing:
        fail(f"not on the suppression list: {', '.join(missing)}")


@suppressions.command("import")
def import_(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    reason: str = typer.Option("", help="Reason for rows without one (default: the file)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Suppress the addresses in a CSV: `email[,reason]` with a header, or one per line.

    Bad lines are reported as FILE:LINE and the command exits 1; the others are imported."""
    try:
        with cli_session() as session, progress_bar("Importing", disable=as_json) as update:
            report = import_csv(session=session, path=file, reason=reason, source="cli",
                                progress=update)
    except SuppressionError as exc:
        fail(str(exc))
    if as_json:
        print_json({"added": report.added, "already": report.existing, "rejected": [
            {"line": line, "email": email, "reason": why, "error": f"{file}:{line}: {why}"}
            for line, email, why in report.rejected]})
    else:
        console.print(f"Suppressed [bold green]{report.added}[/] address(es); "
                      f"{report.existing} already on the list.")
        for message in report.errors(file):
            typer.echo(message, err=True)  # one line each, never wrapped: FILE:LINE: why
    if report.rejected:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(suppressions, name="suppressions")
