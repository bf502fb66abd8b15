"""`newsletter editors list|add|deactivate|set-role|reset-password`: the console's team."""

from __future__ import annotations

from collections.abc import Callable

import typer
from rich.table import Table

from newsletter.cli.common import cli_session, console, fail, print_json

editors = typer.Typer(help="Manage editors (who can log in to /editor).", no_args_is_help=True)


def _ask_password() -> str:
    from newsletter.editors import EditorError, validate_password

    for _attempt in range(3):
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        try:
            return validate_password(password)
        except EditorError as exc:
            console.print(f"[yellow]{exc}[/]")
    fail("no acceptable password given")


def _editor_id(session, email: str) -> int:  # type: ignore[no-untyped-def]
    from sqlmodel import select

    from newsletter.editors import Editor
    from newsletter.subscribers import SubscriberError, normalise_email

    try:
        address = normalise_email(email)
    except SubscriberError as exc:
        fail(str(exc))
    found = session.exec(select(Editor.id).where(Editor.email == address)).first()
    if found is None:
        fail(f"{address} is not an editor (see `newsletter editors list`)")
    return int(found)


@editors.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every editor with their role and status."""
    from newsletter import team

    with cli_session() as session:
        rows = [{"id": e.id, "email": e.email, "name": e.name, "role": e.role,
                 "status": team.status_of(e),
                 "last_login_at": e.last_login_at.isoformat() if e.last_login_at else None}
                for e in team.list_editors(session=session)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No editors yet: `newsletter editors add you@example.org`.")
        return
    table = Table("id", "email", "name", "role", "status", "last login")
    for r in rows:
        table.add_row(*(str(r[k] or "—")[:40] for k in ("id", "email", "name", "role", "status")),
                      str(r["last_login_at"] or "—")[:16])
    console.print(table)


@editors.command("add")
def add(
    email: str,
    name: str = typer.Option("", help="Display name."),
    role: str = typer.Option("", help="owner or editor (default: owner for the first "
                                      "editor, editor after that)."),
) -> None:
    """Add an editor; asks for the password twice (hidden)."""
    from newsletter import team
    from newsletter.editors import EditorError, add_editor

    password = _ask_password()
    try:
        with cli_session() as session:
            chosen = role or team.first_role(session=session)
            editor = add_editor(session=session, email=email, password=password, name=name)
            team.set_role(session=session, editor_id=editor.id or 0, role=chosen)
            console.print(f"Editor {editor.email} added (id {editor.id}, {chosen}).",
                          highlight=False)
    except EditorError as exc:
        fail(str(exc))


def _change(email: str, change: Callable[..., object], done: str) -> None:
    """Apply one team change to the editor with `email`; errors as one sentence."""
    from newsletter.editors import EditorError

    try:
        with cli_session() as session:
            change(session=session, editor_id=_editor_id(session, email))
    except EditorError as exc:
        fail(str(exc))
    console.print(done, highlight=False)


@editors.command("deactivate")
def deactivate(email: str) -> None:
    """Stop an editor logging in; their sessions end at once."""
    from newsletter import team

    _change(email, team.deactivate, f"{email} can no longer log in.")


@editors.command("activate")
def activate(email: str) -> None:
    """Let a deactivated editor log in again (with their old password)."""
    from newsletter import team

    _change(email, team.reactivate, f"{email} can log in again.")


@editors.command("set-role")
def set_role(email: str, role: str = typer.Argument(..., help="owner or editor")) -> None:
    """Make an editor an owner (manages the team and settings) or a plain editor."""
    from newsletter import team

    _change(email, lambda **kw: team.set_role(role=role, **kw), f"{email} is now {role}.")


@editors.command("reset-password")
def reset_password(email: str) -> None:
    """Set a new password for an editor (asks twice); their sessions end."""
    from newsletter.editors import EditorError, set_password

    password = _ask_password()
    try:
        with cli_session() as session:
            editor_id = _editor_id(session, email)
            set_password(session=session, editor_id=editor_id, password=password)
    except EditorError as exc:
        fail(str(exc))
    console.print(f"New password set for {email}; their sessions have ended.", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(editors, name="editors")
