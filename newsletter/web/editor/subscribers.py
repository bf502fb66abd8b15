"""Subscribers in the console: find, look at one person's history, act, import, export."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlmodel import Session
from starlette.datastructures import UploadFile

from newsletter import signup
from newsletter import subscribers as subs
from newsletter.audience import imports
from newsletter.audience.search import (
    SOURCE_LABELS,
    Filters,
    export_rows,
    find,
    profile,
)
from newsletter.inbound.suppressions import add_suppression, remove_suppression
from newsletter.models import ImportJob, Subscriber, SubscriberStatus
from newsletter.web import forms
from newsletter.web.editor.routing import (
    current_editor,
    db_session,
    error_page,
    form_of,
    page,
    redirect,
    router,
)

STATUSES = [s.value for s in SubscriberStatus] + ["paused"]
# Notices come as keys in the URL, never as text: a link can't put words in the console.
LIST_NOTICES = {"deleted": "Subscriber deleted: their personal data is erased."}
ACTIONS = {
    "confirm": "Confirmed.",
    "unsubscribe": "Unsubscribed.",
    "suppress": "Suppressed: this address will never be mailed.",
    "unsuppress": "Removed from the suppression list.",
    "delete": "Deleted: personal data erased.",
}


def _date(value: str, errors: list[str], label: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.append(f"The {label} date must look like 2026-11-23.")
        return None


def _filters(request: Request, errors: list[str]) -> Filters:
    p = request.query_params
    return Filters(
        q=p.get("q", "")[:200], status=p.get("status", "") if p.get("status") in STATUSES else "",
        topic=p.get("topic", "")[:64],
        source=p.get("source", "") if p.get("source") in SOURCE_LABELS else "",
        since=_date(p.get("since", ""), errors, "from"),
        until=_date(p.get("until", ""), errors, "to"),
    )


@router.get("/subscribers")
def subscriber_list(request: Request) -> Response:
    errors: list[str] = []
    filters = _filters(request, errors)
    before_text = request.query_params.get("before", "")
    before = int(before_text) if before_text.isdigit() and len(before_text) < 10 else None
    with db_session() as session:
        found = find(session=session, filters=filters, before=before)
        topics = forms.all_topics(session)
        context = {
            "nav": "subscribers", "filters": filters, "found": found, "errors": errors,
            "statuses": STATUSES,
            "sources": SOURCE_LABELS, "topics": topics,
            "topic_names": {t.slug: t.name for t in topics}, "paged": before is not None,
            "notice": LIST_NOTICES.get(request.query_params.get("notice", ""), ""),
        }
    return page(request, "subscribers.html", context)


@router.get("/subscribers/export.csv")
def subscriber_export(request: Request) -> Response:
    errors: list[str] = []
    filters = _filters(request, errors)

    def stream() -> Any:
        with db_session() as session:
            yield from export_rows(session=session, filters=filters)

    return StreamingResponse(stream(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": 'attachment; filename="subscribers.csv"'})


# --- adding one ---------------------------------------------------------------------


def _new_page(request: Request, *, values: dict[str, Any] | None = None, error: str = "",
              status_code: int = 200) -> Response:
    with db_session() as session:
        topics = forms.all_topics(session)
    return page(request, "subscriber_new.html", {
        "nav": "subscribers", "error": error,
        "values": values or {"email": "", "name": "", "topics": [], "timezone": "UTC",
                             "confirmed": False},
        "topics": topics, "timezones": forms.timezones()}, status_code=status_code)


@router.get("/subscribers/new")
def subscriber_new(request: Request) -> Response:
    return _new_page(request)


@router.post("/subscribers/new")
def subscriber_add(request: Request) -> Response:
    form = form_of(request)
    email, name = forms.text(form, "email"), forms.text(form, "name")
    topics, zone = forms.texts(form, "topics"), forms.text(form, "timezone") or "UTC"
    confirmed = forms.checked(form, "confirmed")
    values = {"email": email, "name": name, "topics": topics, "timezone": zone,
              "confirmed": confirmed}
    with db_session() as session:
        try:
            sub = subs.add_subscriber(
                session=session, email=email, name=name, topics=topics, timezone=zone,
                confirmed=confirmed, source="editor",
                source_data={"editor": current_editor(request).email})
            session.commit()
        except subs.SubscriberError as exc:
            session.rollback()
            return _new_page(request, values=values, error=str(exc), status_code=400)
    return redirect(f"/editor/subscribers/{sub.id}?notice=added")


# --- importing ----------------------------------------------------------------------


def _import_page(request: Request, *, preview: imports.Preview | None = None, error: str = "",
                 status_code: int = 200) -> Response:
    return page(request, "subscriber_import.html", {
        "nav": "subscribers", "limit_mb": imports.MAX_IMPORT_BYTES // (1024 * 1024),
        "preview": preview, "error": error}, status_code=status_code)


@router.get("/subscribers/import")
def import_page(request: Request) -> Response:
    return _import_page(request)


@router.post("/subscribers/import")
async def import_upload(request: Request) -> Response:
    upload = form_of(request).get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return _import_page(request, error="Choose a CSV file with an 'email' column.",
                            status_code=400)
    data = await upload.read(imports.MAX_IMPORT_BYTES + 1)
    editor_id = current_editor(request).id

    def staged() -> Response:
        with db_session() as session:
            try:
                preview = imports.stage(session=session, data=data,
                                        filename=upload.filename or "", editor_id=editor_id)
                session.commit()
            except subs.SubscriberError as exc:
                session.rollback()
                return _import_page(request, error=str(exc), status_code=400)
        return _import_page(request, preview=preview)

    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(staged)  # parsing a large file must not block the loop


@router.post("/subscribers/import/{job_id:int}/start")
def import_start(request: Request, job_id: int) -> Response:
    confirmed = forms.checked(form_of(request), "confirmed")
    with db_session() as session:
        started = imports.start(session=session, job_id=job_id, confirmed=confirmed)
        session.commit()
    if started:
        imports.run_in_background(job_id)
    return redirect(f"/editor/subscribers/import/{job_id}")


def _job(session: Session, job_id: int) -> ImportJob | None:
    return session.get(ImportJob, job_id)


def _job_json(job: ImportJob) -> dict[str, Any]:
    """The shape the console's progress box polls (the same as a send's)."""
    finished = job.status in ("done", "failed")
    return {"id": job.id, "status": job.status, "done": finished, "processed": job.done,
            "total": job.total, "added": job.added, "rejected": job.rejected,
            "percent": round(100 * job.done / job.total) if job.total else (100 if finished else 0),
            "message": job.message}


@router.get("/subscribers/import/{job_id:int}.json")
def import_progress(request: Request, job_id: int) -> Response:
    with db_session() as session:
        job = _job(session, job_id)
        if job is None:
            return JSONResponse({"detail": "not found"}, status_code=404)
        return JSONResponse(_job_json(job))


@router.get("/subscribers/import/{job_id:int}/errors.csv")
def import_errors(request: Request, job_id: int) -> Response:
    with db_session() as session:
        job = _job(session, job_id)
        if job is None:
            return error_page(request, "Not found", "There is no such import.", 404)
        body = job.errors_csv or "line,email,reason\r\n"
    return Response(body, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="import-{job_id}-errors.csv"'})


@router.get("/subscribers/import/{job_id:int}")
def import_job_page(request: Request, job_id: int) -> Response:
    with db_session() as session:
        job = _job(session, job_id)
        if job is None:
            return error_page(request, "Not found", "There is no such import.", 404)
        return page(request, "subscriber_import_job.html", {
            "nav": "subscribers", "job": job, "progress": _job_json(job)})


# --- one subscriber -----------------------------------------------------------------


@router.get("/subscribers/{subscriber_id:int}")
def subscriber_page(request: Request, subscriber_id: int) -> Response:
    notice = request.query_params.get("notice", "")
    with db_session() as session:
        found = profile(session=session, subscriber_id=subscriber_id)
        if found is None:
            return error_page(request, "Not found", "There is no such subscriber.", 404)
        return page(request, "subscriber.html", {
            "nav": "subscribers", "p": found, "topics": forms.all_topics(session),
            "notice": ACTIONS.get(notice, "Added." if notice == "added" else
                                  "Topics saved." if notice == "topics" else ""),
            "erased": found.subscriber.email.endswith(signup.ERASED_SUFFIX)})


@router.post("/subscribers/{subscriber_id:int}/topics")
def subscriber_topics(request: Request, subscriber_id: int) -> Response:
    wanted = forms.texts(form_of(request), "topics")
    with db_session() as session:
        if session.get(Subscriber, subscriber_id) is None:
            return error_page(request, "Not found", "There is no such subscriber.", 404)
        try:
            subs.set_topics(session=session, subscriber_id=subscriber_id, slugs=wanted,
                            source="editor")
            session.commit()
        except subs.SubscriberError as exc:
            return error_page(request, "Not saved", str(exc), 400)
    return redirect(f"/editor/subscribers/{subscriber_id}?notice=topics")


@router.post("/subscribers/{subscriber_id:int}/{action}")
def subscriber_action(request: Request, subscriber_id: int, action: str) -> Response:
    if action not in ACTIONS:
        return error_page(request, "Not found", "There is no such page in the console.", 404)
    who = current_editor(request).email
    with db_session() as session:
        sub = session.get(Subscriber, subscriber_id)
        if sub is None:
            return error_page(request, "Not found", "There is no such subscriber.", 404)
        if action == "confirm":
            subs.confirm(session=session, subscriber_id=subscriber_id, source="editor")
        elif action == "unsubscribe":
            subs.unsubscribe(session=session, subscriber_id=subscriber_id, source="editor",
                             data={"editor": who})
        elif action == "suppress":
            reason = forms.text(form_of(request), "reason").strip() or "suppressed by an editor"
            add_suppression(session=session, email=sub.email, reason=f"{reason} ({who})",
                            source="editor")
        elif action == "unsuppress":
            remove_suppression(session=session, email=sub.email, source="editor")
        elif action == "delete":
            signup.erase_subscriber(session=session, subscriber_id=subscriber_id,
                                    source="editor")
        session.commit()
    if action == "delete":
        return redirect("/editor/subscribers?notice=deleted")
    return redirect(f"/editor/subscribers/{subscriber_id}?notice={action}")
