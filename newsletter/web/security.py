"""Protections every page shares: CSRF tokens, the honeypot, a cap on request bodies,
quiet handling of clients that go away, and security headers. (Rate limits live in
newsletter/ratelimit.py.)
"""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.datastructures import FormData
from starlette.requests import ClientDisconnect, Request

from newsletter import tokens
from newsletter.settings import DEFAULT_SECRET, settings

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSRF_COOKIE = "roundup_csrf"
CSRF_FIELD = "csrf_token"
CSRF_MAX_AGE = 2 * 24 * 3600  # a form left open over a weekend still submits
HONEYPOT_FIELD = "website"  # hidden from people; bots fill in anything called "website"
MAX_BODY_BYTES = 64 * 1024
# The one form that takes a whole roundup (a file or pasted text). Its handler refuses
# more than 1 MB of roundup with the form and a message; up to twice that is let
# through so it can, and only bodies beyond that get the plain 413.
UPLOAD_BODY_BYTES = 2 * 1024 * 1024 + 64 * 1024
LARGE_BODY_PATHS = {"/editor/issues/new": UPLOAD_BODY_BYTES}
# Relay webhooks (issue 8): a bounce can carry the original message (Postmark's Content).
LARGE_BODY_PATHS.update({f"/webhooks/bounces/{p}": 512 * 1024
                         for p in ("generic", "ses", "postmark", "mailgun")})
# The branding settings form carries a logo (200 KB; larger ones get the form's message).
LARGE_BODY_PATHS.update({"/editor/settings": 4 * 1024 * 1024,
                         "/editor/settings/preview": 4 * 1024 * 1024})
EMBED_FORM_PATH = "/subscribe/embed/form"


class InsecureSecretError(RuntimeError):
    """The app was asked to start outside development with the built-in secret."""


MIN_SECRET_LENGTH = 16


def check_secret() -> None:
    """Outside development, refuse the built-in secret and ones short enough to guess."""
    if settings.environment == "development":
        return
    if settings.secret_key == DEFAULT_SECRET:
        raise InsecureSecretError(
            f"SECRET_KEY is the built-in development secret but ENVIRONMENT is "
            f"{settings.environment!r}; set SECRET_KEY to a long random string "
            "(or ENVIRONMENT=development on your own machine)"
        )
    if len(settings.secret_key) < MIN_SECRET_LENGTH:
        raise InsecureSecretError(
            f"SECRET_KEY is {len(settings.secret_key)} characters long; use at least "
            f"{MIN_SECRET_LENGTH} random ones, e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'"
        )


# --- CSRF: a signed double-submit token ---------------------------------------------
#
# The cookie holds a random value; forms carry that value signed with SECRET_KEY
# (salt "csrf"). A POST must bring both and they must match: another site can make
# a browser send our cookie but can neither read it nor forge the signature.


def _csrf_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(list(tokens.secret_keys()), salt="csrf")


def csrf_cookie_value(request: Request) -> str:
    """This browser's CSRF value, minting one (set on the response by `render`) if new."""
    existing = getattr(request.state, "csrf_value", None)
    if existing:
        return str(existing)
    value = request.cookies.get(CSRF_COOKIE, "")
    if not (16 <= len(value) <= 64) or not value.replace("-", "").replace("_", "").isalnum():
        value = secrets.token_urlsafe(24)
        request.state.csrf_new = True
    request.state.csrf_value = value
    return value


def _bound(value: str, request: Request) -> str:
    # A route may bind its forms' tokens to more than the browser (the editors'
    # console binds them to the editor's session): set request.state.csrf_binding
    # before rendering and before checking.
    binding = getattr(request.state, "csrf_binding", "")
    return f"{value}|{binding}" if binding else value


def csrf_token(request: Request) -> str:
    return str(_csrf_serializer().dumps(_bound(csrf_cookie_value(request), request)))


def csrf_valid(request: Request, form: FormData) -> bool:
    submitted = form.get(CSRF_FIELD)
    cookie = request.cookies.get(CSRF_COOKIE)
    if not isinstance(submitted, str) or not cookie or len(submitted) > 512:
        return False
    try:
        value = _csrf_serializer().loads(submitted, max_age=CSRF_MAX_AGE)
    except BadSignature:
        return False
    return isinstance(value, str) and secrets.compare_digest(
        value.encode(), _bound(cookie, request).encode())


def set_csrf_cookie(request: Request, response: Any) -> None:
    """Set the cookie when this request minted a new value."""
    if not getattr(request.state, "csrf_new", False):
        return
    secure = settings.base_url.startswith("https://")
    embedded = request.url.path == EMBED_FORM_PATH
    # Inside another site's iframe a Lax cookie is never sent back; over HTTPS the
    # embed form's cookie is SameSite=None, partitioned per embedding site (CHIPS).
    partitioned = bool(embedded and secure)
    response.set_cookie(
        CSRF_COOKIE,
        request.state.csrf_value,
        max_age=CSRF_MAX_AGE,
        httponly=True,
        secure=secure,
        samesite="none" if partitioned else "lax",
        path="/",
        **({"partitioned": True} if partitioned and NATIVE_PARTITIONED else {}),
    )
    if partitioned and not NATIVE_PARTITIONED:
        _add_partitioned(response, CSRF_COOKIE)
    request.state.csrf_new = False


# Starlette writes `Partitioned` itself only on Python 3.14+ (and raises before);
# elsewhere the attribute is appended to the Set-Cookie header by hand.
NATIVE_PARTITIONED = sys.version_info >= (3, 14)


def _add_partitioned(response: Any, name: str) -> None:
    prefix = f"{name}=".encode()
    headers = response.raw_headers
    for index in range(len(headers) - 1, -1, -1):
        key, value = headers[index]
        if key == b"set-cookie" and value.startswith(prefix):
            if b"partitioned" not in value.lower():
                headers[index] = (key, value + b"; Partitioned")
            return


def honeypot_filled(form: FormData) -> bool:
    value = form.get(HONEYPOT_FIELD)
    return isinstance(value, str) and value.strip() != ""


def client_ip(request: Request) -> str:
    """The client's address as uvicorn saw it.

    uvicorn replaces it with X-Forwarded-For only when the connection comes from an
    address in FORWARDED_ALLOW_IPS (empty by default): a header anyone can write must
    not choose which rate-limit budget a request is counted against.
    """
    return request.client.host if request.client else "unknown"


# --- ASGI middleware: body cap and headers -------------------------------------------


class BodyTooLarge(Exception):
    pass


def _plain(status: int, body: bytes) -> tuple[Message, Message]:
    return (
        {"type": "http.response.start", "status": status,
         "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                     (b"content-length", str(len(body)).encode())]},
        {"type": "http.response.body", "body": body},
    )


class SecurityMiddleware:
    """Caps request bodies (413), mints a CSP nonce, adds security headers."""

    def __init__(self, app: ASGIApp, *, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.default_max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_body = LARGE_BODY_PATHS.get(scope.get("path", ""), self.default_max_body)
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csp_nonce"] = nonce
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > max_body
            except ValueError:
                too_big = True  # unparseable length: refuse rather than guess
            if too_big:
                await _send_413(send, scope, nonce, max_body)
                return

        received = 0
        started = False
        exceeded = False

        async def capped_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if exceeded:
                # Frameworks may turn our exception into their own error response
                # (FastAPI answers 400); whatever they send, the answer is 413.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _send_413(send, scope, nonce, max_body)
                return
            if message["type"] == "http.response.start":
                started = True
                message = _with_headers(message, scope, nonce)
            await send(message)

        try:
            await self.app(scope, capped_receive, send_with_headers)
        except BodyTooLarge:
            if started:
                raise
            await _send_413(send, scope, nonce, max_body)
        except ClientDisconnect:
            # The client went away mid-body: nobody is left to read an answer, and
            # it is not our error. Log a line, not a traceback; answer 400 if we can.
            log.info("client disconnected before sending its whole request: %s %s",
                     scope.get("method"), scope.get("path"))
            if not started:
                start, body = _plain(400, b"The request ended before its body was complete.\n")
                await send(_with_headers(start, scope, nonce))
                await send(body)


def human_size(size: int) -> str:
    """64 KB, 2.1 MB: how the limits are written in messages."""
    if size < 1024 * 1024:
        return f"{size // 1024} KB"
    return f"{size / (1024 * 1024):.1f} MB".replace(".0 MB", " MB")


async def _send_413(send: Send, scope: Scope, nonce: str, max_body: int) -> None:
    message = f"Request body too large: at most {human_size(max_body)} may be sent here.\n"
    start, body = _plain(413, message.encode())
    await send(_with_headers(start, scope, nonce))
    await send(body)


def is_email_preview(path: str) -> bool:
    """The editors' preview iframe: an email's own HTML, framed only by our pages."""
    return (path.startswith("/editor/issues/") and path.endswith("/preview/frame")
            or path == "/editor/settings/preview")  # issue 10


# Emails carry inline <style> and remote images; no script may run, nothing is submitted.
EMAIL_PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
    "font-src https: data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'self'; sandbox"
)


def _with_headers(message: Message, scope: Scope, nonce: str) -> Message:
    path = scope.get("path", "")
    if is_email_preview(path):
        preview = [
            (b"content-security-policy", EMAIL_PREVIEW_CSP.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"SAMEORIGIN"),
            (b"cache-control", b"no-store"),
        ]
        names = {name for name, _ in preview}
        kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
        return {**message, "headers": kept + preview}
    framable = path == EMBED_FORM_PATH
    # No page loads anything from elsewhere (FastAPI's CDN-based /docs are switched off).
    csp = (
        f"default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self'; "
        "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
        + ("frame-ancestors *" if framable else "frame-ancestors 'none'")
    )
    extra = [
        (b"content-security-policy", csp.encode()),
        (b"x-content-type-options", b"nosniff"),
        # Manage and unsubscribe URLs carry tokens: never leak them to other sites.
        (b"referrer-policy", b"no-referrer"),
        (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    if not framable:
        extra.append((b"x-frame-options", b"DENY"))
    if settings.base_url.startswith("https://"):
        extra.append((b"strict-transport-security", b"max-age=31536000"))
    # Token pages, and every console page: nothing an editor saw may be kept by a
    # shared browser or proxy (login form included: it carries a CSRF token).
    if path.startswith(("/manage/", "/unsubscribe/", "/confirm/", "/editor")):
        extra.append((b"cache-control", b"no-store"))
    names = {name for name, _ in extra}
    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
    return {**message, "headers": headers + extra}
