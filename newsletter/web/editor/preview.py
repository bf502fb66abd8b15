"""Preview an issue as a subscriber or a set of topics, run the checks, test-send, approve."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session, col, select
from starlette.datastructures import FormData, QueryParams

from newsletter.checks import (
    Audience,
    Reader,
    audiences,
    readers,
    render_preview,
    run_checks,
)
from newsletter.composer import Composition, IssueContent, compose, load_issue
from newsletter.editorial import ApprovalRefused, approve_issue, unapprove_issue
from newsletter.engagement.interests import learned_for
from newsletter.models import Issue, Subscriber
from newsletter.render import Recipient
from newsletter.settings import settings
from newsletter.subscribers import SubscriberError, followed_topics, get_by_email, normalise_email
from newsletter.web import forms
from newsletter.web.editor.issues import commit_change, issue_view, not_found
from newsletter.web.editor.routing import db_session, form_of, redirect, router

log = logging.getLogger(__name__)

SEARCH_LIMIT = 20  # subscribers listed for a partial address
NOTHING_LIMIT = 100  # "only my topics" readers named on the page


@dataclass
class Selection:
    """Who the editor previews as: a subscriber (by email) or a set of topics."""

    email: str = ""
    topics: list[str] = field(default_factory=list)
    only_my_topics: bool = False
    error: str = ""
    matches: list[str] = field(default_factory=list)  # addresses a partial search found
    reader: Reader = field(default_factory=lambda: Reader(0, "preview@roundup.invalid"))
    learned: tuple[str, ...] = ()  # the subscriber's learned interests (issue 9)

    def query(self) -> str:
        pairs: list[tuple[str, str]] = []
        if self.email:
            pairs.append(("email", self.email))
        else:
            pairs += [("topics", t) for t in self.topics]
            if self.only_my_topics:
                pairs.append(("only", "1"))
        return urlencode(pairs)


def _values(source: QueryParams | FormData) -> tuple[str, list[str], bool]:
    email = str(source.get("email") or "").strip()[:320]
    topics = [str(t)[:64] for t in source.getlist("topics")][:50]
    only = str(source.get("only") or "") not in ("", "0", "off")
    return email, topics, only


def search_subscribers(session: Session, term: str) -> list[Subscriber]:
    """Subscribers whose address contains `term` (any case), first few only."""
    return list(session.exec(
        select(Subscriber)
        .where(col(Subscriber.email).contains(term.lower(), autoescape=True))
        .order_by(col(Subscriber.email)).limit(SEARCH_LIMIT + 1)
    ).all())


def _subscriber_selection(session: Session, sub: Subscriber) -> Selection:
    followed = tuple(sorted(followed_topics(session=session, subscriber_id=sub.id or 0)))
    return Selection(email=sub.email, topics=list(followed), only_my_topics=sub.only_my_topics,
                     reader=Reader(sub.id or 0, sub.email, sub.name, followed,
                                   sub.only_my_topics),
                     learned=tuple(learned_for(session=session, subscriber_id=sub.id or 0)))


def compose_selected(issue: IssueContent, sel: Selection) -> Composition | None:
    """What the selected reader gets, learned interests included."""
    return compose(issue, followed=sel.reader.followed, only_my_topics=sel.reader.only_my_topics,
                   max_items=settings.digest_max_items, learned=sel.learned)


def selection(session: Session, source: QueryParams | FormData) -> Selection:
    email, topics, only = _values(source)
    known = {t.slug for t in forms.all_topics(session)}
    error = ""
    matches: list[str] = []
    if email:
        sub = get_by_email(session=session, email=email)
        found = [sub] if sub is not None else search_subscribers(session, email)
        if len(found) == 1:
            return _subscriber_selection(session, found[0])
        matches = [s.email for s in found[:SEARCH_LIMIT]]
        if not found:
            error = (f"No subscriber's address contains {email!r}; "
                     "showing the topics below instead.")
    unknown = [t for t in topics if t not in known]
    if unknown:
        error = f"Unknown topic {unknown[0]!r} ignored."
    clean = tuple(sorted(t for t in dict.fromkeys(topics) if t in known))
    return Selection(topics=list(clean), only_my_topics=only, error=error, matches=matches,
                     reader=Reader(0, "preview@roundup.invalid", "", clean, only))


def _audience_of(groups: list[Audience], key: str) -> Audience | None:
    return next((a for a in groups if a.key == key), None)


def preview_page(request: Request, issue_id: int, *, notice: str = "", error: str = "",
                 test_to: str = "", status_code: int = 200) -> Response:
    source = form_of(request) if request.method == "POST" else request.query_params

    def context(session: Session, _issue: Issue) -> dict[str, Any]:
        sel = selection(session, source)
        issue = load_issue(session=session, issue_id=issue_id)
        people = readers(session=session)
        groups = audiences(issue=issue, people=people)
        composition = compose_selected(issue, sel)
        key = composition.key if composition else "nothing"
        same = _audience_of(groups, key)
        nothing = _audience_of(groups, "nothing")
        versions = [
            {"count": a.count, "sample": a.readers[0], "nothing": a.composition is None,
             "items": len(a.composition.items) if a.composition else 0,
             "query": Selection(topics=list(a.readers[0].followed),
                                only_my_topics=a.readers[0].only_my_topics).query(),
             "current": a.key == key}
            for a in groups
        ]
        return {
            "sel": sel, "search": _values(source)[0], "composition": composition,
            "rendered": render_preview(issue, composition, sel.reader) if composition else None,
            "same_count": same.count if same else 0, "versions": versions,
            "total_readers": len(people),
            "get_nothing": [r.email for r in nothing.readers[:NOTHING_LIMIT]] if nothing else [],
            "get_nothing_count": nothing.count if nothing else 0,
            "topics": forms.all_topics(session), "topic_names": issue.topic_names,
            "frame_url": f"/editor/issues/{issue_id}/preview/frame?{sel.query()}",
            "error": error or sel.error,
        }

    return issue_view(request, issue_id, "preview.html", context, status_code=status_code,
                      notice=notice, test_to=test_to)


@router.get("/issues/{issue_id:int}/preview")
def preview(request: Request, issue_id: int) -> Response:
    return preview_page(request, issue_id, notice=request.query_params.get("sent", "") and
                        f"Test email sent to {request.query_params.get('sent', '')[:320]}.")


def _compose_selected(
    issue_id: int, source: QueryParams | FormData
) -> tuple[Selection, IssueContent, Composition | None]:
    """Who is selected, the issue, and what they get; LookupError for no such issue."""
    with db_session() as session:
        issue = load_issue(session=session, issue_id=issue_id)
        sel = selection(session, source)
    return sel, issue, compose_selected(issue, sel)


@router.get("/issues/{issue_id:int}/preview/frame")
def preview_frame(request: Request, issue_id: int) -> Response:
    """The email's HTML alone, for the sandboxed iframes of the preview page."""
    try:
        sel, issue, composition = _compose_selected(issue_id, request.query_params)
    except LookupError:
        return not_found(request)
    if composition is None:
        body = ("<!doctype html><p>This reader follows none of this issue's topics and "
                "chose “only my topics”: they get no email this week.</p>")
        return HTMLResponse(body, headers={"cache-control": "no-store"})
    rendered = render_preview(issue, composition, sel.reader)
    return HTMLResponse(rendered.html, headers={"cache-control": "no-store"})


@router.post("/issues/{issue_id:int}/test-send")
def test_send(request: Request, issue_id: int) -> Response:
    form = form_of(request)
    raw_to = forms.text(form, "to")
    try:
        to = normalise_email(raw_to)
    except SubscriberError as exc:
        return preview_page(request, issue_id, error=f"Test send: {exc}", test_to=raw_to,
                            status_code=400)
    try:
        sel, issue, composition = _compose_selected(issue_id, form)
    except LookupError:
        return not_found(request)
    if composition is None:
        return preview_page(request, issue_id, test_to=to, status_code=400,
                            error="This reader gets no email this week, so there is nothing "
                                  "to test-send. Preview another reader or topic set.")
    try:
        send_test(issue, composition, to)
    except Exception as exc:  # the SMTP server's answer is what the editor needs to see
        log.exception("test send of issue %s to %s failed", issue_id, to)
        return preview_page(request, issue_id, test_to=to, status_code=502,
                            error=f"The test email could not be sent: {exc}")
    return redirect(f"/editor/issues/{issue_id}/preview?{sel.query()}&"
                    + urlencode({"sent": to}))


def send_test(issue: IssueContent, composition: Composition, to: str) -> None:
    """Render with test=True ([TEST] subject and banner) and send through the mail pipeline.

    The message carries subscriber id 0: its unsubscribe and manage links must not act
    on the real subscriber whose version is being tested. Nor does it carry their name:
    "Ana Real <tester@elsewhere.example>" would put her name on someone else's address.
    """
    from newsletter.delivery import send_one
    from newsletter.message import MessageFactory
    from newsletter.render import render_digest

    digest = render_digest(issue, composition, test=True)
    message = MessageFactory(digest=digest, issue_id=issue.id).build(
        Recipient(subscriber_id=0, email=to, name="")
    )
    send_one(message)


# --- checks and approval ---------------------------------------------------------------


def checks_page(request: Request, issue_id: int, *, error: str = "",
                status_code: int = 200) -> Response:
    return issue_view(request, issue_id, "checks.html",
                      lambda session, issue: {"report": run_checks(session=session,
                                                                   issue_id=issue_id)},
                      status_code=status_code, error=error)


@router.get("/issues/{issue_id:int}/checks")
def checks(request: Request, issue_id: int) -> Response:
    return checks_page(request, issue_id)


def _approval_refused(request: Request, issue_id: int) -> Callable[[Exception], Response]:
    def answer(exc: Exception) -> Response:
        error = str(exc)
        if isinstance(exc, ApprovalRefused):
            names = ", ".join(getattr(f, "title", "") for f in exc.failures)
            error = f"Approval refused: fix the failing checks first ({names})."
        return checks_page(request, issue_id, error=error, status_code=400)
    return answer


@router.post("/issues/{issue_id:int}/approve")
def approve(request: Request, issue_id: int) -> Response:
    return commit_change(request, issue_id,
                         lambda s, _issue: approve_issue(session=s, issue_id=issue_id),
                         refused=_approval_refused(request, issue_id),
                         done=f"/editor/issues/{issue_id}/send")


@router.post("/issues/{issue_id:int}/unapprove")
def unapprove(request: Request, issue_id: int) -> Response:
    return commit_change(request, issue_id,
                         lambda s, _issue: unapprove_issue(session=s, issue_id=issue_id),
                         refused=_approval_refused(request, issue_id),
                         done=f"/editor/issues/{issue_id}")
