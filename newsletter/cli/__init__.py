"""The `newsletter` command. Each group of commands lives in its own module."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from newsletter.cli import (
    config_cmds,
    core_cmds,
    editor_cmds,
    email_cmds,
    inbound_cmds,
    ingest_cmds,
    preview_cmds,
    schedule_cmds,
    send_cmds,
    subscriber_cmds,
    suppression_cmds,
    web_cmds,
)


class _Group(TyperGroup):
    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        # The group's callback runs before the subcommand parses its options; note
        # `--help` here so asking for help needs no key and starts nothing.
        name, command, rest = super().resolve_command(ctx, args)
        ctx.meta["roundup.help"] = "--help" in rest
        return name, command, rest


app = typer.Typer(
    name="newsletter",
    help="Roundup: weekly roundups in, personalised digests out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_Group,
)
app.callback()(config_cmds.prepare)

for module in (
    core_cmds, ingest_cmds, subscriber_cmds, preview_cmds, send_cmds, web_cmds, editor_cmds,
    config_cmds,
    inbound_cmds, suppression_cmds, schedule_cmds, email_cmds,
):
    module.register(app)


def main() -> None:
    app()
