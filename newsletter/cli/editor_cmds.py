"""`newsletter editors add EMAIL`: create an editor for the /editor console."""

from __future__ import annotations

import typer

from newsletter.cli.common import cli_session, console, fail

editors = typer.Typer(help="Manage editors (who can log in to /editor).", no_args_is_help=True)


@editors.command("add")
def add(
    email: str,
    name: str = typer.Option("", help="Display name."),
) -> None:
    """Add an editor; asks for the password twice (hidden)."""
    from newsletter.editors import EditorError, add_editor, validate_password

    for _attempt in range(3):
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        try:
            validate_password(password)
            break
        except EditorError as exc:
            console.print(f"[yellow]{exc}[/]")
    else:
        fail("no acceptable password given")
    try:
        with cli_session() as session:
            editor = add_editor(session=session, email=email, password=password, name=name)
            session.flush()
            console.print(f"Editor {editor.email} added (id {editor.id}).", highlight=False)
    except EditorError as exc:
        fail(str(exc))


def register(app: typer.Typer) -> None:
    app.add_typer(editors, name="editors")
