"""The public web archive: every sent issue and story as a page, an Atom feed, and the
"Follow this topic" hop from a story to sign-up or the reader's preference centre.

Only issues that went out (sending, paused part-way, or sent) are public; drafts,
approved, scheduled and cancelled issues and their stories answer 404 like a page
that doesn't exist. Pages are the same for everyone, so they are cacheable
(Cache-Control public, an ETag and Last-Modified from Issue.updated_at) and set no
cookie; the one personal part, the manage token, travels only through /follow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote, urlencode
from xml.etree import ElementTree as ET

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar
from starlette.concurrency import run_in_threadpool

from newsletter import db, tokens
from newsletter.composer import IssueContent, ItemContent, load_issue
from newsletter.engagement.links import issue_path, slugify, story_path
from newsletter.models import Issue, IssueStatus, Item, Subscriber, Topic, as_utc
from newsletter.settings import settings
from newsletter.signup import ERASED_SUFFIX
from newsletter.web.templating import render

router = APIRouter(include_in_schema=False)

# Issues readers may have received: a send in progress or paused has recipients
# clicking its links already. Cancelled sends are withdrawn by their editor.
PUBLIC_STATUSES = (IssueStatus.sending, IssueStatus.paused, IssueStatus.sent)
PER_PAGE = 10
FEED_ENTRIES = 20
CACHE_CONTROL = "public, max-age=300"
READER_COOKIE = "roundup_reader"  # the manage token, sent only to /follow
READER_COOKIE_DAYS = 30
ATOM = "http://www.w3.org/2005/Atom"
XHTML = "http://www.w3.org/1999/xhtml"
READ_METHODS = ["GET", "HEAD"]
MAX_ID = 2**31 - 1


@contextmanager
def db_session() -> Iterator[Session]:
    with Session(db.get_engine(), expire_on_commit=False) as session:
        yield session


def _absolute(path: str) -> str:
    return settings.base_url.rstrip("/") + path


def _host() -> str:
    return settings.base_url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]


def _not_found() -> HTTPException:
    return HTTPException(404, "There is no such page in the archive.")


# --- what is public ---------------------------------------------------------------------


def public_issue(session: Session, issue_id: int) -> Issue | None:
    if not 0 < issue_id <= MAX_ID:
        return None
    issue = session.get(Issue, issue_id)
    return issue if issue is not None and issue.status in PUBLIC_STATUSES else None


def _public_issues() -> SelectOfScalar[Issue]:
    return select(Issue).where(col(Issue.status).in_(PUBLIC_STATUSES))


def excerpt(item: ItemContent) -> tuple[str, bool]:
    """The story's first paragraph, and whether there is more to read."""
    paragraphs = item.paragraphs
    return (paragraphs[0] if paragraphs else ""), len(paragraphs) > 1


# --- caching ----------------------------------------------------------------------------


def _cached(request: Request, version: str, modified: datetime, build: Any) -> Response:
    """304 when the browser's copy is current, else `build()` with validators."""
    etag = 'W/"' + hashlib.sha256(version.encode()).hexdigest()[:20] + '"'
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag,
               "Last-Modified": format_datetime(as_utc(modified).astimezone(UTC), usegmt=True)}
    wanted = request.headers.get("if-none-match", "")
    if etag in [tag.strip() for tag in wanted.split(",")] or wanted.strip() == "*":
        return Response(status_code=304, headers=headers)
    response: Response = build()
    response.headers.update(headers)
    return response


def _private(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


# --- the archive list --------------------------------------------------------------------


@dataclass(frozen=True)
class IssueCard:
    id: int
    title: str
    intro: str
    issue_date: Any
    path: str
    headlines: list[str]
    stories: int


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise _not_found()
    return int(raw)


def _archive_page(request: Request, number: int) -> Response:
    with db_session() as session:
        total, latest = session.exec(
            select(func.count(), func.max(Issue.updated_at))
            .where(col(Issue.status).in_(PUBLIC_STATUSES))
        ).one()
        pages = max(1, -(-int(total) // PER_PAGE))
        if number > pages:
            raise _not_found()
        issues = session.exec(
            _public_issues().order_by(col(Issue.issue_date).desc(), col(Issue.id).desc())
            .offset((number - 1) * PER_PAGE).limit(PER_PAGE)
        ).all()
        ids = [i.id for i in issues]
        headlines: dict[int, list[str]] = {i: [] for i in ids if i is not None}
        if ids:
            for issue_id, headline in session.exec(
                select(Item.issue_id, Item.headline)
                .where(col(Item.issue_id).in_(ids), col(Item.hidden).is_(False))
                .order_by(col(Item.position), col(Item.id))
            ).all():
                headlines[issue_id].append(headline)
        cards = [IssueCard(i.id or 0, i.title, i.intro, i.issue_date,
                           issue_path(i.id or 0, i.title), headlines.get(i.id or 0, [])[:3],
                           len(headlines.get(i.id or 0, []))) for i in issues]
    version = f"archive|{number}|{total}|{latest}"
    modified = latest or datetime(2000, 1, 1, tzinfo=UTC)
    return _cached(request, version, modified, lambda: render(request, "archive/list.html", {
        "cards": cards, "page": number, "pages": pages, "total": int(total),
        "canonical": _absolute("/archive" + (f"?page={number}" if number > 1 else "")),
        "feed_url": _absolute("/archive.atom"),
    }))


@router.api_route("/archive", methods=READ_METHODS)
async def archive(request: Request) -> Response:
    return await run_in_threadpool(_archive_page, request, _page_number(request))


# --- one issue ----------------------------------------------------------------------------


def _topic_list(content: IssueContent, slugs: Sequence[str]) -> list[dict[str, str]]:
    return [{"slug": s, "name": content.topic_names.get(s, s)} for s in slugs]


def _story_view(content: IssueContent, item: ItemContent) -> dict[str, Any]:
    first, more = excerpt(item)
    return {"id": item.id, "headline": item.headline, "excerpt": first, "more": more,
            "paragraphs": item.paragraphs, "path": story_path(item.id, item.headline),
            "topics": _topic_list(content, item.topics), "kind": item.kind,
            "link_url": item.link_url, "link_text": item.link_text}


def _canonical_first(request: Request, slug: str | None, title: str,
                     canonical: str) -> Response | None:
    """A 301 to the canonical URL for an old or missing slug; then the reader hop."""
    if slug != slugify(title):
        token = request.query_params.get("m")
        if token is None:
            return RedirectResponse(canonical, status_code=301)
        # A retitled story opened from an email: keep the reader's token for the next hop.
        return _private(RedirectResponse(f"{canonical}?{urlencode({'m': token[:512]})}",
                                         status_code=301))
    return _reader_redirect(request, canonical)


def _reader_redirect(request: Request, canonical: str) -> Response | None:
    """`?m=<manage token>` (a reader arriving from their email): keep the token in a
    cookie only /follow receives, and show the clean, shareable URL."""
    token = request.query_params.get("m")
    if token is None:
        return None
    response = _private(RedirectResponse(canonical, status_code=303))
    if _reader_id(token) is not None:
        response.set_cookie(READER_COOKIE, token, max_age=READER_COOKIE_DAYS * 86400,
                            path="/follow", httponly=True, samesite="lax",
                            secure=settings.base_url.startswith("https://"))
    return response


def _reader_id(token: str | None) -> int | None:
    if not token or len(token) > 512:
        return None
    try:
        return tokens.read_token(tokens.MANAGE, token)
    except tokens.BadToken:
        return None


def _issue_page(request: Request, issue_id: int, slug: str | None) -> Response:
    with db_session() as session:
        issue = public_issue(session, issue_id)
        if issue is None:
            raise _not_found()
        content = load_issue(session=session, issue_id=issue_id)
        sent = issue.sent_at or issue.send_started_at
    canonical = issue_path(issue_id, content.title)
    early = _canonical_first(request, slug, content.title, canonical)
    if early is not None:
        return early
    stories = [_story_view(content, item) for item in content.items]
    topics = sorted({t["name"] for s in stories for t in s["topics"]})
    description = content.intro or " · ".join(s["headline"] for s in stories[:3])
    return _cached(request, f"issue|{content.id}|{content.version}", issue.updated_at,
                   lambda: render(request, "archive/issue.html", {
                       "issue": content, "stories": stories, "topics": topics, "sent": sent,
                       "og": _og("article", content.title, description, canonical),
                       "canonical": _absolute(canonical),
                   }))


@router.api_route("/issues/{issue_id:int}", methods=READ_METHODS)
@router.api_route("/issues/{issue_id:int}/{slug}", methods=READ_METHODS)
async def issue_page(request: Request, issue_id: int, slug: str | None = None) -> Response:
    return await run_in_threadpool(_issue_page, request, issue_id, slug)


# --- one story ------------------------------------------------------------------------------


def _og(kind: str, title: str, description: str, path: str) -> dict[str, str]:
    words = description.split()
    short = " ".join(words[:40]) + ("…" if len(words) > 40 else "")
    return {"type": kind, "title": title, "description": short, "url": _absolute(path),
            "site_name": settings.mail_from_name}


def _story_page(request: Request, item_id: int, slug: str | None) -> Response:
    if not 0 < item_id <= MAX_ID:
        raise _not_found()
    with db_session() as session:
        row = session.get(Item, item_id)
        issue = public_issue(session, row.issue_id) if row is not None and not row.hidden else None
        if row is None or issue is None:
            raise _not_found()
        content = load_issue(session=session, issue_id=issue.id or 0)
    index = next((n for n, i in enumerate(content.items) if i.id == item_id), None)
    if index is None:
        raise _not_found()
    item = content.items[index]
    canonical = story_path(item.id, item.headline)
    early = _canonical_first(request, slug, item.headline, canonical)
    if early is not None:
        return early
    story = _story_view(content, item)
    neighbours = {
        "previous": _story_view(content, content.items[index - 1]) if index > 0 else None,
        "next": (_story_view(content, content.items[index + 1])
                 if index + 1 < len(content.items) else None),
    }
    return _cached(request, f"story|{item.id}|{content.version}", issue.updated_at,
                   lambda: render(request, "archive/story.html", {
                       "issue": content, "story": story, **neighbours,
                       "issue_path": issue_path(content.id, content.title),
                       "og": _og("article", item.headline, story["excerpt"], canonical),
                       "canonical": _absolute(canonical),
                   }))


@router.api_route("/stories/{item_id:int}", methods=READ_METHODS)
@router.api_route("/stories/{item_id:int}/{slug}", methods=READ_METHODS)
async def story_page(request: Request, item_id: int, slug: str | None = None) -> Response:
    return await run_in_threadpool(_story_page, request, item_id, slug)


# --- follow a topic -------------------------------------------------------------------------


def _follow_target(slug: str, token: str | None) -> str:
    with db_session() as session:
        topic = session.exec(select(Topic).where(Topic.slug == slug)).first()
        if topic is None:
            raise _not_found()
        reader = _reader_id(token)
        sub = session.get(Subscriber, reader) if reader is not None else None
        if sub is not None and not sub.email.endswith(ERASED_SUFFIX) and token:
            return f"/manage/{quote(token, safe='')}?" + urlencode({"follow": slug})
    return "/subscribe?" + urlencode({"topics": slug})


@router.get("/follow/{slug}")
async def follow(request: Request, slug: str) -> Response:
    """A story's "Follow this topic": the reader's preference centre when this browser
    came from their email (the reader cookie), otherwise sign-up with it ticked."""
    if len(slug) > 64:
        raise _not_found()
    target = await run_in_threadpool(_follow_target, slug, request.cookies.get(READER_COOKIE))
    return _private(RedirectResponse(target, status_code=303))


# --- the Atom feed --------------------------------------------------------------------------


def _rfc3339(moment: datetime) -> str:
    return as_utc(moment).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
    if text is not None:
        element.text = text
    return element


def entry_id(issue: Issue) -> str:
    """A tag: URI that survives a retitled issue (the URL's slug changes, this doesn't)."""
    return f"tag:{_host()},{issue.created_at:%Y-%m-%d}:issue-{issue.id}"


def build_feed(session: Session) -> tuple[bytes, str, datetime]:
    """The feed document, its version and when it last changed."""
    issues = session.exec(_public_issues().order_by(col(Issue.issue_date).desc(),
                                                    col(Issue.id).desc()).limit(FEED_ENTRIES)).all()
    ET.register_namespace("", ATOM)
    ET.register_namespace("xhtml", XHTML)
    feed = ET.Element(f"{{{ATOM}}}feed")
    updated = max((as_utc(i.updated_at) for i in issues), default=datetime(2000, 1, 1, tzinfo=UTC))
    _sub(feed, "id", f"tag:{_host()},2026:archive")
    _sub(feed, "title", f"{settings.mail_from_name} archive")
    _sub(feed, "subtitle", "Every weekly roundup, as sent.")
    _sub(feed, "updated", _rfc3339(updated))
    _sub(feed, "link", rel="self", type="application/atom+xml", href=_absolute("/archive.atom"))
    _sub(feed, "link", rel="alternate", type="text/html", href=_absolute("/archive"))
    author = _sub(feed, "author")
    _sub(author, "name", settings.mail_from_name)
    for issue in issues:
        content = load_issue(session=session, issue_id=issue.id or 0)
        entry = _sub(feed, "entry")
        _sub(entry, "id", entry_id(issue))
        _sub(entry, "title", content.title)
        _sub(entry, "link", rel="alternate", type="text/html",
             href=_absolute(issue_path(content.id, content.title)))
        _sub(entry, "updated", _rfc3339(issue.updated_at))
        _sub(entry, "published", _rfc3339(issue.sent_at or issue.send_started_at
                                          or issue.updated_at))
        if content.intro:
            _sub(entry, "summary", content.intro)
        for slug in sorted({t for item in content.items for t in item.topics}):
            _sub(entry, "category", term=slug, label=content.topic_names.get(slug, slug))
        body = _sub(entry, "content", type="xhtml")
        div = ET.SubElement(body, f"{{{XHTML}}}div")
        for item in content.items:
            heading = ET.SubElement(div, f"{{{XHTML}}}h2")
            link = ET.SubElement(heading, f"{{{XHTML}}}a",
                                 {"href": _absolute(story_path(item.id, item.headline))})
            link.text = item.headline
            first, _more = excerpt(item)
            ET.SubElement(div, f"{{{XHTML}}}p").text = first
    data = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    version = "feed|" + "|".join(f"{i.id}:{i.updated_at}" for i in issues)
    return data, version, updated


def _feed(request: Request) -> Response:
    with db_session() as session:
        data, version, updated = build_feed(session)
    return _cached(request, version, updated,
                   lambda: Response(data, media_type="application/atom+xml; charset=utf-8"))


@router.api_route("/archive.atom", methods=READ_METHODS)
async def feed(request: Request) -> Response:
    return await run_in_threadpool(_feed, request)
