"""`/r/<token>`: a story link from a digest. Records the click once, then redirects.

The token is signed (purpose "click") and names the subscriber, the issue and the
story, so nobody can record clicks for someone else or send a reader anywhere we
did not link: the only destinations are the story's archive page and, at
`/r/<token>/link`, the story's own link (an http(s) URL the editor or ingest set).
A bad token is a 404 and records nothing. Nothing is recorded when TRACK_CLICKS is
off or the reader chose "Don't record my clicks"; the link still works.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from newsletter import db, tokens
from newsletter.checks import link_problem
from newsletter.engagement.links import story_path
from newsletter.models import Click, Item, Subscriber, utcnow
from newsletter.settings import settings

router = APIRouter(include_in_schema=False)


def destination(item: Item, *, to_link: bool) -> str:
    """The story's archive page, or its own link when the email linked to that."""
    if to_link and item.link_url and not link_problem(item.link_url) \
            and item.link_url.startswith(("https://", "http://")):
        return item.link_url
    return settings.base_url.rstrip("/") + story_path(item.id or 0, item.headline)


def record_click(*, session: Session, subscriber_id: int, issue_id: int, item_id: int) -> bool:
    """Insert the click unless tracking is off for the service or the reader.

    One row per (subscriber, issue, story): a second click, or two at once, hits
    the unique constraint and is ignored by the database (no read-then-write).
    Returns whether a row was written.
    """
    if not settings.track_clicks:
        return False
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or not subscriber.track_clicks:
        return False
    values = {"subscriber_id": subscriber_id, "issue_id": issue_id, "item_id": item_id,
              "at": utcnow()}
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    result = session.execute(insert(Click).values(**values).on_conflict_do_nothing(
        index_elements=["subscriber_id", "issue_id", "item_id"]))
    session.commit()
    return bool(getattr(result, "rowcount", 0))


@router.api_route("/r/{token}", methods=["GET", "HEAD"])
def follow(request: Request, token: str) -> Response:
    """To the story's archive page."""
    return _follow(request, token, to_link=False)


@router.api_route("/r/{token}/link", methods=["GET", "HEAD"])
def follow_link(request: Request, token: str) -> Response:
    """To the story's own link (its page if it has none). Not signed separately: both
    places are ones the story allows, and it keeps one token per story per email."""
    return _follow(request, token, to_link=True)


def _follow(request: Request, token: str, *, to_link: bool) -> Response:
    """Sync on purpose: FastAPI runs the routes in the thread pool, off the event loop."""
    try:
        subscriber_id, issue_id, item_id = tokens.read_click_token(token)
    except tokens.BadToken:
        raise HTTPException(404, "This link is not valid. Check that it was copied whole.") \
            from None
    with Session(db.get_engine(), expire_on_commit=False) as session:
        item = session.get(Item, item_id)
        if item is None or item.issue_id != issue_id:
            raise HTTPException(404, "This story is no longer available.")
        # Link checkers fetch with HEAD: they get the redirect, not a recorded click.
        if request.method == "GET":
            record_click(session=session, subscriber_id=subscriber_id, issue_id=issue_id,
                         item_id=item_id)
        target = destination(item, to_link=to_link)
    return RedirectResponse(target, status_code=302, headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
