"""Approve-then-send: schedule for the weekly slot or send now, watch progress live,
pause, resume or cancel. Everything acts on the real ledger and Celery tasks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import func
from sqlmodel import Session, col, select

from newsletter import delivery
from newsletter.editorial import EditorialError, schedule_issue
from newsletter.inbound.stats import issue_feedback
from newsletter.models import Delivery, DeliveryStatus, Issue, IssueStatus, utcnow
from newsletter.schedule import next_slot
from newsletter.settings import settings
from newsletter.web.editor.issues import commit_change, issue_view
from newsletter.web.editor.routing import db_session, router

log = logging.getLogger(__name__)

RATE_WINDOW = timedelta(minutes=1)


def duration_text(seconds: int | None) -> str:
    """ "2 h 5 min", "3 min 20 s", "45 s"; an em dash when unknown."""
    if seconds is None:
        return "—"
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def rate_text(per_second: float) -> str:
    """Per second when fast ("12.5/s"), per minute when slow ("25/min")."""
    if not per_second:
        return "—"
    if per_second >= 1:
        return f"{per_second:.1f}/s"
    return f"{per_second * 60:.1f}/min"


def waiting_text(waiting: delivery.Waiting, now: datetime) -> str:
    """ "120, next in 25 s": pending rows not due yet, and when the first of them is."""
    if not waiting.rows or waiting.first is None:
        return "—"
    return (f"{waiting.rows:,}, next in "
            f"{duration_text(max(0, round((waiting.first - now).total_seconds())))}")


def send_rate(session: Session, issue: Issue, *, pending: int) -> float:
    """Messages per second over the last minute of sending, or less when the send is
    younger than that: a 10 s send of 3,000 is 300/s, not "3,000 in the last minute"."""
    sent_at = col(Delivery.sent_at)
    first: datetime | None
    last: datetime | None
    first, last = session.exec(
        select(func.min(sent_at), func.max(sent_at)).where(
            Delivery.issue_id == issue.id, Delivery.status == DeliveryStatus.sent)
    ).one()
    if first is None or last is None:
        return 0.0
    # A finished send's rate is frozen at its last message, not diluted by the wait since.
    end = utcnow() if pending else last
    began: datetime = min(issue.send_started_at or first, first)
    start = max(began, end - RATE_WINDOW)
    sent = session.exec(
        select(func.count()).select_from(Delivery).where(
            Delivery.issue_id == issue.id, Delivery.status == DeliveryStatus.sent,
            sent_at >= start)
    ).one()
    elapsed = max((end - start).total_seconds(), 1.0)
    return sent / elapsed


def progress(session: Session, issue: Issue) -> dict[str, Any]:
    """Counts, rate and time left for one issue's send."""
    counts = delivery.status_counts(session=session, issue_id=issue.id or 0)
    pending = counts.get("pending", 0) + counts.get("sending", 0)
    sent = counts.get("sent", 0)
    per_second = send_rate(session, issue, pending=pending)
    total = sum(counts.values())
    now = utcnow()
    waiting = delivery.waiting_rows(session=session, issue_id=issue.id or 0, now=now)
    seconds_left = round(pending / per_second) if per_second and pending else None
    if waiting.last is not None:
        # Rows a relay asked us to retry later (or due later in their reader's zone) are
        # not done sooner than they are due, however fast the rest went.
        seconds_left = max(seconds_left or 0, round((waiting.last - now).total_seconds()))
    if issue.status == IssueStatus.sending and total > 0 and pending == 0:
        # The last rows are marked a moment before their batch marks the issue sent (the
        # sweep would, later): "done" and "sent" arrive together, and the page stops.
        # Whoever wins that UPDATE, the issue is read again.
        delivery.finish_if_done(session=session, issue_id=issue.id or 0)
        session.commit()
        session.refresh(issue)
    done = issue.status in (IssueStatus.sent, IssueStatus.cancelled) or (
        issue.status == IssueStatus.sending and total > 0 and pending == 0)
    return {
        "issue_id": issue.id,
        "status": issue.status,
        "sent": sent,
        "failed": counts.get("failed", 0),
        "skipped": counts.get("skipped", 0) + counts.get("suppressed", 0),
        "pending": pending,
        "cancelled": counts.get("cancelled", 0),
        "total": total,
        "percent": round(100 * (total - pending) / total) if total else 0,
        "rate_per_minute": round(per_second * 60, 1),
        "rate": rate_text(per_second),
        "seconds_left": seconds_left,
        "time_left": duration_text(seconds_left),
        "waiting": waiting.rows,
        "waiting_text": waiting_text(waiting, now),
        "done": done,
        "status_reason": issue.status_reason,
    }


def send_page(request: Request, issue_id: int, *, error: str = "", notice: str = "",
              status_code: int = 200) -> Response:
    return issue_view(request, issue_id, "send.html",
                      lambda session, issue: {"progress": progress(session, issue),
                                              "feedback": issue_feedback(  # issue 8
                                                  session=session, issue_id=issue.id or 0)},
                      status_code=status_code, next_slot=next_slot(), error=error,
                      notice=notice)


@router.get("/issues/{issue_id:int}/send")
def send_view(request: Request, issue_id: int) -> Response:
    return send_page(request, issue_id)


@router.get("/issues/{issue_id:int}/progress.json")
def progress_json(request: Request, issue_id: int) -> Response:
    with db_session() as session:
        issue = session.get(Issue, issue_id)
        if issue is None:
            return JSONResponse({"detail": "no such issue"}, status_code=404)
        data = progress(session, issue)
    return JSONResponse(data, headers={"cache-control": "no-store"})


def _require_approved(issue: Issue, verb: str) -> None:
    if issue.status not in (IssueStatus.approved, IssueStatus.scheduled):
        raise delivery.SendError(
            f"Only approved issues can be {verb}; this one is {issue.status}. "
            "Run the checks and approve it first.")


def _refused(request: Request, issue_id: int, action: str) -> Callable[[Exception], Response]:
    def answer(exc: Exception) -> Response:
        if isinstance(exc, (delivery.SendError, EditorialError)):
            return send_page(request, issue_id, error=str(exc), status_code=400)
        # Committing a resume publishes tasks: the broker may be down.
        log.error("%s of issue %s failed: %s", action, issue_id, exc, exc_info=exc)
        return send_page(request, issue_id, status_code=503,
                         error=f"Could not {action}: {exc}")
    return answer


def _act(request: Request, issue_id: int, action: str,
         change: Callable[[Session, Issue], object]) -> Response:
    return commit_change(request, issue_id, change, refused=_refused(request, issue_id, action),
                         done=f"/editor/issues/{issue_id}/send",
                         errors=(delivery.SendError, Exception))


@router.post("/issues/{issue_id:int}/schedule")
def schedule(request: Request, issue_id: int) -> Response:
    def change(session: Session, _issue: Issue) -> None:
        schedule_issue(session=session, issue_id=issue_id, when=next_slot())

    return _act(request, issue_id, "schedule", change)


@router.post("/issues/{issue_id:int}/send-now")
def send_now(request: Request, issue_id: int) -> Response:
    def change(session: Session, issue: Issue) -> None:
        _require_approved(issue, "sent")
        delivery.plan_send(session=session, issue_id=issue_id)
        delivery.finish_if_done(session=session, issue_id=issue_id)

    response = _act(request, issue_id, "send", change)
    if response.status_code != 303:
        return response
    try:
        delivery.enqueue_batches(issue_id)
    except Exception as exc:  # the plan is committed; resume re-enqueues once the broker is back
        log.exception("could not enqueue batches of issue %s", issue_id)
        return send_page(request, issue_id, status_code=503,
                         error=f"The send is planned but the task queue is unreachable ({exc}). "
                               "Pause and resume once the worker's Redis is running.")
    return response


CONTROLS: dict[str, Callable[..., object]] = {
    "pause": delivery.pause_send, "resume": delivery.resume_send, "cancel": delivery.cancel_send,
    "retry-failed": delivery.retry_failed,
}
NOTHING_TO_DO = {"retry-failed": "There are no failed deliveries to retry."}


def _control(request: Request, issue_id: int, action: str) -> Response:
    def change(session: Session, issue: Issue) -> None:
        status = issue.status
        # cancel raises SendError itself; pause and resume say False when not applicable,
        # retry-failed 0 when no row failed.
        result = CONTROLS[action](session=session, issue_id=issue_id)
        if result is False or (action in NOTHING_TO_DO and result == 0):
            raise delivery.SendError(
                NOTHING_TO_DO.get(action, f"Nothing to {action}: the issue is {status}."))

    response = _act(request, issue_id, action, change)
    if response.status_code == 303 and action in ("pause", "cancel"):
        # The page that comes next must show a send that has stopped, not one stopping.
        held = delivery.wait_for_hand_back(issue_id=issue_id)
        if held:
            return send_page(request, issue_id, notice=(
                f"The issue is {action}{'d' if action == 'pause' else 'led'}, but {held} "
                "messages were still in flight after "
                f"{settings.send_stop_wait_seconds:g} s: a relay accepting them, or a "
                "stopped worker's rows, which are handed back when their lease ends."))
    return response


@router.post("/issues/{issue_id:int}/pause")
def pause(request: Request, issue_id: int) -> Response:
    return _control(request, issue_id, "pause")


@router.post("/issues/{issue_id:int}/resume")
def resume(request: Request, issue_id: int) -> Response:
    return _control(request, issue_id, "resume")


@router.post("/issues/{issue_id:int}/cancel")
def cancel(request: Request, issue_id: int) -> Response:
    return _control(request, issue_id, "cancel")


@router.post("/issues/{issue_id:int}/retry-failed")
def retry_failed(request: Request, issue_id: int) -> Response:
    return _control(request, issue_id, "retry-failed")
