"""`newsletter stats` and `newsletter web`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import typer
from rich.table import Table

from newsletter.cli.common import cli_session, console, fail, print_json


def _hours(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 60:.0f} min"
    if value < 48:
        return f"{value:.1f} h"
    return f"{value / 24:.1f} days"


def stats(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Sign-ups and unsubscribes per week, confirmation rate, time to confirm, topics."""
    from newsletter.stats import bar, signup_stats

    with cli_session() as session:
        result = signup_stats(session=session)
    if as_json:
        print_json(result.to_dict())
        return

    weeks = Table(title="Sign-ups and unsubscribes per week", title_justify="left")
    weeks.add_column("Week")
    weeks.add_column("Starts")
    weeks.add_column("Sign-ups", justify="right")
    weeks.add_column("", style="green", no_wrap=True)
    weeks.add_column("Unsubscribes", justify="right")
    weeks.add_column("", style="red", no_wrap=True)
    top = max([max(w.signups, w.unsubscribes) for w in result.weeks] or [0])
    for w in result.weeks:
        weeks.add_row(w.week, w.week_start, str(w.signups), bar(w.signups, top, 16),
                      str(w.unsubscribes), bar(w.unsubscribes, top, 16))
    if not result.weeks:
        weeks.add_row("(no sign-ups yet)", "", "", "", "", "")
    console.print(weeks)

    rate = ("–" if result.confirmation_rate is None
            else f"{result.confirmation_rate:.0%}")
    summary = Table(show_header=False, title="Confirmation", title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("Sign-ups (all time)", str(result.signups))
    summary.add_row("Through double opt-in", str(result.opt_in_signups))
    summary.add_row("Confirmation rate", rate)
    summary.add_row("Median time to confirm", _hours(result.median_time_to_confirm_hours))
    summary.add_row("Active subscribers", str(result.active_subscribers))
    console.print(summary)

    topics = Table(title="Active subscribers per topic", title_justify="left")
    topics.add_column("Topic")
    topics.add_column("Subscribers", justify="right")
    topics.add_column("", style="cyan", no_wrap=True)
    most = max([t.subscribers for t in result.topics] or [0])
    for t in sorted(result.topics, key=lambda t: (-t.subscribers, t.name)):
        topics.add_row(t.name, str(t.subscribers), bar(t.subscribers, most))
    console.print(topics)


@contextlib.contextmanager
def _local_services() -> Iterator[None]:
    """REDIS_URL if it answers; else a private Redis, a worker (with beat) and, when
    SMTP_HOST is empty, the mail catcher, for as long as the server runs.

    Without them the confirmation emails would be queued where no worker listens.
    The uvicorn processes inherit REDIS_URL and SMTP_* from the environment.
    """
    from newsletter.cli.local.mailcatcher import smtp_service
    from newsletter.cli.local.services import (
        redis_answers,
        redis_fallback_reason,
        redis_service,
        worker_process,
    )
    from newsletter.settings import settings

    if redis_answers(settings.redis_url):
        yield
        return
    console.print(f"{redis_fallback_reason(settings.redis_url)} and a Celery worker for as "
                  "long as the server runs.", highlight=False)
    catcher = not settings.smtp_host
    from newsletter.inbound.receiver import local_inbound

    with (redis_service() as url, smtp_service() as (smtp_host, smtp_port),
          worker_process(concurrency=2, beat=True), local_inbound() as inbound):
        where = (f"the local mail catcher: .eml files in {settings.mail_dir.resolve()}"
                 if catcher else f"the SMTP relay {smtp_host}:{smtp_port}")
        console.print(f"Worker ready on {url}; mail goes to {where}.", highlight=False,
                      soft_wrap=True)
        if inbound is not None:  # issue 8: bounces and mailto unsubscribes come back here
            console.print(f"Inbound SMTP (bounces, unsubscribes) on {inbound.host}:"
                          f"{inbound.port}.", highlight=False)
        yield


def _match_base_url(host: str, port: int) -> None:
    """BASE_URL unset: point it at this server, so emails and pages link here rather
    than at the default localhost:8000. Exported for the workers and uvicorn we start."""
    import os

    from newsletter.settings import settings

    if "base_url" in settings.model_fields_set:  # set in the environment or .env
        return
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::", "::1", "") else host
    if ":" in shown:
        shown = f"[{shown}]"  # an IPv6 address in a URL
    settings.base_url = f"http://{shown}:{port}"
    os.environ["BASE_URL"] = settings.base_url
def proxy_options() -> dict[str, Any]:
    """X-Forwarded-For is believed only from FORWARDED_ALLOW_IPS (empty by default).

    uvicorn's own default trusts 127.0.0.1, so anything on the machine (or a
    forwarded port) could pick the client address the rate limits count against.
    """
    from newsletter.settings import settings

    trusted = settings.forwarded_allow_ips.strip()
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted or ""}


def web(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for all)."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, help="uvicorn worker processes."),
) -> None:
    """Serve the subscriber pages, the JSON API and the editors' console with uvicorn.

    With REDIS_URL unset or not answering, a private Redis, a worker and (SMTP_HOST
    empty) the local mail catcher run alongside, so this one command is a whole site.
    """
    import uvicorn

    from newsletter.cli.common import ensure_database
    from newsletter.web.security import InsecureSecretError, check_secret

    try:
        check_secret()
    except InsecureSecretError as exc:
        fail(str(exc))
    _match_base_url(host, port)
    ensure_database()
    with _local_services():
        uvicorn.run("newsletter.web.app:app", host=host, port=port, workers=workers,
                    server_header=False, **proxy_options())


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("stats")(stats)
    app.command("web")(web)
