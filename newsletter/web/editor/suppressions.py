"""The suppression list in the console: find, add and remove addresses never mailed.
(Login and CSRF are enforced by the editors' router for every route here.)"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import Response

from newsletter.inbound.suppressions import (
    SuppressionError,
    add_suppression,
    clean_address,
    list_suppressions,
    remove_suppression,
    subscriber_statuses,
)
from newsletter.web import forms
from newsletter.web.editor.routing import (
    current_editor,
    db_session,
    form_of,
    page,
    redirect,
    router,
)

PER_PAGE = 50
MAX_PAGE_NUMBER = 100_000

NOTICES = {
    "added": "{email} is suppressed: it will not be mailed.",
    "already": "{email} was already suppressed; its first reason and date are kept.",
    "removed": "{email} is off the list.",
    "restored": "{email} is off the list; the subscriber is confirmed again and gets the "
                "next issue.",
    "kept": "{email} is off the list. The subscriber stays unsubscribed: only they can "
            "sign up again.",
    "missing": "{email} was not on the list.",
}


def _page_number(raw: str) -> int:
    return min(int(raw), MAX_PAGE_NUMBER) if raw.isdigit() and int(raw) > 0 else 1


def suppressions_page(request: Request, *, error: str = "", email: str = "", reason: str = "",
                      status_code: int = 200) -> Response:
    search = request.query_params.get("q", "").strip()[:320]
    number = _page_number(request.query_params.get("page", "1"))
    with db_session() as session:
        rows, total = list_suppressions(session=session, search=search,
                                        offset=(number - 1) * PER_PAGE, limit=PER_PAGE)
        statuses = subscriber_statuses(session=session, emails=[r.email for r in rows])
    pages = max(1, -(-total // PER_PAGE))
    notice = ""
    template = NOTICES.get(request.query_params.get("notice", ""))
    if template and not error:
        notice = template.format(email=request.query_params.get("email", "")[:320])

    def link(n: int) -> str:
        return "/editor/suppressions?" + urlencode({k: v for k, v in
                                                    (("q", search), ("page", n)) if v})

    return page(request, "suppressions.html", {
        "nav": "suppressions", "rows": rows, "statuses": statuses, "total": total,
        "search": search,
        "page_number": number, "pages": pages, "first": (number - 1) * PER_PAGE + 1,
        "prev_url": link(number - 1) if number > 1 else "",
        "next_url": link(number + 1) if number < pages else "",
        "error": error, "notice": notice, "email": email, "reason": reason,
    }, status_code=status_code)


@router.get("/suppressions")
def suppressions_view(request: Request) -> Response:
    return suppressions_page(request)


def _done(code: str, email: str) -> Response:
    return redirect("/editor/suppressions?" + urlencode({"notice": code, "email": email}))


@router.post("/suppressions")
def suppression_add(request: Request) -> Response:
    form = form_of(request)
    email = forms.text(form, "email").strip()
    reason = forms.text(form, "reason")
    editor = current_editor(request)
    with db_session() as session:
        try:
            address = clean_address(email)
            added = add_suppression(session=session, email=address,
                                    reason=reason or f"added by {editor.email}",
                                    source="editor")
            session.commit()
        except SuppressionError as exc:
            session.rollback()
            return suppressions_page(request, error=str(exc), email=email, reason=reason,
                                     status_code=400)
    return _done("added" if added else "already", address)


@router.post("/suppressions/remove")
def suppression_remove(request: Request) -> Response:
    email = forms.text(form_of(request), "email").strip()
    with db_session() as session:
        try:
            removed = remove_suppression(session=session, email=email, source="editor")
            session.commit()
        except SuppressionError:
            removed = None
    if removed is None:
        return _done("missing", email[:320])
    if removed.restored:
        return _done("restored", removed.email)
    if removed.subscriber_status in ("unsubscribed", "pending"):
        return _done("kept", removed.email)
    return _done("removed", removed.email)
