"""What every command shares: the console, a migrated database, friendly errors."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from newsletter import db

console = Console()
err_console = Console(stderr=True)
_migrated: set[str] = set()


def ensure_database() -> None:
    """Apply pending migrations once per process, so a fresh machine needs no setup step."""
    from newsletter.settings import settings
    from newsletter.topics import sync_topics

    url = settings.effective_database_url
    try:
        if url not in _migrated:
            db.migrate(url)
            _migrated.add(url)
        # Cheap and idempotent: picks up edits to the taxonomy file on every command.
        with db.session_scope() as session:
            sync_topics(session=session)
    except OperationalError as exc:
        fail(f"cannot use the database {safe_url(url)}: {exc.orig or exc}")


def safe_url(url: str) -> str:
    """A database URL fit for logs: the password masked."""
    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def cli_session() -> Iterator[Session]:
    """A committed-on-success session on a migrated database."""
    ensure_database()
    with db.session_scope() as session:
        yield session


def fail(message: str, code: int = 1) -> NoReturn:
    # Escaped: messages carry file names and relay replies ("[blocked]", "[/x]"), which
    # rich would otherwise read as markup, dropping words or raising MarkupError.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    # Plain print: rich would wrap long lines and break machine-readable output.
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


@contextmanager
def progress_bar(label: str, *, disable: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A transient bar on stderr for long work; yields `update(done, total)`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), console=err_console,
                  transient=True, disable=disable) as progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)
