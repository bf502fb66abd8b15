"""Logging in and out. Attempts are rate-limited per client address and per email."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import Response

from newsletter.editors import Editor, authenticate, end_sessions
from newsletter.settings import settings
from newsletter.subscribers import SubscriberError, normalise_email
from newsletter.web import forms
from newsletter.web.editor.routing import (
    clear_session_cookie,
    current_editor,
    db_session,
    form_of,
    page,
    redirect,
    router,
    set_session_cookie,
)
from newsletter.web.security import RateLimiter, client_ip

LOGIN_PER_MINUTE_IP = 10
LOGIN_PER_MINUTE_EMAIL = 5


def _limiter(request: Request) -> RateLimiter:
    limiter = getattr(request.app.state, "editor_login_limiter", None)
    if limiter is None:
        # Counted in Redis so the limit holds across web processes (in memory
        # while Redis is unreachable).
        limiter = RateLimiter(redis_url=settings.redis_url, prefix="roundup:editor-login")
        request.app.state.editor_login_limiter = limiter
    return limiter


def _limit_key(email: str) -> str:
    """Ana@Example.com and ana@example.com are one account, so one budget."""
    try:
        return normalise_email(email)
    except SubscriberError:
        return email.strip().lower()[:320]


def safe_next(value: str) -> str:
    """Only same-site paths under /editor; anything else (//evil.example) goes home."""
    if not value.startswith("/editor") or value.startswith("//") or "\\" in value:
        return "/editor"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/editor"
    return value


def _login_page(request: Request, *, email: str = "", next_url: str = "/editor",
                error: str = "", status_code: int = 200) -> Response:
    return page(request, "login.html",
                {"email": email, "next_url": safe_next(next_url), "error": error},
                status_code=status_code)


@router.get("/login")
def login_page(request: Request, next: str = "/editor") -> Response:  # noqa: A002
    if request.state.editor is not None:
        return redirect(safe_next(next))
    return _login_page(request, next_url=next)


@router.post("/login")
def login_submit(request: Request) -> Response:
    form = form_of(request)
    email = forms.text(form, "email").strip()
    password = forms.text(form, "password")
    next_url = safe_next(forms.text(form, "next"))
    limiter = _limiter(request)
    allowed_ip = limiter.hit(f"ip:{client_ip(request)}", limit=LOGIN_PER_MINUTE_IP)
    # Per account only failures count: an editor who logs in on several devices is
    # not guessing; someone trying passwords is.
    email_key = f"email:{_limit_key(email)}"
    if not allowed_ip or limiter.count(email_key) >= LOGIN_PER_MINUTE_EMAIL:
        return _login_page(request, email=email, next_url=next_url, status_code=429,
                           error="Too many login attempts. Wait a minute and try again.")
    if not email or not password:
        return _login_page(request, email=email, next_url=next_url, status_code=400,
                           error="Enter your email address and password.")
    with db_session() as session:
        editor: Editor | None = authenticate(session=session, email=email, password=password)
        session.commit()
    if editor is None:
        limiter.hit(email_key, limit=LOGIN_PER_MINUTE_EMAIL)
        return _login_page(request, email=email, next_url=next_url, status_code=401,
                           error="That email and password don't match an editor account.")
    response = redirect(next_url)
    set_session_cookie(response, editor)
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    # Server side too: a copy of the cookie must not outlive the logout.
    with db_session() as session:
        end_sessions(session=session, editor_id=current_editor(request).id)
        session.commit()
    response = redirect("/editor/login")
    clear_session_cookie(response)
    return response

