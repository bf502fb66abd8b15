"""Issues: the list, creating one from a roundup, and the issue editor's actions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import date
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from starlette.datastructures import FormData, UploadFile

from newsletter.editorial import (
    EditorialError,
    add_item,
    delete_item,
    move_item,
    set_hidden,
    set_pinned,
    update_issue,
    update_item,
)
from newsletter.ingest import IngestError, decode, ingest_text
from newsletter.models import Delivery, Issue, IssueStatus, Item
from newsletter.topics import item_topic_slugs
from newsletter.web import forms
from newsletter.web.editor.routing import (
    MAX_UPLOAD_BYTES,
    db_session,
    error_page,
    form_of,
    page,
    redirect,
    router,
)

STRUCTURED_EXAMPLE = """---
title: "Weekly Roundup: First Story; Second Story"
date: {today}
intro: |
  A short welcome paragraph.
---

## First story headline
Topics: logistics

The body of the first story. A blank line starts the next paragraph.

[Read more](https://example.com/first-story)

## Second story headline
Topics: luxury-fashion

Pinned: yes

Another story.
"""


def delivery_counts(session: Session, issue_ids: list[int]) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    if issue_ids:
        for issue_id, status, n in session.exec(
            select(Delivery.issue_id, Delivery.status, func.count())
            .where(col(Delivery.issue_id).in_(issue_ids))
            .group_by(col(Delivery.issue_id), col(Delivery.status))
        ).all():
            counts[issue_id][status] = int(n)
    return counts


@router.get("/issues")
def issue_list(request: Request) -> Response:
    with db_session() as session:
        issues = session.exec(
            select(Issue).order_by(col(Issue.issue_date).desc(), col(Issue.id).desc())
        ).all()
        ids = [i.id for i in issues if i.id is not None]
        item_counts = dict(session.exec(
            select(Item.issue_id, func.count()).where(col(Item.issue_id).in_(ids))
            .group_by(col(Item.issue_id))
        ).all()) if ids else {}
        deliveries = delivery_counts(session, ids)
    rows = [
        {"issue": i, "items": int(item_counts.get(i.id or 0, 0)),
         "deliveries": deliveries.get(i.id or 0, {})}
        for i in issues
    ]
    return page(request, "issues.html", {"rows": rows, "nav": "issues"})


def _new_page(request: Request, *, mode: str = "paste", text: str = "", source_name: str = "",
              issue_date: str = "", error: str = "", status_code: int = 200) -> Response:
    example = STRUCTURED_EXAMPLE.format(today=date.today().isoformat())
    return page(request, "new_issue.html", {
        "mode": mode, "text": text or (example if mode == "write" else ""),
        "source_name": source_name, "issue_date": issue_date, "error": error,
        "example": example, "nav": "new",
    }, status_code=status_code)


@router.get("/issues/new")
def new_issue_page(request: Request, mode: str = "paste") -> Response:
    return _new_page(request, mode="write" if mode == "write" else "paste")


@router.post("/issues/new")
async def new_issue_submit(request: Request) -> Response:
    form = form_of(request)
    mode = "write" if forms.text(form, "mode") == "write" else "paste"
    text_value = form.get("text")
    text = text_value if isinstance(text_value, str) else ""
    source_name = forms.text(form, "source_name").strip()
    date_text = forms.text(form, "issue_date").strip()
    upload = form.get("file")
    if isinstance(upload, UploadFile) and upload.filename:
        data = await upload.read(MAX_UPLOAD_BYTES + 1)
        name = upload.filename[-200:]
        if len(data) > MAX_UPLOAD_BYTES:
            return _new_page(request, mode=mode, source_name=source_name, issue_date=date_text,
                             error=f"{name} is larger than 1 MB.", status_code=400)
        try:
            text = decode(data, source_name=name)
        except IngestError as exc:
            return _new_page(request, mode=mode, source_name=source_name, issue_date=date_text,
                             error=str(exc), status_code=400)
        source_name = source_name or name
    if not text.strip():
        return _new_page(request, mode=mode, text=text, source_name=source_name,
                         issue_date=date_text, error="Paste a roundup or choose a file.",
                         status_code=400)
    default_name = "written-in-editor.md" if mode == "write" else "pasted.txt"
    source_name = source_name or default_name
    issue_date: date | None = None
    if date_text:
        try:
            issue_date = date.fromisoformat(date_text)
        except ValueError:
            return _new_page(request, mode=mode, text=text, source_name=source_name,
                             issue_date=date_text, status_code=400,
                             error="The issue date must look like 2026-11-23.")
    return _create(request, mode=mode, text=text, source_name=source_name, issue_date=issue_date,
                   date_text=date_text)


def _create(request: Request, *, mode: str, text: str, source_name: str,
            issue_date: date | None, date_text: str) -> Response:
    with db_session() as session:
        # Twice at most: when the same roundup is uploaded twice at once, the other
        # request's issue takes the unique source_hash first; the retry finds it.
        for attempt in (1, 2):
            try:
                result = ingest_text(session=session, text=text, source_name=source_name,
                                     issue_date=issue_date)
                session.commit()
                break
            except IngestError as exc:
                session.rollback()
                return _new_page(request, mode=mode, text=text, source_name=source_name,
                                 issue_date=date_text, error=str(exc), status_code=400)
            except IntegrityError:
                session.rollback()
                if attempt == 2:
                    return _new_page(request, mode=mode, text=text, source_name=source_name,
                                     issue_date=date_text, status_code=409,
                                     error="This roundup could not be saved because another "
                                           "upload changed the issues at the same moment. "
                                           "Submit it again.")
    suffix = "" if result.created else "?notice=existing"
    return redirect(f"/editor/issues/{result.issue_id}{suffix}")


# --- the issue editor ---------------------------------------------------------------


def _editor_context(session: Session, issue: Issue) -> dict[str, Any]:
    items = session.exec(
        select(Item).where(Item.issue_id == issue.id).order_by(col(Item.position), col(Item.id))
    ).all()
    tags = item_topic_slugs(session=session, item_ids=[i.id for i in items if i.id is not None])
    return {
        "items": [{"item": i, "topics": tags.get(i.id or 0, [])} for i in items],
        "topics": forms.all_topics(session),
        "editable": issue.status in (IssueStatus.draft, IssueStatus.approved,
                                     IssueStatus.scheduled),
    }


def issue_view(request: Request, issue_id: int, template: str,
               context: Callable[[Session, Issue], dict[str, Any]], *,
               status_code: int = 200, **extra: Any) -> Response:
    """A page about one issue (the 404 page when there is none): the issue, the
    context read in the same session, and `extra` (messages, typed values)."""
    with db_session() as session:
        issue = session.get(Issue, issue_id)
        if issue is None:
            return not_found(request)
        data = context(session, issue)
    return page(request, template, {"issue": issue, "nav": "issues", **data, **extra},
                status_code=status_code)


def issue_page(request: Request, issue_id: int, *, errors: dict[str, str] | None = None,
               error_item: int | None = None, values: dict[str, str] | None = None,
               status_code: int = 200) -> Response:
    notice = {"existing": "This roundup was uploaded before; here is the issue made from it.",
              "saved": "Saved."}.get(request.query_params.get("notice", ""), "")
    return issue_view(request, issue_id, "issue.html", _editor_context,
                      status_code=status_code, errors=errors or {}, error_item=error_item,
                      values=values or {}, notice=notice)


def not_found(request: Request) -> Response:
    return error_page(request, "Not found", "There is no such issue or item.", 404)


@router.get("/issues/{issue_id:int}")
def issue_editor(request: Request, issue_id: int) -> Response:
    return issue_page(request, issue_id)


def commit_change(request: Request, issue_id: int, change: Callable[[Session, Issue], object],
                  *, refused: Callable[[Exception], Response], done: str,
                  errors: tuple[type[Exception], ...] = (EditorialError,)) -> Response:
    """Apply one change to an issue in its own transaction, then redirect to `done`.

    A missing issue or item (LookupError) answers the 404 page; an exception in
    `errors` rolls back and answers `refused(exc)`, the form again with a message.
    """
    with db_session() as session:
        issue = session.get(Issue, issue_id)
        if issue is None:
            return not_found(request)
        try:
            change(session, issue)
            session.commit()
        except LookupError:
            session.rollback()
            return not_found(request)
        except errors as exc:
            session.rollback()
            return refused(exc)
    return redirect(done)


def _apply(request: Request, issue_id: int, change: Callable[[Session], object], *,
           item_id: int | None = None, anchor: str = "") -> Response:
    """One editorial change; errors re-show the editor with what was typed."""

    def checked(session: Session, _issue: Issue) -> None:
        if item_id is not None:
            item = session.get(Item, item_id)
            if item is None or item.issue_id != issue_id:
                raise LookupError(f"no item {item_id} in issue {issue_id}")
        change(session)

    def refused(exc: Exception) -> Response:
        values = {k: forms.text(form_of(request), k) for k in
                  ("title", "intro", "subject", "headline", "body", "link_text", "link_url",
                   "excerpt")}
        field = getattr(exc, "field", "") or "form"
        return issue_page(request, issue_id, errors={field: str(exc)},
                          error_item=item_id, values=values, status_code=400)

    return commit_change(request, issue_id, checked, refused=refused,
                         done=f"/editor/issues/{issue_id}{anchor}")


@router.post("/issues/{issue_id:int}")
def issue_save(request: Request, issue_id: int) -> Response:
    form = form_of(request)
    return _apply(request, issue_id, lambda s: update_issue(
        session=s, issue_id=issue_id, title=forms.text(form, "title"),
        intro=_long_text(form, "intro"),
        subject=forms.text(form, "subject") if "subject" in form else None))


def _long_text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value[:20000] if isinstance(value, str) else ""


def _item_fields(form: FormData) -> dict[str, Any]:
    """The item form's fields, as add_item and update_item take them."""
    return {"headline": forms.text(form, "headline"), "body": _long_text(form, "body"),
            "link_text": forms.text(form, "link_text"),
            "link_url": _long_text(form, "link_url"), "topics": forms.texts(form, "topics"),
            **({"excerpt": _long_text(form, "excerpt")} if "excerpt" in form else {})}


@router.post("/issues/{issue_id:int}/items")
def item_add(request: Request, issue_id: int) -> Response:
    fields = _item_fields(form_of(request))
    return _apply(request, issue_id,
                  lambda s: add_item(session=s, issue_id=issue_id, **fields),
                  anchor="#items-end")


@router.post("/issues/{issue_id:int}/items/{item_id:int}")
def item_save(request: Request, issue_id: int, item_id: int) -> Response:
    fields = _item_fields(form_of(request))
    return _apply(request, issue_id,
                  lambda s: update_item(session=s, item_id=item_id, **fields),
                  item_id=item_id, anchor=f"#item-{item_id}")


ACTIONS = {
    "up": lambda s, i: move_item(session=s, item_id=i, direction="up"),
    "down": lambda s, i: move_item(session=s, item_id=i, direction="down"),
    "pin": lambda s, i: set_pinned(session=s, item_id=i, pinned=True),
    "unpin": lambda s, i: set_pinned(session=s, item_id=i, pinned=False),
    "hide": lambda s, i: set_hidden(session=s, item_id=i, hidden=True),
    "show": lambda s, i: set_hidden(session=s, item_id=i, hidden=False),
    "delete": lambda s, i: delete_item(session=s, item_id=i),
}


@router.post("/issues/{issue_id:int}/items/{item_id:int}/{action}")
def item_action(request: Request, issue_id: int, item_id: int, action: str) -> Response:
    change = ACTIONS.get(action)
    if change is None:
        return not_found(request)
    anchor = "" if action == "delete" else f"#item-{item_id}"
    return _apply(request, issue_id, lambda s: change(s, item_id), item_id=item_id,
                  anchor=anchor)
