"""Logging in and out, and the login limits.

Every attempt is counted (atomically, by `limits`) before the password is checked, so
parallel guesses cannot all slip under the limit. Limits are per (account, client
address) and per client address: an attacker elsewhere cannot lock the real editor
out. Across all addresses, failures on one account only slow it down: a short delay
that grows with the failures, capped at a few seconds.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

import newsletter.editors as editors
from newsletter.editors import Editor, end_sessions
from newsletter.ratelimit import Limiter, private_key
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
from newsletter.web.security import client_ip

# Guesses at one account from one client address; then wait for the window to move.
LOGIN_LIMIT_ACCOUNT_IP = "5/minute"
# Guesses from one client address at any accounts.
LOGIN_LIMIT_IP = "20/minute"
# Failures on one account from anywhere, the window the slow-down looks at.
FAILURE_WINDOW = "1000/15 minutes"
FREE_FAILURES = 5  # failures (any address) before attempts on the account slow down
MAX_DELAY_SECONDS = 4.0


def _limiter(request: Request) -> Limiter:
    limiter = getattr(request.app.state, "editor_login_limiter", None)
    if limiter is None:
        # Counted in Redis so the limits hold across web processes (in memory
        # while Redis is unreachable).
        limiter = Limiter(redis_url=settings.redis_url, prefix="roundup:editor-login")
        request.app.state.editor_login_limiter = limiter
    return limiter


def _limit_key(email: str) -> str:
    """Ana@Example.com and ana@example.com are one account, so one budget."""
    try:
        address = normalise_email(email)
    except SubscriberError:
        address = email.strip().lower()[:320]
    return private_key(address)


def slowdown_seconds(failures: int) -> float:
    """0 for the first FREE_FAILURES failures, then 0.5 s doubling, capped."""
    if failures <= FREE_FAILURES:
        return 0.0
    return float(min(MAX_DELAY_SECONDS, 0.5 * 2 ** (failures - FREE_FAILURES - 1)))


def _admit(limiter: Limiter, account: str, ip: str) -> tuple[bool, float]:
    """Count this attempt; (allowed, seconds to wait before checking the password)."""
    # Per (account, address) first: a burst at one account is refused there without
    # using up the address's budget, so the editor at that address isn't kept out
    # longer than the (account, address) window.
    if not limiter.hit(LOGIN_LIMIT_ACCOUNT_IP, "account-ip", account, ip):
        return False, 0.0
    if not limiter.hit(LOGIN_LIMIT_IP, "ip", ip):
        return False, 0.0
    total = int(FAILURE_WINDOW.split("/", 1)[0])
    failures = total - limiter.remaining(FAILURE_WINDOW, "failures", account)
    return True, slowdown_seconds(failures)


def _check(email: str, password: str) -> Editor | None:
    with db_session() as session:
        editor = editors.authenticate(session=session, email=email, password=password)
        session.commit()
    return editor


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
async def login_submit(request: Request) -> Response:
    form = form_of(request)
    email = forms.text(form, "email").strip()
    password = forms.text(form, "password")
    next_url = safe_next(forms.text(form, "next"))
    if not email or not password:
        return _login_page(request, email=email, next_url=next_url, status_code=400,
                           error="Enter your email address and password.")
    limiter, account, ip = _limiter(request), _limit_key(email), client_ip(request)
    allowed, delay = await run_in_threadpool(_admit, limiter, account, ip)
    if not allowed:
        return _login_page(request, email=email, next_url=next_url, status_code=429,
                           error="Too many login attempts from your network. "
                                 "Wait a minute and try again.")
    if delay:
        # Many recent failures on this account: slow every attempt down a little
        # (without holding a thread) rather than refuse the real editor.
        await asyncio.sleep(delay)
    editor = await run_in_threadpool(_check, email, password)
    if editor is None:
        await run_in_threadpool(limiter.hit, FAILURE_WINDOW, "failures", account)
        return _login_page(request, email=email, next_url=next_url, status_code=401,
                           error="That email and password don't match an editor account.")
    # The editor is in: mistakes they made before from here no longer count.
    await run_in_threadpool(limiter.clear, LOGIN_LIMIT_ACCOUNT_IP, "account-ip", account, ip)
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

