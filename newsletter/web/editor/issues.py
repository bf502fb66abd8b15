"""Issues: the list, creating one from a roundup, and the issue editor's actions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from newsletter.editorial import (
    EditorialError,
    add_item,
    check_item_count,
    delete_item,
    move_item,
    reorder_items,
    set_hidden,
    set_pinned,
    update_issue,
    update_item,
)
from newsletter.ingest import IngestError, decode, ingest_text, parse_document
from newsletter.ingest.service import check_topics
from newsletter.models import Delivery, Issue, IssueStatus, Item
from newsletter.revisions import last_change, remember, snapshot, undo
from newsletter.settings import settings
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
from newsletter.web.security import human_size

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
        "example": example, "nav": "new", "max_kb": f"{MAX_UPLOAD_BYTES // 1024:,}",
        "max_items": settings.max_items_per_issue,
    }, status_code=status_code)


@router.get("/issues/new")
def new_issue_page(request: Request, mode: str = "paste") -> Response:
    return _new_page(request, mode="write" if mode == "write" else "paste")


PREVIEW_EXCERPT = 200


def markdown_preview(text: str) -> dict[str, Any]:
    """What "Create draft" would read from `text`: the items, or the first error."""
    with db_session() as session:
        names = {t.slug: t.name for t in forms.all_topics(session)}
    source = "written-in-editor.md"
    try:
        parsed = parse_document(text, source_name=source)
        check_topics(parsed, names, source_name=source)
    except IngestError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "title": parsed.title, "items": [
        {"headline": item.headline, "pinned": item.pinned,
         "topics": [names.get(t, t) for t in item.topics],
         "excerpt": (item.body[:PREVIEW_EXCERPT] + "…"
                     if len(item.body) > PREVIEW_EXCERPT else item.body)}
        for item in parsed.items]}


@router.post("/issues/new/preview.json")
async def new_issue_preview(request: Request) -> Response:
    value = form_of(request).get("text")
    text = value[:MAX_UPLOAD_BYTES] if isinstance(value, str) else ""
    # Parsing is CPU work: off the event loop, like the upload itself.
    return JSONResponse(await run_in_threadpool(markdown_preview, text))


@router.post("/issues/new")
async def new_issue_submit(request: Request) -> Response:
    # Async only to read the upload; decoding, parsing and saving a roundup (up to
    # 1 MB, hundreds of items) run in the thread pool, never on the event loop.
    form = form_of(request)
    mode = "write" if forms.text(form, "mode") == "write" else "paste"
    text_value = form.get("text")
    submitted = NewRoundup(
        mode=mode, text=text_value if isinstance(text_value, str) else "",
        source_name=forms.text(form, "source_name").strip(),
        date_text=forms.text(form, "issue_date").strip())
    upload = form.get("file")
    if isinstance(upload, UploadFile) and upload.filename:
        submitted.file_name = upload.filename[-200:]
        submitted.file_data = await upload.read(MAX_UPLOAD_BYTES + 1)
        submitted.file_size = max(upload.size or 0, len(submitted.file_data))
    return await run_in_threadpool(_new_issue, request, submitted)


@dataclass
class NewRoundup:
    """What the new-issue form brought: pasted or written text, or a file."""

    mode: str
    text: str
    source_name: str
    date_text: str
    file_name: str = ""
    file_data: bytes | None = None
    file_size: int = 0


def _too_large(what: str, size: int) -> str:
    # In KB: "1 MB; at most 1 MB" would leave the editor puzzled.
    return (f"{what} is {-(-size // 1024):,} KB; a roundup can be at most "
            f"{MAX_UPLOAD_BYTES // 1024:,} KB ({human_size(MAX_UPLOAD_BYTES)}). "
            "Split it into smaller issues.")


def _new_issue(request: Request, new: NewRoundup) -> Response:
    def refused(error: str, *, keep_text: bool = True, status_code: int = 400) -> Response:
        return _new_page(request, mode=new.mode, text=new.text if keep_text else "",
                         source_name=new.source_name, issue_date=new.date_text,
                         error=error, status_code=status_code)

    text, source_name = new.text, new.source_name
    if new.file_data is not None:
        if len(new.file_data) > MAX_UPLOAD_BYTES:
            return refused(_too_large(new.file_name, new.file_size), keep_text=False)
        try:
            text = decode(new.file_data, source_name=new.file_name)
        except IngestError as exc:
            return refused(str(exc), keep_text=False)
        source_name = source_name or new.file_name
    elif len(text.encode("utf-8", "replace")) > MAX_UPLOAD_BYTES:
        # Not echoed back: a page carrying megabytes of text helps nobody.
        return refused(_too_large("The text", len(text.encode("utf-8", "replace"))),
                       keep_text=False)
    if not text.strip():
        return refused("Paste a roundup or choose a file.")
    default_name = "written-in-editor.md" if new.mode == "write" else "pasted.txt"
    source_name = source_name or default_name
    issue_date: date | None = None
    if new.date_text:
        try:
            issue_date = date.fromisoformat(new.date_text)
        except ValueError:
            return _new_page(request, mode=new.mode, text=text, source_name=source_name,
                             issue_date=new.date_text, status_code=400,
                             error="The issue date must look like 2026-11-23.")
    try:
        # Parsed once before anything is written, so an oversized roundup costs a
        # parse, not thousands of rows and a page nobody can open.
        check_item_count(len(parse_document(text, source_name=source_name).items),
                         source=source_name)
    except (IngestError, EditorialError) as exc:
        return _new_page(request, mode=new.mode, text=text, source_name=source_name,
                         issue_date=new.date_text, error=str(exc), status_code=400)
    return _create(request, mode=new.mode, text=text, source_name=source_name,
                   issue_date=issue_date, date_text=new.date_text)


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
    topics = forms.all_topics(session)
    editable = issue.status in (IssueStatus.draft, IssueStatus.approved, IssueStatus.scheduled)
    return {
        "items": [{"item": i, "topics": tags.get(i.id or 0, [])} for i in items],
        "topics": topics,
        "topic_names": {t.slug: t.name for t in topics},
        "last_change": last_change(session=session, issue_id=issue.id or 0) if editable else "",
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
              "saved": "Saved.", "undone": "Undone."}.get(
                  request.query_params.get("notice", ""), "")
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
           item_id: int | None = None, anchor: str = "", label: str = "Changed the issue")\
        -> Response:
    """One editorial change, undoable; errors re-show the editor with what was typed.

    `label` names the change in the notice ("{headline}" is the item's headline).
    """

    def checked(session: Session, _issue: Issue) -> None:
        headline = ""
        if item_id is not None:
            item = session.get(Item, item_id)
            if item is None or item.issue_id != issue_id:
                raise LookupError(f"no item {item_id} in issue {issue_id}")
            headline = item.headline
        before = snapshot(session=session, issue_id=issue_id)
        change(session)
        session.flush()
        remember(session=session, issue_id=issue_id, before=before,
                 label=label.replace("{headline}", f"“{headline[:80]}”"))

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
        subject=forms.text(form, "subject") if "subject" in form else None),
        label="Saved the title, subject and intro")


@router.post("/issues/{issue_id:int}/undo")
def issue_undo(request: Request, issue_id: int) -> Response:
    def refused(exc: Exception) -> Response:
        return issue_page(request, issue_id, errors={"form": str(exc)}, status_code=409)

    return commit_change(request, issue_id, lambda s, _i: undo(session=s, issue_id=issue_id),
                         refused=refused, done=f"/editor/issues/{issue_id}?notice=undone")


@router.post("/issues/{issue_id:int}/items/order")
def items_reorder(request: Request, issue_id: int) -> Response:
    """The new order from drag and drop: every item id once, comma-separated."""
    raw = forms.text(form_of(request), "order")
    try:
        ids = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        ids = []
    return _apply(request, issue_id,
                  lambda s: reorder_items(session=s, issue_id=issue_id, item_ids=ids),
                  label="Reordered the items")


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
                  anchor="#items-end", label=f"Added “{fields['headline'][:80]}”")


@router.post("/issues/{issue_id:int}/items/{item_id:int}")
def item_save(request: Request, issue_id: int, item_id: int) -> Response:
    fields = _item_fields(form_of(request))
    return _apply(request, issue_id,
                  lambda s: update_item(session=s, item_id=item_id, **fields),
                  item_id=item_id, anchor=f"#item-{item_id}", label="Saved {headline}")


LABELS = {"up": "Moved {headline} up", "down": "Moved {headline} down",
          "pin": "Pinned {headline}", "unpin": "Unpinned {headline}",
          "hide": "Hid {headline}", "show": "Showed {headline} again",
          "delete": "Deleted {headline}"}
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
                  anchor=anchor, label=LABELS[action])
