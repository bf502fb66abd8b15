"""The editors' router: every route requires a logged-in editor and every POST a
valid CSRF token, enforced once here (in the route class) rather than per handler,
so a route added later cannot forget either.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from newsletter import db, tokens
from newsletter.editors import Editor, EditorPublic
from newsletter.settings import settings
from newsletter.web.security import csrf_valid
from newsletter.web.templating import render

log = logging.getLogger(__name__)

SESSION_COOKIE = "roundup_editor"
SESSION_SALT = "editor-session"
SESSION_MAX_AGE = 12 * 3600
# Reachable while logged out (route templates).
PUBLIC_PATHS = frozenset({"/editor/login", "/editor/invite/{token}", "/editor/reset/{token}"})
MAX_FORM_FIELDS = 400
MAX_UPLOAD_BYTES = 1024 * 1024
MAX_ID = 2**31 - 1  # PostgreSQL's integer; a longer number in a URL names nothing

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
# The request being handled, so a new session row can note where it logs in from.
_request: ContextVar[Request | None] = ContextVar("editor_request", default=None)


@contextmanager
def db_session() -> Iterator[Session]:
    with Session(db.get_engine(), expire_on_commit=False) as session:
        yield session


# --- the session cookie ------------------------------------------------------------


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(list(tokens.secret_keys()), salt=SESSION_SALT)


def session_cookie_value(editor: Editor) -> str:
    """A new session (a row the editor can see and end) and the cookie naming it."""
    from newsletter.team import start_session

    request = _request.get()
    ip = request.client.host if request is not None and request.client else ""
    agent = request.headers.get("user-agent", "") if request is not None else ""
    assert editor.id is not None
    with db_session() as session:
        sid = start_session(session=session, editor_id=editor.id, ip=ip, user_agent=agent)
        session.commit()
    return str(_serializer().dumps({"id": editor.id, "gen": editor.session_generation,
                                    "sid": sid}))


def set_session_cookie(response: Response, editor: Editor) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_cookie_value(editor),
        max_age=SESSION_MAX_AGE,
        httponly=True,
        samesite="lax",
        secure=settings.environment not in ("development", "test"),
        path="/editor",
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/editor", httponly=True, samesite="lax")


def editor_from_cookie(value: str | None) -> EditorPublic | None:
    if not value or len(value) > 512:
        return None
    try:
        data = _serializer().loads(value, max_age=SESSION_MAX_AGE)
    except BadSignature:
        return None
    if (not isinstance(data, dict) or type(data.get("id")) is not int
            or type(data.get("gen")) is not int or type(data.get("sid")) is not str):
        return None
    from newsletter.team import session_is_live

    with db_session() as session:
        editor = session.get(Editor, data["id"])
        if editor is None or not editor.active or data["gen"] != editor.session_generation:
            return None
        if not session_is_live(session=session, sid=data["sid"], editor_id=data["id"]):
            return None
        return EditorPublic(id=editor.id or 0, email=editor.email, name=editor.name,
                            role=editor.role)


def session_id(request: Request) -> str:
    """The id of this request's session row ("" when logged out)."""
    try:
        data = _serializer().loads(request.cookies.get(SESSION_COOKIE, ""),
                                   max_age=SESSION_MAX_AGE)
    except BadSignature:
        return ""
    return str(data.get("sid", "")) if isinstance(data, dict) else ""


def csrf_binding(editor: EditorPublic | None, cookie: str | None) -> str:
    """What editor forms' CSRF tokens are bound to: this editor's session cookie, so a
    token leaked from one session (or from the login page) is useless in another."""
    if editor is None or not cookie:
        return "editor:anonymous"
    return f"editor:{editor.id}:{hashlib.sha256(cookie.encode()).hexdigest()[:32]}"


# --- responses for refused requests -----------------------------------------------------


def login_required(request: Request) -> Response:
    """Anonymous requests learn nothing: JSON gets a bare 401, pages go to the login form."""
    if request.url.path.endswith(".json"):
        return JSONResponse({"detail": "login required"}, status_code=401)
    target = "/editor/login"
    if request.method == "GET" and request.url.path != "/editor/login":
        wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target += "?next=" + quote(wanted, safe="")
    return RedirectResponse(target, status_code=303)


def error_page(request: Request, title: str, message: str, status_code: int) -> Response:
    return render(request, "editor/error.html",
                  {"title": title, "message": message, "nav": "",
                   "editor": getattr(request.state, "editor", None)},
                  status_code=status_code)


class EditorRoute(APIRoute):
    """Checks the editor session (and CSRF on POST) before any handler runs."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        public = self.path in PUBLIC_PATHS

        async def guarded(request: Request) -> Response:
            _request.set(request)
            editor = await run_in_threadpool(
                editor_from_cookie, request.cookies.get(SESSION_COOKIE)
            )
            request.state.editor = editor
            request.state.csrf_binding = csrf_binding(editor, request.cookies.get(SESSION_COOKIE))
            if editor is None and not public:
                return login_required(request)
            if any(isinstance(v, int) and v > MAX_ID for v in request.path_params.values()):
                return error_page(request, "Not found", "There is no such page.", 404)
            if request.method == "POST":
                try:
                    # Twice the roundup limit, so the new-issue page can refuse too much
                    # pasted text with its own message (issue 11).
                    form = await request.form(
                        max_files=1, max_fields=MAX_FORM_FIELDS,
                        max_part_size=2 * MAX_UPLOAD_BYTES,
                    )
                except Exception:  # malformed multipart bodies, too many fields
                    return error_page(request, "Bad form", "The form could not be read.", 400)
                if not csrf_valid(request, form):
                    return error_page(
                        request, "Form expired",
                        "This form was open too long or came from another site. "
                        "Go back, reload the page and try again.", 403)
                request.state.form = form
            return await handler(request)

        return guarded


router = APIRouter(prefix="/editor", route_class=EditorRoute, include_in_schema=False)


def form_of(request: Request) -> FormData:
    form = getattr(request.state, "form", None)
    return form if isinstance(form, FormData) else FormData()


def current_editor(request: Request) -> EditorPublic:
    editor = request.state.editor
    assert editor is not None  # EditorRoute refuses anonymous requests first
    return editor


def owners_only(request: Request) -> Response | None:
    """The 403 page for an editor on an owner's page; None for owners."""
    if current_editor(request).role == "owner":
        return None
    return error_page(request, "Owners only",
                      "Only owners manage the team and the settings. Ask an owner.", 403)


def page(request: Request, name: str, context: dict[str, Any] | None = None,
         *, status_code: int = 200) -> Response:
    """Render an editor page; every page knows who is logged in."""
    return render(request, f"editor/{name}",
                  {"editor": getattr(request.state, "editor", None), "nav": "", **(context or {})},
                  status_code=status_code)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def unknown_path(request: Request, rest: str) -> Response:
    """Any other path or method under /editor (registered last, after every real route).

    Anonymous visitors have already been sent to the login page by EditorRoute, so
    guessing URLs tells them nothing; editors get the console's own 404 page.
    """
    if not rest and request.method == "GET":
        return redirect("/editor")
    return error_page(request, "Not found", "There is no such page in the console.", 404)


ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
