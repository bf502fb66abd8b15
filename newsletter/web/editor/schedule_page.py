"""Scheduling an issue at a chosen time (or at a wall time in each reader's zone), and
the confirmation before "Send now" that says who gets it and for how long."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from sqlmodel import Session

from newsletter import scheduling
from newsletter.editorial import EditorialError
from newsletter.models import Issue, IssueStatus
from newsletter.settings import settings
from newsletter.web import forms
from newsletter.web.editor.issues import issue_view
from newsletter.web.editor.routing import db_session, error_page, form_of, redirect, router


def _context(values: dict[str, Any]) -> Any:
    def build(session: Session, issue: Issue) -> dict[str, Any]:
        return {"forecast": scheduling.forecast(session=session, issue_id=issue.id or 0),
                "zones": forms.timezones(), "values": values,
                "default_zone": settings.schedule_timezone,
                "schedulable": issue.status in (IssueStatus.approved, IssueStatus.scheduled)}
    return build


def _page(request: Request, issue_id: int, template: str, *, values: dict[str, Any] | None = None,
          error: str = "", status_code: int = 200) -> Response:
    defaults = {"day": "", "time": settings.schedule_time, "timezone": settings.schedule_timezone,
                "mode": "zone"}
    return issue_view(request, issue_id, template, _context({**defaults, **(values or {})}),
                      status_code=status_code, error=error, notice="")


@router.get("/issues/{issue_id:int}/schedule-at")
def schedule_form(request: Request, issue_id: int) -> Response:
    return _page(request, issue_id, "schedule.html")


@router.post("/issues/{issue_id:int}/schedule-at")
def schedule_submit(request: Request, issue_id: int) -> Response:
    form = form_of(request)
    values = {"day": forms.text(form, "day"), "time": forms.text(form, "time"),
              "timezone": forms.text(form, "timezone"), "mode": forms.text(form, "mode")}
    try:
        day = date.fromisoformat(values["day"])
        at = time.fromisoformat(values["time"])
    except ValueError:
        return _page(request, issue_id, "schedule.html", values=values, status_code=400,
                     error="Pick a date and a time, like 2027-03-15 and 09:00.")
    with db_session() as session:
        if session.get(Issue, issue_id) is None:
            return error_page(request, "Not found", "There is no such issue.", 404)
        try:
            scheduling.schedule_at(session=session, issue_id=issue_id, day=day, at=at,
                                   timezone=values["timezone"] or None,
                                   subscriber_local=values["mode"] == "local")
            session.commit()
        except EditorialError as exc:
            session.rollback()
            return _page(request, issue_id, "schedule.html", values=values, error=str(exc),
                         status_code=400)
    return redirect(f"/editor/issues/{issue_id}/send")


@router.get("/issues/{issue_id:int}/send/confirm")
def send_confirm(request: Request, issue_id: int) -> Response:
    """"Send to 19,324 subscribers?": the numbers first, then the button that sends."""
    return _page(request, issue_id, "send_confirm.html")


def describe_local(issue: Issue) -> str:
    """How a subscriber-local schedule reads on the send page."""
    if issue.local_send_date is None or not issue.local_send_time:
        return ""
    day = datetime.combine(issue.local_send_date, time.fromisoformat(issue.local_send_time))
    return f"{day:%H:%M} in each reader's time zone on {day:%A %d %B %Y}"
