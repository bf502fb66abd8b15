"""The `newsletter` command. Each group of commands lives in its own module."""

from __future__ import annotations

import typer

from newsletter.cli import (
    core_cmds,
    editor_cmds,
    email_cmds,
    ingest_cmds,
    preview_cmds,
    send_cmds,
    subscriber_cmds,
    web_cmds,
)

app = typer.Typer(
    name="newsletter",
    help="Roundup: weekly roundups in, personalised digests out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

for module in (
    core_cmds, ingest_cmds, subscriber_cmds, preview_cmds, send_cmds, web_cmds, editor_cmds,
    email_cmds,
):
    module.register(app)


def main() -> None:
    app()
