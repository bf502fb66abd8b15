"""`newsletter init` and `newsletter demo`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from newsletter.cli.common import console, ensure_database, fail, safe_url
from newsletter.settings import settings


def init() -> None:
    """Create or upgrade the database schema (Alembic) and load the topic taxonomy."""
    ensure_database()
    console.print(f"Database ready: [bold]{safe_url(settings.effective_database_url)}[/]",
                  highlight=False)


def demo(
    data_dir: Path = typer.Option(Path("var/demo"), help="Where the demo keeps its database, "
                                  "mail and HTML (wiped at start)."),
) -> None:
    """Run the whole pipeline on the seed roundups and show who got what."""
    from newsletter.demo import run_demo

    console.print(Panel(
        "Ingesting the seed roundups, adding 12 demo subscribers and sending the newest "
        "issue through a real Celery worker on Redis to the local mail catcher.",
        title="Roundup demo"))
    with Progress(TextColumn("[bold]Sending"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[detail]}"), console=console) as bar:
        task = bar.add_task("send", total=None, detail="starting Redis and a worker…")

        def show(counts: dict[str, int]) -> None:
            total = sum(counts.values())
            done = total - counts.get("pending", 0) - counts.get("sending", 0)
            detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)
            bar.update(task, total=total, completed=done, detail=detail)

        from newsletter.inbound.receiver import local_inbound

        try:
            with local_inbound():  # issue 8: bounces come back to it, as in production
                result = run_demo(data_dir=data_dir.resolve(), progress=show)
        except Exception as exc:  # a demo that fails should say why, not dump a trace
            fail(f"the demo failed: {exc}")

    table = Table(title=f"Issue {result.issue_id}: {result.issue_title}", show_lines=True)
    table.add_column("subscriber")
    table.add_column("follows")
    table.add_column("delivery")
    table.add_column("items in their order, with the reason")
    for address, follows, status, comp, _html in result.rows:
        if status.startswith("not planned"):
            lines = f"[dim]{status.removeprefix('not planned ').strip('()')}: gets nothing " \
                    "until they confirm[/]"
            status = "not planned"
        elif comp is None:
            lines = "[dim]nothing matches their topics this week (only my topics)[/]"
        else:
            lines = "\n".join(f"{n}. {c.item.headline} [dim]— {c.reason}[/]"
                              for n, c in enumerate(comp.items, 1))
        table.add_row(address, follows, status, lines)
    console.print(table)
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(result.counts.items()) if v)
    console.print(f"Delivery: {counts}")
    console.print(f"Received messages (.eml): [bold]{result.mail_dir}[/]", highlight=False)
    console.print(f"Their HTML, one file per subscriber: [bold]{result.html_dir}[/]",
                  highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(demo)
