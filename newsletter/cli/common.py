"""What every command shares: the console, a migrated database, friendly errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
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
    if url not in _migrated:
        db.migrate(url)
        _migrated.add(url)
    # Cheap and idempotent: picks up edits to the taxonomy file on every command.
    with db.session_scope() as session:
        sync_topics(session=session)


@contextmanager
def cli_session() -> Iterator[Session]:
    """A committed-on-success session on a migrated database."""
    ensure_database()
    with db.session_scope() as session:
        yield session


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    # Plain print: rich would wrap long lines and break machine-readable output.
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))
