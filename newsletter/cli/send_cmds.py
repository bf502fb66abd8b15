"""`newsletter send/approve/status/pause/resume/cancel`, `mailcatcher` and `worker`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from newsletter import db
from newsletter.cli.common import cli_session, console, ensure_database, fail, print_json
from newsletter.models import Issue
from newsletter.settings import settings

OPEN_STATES = ("pending", "sending")
SWEEP_SECONDS = 30.0  # how often a waiting `send` with private services sweeps leases


@contextlib.contextmanager
def _send_services(*, wait: bool) -> Iterator[tuple[bool, bool]]:
    """Redis (private if REDIS_URL does not answer) and, with a private one, a worker.

    A private Redis dies with this command, so a send on it must be worked off here:
    we also start the mail catcher (if SMTP_HOST is empty) and a worker, and wait.
    Yields (must we wait for the send to finish, are the services private).
    """
    from newsletter.mailcatcher import smtp_service
    from newsletter.services import redis_answers, redis_service, worker_process

    external = redis_answers(settings.redis_url)
    with redis_service():
        if external:
            yield wait, False
            return
        console.print("[dim]No Redis at REDIS_URL: using a private one and a local worker "
                      "for this send.[/]")
        with smtp_service(), worker_process(concurrency=2):
            yield True, True


def _counts(issue_id: int) -> dict[str, int]:
    from newsletter.delivery import status_counts

    with db.session_scope() as session:
        return status_counts(session=session, issue_id=issue_id)


def _sweep() -> None:
    from newsletter.delivery import sweep_expired_leases

    with db.session_scope() as session:
        sweep_expired_leases(session=session)


def _wait_with_progress(issue_id: int, *, timeout: float | None = None,
                        sweep: bool = False) -> dict[str, int]:
    """Poll the ledger until no row is open. `sweep`: no beat runs, so do its sweep here
    (rows left `sending` by an earlier, interrupted run come back once their lease ends).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    next_sweep = time.monotonic()
    with Progress(TextColumn("[bold]Sending"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[detail]}"), console=console) as bar:
        task = bar.add_task("send", total=None, detail="")
        while True:
            if sweep and time.monotonic() >= next_sweep:
                _sweep()
                next_sweep = time.monotonic() + SWEEP_SECONDS
            counts = _counts(issue_id)
            total = sum(counts.values())
            done = total - sum(counts[s] for s in OPEN_STATES)
            detail = " ".join(f"{k} {v}" for k, v in counts.items() if v and k not in OPEN_STATES)
            bar.update(task, total=total, completed=done, detail=detail)
            if not any(counts[s] for s in OPEN_STATES):
                return counts
            if deadline is not None and time.monotonic() > deadline:
                fail(f"still sending after {timeout:.0f}s: {counts}")
            time.sleep(0.3)


# Why an issue cannot be sent (again), by its status; `sending` is picked up instead.
_NOT_SENDABLE = {
    "sent": "issue {id} was already sent; nobody is sent it twice "
            "(`newsletter status {id}` shows its deliveries)",
    "cancelled": "issue {id} was cancelled; it cannot be sent",
    "paused": "issue {id} is paused; `newsletter resume {id}` continues its send",
}


def send(
    issue_id: int = typer.Argument(..., metavar="ISSUE", help="Issue id."),
    wait: bool = typer.Option(False, "--wait", help="Show progress until every row is done."),
    approve: bool = typer.Option(False, "--approve", help="Approve a draft in the same step."),
) -> None:
    """Plan an approved issue (one ledger row per confirmed subscriber) and enqueue it.

    An issue already sending (say an earlier `send` was interrupted) is picked up: its
    pending batches are enqueued again, which sends nobody twice.
    """
    from newsletter.delivery import SendError, enqueue_batches, start_send
    from newsletter.editorial import EditorialError

    with cli_session() as session:  # refuse early, before starting Redis and a worker
        issue = session.get(Issue, issue_id)
        if issue is None:
            fail(f"no issue with id {issue_id}")
        if issue.status == "draft" and not approve:
            fail(f"issue {issue_id} is a draft; approve it first (`newsletter approve "
                 f"{issue_id}`) or pass --approve")
        if issue.status in _NOT_SENDABLE:
            fail(_NOT_SENDABLE[issue.status].format(id=issue_id))
        resuming = issue.status == "sending"
    with _send_services(wait=wait) as (must_wait, private):
        if resuming:
            batches = enqueue_batches(issue_id)
            console.print(f"Issue {issue_id} is already sending: enqueued its {batches} "
                          "batches with pending rows again.")
        else:
            try:
                planned = start_send(issue_id=issue_id, approve=approve)
            except (LookupError, SendError, EditorialError) as exc:
                fail(str(exc))
            console.print(f"Issue {issue_id}: planned {planned} deliveries.")
        if must_wait:
            counts = _wait_with_progress(issue_id, sweep=private)
            console.print(" ".join(f"{k}: {v}" for k, v in counts.items()))


def approve(issue_id: int = typer.Argument(..., metavar="ISSUE")) -> None:
    """Approve a draft issue after its checks pass."""
    from newsletter.editorial import EditorialError, approve_issue

    try:
        with cli_session() as session:
            approve_issue(session=session, issue_id=issue_id)
    except (LookupError, EditorialError) as exc:
        fail(str(exc))
    console.print(f"Issue {issue_id} approved.")


def status(
    issue_id: int = typer.Argument(..., metavar="ISSUE"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Delivery rows of an issue by state."""
    from newsletter.delivery import status_counts

    with cli_session() as session:
        issue = session.get(Issue, issue_id)
        if issue is None:
            fail(f"no issue with id {issue_id}")
        counts = status_counts(session=session, issue_id=issue_id)
    if as_json:
        print_json({"issue_id": issue_id, "status": issue.status, "counts": counts})
        return
    console.print(f"Issue {issue_id} ({issue.status}): "
                  + ", ".join(f"{k} {v}" for k, v in counts.items()))


def _console_action(name: str, issue_id: int) -> None:
    from newsletter import delivery
    from newsletter.services import redis_service

    ensure_database()
    with redis_service():  # resume re-enqueues batches on commit
        try:
            with db.session_scope() as session:
                result = getattr(delivery, f"{name}_send")(session=session, issue_id=issue_id)
        except (LookupError, delivery.SendError) as exc:
            fail(str(exc))
    console.print(f"Issue {issue_id}: {name} -> {result}")


def pause(issue_id: int = typer.Argument(..., metavar="ISSUE")) -> None:
    """Stop sending an issue (batches already running finish)."""
    _console_action("pause", issue_id)


def resume(issue_id: int = typer.Argument(..., metavar="ISSUE")) -> None:
    """Resume a paused send."""
    _console_action("resume", issue_id)


def cancel(issue_id: int = typer.Argument(..., metavar="ISSUE")) -> None:
    """Cancel a send: rows not yet sent are never sent."""
    _console_action("cancel", issue_id)


def mailcatcher(
    directory: Path = typer.Option(None, "--dir", help="Where to store .eml files "
                                   "(default DATA_DIR/mail)."),
    port: int = typer.Option(1025, help="Port on 127.0.0.1."),
) -> None:
    """Run the local mail catcher in the foreground (every message becomes an .eml file)."""
    from newsletter.mailcatcher import mail_catcher

    target = directory or settings.mail_dir
    with mail_catcher(target, port=port) as (host, bound):
        console.print(f"Mail catcher on {host}:{bound}, writing to {target.resolve()} "
                      "(Ctrl-C to stop)", highlight=False)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


def worker(
    concurrency: int = typer.Option(2, "--concurrency", "-c"),
    beat: bool = typer.Option(False, "--beat", help="Also run the beat schedule (one per site)."),
) -> None:
    """Run a Celery worker in the foreground (private Redis and mail catcher if unset)."""
    from newsletter.mailcatcher import smtp_service
    from newsletter.services import redis_service, worker_process

    ensure_database()
    with redis_service() as url, smtp_service() as (host, port):
        console.print(f"Worker on {url}, SMTP {host}:{port} (Ctrl-C to stop)", highlight=False)
        with (worker_process(concurrency=concurrency, beat=beat, inherit_output=True) as proc,
              contextlib.suppress(KeyboardInterrupt)):
            proc.wait()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    for command in (send, approve, status, pause, resume, cancel, mailcatcher, worker):
        app.command()(command)
