"""`newsletter send/approve/status/pause/resume/cancel`, `mailcatcher` and `worker`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn, cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from sqlmodel import Session

from newsletter import db
from newsletter.cli.common import cli_session, console, ensure_database, fail, print_json
from newsletter.models import Issue
from newsletter.settings import settings

OPEN_STATES = ("pending", "sending")
SWEEP_SECONDS = 30.0  # how often a waiting `send` with private services sweeps leases
NO_WORKER_HINT_SECONDS = 5.0  # nothing moved for this long: hint that no worker runs


@contextlib.contextmanager
def _send_services(*, wait: bool) -> Iterator[tuple[bool, bool, Path | None]]:
    """Redis (private if REDIS_URL does not answer) and, with a private one, a worker.

    A private Redis dies with this command, so a send on it must be worked off here:
    we also start the mail catcher (if SMTP_HOST is empty) and a worker, and wait.
    Yields (must we wait for the send to finish, are the services private, the mail
    catcher's directory if mail goes there).
    """
    from newsletter.cli.local.mailcatcher import smtp_service
    from newsletter.cli.local.services import (
        redis_answers,
        redis_fallback_reason,
        redis_service,
        worker_process,
    )

    if redis_answers(settings.redis_url):
        yield wait, False, None
        return
    console.print(f"[dim]{redis_fallback_reason(settings.redis_url)} and a local worker "
                  "for this send.[/]", highlight=False)
    catcher = None if settings.smtp_host else settings.mail_dir
    with redis_service(), smtp_service(), worker_process(concurrency=2):
        yield True, True, catcher


def _counts(issue_id: int) -> dict[str, int]:
    from newsletter.delivery import status_counts

    with db.session_scope() as session:
        return status_counts(session=session, issue_id=issue_id)


def _counts_and_pause(issue_id: int) -> tuple[dict[str, int], str | None]:
    """The counts, and why the issue is paused (its reason, or "" when someone paused
    it); None when it is not paused. One session for both: it runs every poll."""
    from newsletter.delivery import status_counts

    with db.session_scope() as session:
        counts = status_counts(session=session, issue_id=issue_id)
        issue = session.get(Issue, issue_id)
        reason = issue.status_reason if issue is not None and issue.status == "paused" else None
        return counts, reason


def _sweep() -> None:
    from newsletter.delivery import sweep_expired_leases

    with db.session_scope() as session:
        sweep_expired_leases(session=session)


def _queued_batches() -> int | None:
    """Batch tasks waiting in the broker for a worker (None: cannot tell)."""
    import redis

    from newsletter.queue import BULK_QUEUE

    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=1.0)
        try:
            return int(cast(int, client.llen(BULK_QUEUE)))
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return None


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items() if v) or "no deliveries"


def _wait_with_progress(issue_id: int, *, timeout: float | None = None,
                        sweep: bool = False) -> dict[str, int]:
    """Poll the ledger until no row is open. `sweep`: no beat runs, so do its sweep here
    (rows left `sending` by an earlier, interrupted run come back once their lease ends).

    When nothing moves for NO_WORKER_HINT_SECONDS while batches wait in the broker, no
    worker is consuming: say so once (and keep waiting, one may be started).
    """
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    next_sweep = started
    last_done, last_change, hinted = -1, started, False
    with Progress(TextColumn("[bold]Sending"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[detail]}"), console=console) as bar:
        task = bar.add_task("send", total=None, detail="")
        while True:
            now = time.monotonic()
            if sweep and now >= next_sweep:
                _sweep()
                next_sweep = now + SWEEP_SECONDS
            counts, reason = _counts_and_pause(issue_id)
            total = sum(counts.values())
            done = total - sum(counts[s] for s in OPEN_STATES)
            detail = " ".join(f"{k} {v}" for k, v in counts.items() if v and k not in OPEN_STATES)
            bar.update(task, total=total, completed=done, detail=detail)
            if not any(counts[s] for s in OPEN_STATES):
                return counts
            # A paused issue (the relay refused us, or someone ran `pause`) sends nothing
            # until resumed: waiting on would show a bar that never moves.
            if reason is not None:
                bar.stop()
                # The rows in flight are handed back first: the counts then say what
                # waits, and a private worker is not stopped halfway through.
                from newsletter.delivery import wait_for_hand_back

                wait_for_hand_back(issue_id=issue_id)
                fail(f"issue {issue_id} is paused"
                     + (f": {reason.rstrip('.')}" if reason else " (`newsletter pause`)")
                     + f". {_describe(_counts(issue_id))}. Its unsent rows wait; once the "
                     f"cause is fixed, `newsletter resume {issue_id}` sends them.")
            if done != last_done or counts["sending"]:
                last_done, last_change = done, now
            elif (not hinted and now - last_change >= NO_WORKER_HINT_SECONDS
                  and (_queued_batches() or 0) > 0):
                hinted = True
                bar.console.print(
                    f"[yellow]Nothing sent for {now - last_change:.0f}s and batches are "
                    "waiting in Redis: no worker seems to be running. Start one with "
                    "`newsletter worker` (same REDIS_URL and DATABASE_URL); still waiting.[/]",
                    highlight=False)
            if deadline is not None and now > deadline:
                fail(f"issue {issue_id} is still sending after {timeout:g}s: "
                     f"{_describe(counts)}")
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
    timeout: float | None = typer.Option(
        None, "--timeout", min=0, metavar="SECONDS",
        help="With --wait: give up waiting after this long (exit 1, printing the counts)."),
    retry_failed: bool = typer.Option(
        False, "--retry-failed",
        help="Send the deliveries that ended `failed` again (each once, attempts reset)."),
) -> None:
    """Plan an approved issue (one ledger row per confirmed subscriber) and enqueue it.

    An issue already sending (say an earlier `send` was interrupted) is picked up: its
    pending batches are enqueued again, which sends nobody twice. With --retry-failed,
    the rows of a started send that ended `failed` go out again instead.
    """
    from newsletter.delivery import SendError, enqueue_batches, start_send
    from newsletter.editorial import EditorialError

    if retry_failed:
        _retry_failed(issue_id, wait=wait or timeout is not None, timeout=timeout)
        return
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
    with _send_services(wait=wait or timeout is not None) as (must_wait, private, mail_dir):
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
            counts = _wait_with_progress(issue_id, timeout=timeout, sweep=private)
            console.print(" ".join(f"{k}: {v}" for k, v in counts.items()))
    _mail_catcher_note(mail_dir)


def _deliveries(n: int) -> str:
    return f"{n:,} {'delivery' if n == 1 else 'deliveries'}"


def _mail_catcher_note(mail_dir: Path | None) -> None:
    if mail_dir is not None:
        console.print(f"SMTP_HOST is not set: the messages went to the local mail catcher, "
                      f"as .eml files in {mail_dir.resolve()}", highlight=False, soft_wrap=True)


def _retry_failed(issue_id: int, *, wait: bool, timeout: float | None) -> None:
    """`send ISSUE --retry-failed`: failed rows back to pending (each once) and enqueued."""
    from newsletter.delivery import SendError, retry_failed

    with cli_session() as session:  # refuse early, before starting Redis and a worker
        issue = session.get(Issue, issue_id)
        if issue is None:
            fail(f"no issue with id {issue_id}")
        if issue.status not in ("sending", "paused", "sent"):
            fail(f"issue {issue_id} is {issue.status}; only a send that started has failed "
                 "deliveries to retry")
    with _send_services(wait=wait) as (must_wait, private, mail_dir):
        try:
            with db.session_scope() as session:  # the rows are enqueued on commit
                reset = retry_failed(session=session, issue_id=issue_id)
                paused = session.get(Issue, issue_id)
                still_paused = paused is not None and paused.status == "paused"
        except (LookupError, SendError) as exc:
            fail(str(exc))
        if not reset:
            console.print(f"Issue {issue_id} has no failed deliveries to retry.")
            return
        console.print(f"Issue {issue_id}: {_deliveries(reset)} that had failed go out again.")
        if still_paused:
            console.print(f"The issue is paused: `newsletter resume {issue_id}` sends them.")
        elif must_wait:
            counts = _wait_with_progress(issue_id, timeout=timeout, sweep=private)
            console.print(" ".join(f"{k}: {v}" for k, v in counts.items()))
    _mail_catcher_note(mail_dir)


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
    """Delivery rows of an issue by state; bounces, complaints and unsubscribes."""
    from newsletter.delivery import status_counts, waiting_rows
    from newsletter.inbound.stats import issue_feedback, summary

    with cli_session() as session:
        issue = session.get(Issue, issue_id)
        if issue is None:
            fail(f"no issue with id {issue_id}")
        counts = status_counts(session=session, issue_id=issue_id)
        waiting = waiting_rows(session=session, issue_id=issue_id)
        feedback = issue_feedback(session=session, issue_id=issue_id)  # issue 8
    if as_json:
        print_json({"issue_id": issue_id, "status": issue.status,
                    "status_reason": issue.status_reason, "counts": counts,
                    "due_later": {
                        "rows": waiting.rows,
                        "first": waiting.first.isoformat() if waiting.first else None,
                        "last": waiting.last.isoformat() if waiting.last else None},
                    "feedback": feedback.as_dict()})
        return
    console.print(f"Issue {issue_id} ({issue.status}): "
                  + ", ".join(f"{k} {v}" for k, v in counts.items()), highlight=False)
    if waiting.rows and waiting.first is not None and waiting.last is not None:
        # Pending, but not before these times: a relay's 4xx or a reader's local time.
        console.print(f"Due later: {waiting.rows:,} of the pending, the first at "
                      f"{waiting.first:%Y-%m-%d %H:%M:%S} UTC, the last at "
                      f"{waiting.last:%Y-%m-%d %H:%M:%S} UTC.", highlight=False)
    if issue.status_reason:
        console.print(f"Why {issue.status}: {issue.status_reason}", highlight=False,
                      soft_wrap=True, markup=False)
    console.print(f"Of {feedback.delivered} delivered: " + ", ".join(
        f"{label.lower()} {n} ({rate})" for label, n, rate in summary(feedback)))
    if counts.get("failed"):
        console.print(f"`newsletter send {issue_id} --retry-failed` sends the failed "
                      f"{_deliveries(counts['failed'])} again.", highlight=False)


def _no_change(session: Session, issue_id: int, action: str, wanted: str) -> NoReturn:
    issue = session.get(Issue, issue_id)
    if issue is None:
        fail(f"No issue {issue_id}.")
    fail(f"Issue {issue_id} is not {wanted} (it is {issue.status}); nothing to {action}.")


def _stopped(issue_id: int, verb: str) -> str:
    """Wait for running batches to hand their rows back; what to tell the user."""
    from newsletter.delivery import wait_for_hand_back

    held = wait_for_hand_back(issue_id=issue_id)
    if not held:
        return "No message is being sent now."
    return (f"{held:,} messages were still in flight after {settings.send_stop_wait_seconds:g}s: "
            f"a relay accepting them, or a stopped worker's rows, which are {verb} when "
            "their lease ends.")


def pause(issue_id: int = typer.Argument(..., metavar="ISSUE")) -> None:
    """Stop sending an issue: returns once running batches have handed their rows back."""
    from newsletter.delivery import pause_send

    with cli_session() as session:
        if not pause_send(session=session, issue_id=issue_id):
            _no_change(session, issue_id, "pause", "sending")
    console.print(f"Issue {issue_id} paused. {_stopped(issue_id, 'paused')} "
                  f"`newsletter resume {issue_id}` continues it.", highlight=False)


def resume(issue_id: int = typer.Argument(..., metavar="ISSUE")) -> None:
    """Resume a paused send (its pending batches are enqueued again)."""
    from newsletter.cli.local.services import redis_answers, redis_service
    from newsletter.delivery import resume_send, status_counts

    external = redis_answers(settings.redis_url)
    ensure_database()
    with redis_service(), db.session_scope() as session:  # batches are enqueued on commit
        if not resume_send(session=session, issue_id=issue_id):
            _no_change(session, issue_id, "resume", "paused")
        left = status_counts(session=session, issue_id=issue_id)["pending"]
    console.print(f"Issue {issue_id} resumed: {left:,} deliveries left to send.")
    if not external:
        # Its batches went into a Redis that just stopped: nobody would work them off.
        console.print(f"No worker shares a Redis with this command (REDIS_URL is not set or "
                      f"not answering): run `newsletter send {issue_id}` to send the rest.",
                      highlight=False)


def cancel(issue_id: int = typer.Argument(..., metavar="ISSUE")) -> None:
    """Cancel a send: pending rows are never sent; returns once batches sending right now
    have stopped (a message already handed to the relay still arrives)."""
    from newsletter.delivery import SendError, cancel_send

    try:
        with cli_session() as session:
            cancel_send(session=session, issue_id=issue_id)
    except LookupError:
        fail(f"No issue {issue_id}.")
    except SendError as exc:
        fail(f"{str(exc)[0].upper()}{str(exc)[1:]}.")
    stopped = _stopped(issue_id, "cancelled")
    # Counted after the wait: rows running batches handed back are cancelled too.
    cancelled = _counts(issue_id)["cancelled"]
    console.print(f"Issue {issue_id} cancelled: {cancelled:,} deliveries will not be sent. "
                  f"{stopped}", highlight=False)


def mailcatcher(
    directory: Path = typer.Option(None, "--dir", help="Where to store .eml files "
                                   "(default DATA_DIR/mail)."),
    port: int = typer.Option(1025, help="Port on 127.0.0.1."),
) -> None:
    """Run the local mail catcher in the foreground (every message becomes an .eml file)."""
    from newsletter.cli.local.mailcatcher import mail_catcher

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
    from newsletter.cli.local.mailcatcher import smtp_service
    from newsletter.cli.local.services import (
        redis_answers,
        redis_fallback_reason,
        redis_service,
        worker_process,
    )

    ensure_database()
    if not redis_answers(settings.redis_url):
        console.print(f"[dim]{redis_fallback_reason(settings.redis_url)}: only this worker "
                      "uses it (`newsletter web` and `send` start their own).[/]",
                      highlight=False)
    with redis_service() as url, smtp_service() as (host, port):
        console.print(f"Worker on {url}, SMTP {host}:{port} (Ctrl-C to stop)", highlight=False)
        with (worker_process(concurrency=concurrency, beat=beat, inherit_output=True) as proc,
              contextlib.suppress(KeyboardInterrupt)):
            proc.wait()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    for command in (send, approve, status, pause, resume, cancel, mailcatcher, worker):
        app.command()(command)
