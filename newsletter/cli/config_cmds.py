"""`newsletter check`, `newsletter dns`, `newsletter release`, and the key every command
needs before it runs (see newsletter/preflight/)."""

from __future__ import annotations

import typer
from rich.table import Table

from newsletter.cli.common import console, ensure_database, print_json, safe_url
from newsletter.settings import settings

# Commands that sign nothing: they run (and report) without a key.
NO_KEY_COMMANDS = frozenset({"check", "dns"})
# Procfile processes: several machines must share SECRET_KEY, so none makes its own.
PROCFILE_COMMANDS = frozenset({"release", "inbound"})


def prepare(ctx: typer.Context) -> None:
    """Runs before every command: the secret key, and in production the report for
    `web` and `worker`. `--help` needs neither."""
    from newsletter.preflight.startup import local_start, procfile_start

    command = ctx.invoked_subcommand or ""
    if ctx.meta.get("roundup.help") or command in NO_KEY_COMMANDS:
        return
    if command in PROCFILE_COMMANDS:
        procfile_start(command)
    else:
        local_start(command)


def check(
    relay: bool = typer.Option(True, "--relay/--no-relay",
                               help="Connect to the SMTP relay and say EHLO (5 s timeout)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Report every setting that is not fit for production; exit 1 if there is any.

    Example domains, a BASE_URL that is not https or points at this machine, the
    example postal address, a missing or guessable SECRET_KEY, DKIM half set up or
    with an unreadable key, and a relay that does not answer.
    """
    from newsletter.preflight.checks import find_problems

    problems = find_problems(relay=relay)
    if as_json:
        print_json({"ok": not problems, "problems": [p.to_dict() for p in problems]})
    elif problems:
        table = Table(title=f"{len(problems)} setting(s) not fit for production",
                      title_justify="left", show_lines=True)
        table.add_column("setting", style="bold", no_wrap=True)
        table.add_column("problem")
        for problem in problems:
            table.add_row(problem.setting, problem.message)
        console.print(table)
    else:
        console.print("[green]No problems:[/] the configuration is fit for production.")
    if problems:
        raise typer.Exit(1)


def dns(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Print the SPF, DKIM and DMARC records to publish (DKIM derived from the key)."""
    from newsletter.preflight.dns import dns_records

    try:
        records = dns_records()
    except (OSError, ValueError, TypeError) as exc:
        from newsletter.cli.common import fail

        fail(f"cannot read the DKIM key at {settings.dkim_private_key_path}: {exc}")
    if as_json:
        print_json([r.to_dict() for r in records])
        return
    for record in records:
        console.print(f"[bold]{record.kind}[/]: TXT record at [bold]{record.name}[/]",
                      highlight=False)
        # Plain print: the value must copy and paste exactly, without rich's wrapping.
        print(record.value)
        print(record.zone_line())
        if record.note:
            console.print(f"[dim]{record.note}[/]", highlight=False)
        print()
    if not any(r.kind == "DKIM" for r in records):
        console.print("[yellow]No DKIM record:[/] set DKIM_PRIVATE_KEY_PATH and DKIM_DOMAIN "
                      "(make a key with `openssl genrsa -out dkim.pem 2048`).", highlight=False)


def release() -> None:
    """The Procfile's release step: migrate, then the production report.

    Needs SECRET_KEY (exit 78 without it). In production, problems fail the release
    (exit 78); elsewhere they are printed as warnings.
    """
    from newsletter.preflight.checks import find_problems, report_text
    from newsletter.preflight.startup import refuse_with_report

    ensure_database()
    console.print(f"Database ready: [bold]{safe_url(settings.effective_database_url)}[/]",
                  highlight=False)
    problems = find_problems()
    if problems and settings.environment == "production":
        refuse_with_report("release", report_text(problems))
    if problems:
        console.print("[yellow]Not fit for production yet:[/]\n" + report_text(problems),
                      highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(check)
    app.command()(dns)
    app.command()(release)
