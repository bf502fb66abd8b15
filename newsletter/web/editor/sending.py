"""Approve-then-send: schedule for the weekly slot or send now, watch progress live,
pause, resume or cancel. Everything acts on the real ledger and Celery tasks."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import func
from sqlmodel import Session, col, select

from newsletter import delivery
from newsletter.models import Delivery, DeliveryStatus, Issue, IssueStatus, utcnow
from newsletter.schedule import next_slot
from newsletter.web.editor.issues import not_found
from newsletter.web.editor.routing import db_session, page, redirect, router

log = logging.getLogger(__name__)

RATE_WINDOW = timedelta(minutes=1)


def progress(session: Session, issue: Issue) -> dict[str, Any]:
    """Counts, rate and time left for one issue's send."""
    counts = delivery.status_counts(session=session, issue_id=issue.id or 0)
    pending = counts.get("pending", 0) + counts.get("sending", 0)
    sent = counts.get("sent", 0)
    now = utcnow()
    recent = session.exec(
        select(func.count()).select_from(Delivery).where(
            Delivery.issue_id == issue.id, Delivery.status == DeliveryStatus.sent,
            col(Delivery.sent_at) >= now - RATE_WINDOW)
    ).one()
    per_minute = float(recent)
    if not per_minute and issue.send_started_at and sent:
        elapsed = max((now - issue.send_started_at).total_seconds(), 1.0)
        per_minute = sent * 60 / elapsed
    total = sum(counts.values())
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
        "rate_per_minute": round(per_minute, 1),
        "seconds_left": round(pending / per_minute * 60) if per_minute and pending else None,
        "done": done,
    }


def send_page(request: Request, issue_id: int, *, error: str = "", notice: str = "",
              status_code: int = 200) -> Response:
    with db_session() as session:
        issue = session.get(Issue, issue_id)
        if issue is None:
            return not_found(request)
        data = progress(session, issue)
    return page(request, "send.html", {
        "issue": issue, "progress": data, "next_slot": next_slot(), "error": error,
        "notice": notice, "nav": "issues",
    }, status_code=status_code)


@router.get("/issues/{issue_id:int}/send")
def send_view(request: Request, issue_id: int) -> Response:
    return send_page(request, issue_id)


@router.get("/issues/{issue_id:int}/progress.json")
def progress_json(request: Request, issue_id: int) -> Response:
    with db_session() as session:
        issue = session.get(Issue, issue_id)
        if issue is None:
            return JSONResponse({"detail": "no such issue"}, status_code=404)
        if issue.status == IssueStatus.sending:
            # Also what the sweep does; doing it here lets the page reach "sent" promptly.
            delivery.finish_if_done(session=session, issue_id=issue_id)
            session.commit()
            session.refresh(issue)
        data = progress(session, issue)
    return JSONResponse(data, headers={"cache-control": "no-store"})


@router.post("/issues/{issue_id:int}/schedule")
def schedule(request: Request, issue_id: int) -> Response:
    with db_session() as session:
        issue = session.get(Issue, issue_id)
        if issue is None:
            return not_found(request)
        if issue.status not in (IssueStatus.approved, IssueStatus.scheduled):
            return send_page(request, issue_id, status_code=400,
                             error=f"Only approved issues can be scheduled; this one is "
                                   f"{issue.status}. Run the checks and approve it first.")
        issue.status = IssueStatus.scheduled
        issue.scheduled_for = next_slot()
        session.add(issue)
        session.commit()
    return redirect(f"/editor/issues/{issue_id}/send")


@router.post("/issues/{issue_id:int}/send-now")
def send_now(request: Request, issue_id: int) -> Response:
    with db_session() as session:
        issue = session.get(Issue, issue_id)
        if issue is None:
            return not_found(request)
        if issue.status not in (IssueStatus.approved, IssueStatus.scheduled):
            return send_page(request, issue_id, status_code=400,
                             error=f"Only approved issues can be sent; this one is "
                                   f"{issue.status}.")
        try:
            delivery.plan_send(session=session, issue_id=issue_id)
            delivery.finish_if_done(session=session, issue_id=issue_id)
            session.commit()
        except delivery.SendError as exc:
            session.rollback()
            return send_page(request, issue_id, error=str(exc), status_code=400)
    try:
        delivery.enqueue_batches(issue_id)
    except Exception as exc:  # the plan is committed; resume re-enqueues once the broker is back
        log.exception("could not enqueue batches of issue %s", issue_id)
        return send_page(request, issue_id, status_code=503,
                         error=f"The send is planned but the task queue is unreachable ({exc}). "
                               "Pause and resume once the worker's Redis is running.")
    return redirect(f"/editor/issues/{issue_id}/send")


def _control(request: Request, issue_id: int, action: str) -> Response:
    with db_session() as session:
        issue = session.get(Issue, issue_id)
        if issue is None:
            return not_found(request)
        try:
            if action == "pause":
                changed = delivery.pause_send(session=session, issue_id=issue_id)
            elif action == "resume":
                changed = delivery.resume_send(session=session, issue_id=issue_id)
            else:
                delivery.cancel_send(session=session, issue_id=issue_id)
                changed = True
            session.commit()
        except delivery.SendError as exc:
            session.rollback()
            return send_page(request, issue_id, error=str(exc), status_code=400)
        except Exception as exc:  # resume publishes tasks on commit: the broker may be down
            log.exception("%s of issue %s failed", action, issue_id)
            return send_page(request, issue_id, error=f"Could not {action}: {exc}",
                             status_code=503)
    if not changed:
        return send_page(request, issue_id, status_code=400,
                         error=f"Nothing to {action}: the issue is {issue.status}.")
    return redirect(f"/editor/issues/{issue_id}/send")


@router.post("/issues/{issue_id:int}/pause")
def pause(request: Request, issue_id: int) -> Response:
    return _control(request, issue_id, "pause")


@router.post("/issues/{issue_id:int}/resume")
def resume(request: Request, issue_id: int) -> Response:
    return _control(request, issue_id, "resume")


@router.post("/issues/{issue_id:int}/cancel")
def cancel(request: Request, issue_id: int) -> Response:
    return _control(request, issue_id, "cancel")
